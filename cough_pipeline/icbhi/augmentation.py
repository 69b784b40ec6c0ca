"""Waveform augmentation of fixed-length windows: pitch shift, time shift, Gaussian noise, gain.

Each transform is applied with its own probability; when applied its value is drawn uniformly from its range.
They run in this order, on float64 internally:

1. **pitch shift** by ``s`` semitones (frequencies x ``2 ** (s / 12)``), length kept. Two methods:
   ``"librosa"`` (default): :func:`librosa.effects.pitch_shift` — phase-vocoder time stretch then soxr
   resampling; tempo (breathing rate) is preserved, transients are slightly smeared. ``"resample"``: vari-speed
   (tape-speed) shift by one soxr resampling, much cheaper (figures: ``benchmarks/results/icbhi_preprocessing.json``,
   README); tempo changes by the same factor (at most 12 % for 2 semitones), and the length is restored by loop
   padding (shift up: the sped-up signal is shorter) or by keeping the first ``n`` samples (shift down).
   ``params["pitch_shift_tempo_factor"]`` records the tempo change.
2. **time shift**: circular roll by ``k`` samples, ``k`` uniform integer in ``[-m, m]``,
   ``m = round(max_shift_fraction * n)`` (positive ``k`` moves content later; what falls off the end re-enters
   at the start, consistent with loop padding: nothing is replaced by silence).
3. **Gaussian noise** at an SNR (dB) uniform in ``noise_snr_db``, relative to the RMS of the signal at that point:
   the noise is scaled to RMS ``rms(x) / 10 ** (snr / 20)`` exactly (its empirical RMS, not its expected one),
   so the SNR is what the parameters say. A silent input gets no noise (its RMS is 0).
4. **gain** of ``g`` dB uniform in ``gain_db``, applied last so it never changes the SNR. It never clips: when
   ``g`` would push the peak above full scale (1.0) the applied gain is reduced to bring the peak exactly to 1.0
   (``params["gain_db_drawn"]`` vs ``params["gain_db"]``).

Every random number is drawn up front in a fixed order (per transform: the Bernoulli draw, then the value; then
one seed for the noise samples), so switching one transform's probability never changes another's values and a
seed always gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import librosa
import numpy as np
import soxr

from cough_pipeline.bounds import Bounds, Probability
from cough_pipeline.icbhi.config_checks import check_config
from cough_pipeline.icbhi.windows import loop_pad

#: The transforms, in the order they run.
Transform = Literal["pitch_shift", "time_shift", "noise", "gain"]
TRANSFORMS: tuple[str, ...] = get_args(Transform)
#: How a pitch shift is made (see the module docstring).
PitchMethod = Literal["librosa", "resample"]
PITCH_METHODS: tuple[str, ...] = get_args(PitchMethod)


class AugmentError(ValueError):
    """Invalid augmentation settings or input samples."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probability and range of each transform (see the module docstring for what each does).

    pitch_probability / pitch_semitones (low, high) / pitch_method ("librosa" or "resample");
    shift_probability / max_shift_fraction (of the window length, in [0, 1));
    noise_probability / noise_snr_db (low, high) in dB relative to the signal RMS;
    gain_probability / gain_db (low, high) in dB.
    """

    pitch_probability: Probability = 0.5
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    pitch_method: PitchMethod = "librosa"
    shift_probability: Probability = 0.5
    max_shift_fraction: Annotated[float, Bounds(ge=0.0, lt=1.0)] = 0.2
    noise_probability: Probability = 0.5
    noise_snr_db: tuple[float, float] = (20.0, 40.0)
    gain_probability: Probability = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)

    def __post_init__(self):
        check_config(self, AugmentError)
        for name in ("pitch_semitones", "noise_snr_db", "gain_db"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and low <= high):
                raise AugmentError(f"{name} must be a finite (low, high) range with low <= high, got {(low, high)}")

    @classmethod
    def only(cls, transform: Transform, **overrides) -> AugmentConfig:
        """A config applying just ``transform`` (probability 1, every other probability 0), e.g. to benchmark it."""
        if transform not in TRANSFORMS:
            raise AugmentError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
        names = {
            "pitch_shift": "pitch_probability",
            "time_shift": "shift_probability",
            "noise": "noise_probability",
            "gain": "gain_probability",
        }
        probabilities = {name: float(t == transform) for t, name in names.items()}
        return cls(**{**probabilities, **overrides})


def pitch_shift(samples: np.ndarray, sample_rate: int, semitones: float, method: PitchMethod = "librosa") -> np.ndarray:
    """``samples`` ``(n,)`` shifted by ``semitones``, still ``(n,)`` (float64); see the module docstring."""
    if method == "librosa":
        # float32 in: librosa's STFT and phase vocoder then run in complex64, half the memory of complex128.
        shifted = librosa.effects.pitch_shift(
            np.asarray(samples, dtype=np.float32), sr=sample_rate, n_steps=float(semitones), res_type="soxr_hq"
        )
        return np.asarray(shifted, dtype=np.float64)
    if method == "resample":
        # Reading the signal as if recorded at sr * ratio and resampling to sr plays it ratio times faster.
        ratio = 2.0 ** (semitones / 12.0)
        faster = soxr.resample(np.asarray(samples, dtype=np.float64), sample_rate * ratio, sample_rate, quality="HQ")
        return loop_pad(faster, samples.shape[0]) if faster.size else np.zeros(samples.shape[0])
    raise AugmentError(f"pitch method must be one of {PITCH_METHODS}, got {method!r}")


def augment(
    samples: np.ndarray, sample_rate: int, rng: np.random.Generator, config: AugmentConfig | None = None
) -> tuple[np.ndarray, dict]:
    """Augment one window ``samples`` ``(n,)``; returns ``(float32 (n,), params)``.

    ``params["applied"]`` lists the transforms applied, in order; each applied transform adds its values
    (``pitch_shift_semitones``, ``pitch_shift_method``, ``pitch_shift_tempo_factor``; ``time_shift_samples``,
    ``time_shift_s``; ``noise_snr_db``, ``noise_rms``; ``gain_db_drawn``, ``gain_db``). All values are plain
    Python numbers/strings (JSON-serialisable). Raises :class:`AugmentError` for an empty, non-1-D or non-finite
    input.
    """
    config = AugmentConfig() if config is None else config
    x = np.asarray(samples)
    if x.ndim != 1 or x.size == 0:
        raise AugmentError(f"expected a non-empty 1-D signal, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AugmentError("input samples contain NaN or infinity")
    draws = _Draws.of(rng, config, x.size)
    steps = (
        ("pitch_shift", draws.pitch, lambda y: _pitch_step(y, sample_rate, draws.semitones, config.pitch_method)),
        ("time_shift", draws.shift, lambda y: _time_shift_step(y, sample_rate, draws.shift_samples)),
        ("noise", draws.noise, lambda y: _noise_step(y, draws.snr_db, draws.noise_seed)),
        ("gain", draws.gain, lambda y: _gain_step(y, draws.gain_db)),
    )
    out = x.astype(np.float64)
    params: dict = {"applied": []}
    for name, applied, step in steps:
        if applied:
            out, values = step(out)
            params.update(values)
            params["applied"].append(name)
    return out.astype(np.float32), params


@dataclass(frozen=True)
class _Draws:
    """Every random number of one augmentation: per transform whether it applies and its value, and a noise seed."""

    pitch: bool
    semitones: float
    shift: bool
    shift_samples: int
    noise: bool
    snr_db: float
    gain: bool
    gain_db: float
    noise_seed: int

    @classmethod
    def of(cls, rng: np.random.Generator, config: AugmentConfig, n: int) -> _Draws:
        """All draws up front, in a fixed order, so one transform's probability never changes another's values."""
        max_shift = int(round(config.max_shift_fraction * n))
        pitch, semitones = rng.random() < config.pitch_probability, float(rng.uniform(*config.pitch_semitones))
        shift, shift_samples = rng.random() < config.shift_probability, int(rng.integers(-max_shift, max_shift + 1))
        noise, snr_db = rng.random() < config.noise_probability, float(rng.uniform(*config.noise_snr_db))
        gain, gain_db = rng.random() < config.gain_probability, float(rng.uniform(*config.gain_db))
        noise_seed = int(rng.integers(0, 2**63 - 1))
        return cls(pitch, semitones, shift, shift_samples, noise, snr_db, gain, gain_db, noise_seed)


def _pitch_step(out: np.ndarray, sample_rate: int, semitones: float, method: str) -> tuple[np.ndarray, dict]:
    tempo = 2.0 ** (semitones / 12.0) if method == "resample" else 1.0
    shifted = pitch_shift(out, sample_rate, semitones, method)
    return shifted, {
        "pitch_shift_semitones": semitones,
        "pitch_shift_method": method,
        "pitch_shift_tempo_factor": tempo,
    }


def _time_shift_step(out: np.ndarray, sample_rate: int, shift: int) -> tuple[np.ndarray, dict]:
    return np.roll(out, shift), {"time_shift_samples": shift, "time_shift_s": shift / sample_rate}


def _noise_step(out: np.ndarray, snr_db: float, noise_seed: int) -> tuple[np.ndarray, dict]:
    """Gaussian noise scaled to exactly the RMS the SNR asks for (its empirical RMS, not its expected one)."""
    noise = np.random.default_rng(noise_seed).standard_normal(out.size)
    signal_rms = float(np.sqrt(np.mean(out**2)))
    noise_rms = signal_rms / 10.0 ** (snr_db / 20.0)
    noisy = out + noise * (noise_rms / float(np.sqrt(np.mean(noise**2))))
    return noisy, {"noise_snr_db": snr_db, "noise_rms": noise_rms}


def _gain_step(out: np.ndarray, gain_db: float) -> tuple[np.ndarray, dict]:
    """The drawn gain, reduced when it would push the peak above full scale (never clips)."""
    peak = float(np.max(np.abs(out)))
    applied_db = min(gain_db, -20.0 * np.log10(peak)) if peak > 0 else gain_db
    out = out * 10.0 ** (applied_db / 20.0)
    if peak > 0 and applied_db < gain_db:
        out = np.clip(out, -1.0, 1.0)  # only removes float rounding above the exact full-scale peak
    return out, {"gain_db_drawn": gain_db, "gain_db": float(applied_db)}


def augment_with_seed(
    samples: np.ndarray, sample_rate: int, seed: int, config: AugmentConfig | None = None
) -> tuple[np.ndarray, dict]:
    """:func:`augment` with ``numpy.random.default_rng(seed)``; ``params["seed"]`` records the seed."""
    out, params = augment(samples, sample_rate, np.random.default_rng(seed), config)
    return out, {"seed": int(seed), **params}


__all__ = [
    "PITCH_METHODS",
    "TRANSFORMS",
    "AugmentConfig",
    "PitchMethod",
    "Transform",
    "AugmentError",
    "augment",
    "augment_with_seed",
    "pitch_shift",
]
