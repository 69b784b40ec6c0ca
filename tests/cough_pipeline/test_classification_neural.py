"""Per-fold training of the neural classifiers: it learns, keeps the best validation epoch, augments training
batches only, and repeats itself for one seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cough_pipeline.classification.evaluation import PREDICTION_COLUMNS
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.networks import NetworkConfig
from cough_pipeline.classification.neural import NeuralTrainingConfig, spec_augment, train_neural

FAST = NeuralTrainingConfig(batch_size=16, epochs=6, patience=3, learning_rate=3e-3, num_threads=1)


def _tables(root, n_participants: int = 30, shift: float = 1.5):
    """Two recordings per participant; positives' MFCC vectors shifted by ``shift`` in their first 5 dims."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_participants):
        positive = p % 2 == 0
        for r in range(2):
            rid = f"demo:p{p}-r{r}"
            mfcc = rng.normal(size=39).astype(np.float32)
            mfcc[:5] += shift if positive else -shift
            spectrogram = rng.uniform(size=(128, 40)).astype(np.float32)
            for kind, array in (("mfcc", mfcc), ("spectrogram", spectrogram)):
                np.save(root / f"{p}-{r}.{kind}.npy", array)
            rows.append(
                {
                    "recording_id": rid,
                    "participant_id": f"demo:p{p}",
                    "dataset": "demo",
                    "covid_label": "positive" if positive else "negative",
                    "variant": "original",
                    "mfcc_path": f"{p}-{r}.mfcc.npy",
                    "spectrogram_path": f"{p}-{r}.spectrogram.npy",
                    "content_hash": None,
                }
            )
    inputs = pd.DataFrame(rows)
    return inputs, assign_folds(inputs, FoldConfig(n_folds=3, seed=0))


def test_the_mfcc_mlp_learns_a_separable_task_and_predicts_in_the_schema(tmp_path):
    inputs, folds = _tables(tmp_path)
    result = train_neural(inputs, folds, NetworkConfig(name="mfcc_mlp"), "original", tmp_path, FAST)
    predictions = result.predictions
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert set(predictions["split"]) == {"validation", "holdout"} and len(result.models) == 3
    validation = predictions[predictions["split"] == "validation"]
    assert validation["recording_id"].is_unique and len(validation) == (folds["split"] == "cv").sum()
    holdout = predictions[predictions["split"] == "holdout"]
    assert roc_auc_score(holdout["label"], holdout["probability"]) > 0.9


def test_the_kept_weights_are_the_lowest_validation_loss_epoch(tmp_path):
    inputs, folds = _tables(tmp_path, shift=0.3)  # a hard task: validation loss turns up early
    config = NeuralTrainingConfig(batch_size=8, epochs=12, patience=12, learning_rate=1e-2, num_threads=1)
    result = train_neural(inputs, folds, NetworkConfig(name="mfcc_mlp"), "original", tmp_path, config)
    for model in result.models:
        losses = [validation for _, validation in model.history]
        assert model.best_epoch == int(np.argmin(losses)) + 1


def test_one_seed_gives_the_same_predictions(tmp_path):
    inputs, folds = _tables(tmp_path)
    network = NetworkConfig(name="spectrogram_cnn")
    config = NeuralTrainingConfig(batch_size=16, epochs=1, patience=1, num_threads=1)
    first = train_neural(inputs, folds, network, "original", tmp_path, config).predictions
    again = train_neural(inputs, folds, network, "original", tmp_path, config).predictions
    pd.testing.assert_frame_equal(first, again)


def test_spec_augment_masks_one_band_and_one_span_per_example_without_touching_its_input():
    images = torch.ones(3, 1, 32, 50)
    masked = spec_augment(images, torch.Generator().manual_seed(1), max_frequency=8, max_time=10)
    assert torch.equal(images, torch.ones(3, 1, 32, 50))
    zero_rows = (masked == 0).all(dim=3).sum(dim=(1, 2))
    zero_columns = (masked == 0).all(dim=2).sum(dim=(1, 2))
    assert (zero_rows <= 8).all() and (zero_columns <= 10).all() and (masked == 0).any()


def test_augmentation_is_never_applied_outside_training_batches(tmp_path, monkeypatch):
    import cough_pipeline.classification.neural as neural

    calls = []
    original = neural.spec_augment

    def spy(images, *args):
        calls.append(len(images))
        return original(images, *args)

    monkeypatch.setattr(neural, "spec_augment", spy)
    inputs, folds = _tables(tmp_path)
    config = NeuralTrainingConfig(batch_size=16, epochs=1, patience=1, num_threads=1)
    train_neural(inputs, folds, NetworkConfig(name="spectrogram_cnn"), "original", tmp_path, config)
    cv = folds[folds["split"] == "cv"]
    trained_rows = sum(len(cv) - (cv["fold"] == k).sum() for k in sorted(cv["fold"].unique()))
    assert sum(calls) == trained_rows  # one epoch: each fold's training rows once, nothing else


def test_missing_inputs_are_a_clear_error(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=10)
    with pytest.raises(Exception, match="no separated inputs"):
        train_neural(inputs, folds, NetworkConfig(name="mfcc_mlp"), "separated", tmp_path, FAST)
