"""The neural classifiers: shapes and probabilities of every model, timm's parameter counts for one channel and two
classes, no-pickle round trips, and a local weights file loaded without any download."""

from __future__ import annotations

import json
import logging

import pytest
import timm
import torch

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.networks import (
    CNN_NAMES,
    MODEL_NAMES,
    MODELS,
    NetworkConfig,
    NeuralClassifier,
    build_cnn,
    positive_probability,
    probabilities,
)

#: The ``classification_inputs`` shapes of one example (images with their channel axis).
SHAPES = {"logmel": (1, 128, 173), "mfcc": (39,), "spectrogram": (1, 128, 40), "chroma": (12,)}


def _batch(kinds, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {kind: torch.randn(batch, *SHAPES[kind], generator=generator) for kind in kinds}


def test_the_registry_names_the_seven_models_with_their_inputs_and_outputs():
    assert MODEL_NAMES == (
        "mobilenetv2",
        "mobilenetv3_small",
        "efficientnet_lite0",
        "cough2covid19",
        "mfcc_mlp",
        "spectrogram_cnn",
        "chroma_mlp",
    )
    assert MODELS["cough2covid19"].inputs == ("mfcc", "spectrogram", "chroma")
    assert {name for name, spec in MODELS.items() if spec.output == "softmax2"} == set(CNN_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_a_batch_of_two_to_logits_and_probabilities(name):
    model = NeuralClassifier(NetworkConfig(name=name)).eval()
    batch = _batch(model.inputs)
    with torch.inference_mode():
        logits = model(batch)
    assert logits.shape == ((2, 2) if model.output == "softmax2" else (2, 1))
    probability = positive_probability(model, batch)
    assert probability.shape == (2,) and ((probability >= 0) & (probability <= 1)).all()
    torch.testing.assert_close(probability, probabilities(logits, model.output))


def test_the_ensemble_has_the_published_layer_sizes():
    model = NeuralClassifier(NetworkConfig(name="cough2covid19", dropout=0.2)).network
    linear = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # mfcc 39-512-256, spectrogram flatten (64 x 16 x 5) -> 256, chroma 12-512-256, head 768-64-64-1
    assert linear == [(39, 512), (512, 256), (64 * 16 * 5, 256), (12, 512), (512, 256), (768, 64), (64, 64), (64, 1)]
    convolutions = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions == [32, 64, 64]
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}


def test_probabilities_follow_the_output_kind_and_refuse_the_wrong_width():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(probabilities(logits, "softmax2"), torch.softmax(logits, dim=1)[:, 1])
    torch.testing.assert_close(probabilities(logits[:, :1], "logit1"), torch.sigmoid(logits[:, 0]))
    with pytest.raises(ClassificationError, match="logit1 logits must be"):
        probabilities(logits, "logit1")


def test_a_batch_missing_an_input_is_a_clear_error():
    model = NeuralClassifier(NetworkConfig(name="cough2covid19"))
    with pytest.raises(ClassificationError, match=r"lacks \['chroma'\]"):
        model(_batch(("mfcc", "spectrogram")))


@pytest.mark.parametrize("name", sorted(CNN_NAMES))
def test_cnn_parameter_counts_are_timms_for_one_channel_and_two_classes(name):
    reference = timm.create_model(CNN_NAMES[name], pretrained=False, in_chans=1, num_classes=2)
    ours = NeuralClassifier(NetworkConfig(name=name))
    assert ours.parameter_count() == sum(p.numel() for p in reference.parameters())
    assert ours.network.conv_stem.in_channels == 1


@pytest.mark.parametrize("name", ["mobilenetv3_small", "cough2covid19"])
def test_save_and_load_give_identical_outputs(name, tmp_path):
    config = NetworkConfig(name=name, dropout=0.25)
    model = NeuralClassifier(config)
    model.train()  # one training-mode pass moves the BatchNorm statistics away from their initial values
    model(_batch(model.inputs, batch=4, seed=1))
    model.eval()
    model.save(tmp_path / name, metadata={"fold": 2})
    loaded = NeuralClassifier.load(tmp_path / name)
    assert loaded.config == config and loaded.metadata == {"fold": 2} and not loaded.training
    card = json.loads((tmp_path / name / "classifier.json").read_text())
    assert card["parameters"] == model.parameter_count() and card["inputs"] == list(model.inputs)
    batch = _batch(model.inputs)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)


def test_load_refuses_a_foreign_card(tmp_path):
    NeuralClassifier(NetworkConfig(name="chroma_mlp")).save(tmp_path)
    card = json.loads((tmp_path / "classifier.json").read_text())
    (tmp_path / "classifier.json").write_text(json.dumps({**card, "format": "something/1"}))
    with pytest.raises(ClassificationError, match="not a neural classifier card"):
        NeuralClassifier.load(tmp_path)


def test_a_local_weights_file_gives_the_donors_outputs_without_a_download(tmp_path, monkeypatch, caplog):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", no_download)
    donor = build_cnn("mobilenetv3_small").eval()
    path = tmp_path / "donor.pth"
    torch.save(donor.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="timm"):
        model = NeuralClassifier(NetworkConfig(name="mobilenetv3_small"), weights=path).eval()
    assert "Loading pretrained weights from file" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]  # stem already 1-channel
    fresh = build_cnn("mobilenetv3_small").eval()
    (x,) = _batch(("logmel",)).values()
    with torch.inference_mode():
        torch.testing.assert_close(model({"logmel": x}), donor(x), rtol=0, atol=0)
        assert not torch.allclose(fresh(x), donor(x))


def test_three_channel_weights_with_another_head_keep_the_body_and_sum_the_stem(tmp_path):
    donor = timm.create_model("mobilenetv3_small_100", pretrained=False, in_chans=3, num_classes=10).eval()
    path = tmp_path / "rgb.pth"
    torch.save(donor.state_dict(), path)
    model = build_cnn("mobilenetv3_small", weights=path).eval()
    torch.testing.assert_close(model.conv_stem.weight, donor.conv_stem.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.blocks[0][0].conv_dw.weight, donor.blocks[0][0].conv_dw.weight)
    assert model.classifier.out_features == 2


def test_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(ClassificationError, match="does not exist"):
        build_cnn("mobilenetv3_small", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ClassificationError, match="not a readable state_dict"):
        build_cnn("mobilenetv3_small", weights=tmp_path / "junk.pth")
    torch.save(build_cnn("mobilenetv2").state_dict(), tmp_path / "other.pth")
    with pytest.raises(ClassificationError, match="does not fit"):
        build_cnn("mobilenetv3_small", weights=tmp_path / "other.pth")
    with pytest.raises(ClassificationError, match="no pretrained weights"):
        NeuralClassifier(NetworkConfig(name="mfcc_mlp"), weights=tmp_path / "other.pth")
