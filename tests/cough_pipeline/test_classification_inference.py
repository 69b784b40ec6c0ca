"""The fast inference path of the neural classifiers: every backend gives the eager probabilities (within 1e-4) for
the CNNs and the Cough2COVID19 family, alone and as a fold ensemble; it is a snapshot of the weights; a named
backend that cannot be built is an error while ``"auto"`` falls back; and FoldModels caches one predictor."""

from __future__ import annotations

import copy
import importlib.util
import pickle

import numpy as np
import pytest
import torch

import cough_pipeline.classification.inference as inference
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.fold_models import FoldModels
from cough_pipeline.classification.inference import TOLERANCE, InferenceModel, fold_batch_norms
from cough_pipeline.classification.networks import NetworkConfig, NeuralClassifier, positive_probability

#: A small log-mel patch keeps the exports quick (the CNNs take any patch size).
LOGMEL = (32, 48)
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _trained_like(name: str, seed: int = 0) -> NeuralClassifier:
    """A classifier in eval mode whose batch norms hold statistics away from their initial 0/1 (as trained) and
    whose last layer is scaled to logits of unit spread, so the probabilities are away from 0 and 1."""
    torch.manual_seed(seed)
    model = NeuralClassifier(NetworkConfig(name=name, image_shape=(16, 24))).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.8, 1.25)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.2, 0.2)
        logits = model({k: torch.from_numpy(v) for k, v in _batch(model, size=16, seed=seed + 10).items()})
        spread = (logits[:, 1] - logits[:, 0]) if logits.shape[1] == 2 else logits[:, 0]
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight /= float(spread.pow(2).mean().sqrt())
        last.bias.zero_()
    return model


def _batch(model: NeuralClassifier, size: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"logmel": LOGMEL, "spectrogram": (16, 24), "mfcc": (39,), "chroma": (12,)}
    return {kind: rng.standard_normal((size, *shapes[kind])).astype(np.float32) for kind in model.inputs}


def _eager(models: list[NeuralClassifier], batch: dict[str, np.ndarray]) -> torch.Tensor:
    tensors = {kind: torch.from_numpy(array) for kind, array in batch.items()}
    return torch.stack([positive_probability(m, tensors) for m in models]).mean(dim=0)


BACKENDS = ["torch", "eager"] + (["onnxruntime"] if HAS_ORT else [])


@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv3_small", "efficientnet_lite0", "cough2covid19"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_gives_the_eager_probabilities(name, backend):
    model = _trained_like(name)
    batch = _batch(model)
    predictor = InferenceModel.from_classifier(model, {k: v[:1] for k, v in batch.items()}, backend=backend)
    assert predictor.backend == backend
    found = predictor(batch)
    assert found.shape == (5,) and found.dtype == torch.float32 and ((found > 0.01) & (found < 0.99)).any()
    torch.testing.assert_close(found, _eager([model], batch), rtol=0, atol=TOLERANCE)
    single = torch.cat([predictor({k: v[i : i + 1] for k, v in batch.items()}) for i in range(5)])
    torch.testing.assert_close(single, found, rtol=0, atol=1e-5)  # batch sizes may pick other kernels


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime or onnx is not installed")
def test_auto_picks_onnx_runtime_on_the_cpu_and_the_ensemble_is_the_mean_of_the_fold_models():
    models = [_trained_like("mobilenetv3_small", seed) for seed in range(3)]
    batch = _batch(models[0], size=4)
    predictor = InferenceModel.from_classifiers(models, batch)
    assert predictor.backend == "onnxruntime"
    torch.testing.assert_close(predictor(batch), _eager(models, batch), rtol=0, atol=TOLERANCE)


def test_the_predictor_is_a_snapshot_and_other_shapes_get_their_own():
    model = _trained_like("mfcc_mlp")
    batch = _batch(model)
    predictor = InferenceModel.from_classifier(model, batch)
    before = predictor(batch)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    torch.testing.assert_close(predictor(batch), before)
    model.train()  # the caller's mode plays no part either
    cnn = _trained_like("mobilenetv3_small")
    predictor = InferenceModel.from_classifier(cnn, {"logmel": np.zeros((1, *LOGMEL), np.float32)})
    wider = np.random.default_rng(2).standard_normal((2, 32, 64)).astype(np.float32)
    torch.testing.assert_close(predictor({"logmel": wider}), _eager([cnn], {"logmel": wider}), rtol=0, atol=TOLERANCE)
    assert predictor({"logmel": wider[:0]}).shape == (0,)


def test_a_named_backend_that_fails_is_an_error_and_auto_falls_back(monkeypatch):
    model = _trained_like("mobilenetv3_small")
    batch = _batch(model, size=2)

    def broken(predictor, example):
        raise RuntimeError("no runtime here")

    monkeypatch.setitem(inference._BUILDERS, "onnxruntime", broken)
    with pytest.raises(ClassificationError, match="onnxruntime.*no runtime here"):
        InferenceModel.from_classifier(model, batch, backend="onnxruntime")
    predictor = InferenceModel.from_classifier(model, batch)
    assert predictor.backend == "torch"
    monkeypatch.setitem(inference._BUILDERS, "torch", lambda predictor, example: lambda tensors: torch.zeros(2) + 2)
    predictor = InferenceModel.from_classifier(model, batch)  # a backend that gives other numbers is not used
    assert predictor.backend == "eager"
    torch.testing.assert_close(predictor(batch), _eager([model], batch), rtol=0, atol=0)
    with pytest.raises(ClassificationError, match="the batch lacks"):
        predictor({"mfcc": np.zeros((1, 39), np.float32)})


def test_folding_batch_norms_keeps_the_outputs_and_removes_their_pass():
    network = _trained_like("efficientnet_lite0").network
    images = torch.randn(3, 1, *LOGMEL)
    with torch.no_grad():
        expected = network(images)
        folded = fold_batch_norms(network)
        found = folded(images)
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_fold_models_score_through_one_cached_predictor_that_is_never_saved(tmp_path):
    models = [_trained_like("mobilenetv3_small", seed) for seed in range(2)]
    stored = FoldModels("mobilenetv3_small", "original", [0, 1], models)
    batch = _batch(models[0], size=3)
    first = stored.probability(batch)
    predictor = stored._predictor
    assert first.dtype == np.float64 and first.shape == (3,)
    np.testing.assert_allclose(first, _eager(models, batch).numpy(), atol=TOLERANCE)
    np.testing.assert_array_equal(stored.probability(batch), first)
    assert stored._predictor is predictor
    assert copy.deepcopy(stored)._predictor is None and pickle.loads(pickle.dumps(stored))._predictor is None
    loaded = FoldModels.load(stored.save(tmp_path / "models"))
    assert loaded._predictor is None and not list((tmp_path / "models").rglob("*.onnx"))
    np.testing.assert_allclose(loaded.probability(batch), first, atol=1e-6)
