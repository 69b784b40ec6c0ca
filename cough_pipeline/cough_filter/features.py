"""The 68 COUGHVID cough-classifier features, computed exactly as the EPFL reference code does.

The pretrained COUGHVID XGBoost model (Orlandic, Teijeiro & Atienza, Scientific Data 2021) only gives its
published probabilities when fed the features its authors computed, quirks included. This module reproduces
the reference code's recipe (the COUGHVID reference model, see README) with vectorised NumPy/SciPy code (its
zero-phase filters as numba kernels that give scipy's ``filtfilt``/``sosfiltfilt`` bit for bit, :mod:`.filters`):

* preprocessing: mono, peak normalisation, 4th-order zero-phase Butterworth low-pass at 6 kHz, decimation by
  ``int(fs / 12000)``, then a *nominal* rate of 12 kHz is used even where the real rate differs (44.1 kHz input
  decimates to 14.7 kHz, 16 kHz input is not decimated at all);
* the preprocessed signal is float32 and every feature keeps the reference's dtypes, so the values agree with the
  reference to float32 rounding;
* the dominant frequency is in cycles per sample (Welch without a sampling rate), the roll-off is an FFT bin
  index, the spectral decrease divides by ``f - 1`` Hz: all as in the reference, because the model was fitted on them.

A signal the features are undefined for raises :class:`UnusableSignalError` whose ``reason`` says why.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

import librosa
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal as sps
from scipy.integrate import simpson

from cough_pipeline.cough_filter.filters import BiquadBank, ZeroPhaseFilter, ZeroPhaseSosFilter
from cough_pipeline.mel import mel_basis

#: The rate the features are computed at, whatever the real rate after decimation.
NOMINAL_SAMPLE_RATE = 12_000
#: Cut-off of the preprocessing low-pass (half the nominal rate).
LOWPASS_CUTOFF_HZ = 6_000
#: Envelope bands: 50 Hz wide, 50-100 Hz up to 950-1000 Hz.
ENVELOPE_BANDS_HZ: tuple[tuple[int, int], ...] = tuple((low, low + 50) for low in range(50, 1000, 50))
#: Cut-off of the low-pass that smooths each band's squared signal into an energy envelope.
ENVELOPE_SMOOTHING_HZ = 10
#: Bands whose share of the Welch power is a feature.
POWER_BANDS_HZ: tuple[tuple[int, int], ...] = (
    (0, 200),
    (300, 425),
    (500, 650),
    (950, 1150),
    (1400, 1800),
    (2300, 2400),
    (2850, 2950),
    (3800, 3900),
)
#: Welch segment length and overlap of the flatness / band-power PSD (the reference's ``min(900, n)``,
#: ``min(600, nperseg / 2)`` always resolve to these because shorter signals are rejected).
WELCH_SEGMENT = 900
WELCH_OVERLAP = 450
#: The spectral slope and decrease use the magnitude spectrum up to this frequency.
SLOPE_BAND_HZ = (0, 8_000)
N_MFCC = 13
#: librosa's default MFCC frame: a preprocessed signal shorter than one frame is ``too_short``.
MIN_PREPROCESSED_SAMPLES = 2_048
#: A clip whose peak deviation from its mean is below one 16-bit step holds no sound: ``silent``.
SILENCE_PEAK = 2.0**-15

FEATURE_NAMES: tuple[str, ...] = (
    *(f"EEPD{low}_{high}" for low, high in ENVELOPE_BANDS_HZ),
    "Zero_Crossing_Rate",
    "RMS_Power",
    "Dominant_Freq",
    "Spectral_Centroid",
    "Spectral_Rolloff",
    "Spectral_Spread",
    "Spectral_Skewness",
    "Spectral_Kurtosis",
    "Spectral_Bandwidth",
    "Spectral_Flatness",
    "Spectral_StDev",
    "Spectral_Slope",
    "Spectral_Decrease",
    *(f"MFCC_mean{i}" for i in range(N_MFCC)),
    *(f"MFCC_std{i}" for i in range(N_MFCC)),
    "Crest_Factor",
    "Cough_Length",
    *(f"PSD_{low}-{high}" for low, high in POWER_BANDS_HZ),
)
N_FEATURES = len(FEATURE_NAMES)


class SignalIssue(str, Enum):
    """Why a signal has no features (the machine-readable ``reason`` of a rejected clip)."""

    NON_FINITE = "non_finite"  # NaN or infinite samples
    SAMPLE_RATE_TOO_LOW = "sample_rate_too_low"  # at or below 12 kHz: the 6 kHz low-pass is undefined
    TOO_SHORT = "too_short"  # shorter than one MFCC frame after preprocessing
    SILENT = "silent"  # all zero, constant, or quieter than one 16-bit step
    DEGENERATE = "degenerate"  # features came out non-finite (e.g. no energy left after filtering)


class UnusableSignalError(ValueError):
    """A signal the COUGHVID features are undefined for; ``reason`` is a :class:`SignalIssue`."""

    def __init__(self, reason: SignalIssue, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def as_float_samples(samples: np.ndarray) -> np.ndarray:
    """Samples as float64 in [-1, 1): signed integer PCM is divided by its full scale, floats are kept as they are.

    Args:
        samples: signed integer PCM or float samples.

    Returns:
        float64 samples of the same shape.

    Raises:
        ValueError: for another shape, unsigned PCM or a non-numeric dtype.

    Shape:
        samples: ``(frames,)`` or ``(frames, channels)``; returns the same shape.
    """
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or (samples.ndim == 2 and samples.shape[1] == 0):
        raise ValueError(f"expected samples of shape (frames,) or (frames, channels), got shape {samples.shape}")
    if np.issubdtype(samples.dtype, np.unsignedinteger):
        raise ValueError(f"unsigned PCM ({samples.dtype}) is offset-binary; convert it to float first")
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float64) / float(np.iinfo(samples.dtype).max + 1)
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"expected integer or floating-point samples, got dtype {samples.dtype}")
    return samples.astype(np.float64, copy=False)


def decimation_factor(sample_rate: int) -> int:
    """The reference's integer decimation factor ``int(fs / 12000)`` (1 for 16 kHz, 3 for 44.1 kHz, 4 for 48 kHz)."""
    return int(sample_rate / NOMINAL_SAMPLE_RATE)


def validate_signal(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Check a raw clip can be featurised and return its mono mix.

    Channels are averaged before the silence check, as the reference does before anything else.

    Args:
        samples: the raw clip, integer PCM or float.
        sample_rate: its rate (Hz).

    Returns:
        The float64 mono mix.

    Raises:
        ValueError: for a malformed argument.
        UnusableSignalError: for a clip with no features (non-finite, rate too low, too short, silent).

    Shape:
        samples: ``(frames,)`` or ``(frames, channels)``; returns ``(frames,)``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    samples = as_float_samples(samples)
    if not np.isfinite(samples).all():
        raise UnusableSignalError(SignalIssue.NON_FINITE, "the signal contains NaN or infinite samples")
    if sample_rate <= NOMINAL_SAMPLE_RATE:
        raise UnusableSignalError(
            SignalIssue.SAMPLE_RATE_TOO_LOW, f"{sample_rate} Hz; the features need more than {NOMINAL_SAMPLE_RATE} Hz"
        )
    factor = decimation_factor(sample_rate)
    if -(-samples.shape[0] // factor) < MIN_PREPROCESSED_SAMPLES:
        raise UnusableSignalError(
            SignalIssue.TOO_SHORT,
            f"{samples.shape[0]} samples at {sample_rate} Hz; at least "
            f"{(MIN_PREPROCESSED_SAMPLES - 1) * factor + 1} are needed",
        )
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if np.max(np.abs(mono - mono.mean())) < SILENCE_PEAK:
        raise UnusableSignalError(SignalIssue.SILENT, "no sample deviates from the mean by one 16-bit step")
    return mono


@lru_cache(maxsize=32)
def _preprocessing_lowpass(sample_rate: int) -> ZeroPhaseFilter:
    """The 4th-order Butterworth low-pass at 6 kHz for ``sample_rate``, applied as ``filtfilt(b, a, x)``.

    Transfer-function form, as the reference implementation.
    """
    return ZeroPhaseFilter(*sps.butter(4, 2 * LOWPASS_CUTOFF_HZ / sample_rate, btype="lowpass"))


@lru_cache(maxsize=8)
def _decimation_filter(factor: int) -> ZeroPhaseSosFilter:
    """scipy.signal.decimate's default anti-alias filter (order-8 Chebyshev I, second-order sections), applied as
    ``sosfiltfilt(sos, x)``."""
    return ZeroPhaseSosFilter(sps.cheby1(8, 0.05, 0.8 / factor, output="sos"))


def preprocess(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Mono, peak-normalised, 6 kHz low-passed and decimated signal, plus the nominal rate.

    Args:
        samples: the raw clip, integer PCM or float.
        sample_rate: its rate (Hz).

    Returns:
        ``(float32 signal, 12000)``: the nominal rate, whatever the real rate after decimation.

    Raises:
        UnusableSignalError: for a clip that has no features.

    Shape:
        samples: ``(frames,)`` or ``(frames, channels)``; the signal: ``(ceil(frames / q),)`` with
        ``q = int(sample_rate / 12000)``.
    """
    mono = validate_signal(samples, sample_rate)
    normalised = mono / (np.max(np.abs(mono)) + 1e-17)
    lowpassed = _preprocessing_lowpass(int(sample_rate))(normalised)
    factor = decimation_factor(int(sample_rate))
    decimated = _decimation_filter(factor)(lowpassed)[::factor]
    return decimated.astype(np.float32), NOMINAL_SAMPLE_RATE


@lru_cache(maxsize=8)
def _envelope_filters(sample_rate: int) -> tuple[BiquadBank, BiquadBank]:
    """The 1st-order Butterworth band-pass of each envelope band, and the 2nd-order Butterworth 10 Hz low-pass that
    turns each band's squared signal into its envelope (the same filter for every band), as filter banks."""
    nyquist = sample_rate / 2
    bands = [sps.butter(1, [low / nyquist, high / nyquist], btype="bandpass") for low, high in ENVELOPE_BANDS_HZ]
    smoother = sps.butter(2, ENVELOPE_SMOOTHING_HZ / nyquist, btype="lowpass")
    return BiquadBank(bands), BiquadBank([smoother] * len(bands))


def envelope_peak_counts(x: np.ndarray, fs: int) -> np.ndarray:
    """Local maxima of each band's normalised energy envelope (EEPD).

    Each band is ``filtfilt``-ed with its own band-pass, squared and ``filtfilt``-ed with the smoother; both steps
    run all 19 bands in one pass (:class:`~.filters.BiquadBank`, bit for bit scipy's ``filtfilt``).

    Args:
        x: the preprocessed signal.
        fs: its (nominal) rate.

    Returns:
        The peak count of each band of :data:`ENVELOPE_BANDS_HZ`, as float64.

    Shape:
        x: ``(n,)``; returns ``(19,)``.
    """
    band_passes, smoother = _envelope_filters(int(fs))
    squared = band_passes(x[:, np.newaxis]) ** 2  # (n, 19)
    envelopes = np.ascontiguousarray(smoother(squared).T)  # (19, n)
    envelopes /= np.max(envelopes + 1e-17, axis=-1, keepdims=True)
    return np.array([sps.find_peaks(envelope)[0].size for envelope in envelopes], dtype=np.float64)


def zero_crossing_rate(x: np.ndarray) -> float:
    """Fraction of neighbouring sample pairs whose product is negative.

    Shape:
        x: ``(n,)`` with ``n >= 2``.
    """
    return np.count_nonzero(x[:-1] * x[1:] < 0) / (x.size - 1)


def rms(x: np.ndarray) -> float:
    """Root mean square of the (peak-normalised) signal.

    Shape:
        x: ``(n,)``.
    """
    return float(np.sqrt(np.mean(np.square(x))))


@lru_cache(maxsize=8)
def _hann_window(length: int) -> np.ndarray:
    """Periodic Hann window ``(length,)``, as ``scipy.signal.welch`` uses."""
    window = sps.get_window("hann", length)
    window.flags.writeable = False
    return window


def welch(x: np.ndarray, fs: float, nperseg: int, noverlap: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Welch PSD density equal to ``scipy.signal.welch`` with a Hann window and constant detrend.

    All segments are transformed in one batched FFT (scipy 1.17 loops over them in Python).

    Args:
        x: the signal.
        fs: its rate (1.0 gives frequencies in cycles per sample).
        nperseg: segment length.
        noverlap: samples shared by consecutive segments.

    Returns:
        ``(frequencies, float32 psd)``.

    Shape:
        x: ``(n,)`` with ``n >= nperseg``; both returns ``(nperseg // 2 + 1,)``.
    """
    window = _hann_window(nperseg)
    segments = sliding_window_view(x, nperseg)[:: nperseg - noverlap].astype(np.float64)
    segments -= segments.mean(axis=-1, keepdims=True)
    spectra = np.fft.rfft(segments * window, axis=-1)
    power = (spectra.real**2 + spectra.imag**2) / (fs * np.sum(window * window))
    power[:, 1 : (-1 if nperseg % 2 == 0 else None)] *= 2
    return np.fft.rfftfreq(nperseg, 1.0 / fs), power.mean(axis=0).astype(np.float32)


def dominant_frequency(x: np.ndarray) -> float:
    """Peak of Welch's PSD with scipy's defaults (256-sample segments), in cycles per sample.

    The reference passes no sampling rate, so the frequency axis runs from 0 to 0.5.

    Shape:
        x: ``(n,)`` with ``n >= 256``.
    """
    frequencies, psd = welch(x, fs=1.0, nperseg=256, noverlap=128)
    return float(frequencies[np.argmax(psd)])


def spectral_shape(magnitudes: np.ndarray, n_samples: int, fs: int) -> list[float]:
    """Centroid (Hz), 95 % roll-off (bin index), spread, skewness, kurtosis and un-normalised bandwidth.

    Args:
        magnitudes: absolute real FFT of the signal.
        n_samples: length of the signal.
        fs: its (nominal) rate.

    Returns:
        The six values in that order.

    Shape:
        magnitudes: ``(n_samples // 2 + 1,)``.
    """
    frequencies = np.fft.rfftfreq(n_samples, 1.0 / fs)
    total = np.sum(magnitudes)
    centroid = np.sum(magnitudes * frequencies) / total
    rolloff = np.searchsorted(np.cumsum(magnitudes), 0.95 * total, side="left")
    deviation = frequencies - centroid
    squared_deviation = deviation * deviation
    second_moment = np.sum(squared_deviation * magnitudes)
    spread = np.sqrt(second_moment / total)
    skewness = np.sum(squared_deviation * deviation * magnitudes) / (spread**3 * total)
    kurtosis = np.sum(squared_deviation * squared_deviation * magnitudes) / (spread**4 * total)
    return [centroid, float(rolloff), spread, skewness, kurtosis, np.sqrt(second_moment)]


def welch_psd(x: np.ndarray, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD with 900-sample segments overlapping by 450.

    Returns:
        ``(frequencies, psd)``.

    Shape:
        x: ``(n,)`` with ``n >= 900``; both returns ``(451,)``.
    """
    return welch(x, fs, nperseg=WELCH_SEGMENT, noverlap=WELCH_OVERLAP)


def flatness_and_spread(psd: np.ndarray) -> list[float]:
    """Spectral flatness (geometric over arithmetic mean of the PSD) and the PSD's standard deviation.

    Shape:
        psd: ``(bins,)``.
    """
    geometric_mean = np.exp(np.mean(np.log(psd + 1e-17)))
    return [geometric_mean / np.mean(psd), np.std(psd)]


def slope_and_decrease(magnitudes: np.ndarray, n_samples: int, fs: int) -> list[float]:
    """Spectral slope and decrease over 0-8 kHz of the first ``n_samples // 2`` FFT magnitudes.

    As in the reference, the bins are placed on ``linspace(0, fs / 2, n_samples // 2)`` and the decrease divides
    by ``f - 1`` Hz.

    Args:
        magnitudes: absolute real FFT of the signal.
        n_samples: length of the signal.
        fs: its (nominal) rate.

    Returns:
        ``[slope, decrease]``.

    Shape:
        magnitudes: ``(n_samples // 2 + 1,)``.
    """
    half = magnitudes[: n_samples // 2]
    frequencies = np.linspace(0, fs / 2, half.size)
    in_band = np.flatnonzero((frequencies >= SLOPE_BAND_HZ[0]) & (frequencies <= SLOPE_BAND_HZ[1]))
    frequency_deviation = frequencies[in_band] - np.mean(frequencies)
    slope = np.sum(frequency_deviation * (half[in_band] - np.mean(half))) / np.sum(frequency_deviation**2)
    rest = in_band[1:]
    decrease = np.sum((half[rest] - half[in_band[0]]) / (frequencies[rest] - 1 + 1e-17)) / (np.sum(half[rest]) + 1e-17)
    return [slope, decrease]


def mfcc_summary(x: np.ndarray, fs: int) -> np.ndarray:
    """Means then standard deviations over frames of the 13 librosa-default MFCCs.

    ``librosa.feature.mfcc(y=x, sr=fs, n_mfcc=13)`` step by step (the same operations, so the same values), with
    the mel filter bank built once per rate instead of on every call.

    Shape:
        x: ``(n,)`` float32; returns ``(26,)``.
    """
    power = np.abs(librosa.stft(x, n_fft=2048, hop_length=512)) ** 2.0
    mel = np.einsum("...ft,mf->...mt", power, mel_basis(int(fs), 2048), optimize=True)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def band_power_ratios(frequencies: np.ndarray, psd: np.ndarray) -> list[float]:
    """Share of the total Welch power (Simpson rule) in each of :data:`POWER_BANDS_HZ`.

    Args:
        frequencies: evenly spaced PSD frequencies (Hz).
        psd: the Welch PSD at those frequencies.

    Returns:
        One share per band.

    Shape:
        frequencies, psd: ``(bins,)``.
    """
    step = frequencies[1] - frequencies[0]
    total_power = simpson(psd, dx=step)
    return [
        simpson(psd[(frequencies >= low) & (frequencies <= high)], dx=step) / total_power
        for low, high in POWER_BANDS_HZ
    ]


def features_of_preprocessed(x: np.ndarray, fs: int = NOMINAL_SAMPLE_RATE) -> np.ndarray:
    """The 68 features of an already preprocessed signal, in :data:`FEATURE_NAMES` order.

    Args:
        x: the float32 output of :func:`preprocess`.
        fs: its nominal rate.

    Returns:
        float64 feature vector.

    Raises:
        UnusableSignalError: ``degenerate`` when a feature is undefined, e.g. no energy left after filtering.

    Shape:
        x: ``(n,)`` with ``n >= 2048``; returns ``(68,)``.
    """
    magnitudes = np.abs(np.fft.rfft(x))
    frequencies, psd = welch_psd(x, fs)
    peak = np.max(np.abs(x))
    # A degenerate signal gives inf/NaN features (reported below), not warnings. np.errstate is thread-local, unlike
    # warnings.catch_warnings, which swaps process-wide filters and so races with other threads.
    with np.errstate(all="ignore"):
        values = np.concatenate(
            [
                envelope_peak_counts(x, fs),
                [zero_crossing_rate(x), rms(x), dominant_frequency(x)],
                spectral_shape(magnitudes, x.size, fs),
                flatness_and_spread(psd),
                slope_and_decrease(magnitudes, x.size, fs),
                mfcc_summary(x, fs),
                [peak / rms(x), x.size / fs],
                band_power_ratios(frequencies, psd),
            ]
        ).astype(np.float64)
    if not np.isfinite(values).all():
        undefined = [name for name, value in zip(FEATURE_NAMES, values) if not np.isfinite(value)]
        raise UnusableSignalError(SignalIssue.DEGENERATE, f"undefined features: {', '.join(undefined)}")
    return values


def extract_features(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """COUGHVID-compatible features of a raw clip, in :data:`FEATURE_NAMES` order.

    Args:
        samples: the clip, integer PCM or float.
        sample_rate: its rate (Hz).

    Returns:
        float64 feature vector.

    Raises:
        UnusableSignalError: (with a ``reason``) for a clip the features are undefined for.

    Shape:
        samples: ``(frames,)`` or ``(frames, channels)``; returns ``(68,)``.
    """
    preprocessed, nominal_rate = preprocess(samples, sample_rate)
    return features_of_preprocessed(preprocessed, nominal_rate)
