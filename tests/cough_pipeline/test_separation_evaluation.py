"""Separation scores on synthetic signals: BSSEval v4 via museval, SNR, per-clip and summary tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from cough_pipeline.separation.evaluation import (
    MIXTURE_BASELINE,
    bss_eval,
    evaluate_separation,
    model_separator,
    snr_db,
)
from cough_pipeline.separation.model import CoughSeparator, SeparatorConfig

SAMPLE_RATE = 16_000
SECONDS = 2.0


def synthetic_clip(seed: int, noise_gain: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mixture, cough, noise)`` float32 ``(samples,)``: a decaying noise burst at 0.5 s plus white noise."""
    rng = np.random.default_rng(seed)
    samples = int(SECONDS * SAMPLE_RATE)
    cough = np.zeros(samples)
    burst = int(0.3 * SAMPLE_RATE)
    start = int(0.5 * SAMPLE_RATE)
    cough[start : start + burst] = rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.05 * SAMPLE_RATE))
    noise = noise_gain * rng.standard_normal(samples)
    cough, noise = cough.astype(np.float32), noise.astype(np.float32)
    return cough + noise, cough, noise


def test_snr_matches_a_hand_computation():
    reference = np.array([1.0, -2.0, 3.0, 0.5])
    estimate = np.array([1.5, -2.0, 2.0, 0.5])
    expected = 10 * math.log10((1 + 4 + 9 + 0.25) / (0.25 + 0 + 1 + 0))
    assert snr_db(reference, estimate) == pytest.approx(expected)
    assert snr_db(reference, reference) == math.inf
    assert math.isnan(snr_db(np.zeros(4), estimate))


def test_perfect_estimate_scores_very_high():
    _, cough, noise = synthetic_clip(0)
    scores = bss_eval(cough, noise, cough, noise, SAMPLE_RATE)
    assert scores.reason is None
    assert scores.sdr > 100 and scores.sir > 100


def test_mixture_as_estimate_scores_the_input_snr():
    mixture, cough, noise = synthetic_clip(1)
    input_snr = snr_db(cough, mixture)
    scores = bss_eval(cough, noise, mixture, mixture - mixture, SAMPLE_RATE)
    assert scores.reason is None
    assert scores.sdr == pytest.approx(input_snr, abs=0.05)


def test_cough_scores_do_not_depend_on_the_noise_estimate():
    mixture, cough, noise = synthetic_clip(2)
    estimate = cough + 0.3 * noise
    with_true_noise = bss_eval(cough, noise, estimate, mixture - estimate, SAMPLE_RATE)
    with_silent_noise = bss_eval(cough, noise, estimate, np.zeros_like(estimate), SAMPLE_RATE)
    assert with_true_noise == with_silent_noise


def test_less_noise_in_the_estimate_scores_higher():
    _, cough, noise = synthetic_clip(3)
    scores = [
        bss_eval(cough, noise, cough + gain * noise, (1 - gain) * noise, SAMPLE_RATE).sdr for gain in (1.0, 0.3, 0.1)
    ]
    assert scores[0] < scores[1] < scores[2]


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (lambda m, c, n: (np.zeros_like(c), n, m, m - m), "silent_reference_cough"),
        (lambda m, c, n: (c, np.zeros_like(n), m, m - m), "silent_reference_noise"),
        (lambda m, c, n: (c, n, np.zeros_like(m), m), "silent_estimate"),
        (lambda m, c, n: (c, n, np.full_like(m, np.nan), m), "non_finite"),
    ],
)
def test_degenerate_clips_give_nan_with_a_reason(signals, reason):
    scores = bss_eval(*signals(*synthetic_clip(4)), SAMPLE_RATE)
    assert scores.reason == reason
    assert all(math.isnan(value) for value in (scores.sdr, scores.sir, scores.sar, scores.isr))


def test_windowed_scores_skip_windows_without_a_cough():
    _, cough, noise = synthetic_clip(5)
    cough[int(1.0 * SAMPLE_RATE) :] = 0.0  # windows after the burst: an exactly silent reference, scored NaN
    scores = bss_eval(cough, noise, cough + 0.1 * noise, 0.9 * noise, SAMPLE_RATE, window_seconds=0.5)
    assert scores.reason is None and math.isfinite(scores.sdr)


def test_mismatched_lengths_are_an_error():
    mixture, cough, noise = synthetic_clip(6)
    with pytest.raises(ValueError, match="one length"):
        bss_eval(cough, noise, mixture[:-1], mixture[:-1], SAMPLE_RATE)


def test_evaluate_separation_tables():
    clips = [synthetic_clip(seed) for seed in (10, 11, 12)]
    separators = {"half noise": lambda mixture: mixture - 0.5 * (mixture - _cough_of(mixture, clips))}
    per_clip, summary = evaluate_separation(clips, separators, sample_rate=SAMPLE_RATE)
    assert list(summary.index) == [MIXTURE_BASELINE, "half noise"]
    assert len(per_clip) == 6 and set(per_clip["clip"]) == {"0", "1", "2"}
    baseline = per_clip[per_clip["system"] == MIXTURE_BASELINE].set_index("clip")
    system = per_clip[per_clip["system"] == "half noise"].set_index("clip")
    for metric in ("sdr", "sir", "snr"):
        np.testing.assert_allclose(system[f"{metric}_improvement"], system[metric] - baseline[metric])
        np.testing.assert_allclose(baseline[f"{metric}_improvement"], 0.0)
    np.testing.assert_allclose(baseline["sdr"], baseline["snr"], atol=0.05)
    # halving the noise amplitude is a 6 dB SNR gain
    np.testing.assert_allclose(system["snr_improvement"], 20 * math.log10(2), atol=1e-3)
    assert summary.loc["half noise", "sdr_improvement_median"] == pytest.approx(system["sdr_improvement"].median())
    assert summary.loc["half noise", "scored"] == 3


def test_evaluate_separation_reports_a_silent_reference_without_crashing():
    _, cough, noise = synthetic_clip(13)
    per_clip, summary = evaluate_separation(
        [(noise, np.zeros_like(cough), noise), synthetic_clip(14)],
        {"identity": lambda wave: wave},
        sample_rate=SAMPLE_RATE,
    )
    silent = per_clip[per_clip["clip"] == "0"]
    assert set(silent["reason"]) == {"silent_reference_cough"} and silent["sdr"].isna().all()
    assert summary.loc["identity", "clips"] == 2 and summary.loc["identity", "scored"] == 1


def test_evaluate_separation_reads_paths(tmp_path):
    paths = []
    for name, signal in zip(("mixture", "cough", "noise"), synthetic_clip(15), strict=True):
        sf.write(tmp_path / f"{name}.wav", signal, SAMPLE_RATE, subtype="FLOAT")
        paths.append(tmp_path / f"{name}.wav")
    per_clip, _ = evaluate_separation([tuple(paths)], {}, sample_rate=SAMPLE_RATE)
    assert per_clip.loc[0, "clip"] == str(paths[0]) and per_clip.loc[0, "reason"] is None


def test_a_separator_returning_the_wrong_length_is_named():
    with pytest.raises(ValueError, match="'short'"):
        evaluate_separation([synthetic_clip(16)], {"short": lambda wave: wave[:-10]}, sample_rate=SAMPLE_RATE)


def test_a_model_scores_through_model_separator():
    torch.manual_seed(0)
    model = CoughSeparator(SeparatorConfig(sample_rate=SAMPLE_RATE, n_fft=256, hop_length=64, hidden_size=8))
    per_clip, _ = evaluate_separation(
        [synthetic_clip(17)], {"untrained": model_separator(model)}, sample_rate=SAMPLE_RATE
    )
    row = per_clip[per_clip["system"] == "untrained"].iloc[0]
    assert row["reason"] is None and np.isfinite(row["sdr"]) and np.isfinite(row["snr"])
    assert not model.training


def _cough_of(mixture: np.ndarray, clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The reference cough of the clip whose mixture this is (an oracle for a test separator)."""
    return next(cough for clip_mixture, cough, _ in clips if np.array_equal(clip_mixture, mixture))
