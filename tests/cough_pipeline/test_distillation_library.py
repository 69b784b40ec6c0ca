"""The low-rate transform and the distillation loss."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cough_pipeline.distillation.loss import distillation_loss
from cough_pipeline.distillation.lowrate import LowRateError, down_sample, to_low_rate
from cough_pipeline.distillation.report import generation_gains, spread_reading

RATE = 16_000


def tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return np.sin(2 * np.pi * frequency * t).astype(np.float32)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(len(audio), 1 / RATE)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


@pytest.mark.parametrize("target", [1_000, 2_000])
def test_the_low_rate_transform_keeps_the_band_below_half_the_target_rate_and_empties_the_rest(target):
    kept, removed = tone(target / 4), tone(target * 0.75) + tone(3_000)
    audio = kept + removed
    low = to_low_rate(audio, RATE, target)
    assert low.shape == audio.shape and low.dtype == np.float32
    inner = slice(RATE // 10, -RATE // 10)  # away from the filters' edge transients
    assert band_energy(low[inner], target / 2, RATE / 2) < 1e-4 * band_energy(audio[inner], target / 2, RATE / 2)
    np.testing.assert_allclose(low[inner], kept[inner], atol=0.02)
    # anti-aliased: the 3 kHz tone does not fold back into the kept band
    assert band_energy(low[inner], 0, target / 2) == pytest.approx(band_energy(kept[inner], 0, target / 2), rel=0.01)


def test_down_sampling_gives_the_target_rates_length_and_rejects_impossible_rates():
    assert down_sample(tone(100, 5.0), RATE, 1_000).shape == (5_000,)
    assert to_low_rate(np.zeros((3, 16_001), np.float32), RATE, 2_000).shape == (3, 16_001)
    with pytest.raises(LowRateError, match="must be below the input rate"):
        to_low_rate(tone(100), RATE, RATE)
    with pytest.raises(LowRateError, match="positive"):
        down_sample(tone(100), RATE, 0)


def test_the_loss_equals_its_formula_computed_by_hand():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    teacher = torch.tensor([[1.0, 1.5, 0.0], [-0.5, 2.0, 0.5]])
    labels = torch.tensor([0, 2])
    alpha, temperature = 0.3, 4.0

    def softmax(row, t=1.0):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    ce = -sum(math.log(softmax(s)[y]) for s, y in zip(student.tolist(), labels.tolist())) / 2
    kl = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p_t, p_s = softmax(t, temperature), softmax(s, temperature)
        kl += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = alpha * ce + (1 - alpha) * temperature**2 * kl / 2
    assert distillation_loss(student, labels, teacher, alpha, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_no_gradient_reaches_the_teacher_and_alpha_one_is_plain_cross_entropy():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    distillation_loss(student, labels, teacher, 0.5, 2.0).backward()
    assert student.grad is not None and teacher.grad is None
    plain = torch.nn.functional.cross_entropy(student, labels)
    assert distillation_loss(student, labels, teacher, 1.0, 3.0).item() == pytest.approx(plain.item())
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(student, labels, teacher, 1.5, 2.0)


def test_cnn14_has_the_published_parameter_count_and_maps_log_mel_to_logits():
    from cough_pipeline.distillation.cnn14 import Cnn14

    assert sum(p.numel() for p in Cnn14(classes=527).parameters()) == 80_753_615
    model = Cnn14(classes=50).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 101, 64))  # one second at a 160-sample hop
    assert logits.shape == (2, 50) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="64 mel bins"):
        model(torch.randn(1, 1, 101, 128))


def test_a_panns_checkpoint_loads_into_cnn14_keeping_a_head_of_another_size(tmp_path):
    from cough_pipeline.classification.errors import ClassificationError
    from cough_pipeline.classification.networks import NetworkConfig, NeuralClassifier
    from cough_pipeline.distillation.cnn14 import Cnn14

    audioset = Cnn14(classes=527)
    state = {}
    for key, tensor in audioset.state_dict().items():
        for k in range(6):
            key = key.replace(f"blocks.{k}.", f"conv_block{k + 1}.")
        state[key.replace("classifier.", "fc_audioset.")] = tensor
    state["logmel_extractor.melW"] = torch.zeros(1025, 64)  # the waveform front end PANNs ships: ignored
    torch.save({"model": state, "iteration": 660000}, tmp_path / "Cnn14.pth")
    model = NeuralClassifier(NetworkConfig(name="cnn14", classes=50), weights=str(tmp_path / "Cnn14.pth"))
    loaded = model.network.cnn14
    assert torch.equal(loaded.blocks[3].conv2.weight, audioset.blocks[3].conv2.weight)
    assert torch.equal(loaded.fc1.weight, audioset.fc1.weight)
    assert loaded.classifier.weight.shape == (50, 2048)  # AudioSet's 527-class head is not this task's
    del state["conv_block6.conv1.weight"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(ClassificationError, match="does not fit CNN14"):
        NeuralClassifier(NetworkConfig(name="cnn14", classes=50), weights=str(tmp_path / "broken.pth"))


def test_the_report_pairs_students_with_fine_tuned_and_third_generations_with_their_teachers():
    by_strategy = {
        "fine_tuned": [0.1, 0.2, 0.3],
        "basd": [0.15, 0.2, 0.25],
        "basd_g3": [0.35, 0.4, 0.45],
        "cssd": [0.1, 0.1, 0.4],
    }
    scores = pd.DataFrame(
        [
            {
                "task": "esc50",
                "model": "m",
                "rate": 1_000,
                "metric": "macro_accuracy",
                "strategy": s,
                "fold": f,
                "value": v,
            }
            for s, values in by_strategy.items()
            for f, v in enumerate(values)
        ]
    )
    spread = spread_reading(scores).set_index("strategy")
    assert spread.loc["basd", "mean_difference"] == pytest.approx(0.0)
    assert spread.loc["basd", "folds_better"] == 1 and spread.loc["basd", "baseline_sd"] == pytest.approx(0.1)
    assert spread.loc["basd_g3", "exceeds_spread"] and not spread.loc["cssd", "exceeds_spread"]
    gains = generation_gains(scores)
    assert gains[["strategy", "baseline"]].values.tolist() == [["basd_g3", "basd"]]  # no cssd_g3: no cssd row
    assert gains.loc[0, "mean_difference"] == pytest.approx(0.2) and gains.loc[0, "sd_difference"] == pytest.approx(0)
    assert gains.loc[0, "baseline_sd"] == pytest.approx(0.05) and gains.loc[0, "folds_better"] == 3
    assert bool(gains.loc[0, "exceeds_spread"])
    assert generation_gains(scores[scores["strategy"] != "basd_g3"]).empty
