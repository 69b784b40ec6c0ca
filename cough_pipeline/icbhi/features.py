"""Log-mel spectrograms and MFCCs of fixed-length windows, from one STFT.

Per window (``samples`` ``(n,)`` at 16 kHz): ``|STFT|^2`` (Hann window of ``n_fft`` samples, hop ``hop_length``,
``center=True`` with zero padding, as librosa) -> mel power (``n_mels`` Slaney-normalised triangles from ``fmin`` to
``fmax``) -> dB with :func:`librosa.power_to_db` using **ref = 1.0** (absolute: a quiet window stays quieter than a
loud one, so level differences between devices and patients stay visible; ``ref=max`` would normalise every window
to a 0 dB peak), ``amin = 1e-10`` and ``top_db = 80`` (values more than 80 dB below the window's peak are raised to
that floor, which keeps the empty upper bands of upsampled 4 kHz recordings at a bounded level). MFCCs are the
first ``n_mfcc`` type-II orthonormal DCT coefficients of that log-mel — exactly
``librosa.feature.mfcc(y=..., sr=..., n_mfcc=..., n_mels=..., fmax=..., n_fft=..., hop_length=...)``, whose defaults
are these ``power_to_db`` settings.

Frames: ``1 + n // hop_length`` (6 s at 16 kHz, hop 512 -> 188; 20 s -> 626).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import librosa
import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from cough_pipeline.icbhi.config_checks import check_config
from cough_pipeline.mel import mel_basis
from cough_pipeline.parallel import ProgressCallback, notify, ordered_bounded_map

#: Columns copied from the input table into the MFCC summary table when present.
ID_COLUMNS = (
    "window_id",
    "copy_index",
    "augmented",
    "recording_id",
    "patient_id",
    "label",
    "lung_label",
    "diagnosis",
    "split",
    "official_split",
    "strategy",
    "window_seconds",
)
#: Storage types of the stacked log-mel array.
FeatureDtype = Literal["float32", "float16"]
FEATURE_DTYPES: tuple[str, ...] = get_args(FeatureDtype)


class FeatureError(ValueError):
    """Invalid settings, or a window file that does not match them."""


@dataclass(frozen=True)
class FeatureConfig:
    """Spectrogram settings (see the module docstring); ``dtype`` is the storage type of the stacked log-mel array
    (``float16`` halves it; dB values within +-100 keep ~0.03 dB resolution)."""

    sample_rate: PositiveInt = 16_000
    n_mels: PositiveInt = 128
    fmin: NonNegativeFloat = 0.0
    fmax: PositiveFloat = 8_000.0
    n_fft: PositiveInt = 1024
    hop_length: PositiveInt = 512
    n_mfcc: PositiveInt = 20
    ref: PositiveFloat = 1.0
    amin: PositiveFloat = 1e-10
    top_db: NonNegativeFloat | None = 80.0
    dtype: FeatureDtype = "float32"

    def __post_init__(self):
        check_config(self, FeatureError)
        if self.top_db is not None and self.top_db < 0:
            raise FeatureError(f"top_db must be >= 0 or None, got {self.top_db}")
        if self.fmax > self.sample_rate / 2 or not 0 <= self.fmin < self.fmax:
            raise FeatureError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.n_mfcc > self.n_mels:
            raise FeatureError(f"n_mfcc ({self.n_mfcc}) must be <= n_mels ({self.n_mels})")

    def frames(self, n_samples: int) -> int:
        """STFT frames of a ``n_samples`` window (``center=True``)."""
        return 1 + n_samples // self.hop_length


def log_mel_and_mfcc(samples: np.ndarray, config: FeatureConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(log-mel (n_mels, frames), mfcc (n_mfcc, frames))``, float32 dB / DCT coefficients, from one STFT."""
    config = FeatureConfig() if config is None else config
    y = np.asarray(samples, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise FeatureError(f"expected a non-empty 1-D signal, got shape {y.shape}")
    spectrum = librosa.stft(
        y, n_fft=config.n_fft, hop_length=config.hop_length, window="hann", center=True, pad_mode="constant"
    )
    power = spectrum.real**2 + spectrum.imag**2
    mel = mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax) @ power
    log_mel_db = librosa.power_to_db(mel, ref=config.ref, amin=config.amin, top_db=config.top_db)
    coefficients = librosa.feature.mfcc(S=log_mel_db, n_mfcc=config.n_mfcc)
    return log_mel_db.astype(np.float32, copy=False), coefficients.astype(np.float32, copy=False)


def log_mel(
    samples: np.ndarray,
    sample_rate: int = 16_000,
    n_mels: int = 128,
    fmax: float = 8_000.0,
    n_fft: int = 1024,
    hop_length: int = 512,
    **settings,
) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, frames)`` float32 in dB (ref 1.0); ``settings``: other
    :class:`FeatureConfig` fields (``fmin``, ``ref``, ``amin``, ``top_db``)."""
    config = FeatureConfig(
        sample_rate=sample_rate, n_mels=n_mels, fmax=fmax, n_fft=n_fft, hop_length=hop_length, **settings
    )
    return log_mel_and_mfcc(samples, config)[0]


def mfcc(
    samples: np.ndarray,
    sample_rate: int = 16_000,
    n_mfcc: int = 20,
    n_mels: int = 128,
    fmax: float = 8_000.0,
    n_fft: int = 1024,
    hop_length: int = 512,
    **settings,
) -> np.ndarray:
    """MFCCs ``(n_mfcc, frames)`` float32 from the same log-mel as :func:`log_mel`."""
    config = FeatureConfig(
        sample_rate=sample_rate, n_mels=n_mels, fmax=fmax, n_fft=n_fft, hop_length=hop_length, n_mfcc=n_mfcc, **settings
    )
    return log_mel_and_mfcc(samples, config)[1]


def mfcc_columns(n_mfcc: int) -> list[str]:
    """``mfcc_mean_01 .. mfcc_mean_NN, mfcc_std_01 .. mfcc_std_NN``."""
    return [f"mfcc_{stat}_{k:02d}" for stat in ("mean", "std") for k in range(1, n_mfcc + 1)]


def feature_arrays(
    table: pd.DataFrame,
    audio_root: str | Path,
    config: FeatureConfig | None = None,
    out_path: str | Path | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Log-mel of every window of ``table`` stacked as ``(N, n_mels, frames)`` and an MFCC summary table.

    ``table`` has an ``audio_path`` column (relative to ``audio_root``) of windows that all have the same length
    (one window length per call; use :func:`feature_arrays_by_length` for mixed tables). Row ``i`` of the array
    is row ``i`` of ``table`` in its current order (the summary's ``array_index``). The summary has one row per
    window: the :data:`ID_COLUMNS` present in ``table``, ``array_index`` and :func:`mfcc_columns` (mean and
    population std of each coefficient over frames). With ``out_path`` the array is a ``.npy`` memory map written
    in place (memory stays at a few windows); otherwise it is in memory. Every file must be mono at
    ``config.sample_rate`` with the length of the first file, else :class:`FeatureError`. ``workers`` threads
    read and transform windows; ``progress(done, total)`` is called after each window.
    """
    config = FeatureConfig() if config is None else config
    _check_single_length(table)
    paths = [Path(audio_root) / path for path in table["audio_path"]]
    n_samples = sf.info(str(paths[0])).frames
    array = _log_mel_array(out_path, (len(paths), config.n_mels, config.frames(n_samples)), config.dtype)
    summary = np.empty((len(paths), 2 * config.n_mfcc), dtype=np.float64)
    extract = partial(_extract, array=array, summary=summary, config=config, n_samples=n_samples)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        extracted = ordered_bounded_map(pool, extract, list(enumerate(paths)), 4 * max(1, workers))
        for done, _ in enumerate(extracted, start=1):
            notify(progress, done, len(paths))
    if out_path is not None:
        array.flush()
    ids = table[[c for c in ID_COLUMNS if c in table.columns]].reset_index(drop=True)
    ids.insert(len(ids.columns), "array_index", np.arange(len(paths), dtype=np.int64))
    return array, pd.concat([ids, pd.DataFrame(summary, columns=mfcc_columns(config.n_mfcc))], axis=1)


def _check_single_length(table: pd.DataFrame) -> None:
    """A non-empty table of windows with paths, all of one length."""
    if "audio_path" not in table.columns:
        raise FeatureError("table lacks an audio_path column")
    if table.empty:
        raise FeatureError("table has no windows")
    if "window_seconds" in table.columns and table["window_seconds"].nunique() > 1:
        raise FeatureError(
            f"one window length per call; table has {sorted(table['window_seconds'].unique())} "
            "(use feature_arrays_by_length)"
        )


def _log_mel_array(out_path: str | Path | None, shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    """The stacked log-mel array: a ``.npy`` memory map at ``out_path``, else in memory."""
    if out_path is None:
        return np.empty(shape, dtype=dtype)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(out_path, mode="w+", dtype=dtype, shape=shape)


def _extract(
    item: tuple[int, Path], array: np.ndarray, summary: np.ndarray, config: FeatureConfig, n_samples: int
) -> None:
    """Log-mel of window ``item = (index, path)`` into ``array[index]``, its MFCC mean/std into ``summary[index]``."""
    index, path = item
    samples, rate = sf.read(str(path), dtype="float32")
    if samples.ndim != 1 or rate != config.sample_rate or samples.shape[0] != n_samples:
        raise FeatureError(
            f"{path.name}: expected mono {n_samples} samples at {config.sample_rate} Hz, got "
            f"shape {samples.shape} at {rate} Hz"
        )
    log_mel_db, coefficients = log_mel_and_mfcc(samples, config)
    array[index] = log_mel_db
    summary[index] = np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)])


def logmel_file(out_dir: str | Path, window_s: float) -> Path:
    """Where :func:`feature_arrays_by_length` writes the log-mel array of ``window_s``-second windows."""
    return Path(out_dir) / f"logmel_{float(window_s):g}s.npy"


def feature_arrays_by_length(
    table: pd.DataFrame,
    audio_root: str | Path,
    config: FeatureConfig | None = None,
    out_dir: str | Path | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> dict[float, tuple[np.ndarray, pd.DataFrame]]:
    """:func:`feature_arrays` per ``window_seconds`` (rows kept in table order within each length); with
    ``out_dir`` each array is ``out_dir/logmel_<W>s.npy``. ``progress(done, total)`` counts windows over all
    lengths."""
    if "window_seconds" not in table.columns:
        raise FeatureError("table lacks a window_seconds column")
    results, done = {}, 0
    for window_s in sorted(table["window_seconds"].unique()):
        subset = table[table["window_seconds"] == window_s]
        out_path = logmel_file(out_dir, window_s) if out_dir is not None else None
        overall = partial(_offset_progress, progress=progress, offset=done, total=len(table))
        results[float(window_s)] = feature_arrays(subset, audio_root, config, out_path, workers, overall)
        done += len(subset)
    return results


def _offset_progress(done: int, _total: int, progress: ProgressCallback | None, offset: int, total: int) -> None:
    notify(progress, offset + done, total)


__all__ = [
    "ID_COLUMNS",
    "FeatureConfig",
    "FeatureError",
    "feature_arrays",
    "feature_arrays_by_length",
    "log_mel",
    "log_mel_and_mfcc",
    "logmel_file",
    "mfcc",
    "mfcc_columns",
]
