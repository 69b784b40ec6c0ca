"""Cached mel filter banks, shared by every stage that turns a power spectrogram into mel bands."""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np


@lru_cache(maxsize=32)
def mel_basis(
    sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """librosa's Slaney mel filter bank ``(n_mels, n_fft // 2 + 1)`` from ``fmin`` to ``fmax`` (None: Nyquist),
    float32 and read-only: built once per setting, not once per clip."""
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    basis.setflags(write=False)
    return basis
