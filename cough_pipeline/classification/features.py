"""The cough feature table: 15 frame features x 7 statistics per clip, from one STFT and one CQT.

Transforms (computed once per clip; ``y`` is the preprocessed clip, float32 at ``sample_rate``)
    * ``S = |librosa.stft(y, n_fft, hop_length)|`` (Hann, centred, zero padding) and ``P = S**2``;
    * ``M = mel(P)`` with ``mfcc_n_mels`` (128, librosa's default) Slaney mel bands and ``M_dB =
      power_to_db(M)`` (ref 1, amin 1e-10, top_db 80: librosa's defaults);
    * ``C = |cqt(y)|`` as ``librosa.feature.chroma_cqt`` builds it: ``cqt_octaves`` x ``cqt_bins_per_octave``
      bins (7 x 36) from ``cqt_fmin`` (C1), hop ``hop_length``, tuning estimated by ``librosa.estimate_tuning``
      (from ``S`` when n_fft/hop are piptrack's 2048/512, else from ``y``). The filter bank depends only on the
      rate, hop and estimated tuning (100 possible values), so it is built once per process and reused; rebuilding
      it dominated the cost of librosa's own ``cqt``.

Features (frame matrices ``(dims, frames)``), each equal to the librosa call named, called on ``y`` independently
    * time: ``rms`` = ``feature.rms(y=y, frame_length=n_fft, hop_length)``: RMS of the raw centred frame (the usual
      definition; ``rms(S=S)`` would give the Hann-windowed energy instead, about 0.61 x smaller), ``zcr`` =
      ``feature.zero_crossing_rate(y, frame_length=n_fft, hop_length)``;
    * spectral (from ``S``): ``spectral_centroid``, ``spectral_bandwidth``, ``spectral_contrast`` (``contrast_bands``
      octave bands from ``contrast_fmin``: ``contrast_bands + 1`` rows), ``spectral_flatness``, ``spectral_rolloff``
      (``rolloff_percent``), each ``feature.<name>(y=y, sr, n_fft, hop_length, ...)``; ``spectral_flux`` =
      ``onset.onset_strength(y=y, sr, n_fft, hop_length)``: mean over mel bands of the rectified frame-to-frame rise
      of ``M_dB`` (lag 1, shifted by ``n_fft // (2 hop)`` frames to undo centring);
    * cepstral: ``mfcc`` = ``feature.mfcc(y=y, sr, n_mfcc, n_fft, hop_length)`` (DCT-II of ``M_dB``), ``mfc`` =
      ``power_to_db(feature.melspectrogram(y=y, sr, n_fft, hop_length, n_mels))`` (a compact ``n_mels`` = 32-band
      mel spectrum in dB, from ``P``), ``spectrogram``: ``spectrogram_bands`` log-spaced bands of ``P``: band edges
      ``geomspace(spectrogram_fmin, sr / 2, bands + 1)``, band 0 reaching down to 0 Hz and the last band including
      Nyquist; a band's value is ``power_to_db`` of its bins' mean power (its RMS magnitude in dB, top_db 80);
    * tonal: ``chroma_stft`` = ``feature.chroma_stft(y=y, sr, n_fft, hop_length)`` (from ``P``, tuning estimated
      from ``P``), ``chroma_cqt`` and ``chroma_cens`` = ``feature.chroma_cqt/chroma_cens(y=y, sr, hop_length, fmin,
      n_octaves, bins_per_octave)`` (from ``C``), ``tonnetz`` = ``feature.tonnetz(chroma=chroma_cqt)`` (librosa's
      default chroma).

Statistics over frames, in this order: ``min, max, mean, median, var`` (population, ddof 0), ``q1, q3`` (25th and
75th percentiles, linear interpolation). Column ``<feature>_<dim>_<stat>``; columns are ordered by feature
(:data:`FEATURE_DOMAINS` order), then dim, then statistic. With the defaults: 124 dims, 868 columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Annotated

import librosa
import numpy as np
import pandas as pd
import scipy.sparse
from numpy.lib.stride_tricks import sliding_window_view

from cough_pipeline.bounds import Bounds, PositiveFloat, PositiveInt, check_fields
from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.classification.preprocess import (
    ID_COLUMNS,
    PreprocessConfig,
    checked_clip,
    id_frame,
    load_and_preprocess,
    map_recordings,
)
from cough_pipeline.classification.variants import VARIANTS
from cough_pipeline.mel import mel_basis
from cough_pipeline.parallel import ProgressCallback

#: The 15 features, in column order, with their domain.
FEATURE_DOMAINS: dict[str, str] = {
    "rms": "time",
    "zcr": "time",
    "spectral_centroid": "spectral",
    "spectral_bandwidth": "spectral",
    "spectral_contrast": "spectral",
    "spectral_flatness": "spectral",
    "spectral_flux": "spectral",
    "spectral_rolloff": "spectral",
    "mfcc": "cepstral",
    "mfc": "cepstral",
    "spectrogram": "cepstral",
    "chroma_stft": "tonal",
    "chroma_cqt": "tonal",
    "chroma_cens": "tonal",
    "tonnetz": "tonal",
}
#: Statistics over frames, in column order.
STATISTICS = ("min", "max", "mean", "median", "var", "q1", "q3")
#: C1, librosa's default lowest CQT frequency (Hz).
C1_HZ = float(librosa.note_to_hz("C1"))
#: Pitch classes of every chroma feature.
N_CHROMA = 12
#: dB range kept below a clip's maximum by every dB conversion (librosa's default ``top_db``).
TOP_DB = 80.0


@lru_cache(maxsize=16)
def _band_matrix(sample_rate: int, n_fft: int, bands: int, fmin: float) -> np.ndarray:
    """``(bands, n_fft // 2 + 1)`` averaging matrix of the log-spaced spectrogram bands (module docstring)."""
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    edges = np.geomspace(fmin, sample_rate / 2, bands + 1)
    band = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, bands - 1)  # below fmin -> 0, Nyquist -> last
    matrix = np.zeros((bands, freqs.size))
    matrix[band, np.arange(freqs.size)] = 1.0
    counts = matrix.sum(axis=1)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            f"spectrogram bands {empty} hold no STFT bin: use fewer bands, a higher fmin or a larger n_fft"
        )
    matrix /= counts[:, None]
    matrix.flags.writeable = False
    return matrix


def _cqt_frequencies(config: FeatureConfig, tuning: float) -> tuple[np.ndarray, np.ndarray, float]:
    """CQT centre frequencies, relative bandwidths and the highest filter's cutoff, as ``librosa.vqt`` derives them."""
    bpo = config.cqt_bins_per_octave
    freqs = librosa.interval_frequencies(
        n_bins=config.cqt_octaves * bpo,
        fmin=config.cqt_fmin * 2.0 ** (tuning / bpo),
        intervals="equal",
        bins_per_octave=bpo,
        sort=True,
    )
    logf = np.log2(freqs)  # local octave resolution, reflected at the ends (librosa's relative bandwidth)
    bins_per_octave = np.empty_like(freqs)
    bins_per_octave[0], bins_per_octave[-1] = 1 / (logf[1] - logf[0]), 1 / (logf[-1] - logf[-2])
    bins_per_octave[1:-1] = 2 / (logf[2:] - logf[:-2])
    alpha = (2.0 ** (2 / bins_per_octave) - 1) / (2.0 ** (2 / bins_per_octave) + 1)
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=config.sample_rate, window="hann", alpha=alpha)
    return freqs, alpha, float(cutoff)


@dataclass(frozen=True)
class FeatureConfig:
    """Frame and band settings of :func:`clip_features`; see the module docstring for each feature.

    ``mfcc_n_mels``: mel bands of the mel spectrogram behind ``mfcc`` and ``spectral_flux`` (librosa's 128);
    ``n_mels``: bands of the ``mfc`` block. ``workers``: processes of :func:`feature_table`.
    """

    sample_rate: PositiveInt = 22_050
    n_fft: Annotated[int, Bounds(ge=16)] = 2048
    hop_length: PositiveInt = 512
    n_mfcc: PositiveInt = 20
    mfcc_n_mels: PositiveInt = 128
    n_mels: PositiveInt = 32
    spectrogram_bands: PositiveInt = 16
    spectrogram_fmin: PositiveFloat = 50.0
    rolloff_percent: Annotated[float, Bounds(gt=0.0, lt=1.0)] = 0.85
    contrast_bands: PositiveInt = 6
    contrast_fmin: PositiveFloat = 200.0
    cqt_fmin: PositiveFloat = C1_HZ
    cqt_octaves: PositiveInt = 7
    cqt_bins_per_octave: PositiveInt = 36
    workers: PositiveInt = 1

    def __post_init__(self):
        check_fields(self)
        nyquist = self.sample_rate / 2
        if self.n_mfcc > self.mfcc_n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} exceeds mfcc_n_mels={self.mfcc_n_mels}")
        if self.contrast_fmin * 2 ** (self.contrast_bands - 1) >= nyquist:
            raise ValueError(f"{self.contrast_bands} contrast octaves from {self.contrast_fmin} Hz pass {nyquist} Hz")
        if self.cqt_bins_per_octave % N_CHROMA:
            raise ValueError(f"cqt_bins_per_octave={self.cqt_bins_per_octave} is not a multiple of {N_CHROMA}")
        if self.cqt_octaves * self.cqt_bins_per_octave < 2:
            raise ValueError("the CQT needs at least two bins")
        if self.spectrogram_fmin >= nyquist:
            raise ValueError(f"spectrogram_fmin={self.spectrogram_fmin} is not below Nyquist {nyquist}")
        _band_matrix(self.sample_rate, self.n_fft, self.spectrogram_bands, self.spectrogram_fmin)
        for tuning in (-0.5, 0.5):  # the estimated tuning shifts every CQT bin by up to half a bin
            _, _, cutoff = _cqt_frequencies(self, tuning)
            if cutoff > nyquist:
                raise ValueError(f"the CQT's highest filter reaches {cutoff:.0f} Hz, above Nyquist {nyquist} Hz")


def feature_dims(config: FeatureConfig = FeatureConfig()) -> dict[str, int]:
    """Rows (dims) of each feature's frame matrix, in :data:`FEATURE_DOMAINS` order."""
    sizes = {"spectral_contrast": config.contrast_bands + 1, "mfcc": config.n_mfcc, "mfc": config.n_mels}
    sizes |= {"spectrogram": config.spectrogram_bands, "tonnetz": 6}
    sizes |= {name: N_CHROMA for name in ("chroma_stft", "chroma_cqt", "chroma_cens")}
    return {name: sizes.get(name, 1) for name in FEATURE_DOMAINS}


def feature_columns(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """``<feature>_<dim>_<stat>`` in table order: feature, then dim, then statistic."""
    return [
        f"{name}_{dim}_{stat}"
        for name, dims in feature_dims(config).items()
        for dim in range(dims)
        for stat in STATISTICS
    ]


_BLOCK_PATTERN = re.compile(rf"^({'|'.join(FEATURE_DOMAINS)})_(\d+)_({'|'.join(STATISTICS)})$")


def feature_blocks(columns: Sequence[str]) -> dict[str, list[str]]:
    """Feature name -> its columns among ``columns`` (in their given order); other columns are ignored.

    Only features with at least one column appear, in :data:`FEATURE_DOMAINS` order.
    """
    blocks: dict[str, list[str]] = {name: [] for name in FEATURE_DOMAINS}
    for column in columns:
        match = _BLOCK_PATTERN.match(column)
        if match:
            blocks[match.group(1)].append(column)
    return {name: found for name, found in blocks.items() if found}


def _feature_parameters(config: FeatureConfig) -> dict[str, dict]:
    """Per feature: what it is computed from and the settings that define it (the catalog's JSON)."""
    sr, n_fft, hop = config.sample_rate, config.n_fft, config.hop_length
    frame = {"sample_rate": sr, "n_fft": n_fft, "hop_length": hop, "window": "hann", "center": True}
    mel = {**frame, "n_mels": config.mfcc_n_mels, "mel_norm": "slaney", "top_db": TOP_DB}
    cqt = {"sample_rate": sr, "hop_length": hop, "fmin_hz": config.cqt_fmin, "n_octaves": config.cqt_octaves}
    cqt |= {"bins_per_octave": config.cqt_bins_per_octave, "tuning": "estimated"}
    edges = np.geomspace(config.spectrogram_fmin, sr / 2, config.spectrogram_bands + 1)
    return {
        "rms": {"source": "waveform", "frame_length": n_fft, "hop_length": hop, "center": True},
        "zcr": {"source": "waveform", "frame_length": n_fft, "hop_length": hop, "center": True},
        "spectral_centroid": {"source": "stft_magnitude", **frame},
        "spectral_bandwidth": {"source": "stft_magnitude", **frame, "p": 2},
        "spectral_contrast": {"source": "stft_magnitude", **frame, "n_bands": config.contrast_bands}
        | {"fmin_hz": config.contrast_fmin},
        "spectral_flatness": {"source": "stft_magnitude", **frame, "power": 2.0},
        "spectral_flux": {"source": "mel_db", **mel, "lag": 1, "aggregate": "mean"},
        "spectral_rolloff": {"source": "stft_magnitude", **frame, "roll_percent": config.rolloff_percent},
        "mfcc": {"source": "mel_db", **mel, "n_mfcc": config.n_mfcc, "dct": "type 2, ortho"},
        "mfc": {"source": "stft_power", **frame, "n_mels": config.n_mels, "mel_norm": "slaney", "top_db": TOP_DB},
        "spectrogram": {"source": "stft_power", **frame, "bands": config.spectrogram_bands}
        | {"band_edges_hz": [0.0, *np.round(edges[1:], 2).tolist()], "value": "dB of mean band power"},
        "chroma_stft": {"source": "stft_power", **frame, "n_chroma": N_CHROMA, "tuning": "estimated", "norm": "inf"},
        "chroma_cqt": {"source": "cqt_magnitude", **cqt, "n_chroma": N_CHROMA, "norm": "inf"},
        "chroma_cens": {"source": "cqt_magnitude", **cqt, "n_chroma": N_CHROMA, "win_len_smooth": 41},
        "tonnetz": {"source": "chroma_cqt", **cqt},
    }


def feature_catalog(config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """One row per feature: ``feature, domain, dims, n_columns, first_column, last_column, columns``
    (comma-joined), ``parameters`` (JSON text: source transform and settings)."""
    parameters = _feature_parameters(config)
    rows = []
    for name, dims in feature_dims(config).items():
        columns = [f"{name}_{dim}_{stat}" for dim in range(dims) for stat in STATISTICS]
        rows.append(
            {
                "feature": name,
                "domain": FEATURE_DOMAINS[name],
                "dims": dims,
                "n_columns": len(columns),
                "first_column": columns[0],
                "last_column": columns[-1],
                "columns": ",".join(columns),
                "parameters": json.dumps(parameters[name], sort_keys=True),
            }
        )
    return pd.DataFrame(rows).astype({"dims": "int64", "n_columns": "int64"})


@lru_cache(maxsize=256)
def chroma_basis(sample_rate: int, n_fft: int, tuning: float) -> np.ndarray:
    """librosa's STFT chroma filter bank ``(12, n_fft // 2 + 1)`` for one tuning (``chroma_stft``'s)."""
    basis = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=tuning, n_chroma=N_CHROMA)
    basis.flags.writeable = False
    return basis


@dataclass(frozen=True)
class _CqtOctave:
    """One octave of the CQT: its sparse FFT filter bank ``(bins, n_fft // 2 + 1)``, frame and hop."""

    basis: scipy.sparse.csr_matrix
    n_fft: int
    hop_length: int
    halve_after: bool  # the signal is decimated by 2 before the next (lower) octave


@dataclass(frozen=True)
class _CqtPlan:
    """Everything ``librosa.cqt`` derives from the rate, hop and tuning, computed once per tuning."""

    early_factor: int  # decimation before the first octave (1 = none)
    octaves: tuple[_CqtOctave, ...]
    n_bins: int
    scale: np.ndarray  # (n_bins, 1): 1 / sqrt(filter length), librosa's scale=True


def _octave_filters(sample_rate: float, freqs: np.ndarray, alpha: np.ndarray) -> tuple[scipy.sparse.csr_matrix, int]:
    """Frequency-domain Hann wavelets of one octave (``librosa.cqt``'s filter bank: norm 1, sparsity 0.01)."""
    basis, lengths = librosa.filters.wavelet(
        freqs=freqs, sr=sample_rate, filter_scale=1, norm=1, pad_fft=True, window="hann", gamma=0, alpha=alpha
    )
    n_fft = basis.shape[1]
    basis *= lengths[:, np.newaxis] / float(n_fft)
    spectrum = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    return librosa.util.sparsify_rows(spectrum, quantile=0.01, dtype=np.complex64), n_fft


@lru_cache(maxsize=128)
def _cqt_plan(config: FeatureConfig, tuning: float) -> _CqtPlan:
    """The CQT filter banks for ``tuning``: the steps of ``librosa.vqt`` (``gamma=0``) that do not read the signal."""
    sr, hop, bpo = config.sample_rate, config.hop_length, config.cqt_bins_per_octave
    freqs, alpha, cutoff = _cqt_frequencies(config, tuning)
    n_bins, n_octaves = freqs.size, config.cqt_octaves
    twos = (hop & -hop).bit_length() - 1  # factors of 2 in the hop
    early = min(max(0, int(np.ceil(np.log2(sr / 2 / cutoff)) - 1) - 1), max(0, twos - n_octaves + 1))
    base_sr, my_hop = sr / 2**early, hop // 2**early
    my_sr, octaves = base_sr, []
    for octave in range(n_octaves):
        rows = slice(n_bins - bpo * (octave + 1), n_bins - bpo * octave)
        basis, n_fft = _octave_filters(my_sr, freqs[rows], alpha[rows])
        basis[:] *= np.sqrt(base_sr / my_sr)  # as librosa: the decimated octaves keep the base rate's gain
        octaves.append(_CqtOctave(basis, n_fft, my_hop, halve_after=my_hop % 2 == 0))
        if my_hop % 2 == 0:
            my_hop, my_sr = my_hop // 2, my_sr / 2
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=base_sr, window="hann", alpha=alpha)
    scale = (1.0 / np.sqrt(lengths))[:, np.newaxis]
    return _CqtPlan(2**early, tuple(octaves), n_bins, scale)


def _boxcar_stft(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``librosa.stft(y, n_fft, hop_length, window="ones", pad_mode="constant")`` of a float32 signal: the same
    frames (centred, zero padding), transformed in float64 and stored as complex64, as librosa does.

    Without librosa's per-call set-up, and without its warning for a signal shorter than ``n_fft`` (a short clip's
    low CQT octaves have filters longer than the clip: the zero padding is intended there).

    Shape:
        y: ``(n,)``; returns ``(n_fft // 2 + 1, 1 + n // hop_length)``, Fortran-ordered like librosa's.
    """
    padded = np.pad(y, n_fft // 2).astype(np.float64)
    frames = sliding_window_view(padded, n_fft)[::hop_length]
    return np.fft.rfft(frames, axis=-1).astype(np.complex64).T


def _cqt_magnitude(y: np.ndarray, plan: _CqtPlan) -> np.ndarray:
    """``|librosa.cqt(y, ...)|`` ``(n_bins, frames)`` with the plan's filters (same steps, same resampler)."""
    if plan.early_factor > 1:
        if y.size < plan.early_factor:
            raise InputRejected("too_short", f"{y.size} samples cannot be decimated by {plan.early_factor} for the CQT")
        y = librosa.resample(y, orig_sr=plan.early_factor, target_sr=1, res_type="soxr_hq", scale=True)
    responses = []
    for octave in plan.octaves:
        responses.append(octave.basis.dot(_boxcar_stft(y, octave.n_fft, octave.hop_length)))
        if octave.halve_after:
            y = librosa.resample(y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
    width = min(response.shape[-1] for response in responses)
    out = np.empty((plan.n_bins, width), dtype=responses[0].dtype)
    end = plan.n_bins
    for response in responses:  # highest octave first; the lowest may be cut at bin 0
        rows = min(end, response.shape[0])
        out[end - rows : end] = response[-rows:, :width]
        end -= rows
    out *= plan.scale
    return np.abs(out)


def _cqt_tuning(y: np.ndarray, magnitude: np.ndarray, config: FeatureConfig) -> float:
    """The tuning ``librosa.cqt(y, tuning=None)`` estimates: from ``|STFT|`` when its frames are piptrack's."""
    if config.n_fft == 2048 and config.hop_length == 512:
        return float(
            librosa.estimate_tuning(S=magnitude, sr=config.sample_rate, bins_per_octave=config.cqt_bins_per_octave)
        )
    return float(librosa.estimate_tuning(y=y, sr=config.sample_rate, bins_per_octave=config.cqt_bins_per_octave))


def _stft_features(y: np.ndarray, config: FeatureConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every feature computed from the waveform and the one STFT; also returns ``|STFT|`` for the CQT's tuning."""
    sr, n_fft, hop = config.sample_rate, config.n_fft, config.hop_length
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    power = magnitude**2
    mel_db = librosa.power_to_db(mel_basis(sr, n_fft, config.mfcc_n_mels) @ power, top_db=TOP_DB)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=n_fft, hop_length=hop)
    stft_tuning = float(librosa.estimate_tuning(S=power, sr=sr, n_fft=n_fft, bins_per_octave=N_CHROMA))
    chroma = chroma_basis(sr, n_fft, stft_tuning) @ power
    out = {
        "rms": librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop),
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop),
        "spectral_centroid": centroid,
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(S=magnitude, sr=sr, n_fft=n_fft, centroid=centroid),
        "spectral_contrast": librosa.feature.spectral_contrast(
            S=magnitude, sr=sr, n_fft=n_fft, n_bands=config.contrast_bands, fmin=config.contrast_fmin
        ),
        "spectral_flatness": librosa.feature.spectral_flatness(S=magnitude, n_fft=n_fft),
        "spectral_flux": librosa.onset.onset_strength(S=mel_db, sr=sr, n_fft=n_fft, hop_length=hop)[np.newaxis],
        "spectral_rolloff": librosa.feature.spectral_rolloff(
            S=magnitude, sr=sr, n_fft=n_fft, roll_percent=config.rolloff_percent
        ),
        "mfcc": librosa.feature.mfcc(S=mel_db, n_mfcc=config.n_mfcc),
        "mfc": librosa.power_to_db(mel_basis(sr, n_fft, config.n_mels) @ power, top_db=TOP_DB),
        "spectrogram": librosa.power_to_db(
            _band_matrix(sr, n_fft, config.spectrogram_bands, config.spectrogram_fmin) @ power, top_db=TOP_DB
        ),
        "chroma_stft": librosa.util.normalize(chroma, norm=np.inf, axis=-2),
    }
    return out, magnitude


def feature_matrices(samples: np.ndarray, config: FeatureConfig = FeatureConfig()) -> dict[str, np.ndarray]:
    """The 15 frame matrices of one preprocessed clip (module docstring), in :data:`FEATURE_DOMAINS` order.

    Args:
        samples: ``(n,)`` mono clip at ``config.sample_rate`` (analysed as float32), ``n >= config.n_fft``.

    Returns:
        ``{feature: (dims, frames)}`` with ``frames = 1 + n // hop_length`` and dims from :func:`feature_dims`.

    Raises:
        InputRejected: ``non_finite_samples``, ``silent`` (all zeros) or ``too_short`` (fewer than n_fft samples).
    """
    y = checked_clip(samples, config.n_fft)
    out, magnitude = _stft_features(y, config)
    cqt = _cqt_magnitude(y, _cqt_plan(config, _cqt_tuning(y, magnitude, config)))
    cqt_args = {"sr": config.sample_rate, "hop_length": config.hop_length, "fmin": config.cqt_fmin}
    cqt_args |= {"bins_per_octave": config.cqt_bins_per_octave, "n_octaves": config.cqt_octaves}
    out["chroma_cqt"] = librosa.feature.chroma_cqt(C=cqt, **cqt_args)
    out["chroma_cens"] = librosa.feature.chroma_cens(C=cqt, **cqt_args)
    out["tonnetz"] = librosa.feature.tonnetz(chroma=out["chroma_cqt"], sr=config.sample_rate)
    return {name: out[name] for name in FEATURE_DOMAINS}


def summarise(matrix: np.ndarray) -> np.ndarray:
    """``(dims, 7)``: the :data:`STATISTICS` of each row of a ``(dims, frames)`` matrix, in float64."""
    values = np.asarray(matrix, dtype=np.float64)
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75], axis=1)
    return np.stack(
        [values.min(axis=1), values.max(axis=1), values.mean(axis=1), median, values.var(axis=1), q1, q3], axis=1
    )


def summarise_all(matrices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`summarise` of each matrix (the same values): the order statistics of all rows in one call when the
    matrices share their frames, as a clip's do (``np.quantile`` costs mostly per call); means and variances stay
    per matrix, where numpy sums each row exactly as it does alone.

    Shape:
        ``{name: (dims, frames)}`` in; ``{name: (dims, 7)}`` out.
    """
    values = [np.asarray(matrix, dtype=np.float64) for matrix in matrices.values()]
    if len({value.shape[1] for value in values}) != 1:
        return {name: summarise(matrix) for name, matrix in matrices.items()}
    rows = np.concatenate(values)
    q1, median, q3 = np.quantile(rows, [0.25, 0.5, 0.75], axis=1)
    means = np.concatenate([value.mean(axis=1) for value in values])
    variances = np.concatenate([value.var(axis=1) for value in values])
    table = np.stack([rows.min(axis=1), rows.max(axis=1), means, median, variances, q1, q3], axis=1)
    ends = np.cumsum([value.shape[0] for value in values])
    return dict(zip(matrices, np.split(table, ends[:-1])))


def feature_vector(samples: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """:func:`clip_features` as a float64 array in :func:`feature_columns` order."""
    summaries = summarise_all(feature_matrices(samples, config))
    bad = [name for name, summary in summaries.items() if not np.isfinite(summary).all()]
    if bad:
        raise InputRejected("non_finite_features", f"NaN or infinite statistics in {bad}")
    return np.concatenate([summary.ravel() for summary in summaries.values()])


def clip_features(samples: np.ndarray, config: FeatureConfig = FeatureConfig()) -> dict[str, float]:
    """The 15 x 7 statistics of one preprocessed clip, ``{column: value}`` in :func:`feature_columns` order.

    Args:
        samples: ``(n,)`` mono clip at ``config.sample_rate``, e.g. from
            :func:`cough_pipeline.classification.preprocess.preprocess`.

    Raises:
        InputRejected: as :func:`feature_matrices`, or ``non_finite_features`` when a statistic is not finite.
    """
    return dict(zip(feature_columns(config), feature_vector(samples, config).tolist()))


@dataclass(frozen=True)
class FeatureTableResult:
    """``features``: one row per accepted recording x variant (:data:`ID_COLUMNS`, ``duration_s``, features);
    ``quarantine``: one row per refused one (``dataset, recording_id, variant, reason, detail``)."""

    features: pd.DataFrame
    quarantine: pd.DataFrame


def _row_features(row: dict, config: FeatureConfig, preprocess_config: PreprocessConfig) -> tuple[float, np.ndarray]:
    """Decode, preprocess and describe one recording row: ``(duration_s of the preprocessed clip, vector)``."""
    clip = load_and_preprocess(row["audio_path"], preprocess_config)
    return clip.size / config.sample_rate, feature_vector(clip, config)


def feature_table(
    recordings: pd.DataFrame,
    config: FeatureConfig = FeatureConfig(),
    preprocess_config: PreprocessConfig | None = None,
    progress: ProgressCallback | None = None,
) -> FeatureTableResult:
    """The feature table of a recordings table (one row per recording and variant, absolute ``audio_path``).

    Every input row ends in exactly one of ``features`` and ``quarantine`` (unknown variant, missing or relative
    path, repeated recording+variant, undecodable audio, silent, too short, non-finite). ``duration_s`` is the
    preprocessed (trimmed) clip's duration. Recordings are processed by ``config.workers`` processes, progress
    reported after each. ``preprocess_config`` defaults to :class:`PreprocessConfig` at ``config.sample_rate``.
    """
    preprocess_config = preprocess_config or PreprocessConfig(sample_rate=config.sample_rate)
    if preprocess_config.sample_rate != config.sample_rate:
        raise ClassificationError(
            f"preprocessing resamples to {preprocess_config.sample_rate} Hz, features expect {config.sample_rate} Hz"
        )
    worker = partial(_row_features, config=config, preprocess_config=preprocess_config)
    accepted, quarantine = map_recordings(recordings, worker, VARIANTS, config.workers, progress)
    columns = feature_columns(config)
    values = np.array([vector for _, (_, vector) in accepted], dtype=np.float64).reshape(len(accepted), len(columns))
    table = pd.concat(
        [
            id_frame([row for row, _ in accepted]),
            pd.DataFrame({"duration_s": [duration for _, (duration, _) in accepted]}, dtype="float64"),
            pd.DataFrame(values, columns=columns),
        ],
        axis=1,
    )
    return FeatureTableResult(features=table, quarantine=quarantine)


#: Column order of :attr:`FeatureTableResult.features` before the feature columns.
TABLE_ID_COLUMNS = (*ID_COLUMNS, "duration_s")
