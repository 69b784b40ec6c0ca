"""One neural classifier trained on each input variant: fold ensemble rows, the input settings kept with the fold
models, and the stored fold models scoring a clip exactly as before they were saved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification import neural
from cough_pipeline.classification.classifiers import (
    INPUT_SETTINGS_COLUMN,
    ClassifierVariants,
    input_settings,
    read_input_settings,
    train_classifier,
)
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, binary_metrics
from cough_pipeline.classification.fold_models import VariantModels
from cough_pipeline.classification.folds import REQUIRED_COLUMNS, leave_one_dataset_out
from cough_pipeline.classification.inputs import InputArraysConfig
from cough_pipeline.classification.neural import NeuralTrainingConfig, train_neural_lodo
from cough_pipeline.classification.preprocess import PreprocessConfig
from resources.model_store import ModelStore, TrainedModel
from resources.storage import Storage

ARRAYS = InputArraysConfig(n_mfcc=13, mfcc_n_mels=40)


def _tables(root, participants: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MFCC vectors whose first coefficient carries the label, for two variants; folds 0-4 and a holdout."""
    rng = np.random.default_rng(0)
    inputs, folds = [], []
    for number in range(participants):
        label = number % 2
        recording = f"r{number:02d}"
        fold = number % 5 if number < participants - 6 else None
        folds.append(
            {
                "recording_id": recording,
                "participant_id": f"p{number:02d}",
                "dataset": "demo",
                "label": label,
                "split": "cv" if fold is not None else "holdout",
                "fold": -1 if fold is None else fold,
            }
        )
        for variant in ("original", "separated"):
            vector = rng.normal(0, 1, 13).astype(np.float32)
            vector[0] += 3 * label
            path = f"{recording}.{variant}.mfcc.npy"
            np.save(root / path, vector)
            inputs.append(
                {
                    "dataset": "demo",
                    "recording_id": recording,
                    "participant_id": f"p{number:02d}",
                    "variant": variant,
                    "mfcc_path": path,
                    INPUT_SETTINGS_COLUMN: input_settings(ARRAYS, PreprocessConfig()),
                }
            )
    return pd.DataFrame(inputs), pd.DataFrame(folds)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrays")
    inputs, folds = _tables(root)
    config = NeuralTrainingConfig(epochs=4, patience=2, batch_size=8, device="cpu")
    run = train_classifier(inputs, folds, "mfcc_mlp", ("separated", "original"), root, config)
    return run, inputs


def test_every_variant_has_fold_models_and_the_fold_ensemble_scores_the_holdout(trained):
    run, inputs = trained
    assert set(run.models.variants) == {"separated", "original"}
    predictions = run.predictions
    ensemble = predictions[predictions["fold"] == FOLD_ENSEMBLE]
    assert set(ensemble["split"]) == {"holdout"}
    assert ensemble.groupby("variant")["recording_id"].nunique().to_dict() == {"original": 6, "separated": 6}
    validation = predictions[predictions["split"] == "validation"]
    assert validation.groupby("variant")["recording_id"].nunique().to_dict() == {"original": 24, "separated": 24}
    assert set(run.histories["variant"]) == {"separated", "original"}
    assert run.models["original"].inputs == ARRAYS


def test_stored_fold_models_score_like_the_trained_ones(trained, tmp_path):
    run, _ = trained
    store = ModelStore(storage=Storage(root=str(tmp_path), catalog=str(tmp_path / "catalog.duckdb")))
    store.save("classifiers/mfcc_mlp", TrainedModel(run.models), "run-1")
    loaded = store.load("classifiers/mfcc_mlp").model
    assert isinstance(loaded, VariantModels) and loaded.model == "mfcc_mlp"
    batch = {"mfcc": np.random.default_rng(1).normal(0, 1, (4, 13)).astype(np.float32)}
    for variant in ("original", "separated"):
        assert np.allclose(loaded[variant].probability(batch), run.models[variant].probability(batch))
    assert loaded["original"].preprocess == PreprocessConfig()
    with pytest.raises(ClassificationError, match="not trained on"):
        loaded["other"]


def test_inputs_made_with_different_settings_are_refused(trained):
    _, inputs = trained
    mixed = inputs.copy()
    mixed.loc[0, INPUT_SETTINGS_COLUMN] = input_settings(InputArraysConfig(), PreprocessConfig())
    with pytest.raises(ClassificationError, match="different settings"):
        read_input_settings(mixed)
    assert read_input_settings(inputs.drop(columns=INPUT_SETTINGS_COLUMN)) == (InputArraysConfig(), PreprocessConfig())


def test_the_variants_must_be_distinct_and_at_least_one():
    with pytest.raises(ValueError):
        ClassifierVariants(variants=())
    with pytest.raises(ValueError):
        ClassifierVariants(variants=("original", "original"))


def _lodo_tables(root) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tables of :func:`_tables` spread over three datasets (a, b, c), and their leave-one-dataset-out splits."""
    inputs, folds = _tables(root)
    datasets = {f"r{number:02d}": "abc"[number % 3] for number in range(30)}
    inputs["dataset"] = inputs["recording_id"].map(datasets)
    folds["dataset"] = folds["recording_id"].map(datasets)
    recordings = folds.assign(
        covid_label=folds["label"].map({0: "negative", 1: "positive"}), content_hash=folds["recording_id"]
    )
    return inputs, folds, leave_one_dataset_out(recordings[list(REQUIRED_COLUMNS)]).table


def test_leave_one_dataset_out_scores_each_dataset_with_a_model_that_never_saw_it(tmp_path, monkeypatch):
    inputs, _, lodo = _lodo_tables(tmp_path)
    seen = []
    fit_folds = neural._fit_folds

    def spying(jobs, config, progress):
        seen.extend(jobs)
        return fit_folds(jobs, config, progress)

    monkeypatch.setattr(neural, "_fit_folds", spying)
    config = NeuralTrainingConfig(epochs=6, patience=3, batch_size=8, device="cpu")
    result = train_neural_lodo(inputs, lodo, "mfcc_mlp", "original", tmp_path, config)
    table = result.predictions
    assert result.skipped.empty
    assert sorted(table["split"].unique()) == ["lodo:a", "lodo:b", "lodo:c"]
    assert (table["fold"] == FOLD_ENSEMBLE).all() and (table["variant"] == "original").all()
    for split, rows in table.groupby("split"):
        assert set(rows["dataset"]) == {split.removeprefix("lodo:")}
        assert len(rows) == rows["recording_id"].nunique() == 10
    # the vectors each model trained or stopped on are exactly the other datasets' recordings
    original = inputs[inputs["variant"] == "original"]
    vector = {r.recording_id: np.load(tmp_path / r.mfcc_path).tobytes() for r in original.itertuples()}
    for (_, train, stop, _, _), dataset in zip(seen, "abc"):
        used = [row.tobytes() for part in (train, stop) for row in part[:][0]["mfcc"].numpy()]
        others = original.loc[original["dataset"] != dataset, "recording_id"]
        assert sorted(used) == sorted(vector[r] for r in others)
    assert binary_metrics(table["label"], table["probability"])["roc_auc"] > 0.8


def test_leave_one_dataset_out_says_why_a_dataset_was_not_tested(tmp_path):
    inputs, _, lodo = _lodo_tables(tmp_path)
    without_c = inputs[~(inputs["dataset"].eq("c") & inputs["variant"].eq("original"))]
    config = NeuralTrainingConfig(epochs=1, batch_size=8, device="cpu")
    result = train_neural_lodo(without_c, lodo, "mfcc_mlp", "original", tmp_path, config)
    assert result.skipped.to_dict("records") == [{"test_dataset": "c", "reason": "no_inputs"}]
    assert sorted(result.predictions["split"].unique()) == ["lodo:a", "lodo:b"]


def test_the_classifier_run_adds_lodo_rows_beside_the_fold_ensemble(tmp_path):
    inputs, folds, lodo = _lodo_tables(tmp_path)
    config = NeuralTrainingConfig(epochs=2, batch_size=8, device="cpu")
    calls = []
    run = train_classifier(
        inputs, folds, "mfcc_mlp", ("separated", "original"), tmp_path, config, lambda d, t: calls.append((d, t)), lodo
    )
    lodo_rows = run.predictions[run.predictions["split"].str.startswith("lodo:")]
    assert lodo_rows.groupby("variant")["split"].nunique().to_dict() == {"original": 3, "separated": 3}
    ensemble = run.predictions[
        run.predictions["fold"].eq(FOLD_ENSEMBLE) & ~run.predictions["split"].str.startswith("lodo:")
    ]
    assert set(ensemble["split"]) == {"holdout"} and len(ensemble) == 12
    assert run.lodo_skipped.empty
    # progress counts every variant's CV and leave-one-dataset-out epochs, and ends at its total
    assert calls[-1][0] == calls[-1][1] == 2 * (5 + 3) * 2
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
