"""Audio as a low-rate microphone would record it, brought back to the front end's rate.

A microphone sampling at 1–2 kHz keeps only the band below half its rate. :func:`to_low_rate` simulates it on
16 kHz audio: an anti-aliased down-sampling to the target rate (a polyphase FIR low-pass, so nothing above the new
Nyquist frequency folds back into the band), then an up-sampling back to the original rate, so the same log-mel
front end applies and the lost band stays empty.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly


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
    common = gcd(sample_rate, target_rate)
    low = resample_poly(np.asarray(audio, dtype=np.float32), target_rate // common, sample_rate // common, axis=-1)
    return low.astype(np.float32, copy=False)


def to_low_rate(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """``audio`` (..., samples) as recorded at ``target_rate`` and up-sampled back to ``sample_rate``: same shape,
    float32, no energy above ``target_rate / 2`` beyond the filters' stop-band leakage."""
    low = down_sample(audio, sample_rate, target_rate)
    common = gcd(sample_rate, target_rate)
    back = resample_poly(low, sample_rate // common, target_rate // common, axis=-1)
    samples = np.shape(audio)[-1]
    if back.shape[-1] < samples:  # rounding of the two length changes: pad the last few samples with silence
        back = np.pad(back, [(0, 0)] * (back.ndim - 1) + [(0, samples - back.shape[-1])])
    return back[..., :samples].astype(np.float32, copy=False)
