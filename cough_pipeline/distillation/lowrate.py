"""Audio as a low-rate microphone would record it, brought back to the front end's rate.

A microphone sampling at 1–2 kHz keeps only the band below half its rate. :func:`to_low_rate` simulates it on
16 kHz audio: an anti-aliased down-sampling to the target rate (soxr's high-quality resampler, whose low-pass stops
at the new Nyquist frequency, so nothing above it folds back into the band), then an up-sampling back to the
original rate, so the same log-mel front end applies and the lost band stays empty. soxr compensates its filters'
delay, so the low-rate clip stays aligned with the original. Clips are resampled one at a time: soxr is faster on
one contiguous channel than on many interleaved ones.
"""

from __future__ import annotations

import numpy as np
import soxr

#: soxr's quality recipe: "HQ" is a linear-phase filter with about 120 dB of stop-band rejection.
QUALITY = "HQ"


class LowRateError(ValueError):
    """Raised for a target rate the transform cannot produce (not positive, or not below the input rate)."""


def check_rates(sample_rate: int, target_rate: int) -> None:
    if sample_rate <= 0 or target_rate <= 0:
        raise LowRateError(f"sample rates must be positive, got {sample_rate} and {target_rate}")
    if target_rate >= sample_rate:
        raise LowRateError(f"the target rate {target_rate} Hz must be below the input rate {sample_rate} Hz")


def down_sample(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``audio`` (..., samples) at ``target_rate``, anti-aliased; float32."""
    check_rates(sample_rate, target_rate)
    return _resample(np.asarray(audio, dtype=np.float32), sample_rate, target_rate)


def _resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Each row of ``audio`` (..., samples) from ``rate`` to ``target_rate``, float32."""
    rows = audio.reshape(-1, audio.shape[-1])
    if len(rows) == 0:
        return np.zeros((*audio.shape[:-1], round(audio.shape[-1] * target_rate / rate)), np.float32)
    out = np.stack([soxr.resample(np.ascontiguousarray(row), rate, target_rate, quality=QUALITY) for row in rows])
    return out.reshape(*audio.shape[:-1], out.shape[-1]).astype(np.float32, copy=False)


def to_low_rate(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``audio`` (..., samples) as recorded at ``target_rate`` and up-sampled back to ``sample_rate``: same shape,
    float32, no energy above ``target_rate / 2`` beyond the filters' stop-band leakage."""
    low = down_sample(audio, sample_rate, target_rate)
    back = _resample(low, target_rate, sample_rate)
    samples = np.shape(audio)[-1]
    if back.shape[-1] < samples:  # rounding of the two length changes: pad the last few samples with silence
        back = np.pad(back, [(0, 0)] * (back.ndim - 1) + [(0, samples - back.shape[-1])])
    return back[..., :samples].astype(np.float32, copy=False)
