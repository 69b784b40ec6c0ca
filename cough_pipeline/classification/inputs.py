"""Neural-network inputs of one preprocessed clip, saved as one ``.npy`` file per recording, variant and kind.

Every array is float32 and comes from the clip :func:`cough_pipeline.classification.preprocess.preprocess`
returns (mono, ``sample_rate``, peak 1). Frames are Hann windows of ``n_fft`` = 2048 samples (93 ms at 22.05 kHz)
every ``hop_length`` = 512 samples (23 ms), centred with zero padding (librosa's defaults).

``logmel`` ``(n_mels, patch_frames)`` = (128, 173)
    A fixed ``patch_s`` = 4 s patch: a longer clip keeps its 4 s window with the most energy (largest sum of
    squared samples; the earliest such window on ties), so the patch holds the cough rather than an arbitrary
    centre; a shorter clip is zero-padded at the end (silence, not a repeated cough). The patch's mel power
    spectrogram (Slaney mel, 0 Hz to Nyquist) in dB relative to its maximum (``power_to_db(ref=np.max)``, floor
    -80 dB) is standardised per patch: zero mean, unit variance over all its cells.
``mfcc`` ``(n_mfcc,)`` = (39,)
    ``librosa.feature.mfcc`` (39 coefficients of a 128-band mel spectrum in dB) of the whole clip, averaged over
    frames. The whole clip, not the patch: a time average needs no fixed length, and padding would dilute it.
``spectrogram`` ``(image_rows, image_columns)`` = (128, 40)
    The patch's ``image_rows``-band mel spectrum in dB (ref max, as ``logmel`` before standardising) resized over
    time to ``image_columns`` columns by area averaging (each column the overlap-weighted mean of the frames it
    covers, so 173 frames -> 40 columns of 100 ms), then min-max scaled to [0, 1] (low frequencies in row 0).
``chroma`` ``(12,)``
    ``librosa.feature.chroma_stft`` (tuning estimated, each frame scaled to a maximum of 1) of the whole clip,
    averaged over frames.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated

import librosa
import numpy as np
import pandas as pd

from cough_pipeline.bounds import Bounds, PositiveFloat, PositiveInt, check_fields
from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.classification.features import N_CHROMA, chroma_basis
from cough_pipeline.classification.preprocess import (
    PreprocessConfig,
    checked_clip,
    id_frame,
    load_and_preprocess,
    map_recordings,
)
from cough_pipeline.classification.variants import VARIANTS
from cough_pipeline.mel import mel_basis
from cough_pipeline.naming import artefact_stem
from cough_pipeline.parallel import ProgressCallback

#: Array kinds, in the order of the table's path columns.
KINDS = ("logmel", "mfcc", "spectrogram", "chroma")
#: dB floor below a patch's maximum.
TOP_DB = 80.0
_SAFE_KIND = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class InputArraysConfig:
    """Shapes and frames of the four arrays; see the module docstring for how each is made.

    ``patch_s``: seconds of the log-mel patch. ``mfcc_n_mels``: mel bands behind the MFCCs.
    ``workers``: processes of :func:`input_table`.
    """

    sample_rate: PositiveInt = 22_050
    n_fft: Annotated[int, Bounds(ge=16)] = 2048
    hop_length: PositiveInt = 512
    n_mels: PositiveInt = 128
    patch_s: PositiveFloat = 4.0
    n_mfcc: PositiveInt = 39
    mfcc_n_mels: PositiveInt = 128
    image_rows: PositiveInt = 128
    image_columns: PositiveInt = 40
    workers: PositiveInt = 1

    def __post_init__(self):
        check_fields(self)
        if self.n_mfcc > self.mfcc_n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} exceeds mfcc_n_mels={self.mfcc_n_mels}")
        if self.image_columns > self.patch_frames:
            raise ValueError(f"image_columns={self.image_columns} exceeds the patch's {self.patch_frames} frames")

    @property
    def patch_samples(self) -> int:
        """Samples of the log-mel patch (88 200 for 4 s at 22.05 kHz)."""
        return round(self.patch_s * self.sample_rate)

    @property
    def patch_frames(self) -> int:
        """Frames of the log-mel patch, ``1 + patch_samples // hop_length`` (173 by default)."""
        return 1 + self.patch_samples // self.hop_length

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each array kind."""
        return {
            "logmel": (self.n_mels, self.patch_frames),
            "mfcc": (self.n_mfcc,),
            "spectrogram": (self.image_rows, self.image_columns),
            "chroma": (12,),
        }


def loudest_window(samples: np.ndarray, length: int) -> np.ndarray:
    """The ``length``-sample window of ``samples`` with the most energy (earliest on ties), or ``samples``
    zero-padded at the end to ``length`` when shorter. Returns ``(length,)`` float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size <= length:
        return np.pad(samples, (0, length - samples.size))
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return samples[start : start + length]


@lru_cache(maxsize=8)
def _area_matrix(frames: int, columns: int) -> np.ndarray:
    """``(frames, columns)`` weights: column ``j`` is the overlap-weighted mean of the frames in its time span."""
    edges = np.linspace(0.0, frames, columns + 1)
    starts = np.arange(frames)
    overlap = np.clip(
        np.minimum(starts[:, None] + 1, edges[None, 1:]) - np.maximum(starts[:, None], edges[None, :-1]), 0.0, None
    )
    weights = overlap / overlap.sum(axis=0, keepdims=True)
    weights.flags.writeable = False
    return weights


def _power(samples: np.ndarray, config: InputArraysConfig) -> np.ndarray:
    """``|STFT|**2`` ``(n_fft // 2 + 1, 1 + n // hop_length)`` of ``(n,)`` samples (Hann, centred, zero padding)."""
    return np.abs(librosa.stft(samples, n_fft=config.n_fft, hop_length=config.hop_length)) ** 2


def _mel_db(power: np.ndarray, config: InputArraysConfig, n_mels: int) -> np.ndarray:
    """The ``n_mels``-band mel spectrum of ``power`` in dB relative to its maximum (floor ``-TOP_DB``)."""
    mel = mel_basis(config.sample_rate, config.n_fft, n_mels) @ power
    return librosa.power_to_db(mel, ref=np.max, top_db=TOP_DB)


def _patch_arrays(power: np.ndarray, config: InputArraysConfig, kinds: frozenset[str]) -> dict[str, np.ndarray]:
    """``logmel`` and ``spectrogram`` (those of ``kinds``) of the patch whose ``|STFT|**2`` is ``power``."""
    out = {}
    shared = config.image_rows == config.n_mels  # the image is the log-mel patch before standardising
    if "logmel" in kinds or ("spectrogram" in kinds and shared):
        logmel = _mel_db(power, config, config.n_mels)
        spread = float(logmel.std())
        if spread == 0.0:  # a patch of one constant level has nothing to standardise
            raise InputRejected("constant_patch", "the log-mel patch is constant")
        out["logmel"] = (logmel - logmel.mean()) / spread
    if "spectrogram" in kinds:
        image = logmel if shared else _mel_db(power, config, config.image_rows)
        image = image @ _area_matrix(image.shape[1], config.image_columns)
        low, high = float(image.min()), float(image.max())
        out["spectrogram"] = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return out


def _clip_arrays(power: np.ndarray, config: InputArraysConfig, kinds: frozenset[str]) -> dict[str, np.ndarray]:
    """``mfcc`` and ``chroma`` (those of ``kinds``): frame means over the whole clip whose ``|STFT|**2`` is
    ``power``; the same values as ``librosa.feature.mfcc`` / ``chroma_stft`` on that spectrogram."""
    sr, n_fft = config.sample_rate, config.n_fft
    out = {}
    if "mfcc" in kinds:
        mel_db = librosa.power_to_db(mel_basis(sr, n_fft, config.mfcc_n_mels) @ power, top_db=TOP_DB)
        out["mfcc"] = librosa.feature.mfcc(S=mel_db, n_mfcc=config.n_mfcc).mean(axis=1)
    if "chroma" in kinds:
        tuning = float(librosa.estimate_tuning(S=power, sr=sr, bins_per_octave=N_CHROMA))
        raw = np.einsum("cf,ft->ct", chroma_basis(sr, n_fft, tuning), power, optimize=True)  # as chroma_stft sums
        chroma = librosa.util.normalize(raw, norm=np.inf, axis=-2)
        out["chroma"] = chroma.mean(axis=1)
    return out


def _spectrograms(
    clip: np.ndarray, config: InputArraysConfig, patch_kinds: bool, clip_kinds: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(patch power, clip power)``, each None when no kind asked for needs it.

    A clip no longer than the patch is the patch's start (the rest is zeros), so its centred frames are the
    patch's first ``1 + n // hop_length`` frames: one STFT then serves both.
    """
    patch = _power(loudest_window(clip, config.patch_samples), config) if patch_kinds else None
    if not clip_kinds:
        return patch, None
    if patch is not None and clip.size <= config.patch_samples:
        return patch, patch[:, : 1 + clip.size // config.hop_length]
    return patch, _power(clip, config)


def input_arrays(
    samples: np.ndarray, config: InputArraysConfig = InputArraysConfig(), kinds: Collection[str] = KINDS
) -> dict[str, np.ndarray]:
    """The network inputs of one preprocessed clip (module docstring): all four, or the ``kinds`` a model reads.

    Args:
        samples: ``(n,)`` mono clip at ``config.sample_rate``, ``n >= config.n_fft``.
        config: array settings.
        kinds: which of :data:`KINDS` to compute (only those are computed and checked).

    Returns:
        ``{"logmel": (128, 173), "mfcc": (39,), "spectrogram": (128, 40), "chroma": (12,)}`` float32 arrays
        (shapes for the default config; :meth:`InputArraysConfig.shapes`), in :data:`KINDS` order.

    Raises:
        InputRejected: ``non_finite_samples``, ``too_short``, ``silent`` or ``constant_patch``.
        ClassificationError: a kind that is not one of :data:`KINDS`.
    """
    wanted = frozenset(kinds)
    if not wanted <= set(KINDS):
        raise ClassificationError(f"unknown array kinds {sorted(wanted - set(KINDS))}; choose from {list(KINDS)}")
    clip = checked_clip(samples, config.n_fft)
    patch_kinds, clip_kinds = wanted & {"logmel", "spectrogram"}, wanted & {"mfcc", "chroma"}
    patch, whole = _spectrograms(clip, config, bool(patch_kinds), bool(clip_kinds))
    found = {**(_patch_arrays(patch, config, wanted) if patch_kinds else {})}
    found |= _clip_arrays(whole, config, wanted) if clip_kinds else {}
    arrays = {kind: found[kind].astype(np.float32) for kind in KINDS if kind in wanted}
    bad = [kind for kind, array in arrays.items() if not np.isfinite(array).all()]
    if bad:
        raise InputRejected("non_finite_features", f"NaN or infinite values in {bad}")
    return arrays


def write_input_arrays(arrays: dict[str, np.ndarray], folder: str | Path, stem: str) -> dict[str, str]:
    """Save each array as ``<folder>/<stem>.<kind>.npy`` (written to a temporary name, then renamed, so a reader
    never sees half a file). Returns ``{kind: path}``."""
    if not stem or "/" in stem or os.sep in stem or stem in {".", ".."}:
        raise ClassificationError(f"stem {stem!r} is not a plain file-name stem")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, array in arrays.items():
        if not _SAFE_KIND.match(kind):
            raise ClassificationError(f"array kind {kind!r} is not a plain name")
        path = folder / f"{stem}.{kind}.npy"
        partial_path = folder / f".{stem}.{kind}.{os.getpid()}.tmp.npy"
        np.save(partial_path, np.asarray(array), allow_pickle=False)
        os.replace(partial_path, path)
        paths[kind] = str(path)
    return paths


def input_stem(recording_id: str, variant: str) -> str:
    """File stem of a recording's variant: :func:`cough_pipeline.naming.artefact_stem` of ``<id>:<variant>``."""
    return artefact_stem(f"{recording_id}:{variant}")


def _row_arrays(
    row: dict, folder: str, config: InputArraysConfig, preprocess_config: PreprocessConfig
) -> dict[str, str]:
    """Decode, preprocess, compute and save one recording row's arrays; returns ``{kind: path}``."""
    clip = load_and_preprocess(row["audio_path"], preprocess_config)
    return write_input_arrays(input_arrays(clip, config), folder, input_stem(row["recording_id"], row["variant"]))


def input_table(
    recordings: pd.DataFrame,
    folder: str | Path,
    config: InputArraysConfig = InputArraysConfig(),
    preprocess_config: PreprocessConfig | None = None,
    progress: ProgressCallback | None = None,
    relative_to: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write every recording's arrays under ``folder`` and list them.

    Args:
        recordings: one row per recording and variant: ``dataset, recording_id, participant_id, covid_label,
            variant, audio_path`` (absolute).
        folder: where the ``.npy`` files go (created).
        config: array settings; ``config.workers`` processes.
        preprocess_config: defaults to :class:`PreprocessConfig` at ``config.sample_rate``.
        progress: ``progress(done, total)`` after each recording.
        relative_to: the table's paths are relative to this folder (default ``folder``), which must contain
            ``folder``.

    Returns:
        ``(table, quarantine)``: ``dataset, recording_id, participant_id, covid_label, variant, logmel_path,
        mfcc_path, spectrogram_path, chroma_path`` (POSIX paths), and ``dataset, recording_id, variant, reason,
        detail``. Every input row is in exactly one of them.
    """
    preprocess_config = preprocess_config or PreprocessConfig(sample_rate=config.sample_rate)
    if preprocess_config.sample_rate != config.sample_rate:
        raise ClassificationError(
            f"preprocessing resamples to {preprocess_config.sample_rate} Hz, inputs expect {config.sample_rate} Hz"
        )
    folder = Path(folder).resolve()
    base = Path(relative_to).resolve() if relative_to is not None else folder
    if not folder.is_relative_to(base):
        raise ClassificationError(f"folder {folder} is not inside relative_to {base}")
    worker = partial(_row_arrays, folder=str(folder), config=config, preprocess_config=preprocess_config)
    accepted, quarantine = map_recordings(recordings, worker, VARIANTS, config.workers, progress)
    paths = pd.DataFrame(
        [{f"{kind}_path": Path(found[kind]).relative_to(base).as_posix() for kind in KINDS} for _, found in accepted],
        columns=[f"{kind}_path" for kind in KINDS],
    ).astype("string")
    table = pd.concat([id_frame([row for row, _ in accepted]), paths], axis=1)
    return table, quarantine
