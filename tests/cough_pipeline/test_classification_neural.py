"""Per-fold training of the neural classifiers on tiny synthetic input arrays: it learns a separable task, keeps the
lowest-validation-loss epoch, stops early, masks training images only, repeats itself for one seed and writes
predictions in the shared schema."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import cough_pipeline.classification.neural as neural
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import PREDICTION_COLUMNS, check_predictions
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.networks import NeuralClassifier
from cough_pipeline.classification.neural import (
    InputArrays,
    NeuralTrainingConfig,
    evaluate_loss,
    plan_fold_workers,
    predict,
    spec_augment,
    train_fold,
    train_neural,
    training_memory_bytes,
)

#: Small images keep every test at a few seconds: (rows, columns) of the log-mel patch and the spectrogram image.
LOGMEL, IMAGE = (16, 32), (16, 24)
FAST = NeuralTrainingConfig(batch_size=16, epochs=4, patience=4, learning_rate=3e-3, num_threads=1)


def _tables(root, n_participants: int = 30, shift: float = 1.5, random_labels: bool = False, seed: int = 0):
    """Two recordings per participant, written as ``.npy`` arrays under ``root``: positives have their first five
    MFCCs and chroma bins shifted up by ``shift`` (down for negatives) and a brighter low band in both images.
    ``random_labels``: labels drawn independently of the arrays (nothing to learn)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_participants):
        positive = rng.random() < 0.5 if random_labels else p % 2 == 0
        sign = 1.0 if (p % 2 == 0) else -1.0
        for r in range(2):
            arrays = {
                "mfcc": rng.normal(size=39),
                "chroma": rng.normal(size=12),
                "logmel": rng.normal(size=LOGMEL),
                "spectrogram": rng.uniform(size=IMAGE),
            }
            arrays["mfcc"][:5] += sign * shift
            arrays["chroma"][:5] += sign * shift
            arrays["logmel"][:4] += sign * shift
            arrays["spectrogram"][:4] += sign * shift / 4
            row = {
                "recording_id": f"demo:p{p}-r{r}",
                "participant_id": f"demo:p{p}",
                "dataset": "demo",
                "covid_label": "positive" if positive else "negative",
                "variant": "original",
                "content_hash": f"hash-{p}-{r}",
            }
            for kind, array in arrays.items():
                np.save(root / f"{p}-{r}.{kind}.npy", array.astype(np.float32))
                row[f"{kind}_path"] = f"{p}-{r}.{kind}.npy"
            rows.append(row)
    inputs = pd.DataFrame(rows)
    folds = assign_folds(inputs, FoldConfig(n_folds=3, holdout_fraction=0.25, seed=0))
    return inputs.drop(columns="content_hash"), folds


def _fold_rows(inputs, folds, k: int):
    frame = folds[["recording_id", "label", "split", "fold"]].merge(inputs, on="recording_id")
    cv = frame[frame["split"] == "cv"]
    return cv[cv["fold"] != k], cv[cv["fold"] == k], frame[frame["split"] == "holdout"]


@pytest.mark.parametrize("name", ["mfcc_mlp", "cough2covid19"])
def test_a_separable_task_is_learned_and_predicted_in_the_schema(name, tmp_path):
    inputs, folds = _tables(tmp_path)
    calls = []
    result = train_neural(inputs, folds, name, "original", tmp_path, FAST, progress=lambda *a: calls.append(a))
    predictions = result.predictions
    check_predictions(predictions)
    assert list(predictions.columns) == list(PREDICTION_COLUMNS) and set(predictions["model"]) == {name}
    validation = predictions[predictions["split"] == "validation"].merge(folds, on="recording_id")
    assert validation["recording_id"].is_unique and len(validation) == (folds["split"] == "cv").sum()
    assert (validation["fold_x"] == validation["fold_y"]).all()
    assert (validation["label_x"] == validation["label_y"]).all()
    holdout = predictions[predictions["split"] == "holdout"]
    assert len(holdout) == 3 * (folds["split"] == "holdout").sum() and sorted(holdout["fold"].unique()) == [0, 1, 2]
    ensemble = holdout.groupby("recording_id").agg(probability=("probability", "mean"), label=("label", "first"))
    assert roc_auc_score(ensemble["label"], ensemble["probability"]) > 0.9
    assert [m.fold for m in result.models] == [0, 1, 2]
    assert set(result.histories.groupby("fold")["best"].sum()) == {1}
    assert calls[-1] == (12, 12) and [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_fold_models_save_and_load_with_the_same_predictions(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=20)
    config = NeuralTrainingConfig(batch_size=16, epochs=1, patience=1, num_threads=1)
    result = train_neural(inputs, folds, "chroma_mlp", "original", tmp_path, config)
    folders = result.save(tmp_path / "models")
    loaded = NeuralClassifier.load(folders[1])
    assert loaded.metadata["fold"] == 1 and loaded.metadata["variant"] == "original"
    _, validation_rows, _ = _fold_rows(inputs, folds, 1)
    data = InputArrays(validation_rows, tmp_path, ("chroma",))
    np.testing.assert_array_equal(predict(loaded, data), predict(result.models[1].model, data))


def test_the_kept_model_is_the_lowest_validation_loss_epoch_and_training_stops_early(tmp_path):
    inputs, folds = _tables(tmp_path, random_labels=True)  # nothing to learn: the validation loss soon rises
    train_rows, validation_rows, _ = _fold_rows(inputs, folds, 0)
    config = NeuralTrainingConfig(batch_size=8, epochs=30, patience=3, learning_rate=1e-2, num_threads=1)
    fold_model = train_fold("mfcc_mlp", train_rows, validation_rows, tmp_path, config)
    losses = [record["val_loss"] for record in fold_model.history]
    assert fold_model.fold == 0 and fold_model.best_epoch == int(np.argmin(losses)) + 1
    assert fold_model.best_epoch < len(losses) == fold_model.best_epoch + 3 < 30  # stopped 3 epochs after the best
    validation = InputArrays(validation_rows, tmp_path, ("mfcc",))
    kept = evaluate_loss(fold_model.model, validation)
    assert kept == pytest.approx(fold_model.best_val_loss, rel=1e-5)


def test_a_cnn_trains_on_log_mel_patches(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=16)
    train_rows, validation_rows, holdout_rows = _fold_rows(inputs, folds, 1)
    config = NeuralTrainingConfig(batch_size=8, epochs=1, patience=1, num_threads=1)
    fold_model = train_fold("mobilenetv3_small", train_rows, validation_rows, tmp_path, config)
    assert fold_model.model.output == "softmax2" and len(fold_model.history) == 1 and not fold_model.model.training
    probability = predict(fold_model.model, InputArrays(holdout_rows, tmp_path, ("logmel",)))
    assert probability.shape == (len(holdout_rows),) and np.isfinite(probability).all()
    assert ((probability >= 0) & (probability <= 1)).all() and np.ptp(probability) > 0


def test_spec_augment_masks_one_band_and_one_span_per_example_with_its_mean():
    images = torch.arange(4 * 20 * 30, dtype=torch.float32).reshape(4, 1, 20, 30)
    before = images.clone()
    masked = spec_augment(images, torch.Generator().manual_seed(1), max_frequency=0.2, max_time=0.3)
    assert torch.equal(images, before)
    again = spec_augment(images, torch.Generator().manual_seed(1), max_frequency=0.2, max_time=0.3)
    assert torch.equal(masked, again)
    changed = masked != images
    for example in range(4):
        rows = changed[example, 0].all(dim=1).sum()
        columns = changed[example, 0].all(dim=0).sum()
        assert rows <= 4 and columns <= 9  # 0.2 x 20 rows, 0.3 x 30 columns
        assert torch.allclose(masked[example][changed[example]], images[example].mean())
    assert changed.any() and not torch.equal(changed[0], changed[1])


def test_augmentation_only_ever_sees_training_images(tmp_path, monkeypatch):
    inputs, folds = _tables(tmp_path, n_participants=20)
    owner = {}
    for row in inputs.itertuples():
        owner[np.load(tmp_path / row.spectrogram_path).tobytes()] = row.recording_id
    seen = []

    def spy(images, *args, **kwargs):
        seen.extend(owner[image[0].numpy().tobytes()] for image in images)
        return spec_augment(images, *args, **kwargs)

    monkeypatch.setattr(neural, "spec_augment", spy)
    train_rows, validation_rows, holdout_rows = _fold_rows(inputs, folds, 2)
    config = NeuralTrainingConfig(batch_size=8, epochs=2, patience=2, num_threads=1)
    train_fold("spectrogram_cnn", train_rows, validation_rows, tmp_path, config)
    assert set(seen) == set(train_rows["recording_id"])
    assert len(seen) == 2 * (len(train_rows) - (len(train_rows) % 8 == 1))  # two epochs; a lone last row is dropped
    seen.clear()
    train_neural(inputs, folds, "cough2covid19", "original", tmp_path, config)
    assert seen and not set(seen) & set(holdout_rows["recording_id"])
    seen.clear()
    train_fold("spectrogram_cnn", train_rows, validation_rows, tmp_path, replace(config, spec_augment=False))
    assert not seen


def test_one_seed_gives_the_same_predictions_and_leaves_the_callers_state_alone(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=16)
    config = NeuralTrainingConfig(batch_size=8, epochs=2, patience=2, num_threads=1)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    first = train_neural(inputs, folds, "spectrogram_cnn", "original", tmp_path, config)
    assert torch.equal(torch.rand(1), expected) and torch.get_num_threads() == threads
    torch.manual_seed(999)  # the caller's random state plays no part
    again = train_neural(inputs, folds, "spectrogram_cnn", "original", tmp_path, config)
    pd.testing.assert_frame_equal(first.predictions, again.predictions)
    other = train_neural(inputs, folds, "spectrogram_cnn", "original", tmp_path, replace(config, seed=1))
    assert not np.allclose(other.predictions["probability"], first.predictions["probability"])


def test_bad_inputs_are_clear_errors(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=12)
    with pytest.raises(ClassificationError, match="no separated inputs"):
        train_neural(inputs, folds, "mfcc_mlp", "separated", tmp_path, FAST)
    with pytest.raises(ClassificationError, match="unknown neural model"):
        train_neural(inputs, folds, "resnet", "original", tmp_path, FAST)
    with pytest.raises(ClassificationError, match="missing columns"):
        train_neural(inputs.drop(columns="chroma_path"), folds, "chroma_mlp", "original", tmp_path, FAST)
    (tmp_path / inputs["mfcc_path"].iloc[3]).unlink()
    with pytest.raises(ClassificationError, match="mfcc array .* is unreadable"):
        train_neural(inputs, folds, "mfcc_mlp", "original", tmp_path, FAST)
    train_rows, validation_rows, _ = _fold_rows(inputs, folds, 0)
    negatives = train_rows[train_rows["label"] == 0]
    with pytest.raises(ClassificationError, match="need 0 and 1"):
        train_fold("chroma_mlp", negatives, validation_rows, tmp_path, FAST)
    with pytest.raises(ValueError, match="max_time_mask"):
        NeuralTrainingConfig(max_time_mask=1.5)


# --- the faster training and prediction paths ---------------------------------------------------------------------


def test_fold_workers_train_the_same_fold_models_as_one_after_the_other(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=16)
    config = NeuralTrainingConfig(batch_size=8, epochs=2, patience=2, num_threads=1)
    calls = []
    alone = train_neural(inputs, folds, "mfcc_mlp", "original", tmp_path, config)
    together = train_neural(
        inputs, folds, "mfcc_mlp", "original", tmp_path, replace(config, fold_workers=2), lambda *a: calls.append(a)
    )
    pd.testing.assert_frame_equal(together.predictions, alone.predictions)
    pd.testing.assert_frame_equal(together.histories.drop(columns="seconds"), alone.histories.drop(columns="seconds"))
    assert [m.best_epoch for m in together.models] == [m.best_epoch for m in alone.models]
    assert calls == [(2, 6), (4, 6), (6, 6)]


def test_channels_last_cnn_training_repeats_itself_and_only_reorders_float_sums(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=16)
    train_rows, validation_rows, holdout_rows = _fold_rows(inputs, folds, 1)
    config = NeuralTrainingConfig(batch_size=8, epochs=1, patience=1, num_threads=1)
    holdout = InputArrays(holdout_rows, tmp_path, ("logmel",))
    runs = [
        train_fold("mobilenetv3_small", train_rows, validation_rows, tmp_path, replace(config, channels_last=flag))
        for flag in (True, True, False)
    ]
    first, again, plain = (predict(run.model, holdout) for run in runs)
    np.testing.assert_array_equal(first, again)
    # Adam's normalised steps carry the last-digit differences of reordered sums forward: close, not equal.
    np.testing.assert_allclose(first, plain, atol=1e-2)
    assert runs[0].history[0]["val_loss"] == pytest.approx(runs[2].history[0]["val_loss"], rel=1e-2)
    weight = next(p for p in runs[0].model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert weight.is_contiguous()  # stored in the default layout


def test_predict_by_the_fast_path_matches_the_model_itself(tmp_path):
    inputs, folds = _tables(tmp_path, n_participants=12)
    _, validation_rows, _ = _fold_rows(inputs, folds, 0)
    data = InputArrays(validation_rows, tmp_path, ("logmel",))
    torch.manual_seed(0)
    model = NeuralClassifier(neural.network_config("efficientnet_lite0", data)).eval()
    fast, eager = predict(model, data, batch_size=4), predict(model, data, backend="eager")
    np.testing.assert_allclose(fast, eager, atol=1e-4)
    assert model.training is False and fast.dtype == np.float64 and len(fast) == len(data)


def test_input_arrays_from_tensors_index_like_loaded_ones():
    images = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5)
    data = InputArrays.from_tensors({"logmel": images, "mfcc": torch.ones(3, 2)}, torch.tensor([0, 1, 1]))
    arrays, labels = data[[2, 0]]
    assert arrays["logmel"].shape == (2, 1, 4, 5) and torch.equal(arrays["logmel"][0, 0], images[2])
    assert labels.tolist() == [1.0, 0.0] and data.shape("logmel") == (4, 5) and len(data.subset([1])) == 1


def _images(count: int, shape=(64, 44)) -> InputArrays:
    return InputArrays.from_tensors({"logmel": torch.randn(count, *shape)}, torch.arange(count) % 2)


def test_the_training_memory_estimate_covers_what_autograd_keeps_for_the_backward_pass():
    data = _images(8)
    config = NeuralTrainingConfig(batch_size=8, channels_last=False)
    for name in ("mobilenetv3_small", "mobilenetv2"):
        torch.manual_seed(0)
        model = NeuralClassifier(neural.network_config(name, data, 0.3)).train()
        kept, weights = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}

        def keep(tensor, kept=kept, weights=weights):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:  # the activations, not the weights the convolutions keep
                kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            model(data[torch.arange(8)][0]).sum()
        parameters = 4 * sum(p.numel() * 4 for p in model.parameters())
        estimate = training_memory_bytes(name, data, config) - parameters
        assert sum(kept.values()) <= estimate <= 2 * sum(kept.values()), name
    # a half batch is scaled up to the configured batch size
    assert training_memory_bytes("mobilenetv2", _images(4), config) == pytest.approx(
        training_memory_bytes("mobilenetv2", data, config), rel=0.02
    )


def test_the_fold_worker_plan_uses_the_cores_only_when_folds_are_long_and_memory_allows(monkeypatch):
    monkeypatch.setattr(neural.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    long, short = _images(64), _images(16)
    config = NeuralTrainingConfig(batch_size=8, epochs=40, num_threads=2, device="cpu")
    jobs = [("mobilenetv3_small", long, long, config, fold) for fold in range(5)]
    assert plan_fold_workers(jobs, config) == (2, 1)
    # explicit, too few steps per fold, one fold, too little memory, a single core
    assert plan_fold_workers(jobs, replace(config, fold_workers=3)) == (3, 2)
    assert plan_fold_workers(jobs, replace(config, epochs=2)) == (1, 2)
    assert plan_fold_workers([("mobilenetv3_small", short, short, config, 0)], config) == (1, 2)
    assert plan_fold_workers(jobs, replace(config, memory_budget_gb=0.5)) == (1, 2)
    assert plan_fold_workers(jobs, replace(config, num_threads=1)) == (1, 1)
    monkeypatch.setattr(neural.os, "sched_getaffinity", lambda _pid: {0})
    assert plan_fold_workers(jobs, config) == (1, 2)


def test_self_padding_depthwise_convolutions_give_the_same_gradients_and_are_undone():
    torch.manual_seed(0)
    model = NeuralClassifier(neural.network_config("mobilenetv3_small", _images(4, (128, 173)), 0.3)).train()
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(4, 1, 128, 173).contiguous(memory_format=torch.channels_last)
    types_before = [type(m) for m in model.modules()]

    def gradients():
        model.zero_grad()
        torch.manual_seed(1)
        model({"logmel": images}).logsumexp(1).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    with neural._self_padding_depthwise(model):
        swapped = [m for m in model.modules() if isinstance(m, neural._SelfPaddingDepthwiseConv)]
        padded = gradients()
    # every depthwise convolution is swapped, those over maps smaller than their kernel pad for themselves
    assert len(swapped) == sum(1 for m in types_before if m is torch.nn.Conv2d) - sum(
        1 for m in model.modules() if type(m) is torch.nn.Conv2d and m.groups == 1
    )
    for name, grad in plain.items():
        torch.testing.assert_close(padded[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert [type(m) for m in model.modules()] == types_before
