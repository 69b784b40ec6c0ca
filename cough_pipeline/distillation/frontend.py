"""The log-mel front end of the distillation stage (PANNs settings) and its paired 16 kHz / low-rate versions.

Every model of the stage reads the same ``(mels, frames)`` log-mel patch: a Hann-windowed STFT of the 16 kHz clip
(``window`` samples, ``hop`` apart, centred with reflect padding), the power spectrum through a Slaney mel bank from
``fmin`` to ``fmax``, then ``10·log10(max(power, 1e-10))`` divided by :data:`DB_SCALE`. A low-rate clip is first
brought back to 16 kHz (:func:`~cough_pipeline.distillation.lowrate.to_low_rate`), so the same front end and the
same network apply and the mel bins above the low rate's Nyquist frequency hold the floor.

:func:`log_mel_direct` computes the patch from the low-rate samples themselves, without the up-sampling: an STFT
whose window and hop are shorter by the rate ratio has the same bin spacing in Hz and the same frames, so the
16 kHz mel bank's first columns apply. It is cheaper; whether it changes a model's accuracy is measured by the
distillation experiment and its speed by ``make bench``.

Work is batched (:data:`BATCH` clips per STFT) with torch, so a stage's thousands of clips take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cough_pipeline.bounds import NonNegativeFloat, PositiveFloat, PositiveInt, check_fields
from cough_pipeline.distillation.lowrate import LowRateError, check_rates, down_sample, to_low_rate
from cough_pipeline.mel import mel_basis

#: Decibels per unit of the network input: the patch stays within about -5 (the -100 dB floor) and +3.
DB_SCALE = 20.0
#: The power floor before the logarithm (-100 dB).
POWER_FLOOR = 1e-10
#: Clips per STFT: a 16-clip batch's spectra stay in cache, and run twice as fast as a 64-clip batch's.
BATCH = 16


@dataclass(frozen=True)
class LogMelConfig:
    """PANNs-style log-mel settings.

    Args:
        sample_rate: the front end's rate; every clip is read (or brought back) at it.
        mels: mel bins.
        window: STFT window and FFT length, in samples.
        hop: samples between frames.
        fmin, fmax: the mel bank's band in Hz (``fmax`` at most half of ``sample_rate``).
    """

    sample_rate: PositiveInt = 16_000
    mels: PositiveInt = 64
    window: PositiveInt = 512
    hop: PositiveInt = 160
    fmin: NonNegativeFloat = 50.0
    fmax: PositiveFloat = 8_000.0

    def __post_init__(self):
        check_fields(self)
        if self.fmax > self.sample_rate / 2 or self.fmin >= self.fmax:
            raise ValueError(
                f"LogMelConfig needs fmin < fmax <= sample_rate / 2, got {self.fmin}, {self.fmax}, {self.sample_rate}"
            )

    def frames(self, samples: int) -> int:
        """Frames of a clip of ``samples`` samples (centred STFT)."""
        return 1 + samples // self.hop


def _power_spectra(audio: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """|STFT|² of ``(clips, samples)`` audio: ``(clips, window // 2 + 1, frames)``."""
    spectrum = torch.stft(
        audio,
        n_fft=window,
        hop_length=hop,
        window=torch.hann_window(window),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spectrum.real.square() + spectrum.imag.square()


def _scaled_db(mel_power: torch.Tensor) -> np.ndarray:
    return (10.0 * torch.log10(mel_power.clamp_min(POWER_FLOOR)) / DB_SCALE).numpy().astype(np.float32, copy=False)


def _mel_patches(audio: np.ndarray, basis: np.ndarray, window: int, hop: int, gain: float, batch: int) -> np.ndarray:
    """Scaled log-mel patches of ``(clips, samples)`` audio through ``basis`` (mels, window // 2 + 1), the power
    spectrum multiplied by ``gain`` (folded into the basis: the mel projection is linear); ``batch`` clips per STFT.
    Shape: -> ``(clips, mels, 1 + samples // hop)``."""
    basis = torch.from_numpy(np.ascontiguousarray(basis * gain, dtype=np.float32))
    out = np.empty((len(audio), len(basis), 1 + audio.shape[1] // hop), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(audio), batch):
            power = _power_spectra(torch.from_numpy(audio[start : start + batch]), window, hop)
            out[start : start + batch] = _scaled_db(torch.matmul(basis, power))
    return out


def _as_batch(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"expected audio of shape (clips, samples), got {audio.shape}")
    return audio


def log_mel(audio: np.ndarray, config: LogMelConfig = LogMelConfig(), batch: int = BATCH) -> np.ndarray:
    """The scaled log-mel patch of each clip.

    Shape:
        ``(clips, samples)`` at ``config.sample_rate`` -> ``(clips, mels, frames)``, float32.
    """
    basis = np.array(mel_basis(config.sample_rate, config.window, config.mels, config.fmin, config.fmax))
    return _mel_patches(_as_batch(audio), basis, config.window, config.hop, 1.0, batch)


def log_mel_direct(
    low_audio: np.ndarray, low_rate: int, config: LogMelConfig = LogMelConfig(), batch: int = BATCH
) -> np.ndarray:
    """The log-mel patch of clips recorded at ``low_rate``, computed at that rate (no up-sampling).

    The STFT window and hop are ``config``'s divided by ``config.sample_rate / low_rate``, which keeps the bin
    spacing in Hz and the frame times; the power is scaled by the ratio squared (an up-sampled clip's longer window
    sums that many more samples per bin), and the 16 kHz mel bank's columns up to ``low_rate / 2`` apply.

    Shape:
        ``(clips, low samples)`` -> ``(clips, mels, frames)`` as :func:`log_mel` gives for the up-sampled clips.

    Raises:
        LowRateError: a rate that does not divide the front end's rate, window and hop evenly.
    """
    check_rates(config.sample_rate, low_rate)
    ratio, rest = divmod(config.sample_rate, low_rate)
    if rest or config.window % ratio or config.hop % ratio:
        raise LowRateError(
            f"{low_rate} Hz must divide {config.sample_rate} Hz, and the ratio the window ({config.window}) and hop "
            f"({config.hop}), to compute the log-mel at the low rate directly"
        )
    window, hop = config.window // ratio, config.hop // ratio
    full = np.array(mel_basis(config.sample_rate, config.window, config.mels, config.fmin, config.fmax))
    return _mel_patches(_as_batch(low_audio), full[:, : window // 2 + 1], window, hop, float(ratio**2), batch)


def paired_log_mels(
    audio: np.ndarray, rates: tuple[int, ...], config: LogMelConfig = LogMelConfig(), batch: int = BATCH
) -> dict[int, np.ndarray]:
    """The log-mel patches of the same clips at the front end's rate and as recorded at each of ``rates``.

    Shape:
        ``(clips, samples)`` at ``config.sample_rate`` -> ``{rate: (clips, mels, frames)}``, with the key
        ``config.sample_rate`` for the clips as they are.
    """
    audio = _as_batch(audio)
    for rate in rates:
        check_rates(config.sample_rate, rate)
    paired = {config.sample_rate: log_mel(audio, config, batch)}
    for rate in rates:
        parts = [to_low_rate(audio[s : s + batch], config.sample_rate, rate) for s in range(0, len(audio), batch)]
        paired[rate] = log_mel(np.concatenate(parts) if parts else audio[:0], config, batch)
    return paired


def low_rate_direct_log_mels(
    audio: np.ndarray, rates: tuple[int, ...], config: LogMelConfig = LogMelConfig(), batch: int = BATCH
) -> dict[int, np.ndarray]:
    """Like :func:`paired_log_mels` for the low rates only, through :func:`log_mel_direct`."""
    audio = _as_batch(audio)
    return {rate: log_mel_direct(down_sample(audio, config.sample_rate, rate), rate, config, batch) for rate in rates}
