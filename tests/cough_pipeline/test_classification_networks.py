"""The neural classifiers: shapes, timm's parameter counts for one channel and two classes, no-pickle round trips,
and a local weights file loaded without any download."""

from __future__ import annotations

import pytest
import timm
import torch

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.networks import (
    CNN_NAMES,
    INPUTS,
    MODEL_NAMES,
    NetworkConfig,
    build,
    build_cnn,
    load,
    positive_probability,
    save,
)

SHAPES = {"logmel": (1, 128, 173), "mfcc": (39,), "spectrogram": (1, 128, 40), "chroma": (12,)}


def _inputs(name: str, batch: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, *SHAPES[kind], generator=generator) for kind in INPUTS[name]]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_its_inputs_to_logits_and_probabilities(name):
    config = NetworkConfig(name=name)
    model = build(config).eval()
    with torch.inference_mode():
        logits = model(*_inputs(name))
    assert logits.shape == (2, config.outputs)
    probability = positive_probability(logits)
    assert probability.shape == (2,) and ((probability >= 0) & (probability <= 1)).all()


@pytest.mark.parametrize("name", sorted(CNN_NAMES))
def test_cnn_parameter_counts_are_timms_for_one_channel_and_two_classes(name):
    reference = timm.create_model(CNN_NAMES[name], pretrained=False, in_chans=1, num_classes=2)
    ours = build_cnn(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", ["mobilenetv3_small", "cough2covid19"])
def test_save_and_load_give_identical_outputs(name, tmp_path):
    config = NetworkConfig(name=name)
    model = build(config).eval()
    save(model, config, tmp_path / name)
    loaded, loaded_config = load(tmp_path / name)
    assert loaded_config == config
    inputs = _inputs(name)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*inputs), model(*inputs))


def test_a_local_weights_file_is_loaded_without_a_download(tmp_path):
    donor = build_cnn("mobilenetv3_small").eval()
    path = tmp_path / "donor.pth"
    torch.save(donor.state_dict(), path)
    model = build_cnn("mobilenetv3_small", weights=path).eval()
    fresh = build_cnn("mobilenetv3_small").eval()
    (x,) = _inputs("mobilenetv3_small")
    with torch.inference_mode():
        # the body is the donor's; timm re-initialises the two-class head of a pretrained model
        torch.testing.assert_close(model.forward_features(x), donor.forward_features(x))
        assert not torch.allclose(fresh.forward_features(x), donor.forward_features(x))
    with pytest.raises(ClassificationError, match="does not exist"):
        build_cnn("mobilenetv3_small", weights=tmp_path / "missing.pth")
