"""Classification preprocessing of one cough clip, and the per-recording loop shared by the feature stages.

Steps of :func:`preprocess` (every rejection is an :class:`InputRejected` with a machine-readable ``reason``):

1. refuse NaN/infinite samples (``non_finite_samples``) and clips whose peak is below ``silence_peak``
   (``silent``; the default -80 dBFS is the level of digital-silence padding after lossy coding);
2. resample to ``sample_rate`` (soxr, high quality, as :func:`cough_pipeline.audio.resample`). Resampling comes
   before trimming so the trim frames last the same time (``n_fft`` samples, 93 ms at 22.05 kHz) whatever the
   recording's native rate;
3. trim leading and trailing frames more than ``top_db`` dB below the loudest frame (``librosa.effects.trim``,
   frame ``n_fft``, hop ``hop_length``);
4. peak-normalise to [-1, 1] (after resampling, whose overshoot could otherwise push the peak above 1);
5. refuse a clip shorter than ``min_frames`` full analysis frames, ``n_fft + (min_frames - 1) * hop_length``
   samples (``too_short``): shorter clips have no complete frame to describe.

:func:`map_recordings` runs a per-recording function over a recordings table (one row per recording and variant)
so that every input row ends either in the results or in a quarantine table with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, NamedTuple

import librosa
import numpy as np
import pandas as pd

from cough_pipeline.audio import DIGITAL_SILENCE, AudioDecodeError, decode_audio, resample
from cough_pipeline.bounds import Bounds, PositiveFloat, PositiveInt, check_fields
from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.parallel import ProgressCallback, notify, process_map

#: Recordings-table columns the feature stages read (``audio_path`` absolute).
RECORDING_COLUMNS = ("dataset", "recording_id", "participant_id", "covid_label", "variant", "audio_path")
#: Columns of every quarantine table of the feature stages.
QUARANTINE_COLUMNS = ("dataset", "recording_id", "variant", "reason", "detail")
#: Identifying columns every output row of the feature stages starts with.
ID_COLUMNS = ("dataset", "recording_id", "participant_id", "covid_label", "variant")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a clip is cleaned before feature extraction; see the module docstring for the steps.

    ``top_db``: trim threshold below the loudest frame (dB). ``sample_rate``: output rate (Hz). ``min_frames``:
    full ``n_fft`` frames (hop ``hop_length``) a trimmed clip needs. ``silence_peak``: a clip whose absolute peak
    is below this is silent.
    """

    top_db: PositiveFloat = 30.0
    sample_rate: PositiveInt = 22_050
    min_frames: PositiveInt = 1
    n_fft: Annotated[int, Bounds(ge=2)] = 2048
    hop_length: PositiveInt = 512
    silence_peak: PositiveFloat = DIGITAL_SILENCE

    def __post_init__(self):
        check_fields(self)

    @property
    def min_samples(self) -> int:
        """Samples of the shortest accepted clip: ``n_fft + (min_frames - 1) * hop_length``."""
        return self.n_fft + (self.min_frames - 1) * self.hop_length


def preprocess(samples: np.ndarray, sample_rate: int, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Check, resample, trim and peak-normalise one mono clip.

    Args:
        samples: ``(n,)`` mono samples at ``sample_rate`` Hz.
        sample_rate: rate of ``samples`` (Hz).
        config: thresholds and output rate.

    Returns:
        ``(m,)`` float32 at ``config.sample_rate``, peak absolute value 1, ``m >= config.min_samples``.

    Raises:
        InputRejected: ``non_finite_samples``, ``silent`` or ``too_short``.
        ClassificationError: samples that are not one-dimensional or a non-positive rate (caller errors).
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ClassificationError(f"expected mono samples of shape (n,), got shape {samples.shape}")
    if sample_rate <= 0:
        raise ClassificationError(f"sample_rate must be positive, got {sample_rate}")
    if samples.size == 0:
        raise InputRejected("too_short", f"0 samples, need {config.min_samples} at {config.sample_rate} Hz")
    finite = np.isfinite(samples)
    if not finite.all():
        raise InputRejected("non_finite_samples", f"{int((~finite).sum())} of {samples.size} samples are NaN or inf")
    peak = float(np.max(np.abs(samples)))
    if peak < config.silence_peak:
        raise InputRejected("silent", f"peak {peak:.3g} is below the silence floor {config.silence_peak:g}")
    clip = resample(samples.astype(np.float32, copy=False), int(sample_rate), config.sample_rate)
    clip, _ = librosa.effects.trim(clip, top_db=config.top_db, frame_length=config.n_fft, hop_length=config.hop_length)
    peak = float(np.max(np.abs(clip))) if clip.size else 0.0
    if clip.size < config.min_samples or peak == 0.0:
        raise InputRejected(
            "too_short",
            f"{clip.size} samples after trimming at {config.sample_rate} Hz, need {config.min_samples} "
            f"({config.min_frames} frame(s) of {config.n_fft} samples, hop {config.hop_length})",
        )
    return (clip / peak).astype(np.float32)


def load_and_preprocess(path: str | Path, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Decode any format :func:`cough_pipeline.audio.decode_audio` reads, average channels, :func:`preprocess`.

    Raises:
        InputRejected: the decoder's reason (``audio_unreadable``, ``audio_missing``, ``audio_empty``,
            ``audio_truncated``, ``audio_no_samples``) or one of :func:`preprocess`'s.
    """
    try:
        decoded = decode_audio(path)
    except AudioDecodeError as error:
        raise InputRejected(error.reason.value, error.detail) from None
    return preprocess(decoded.mono(), decoded.sample_rate, config)


class Rejection(NamedTuple):
    """A per-recording function's refusal: the quarantine ``reason`` and ``detail``."""

    reason: str
    detail: str


def _guarded(function: Callable[[dict], object], row: dict) -> object:
    """``function(row)``, or a :class:`Rejection` when it raises :class:`InputRejected`."""
    try:
        return function(row)
    except InputRejected as rejected:
        return Rejection(rejected.reason, rejected.detail)


def _screen(rows: list[dict], variants: Sequence[str]) -> dict[int, Rejection]:
    """Rows refused before any audio is read: unknown variant, no or relative path, repeated recording+variant."""
    refused, seen = {}, set()
    for index, row in enumerate(rows):
        key = (row["dataset"], row["recording_id"], row["variant"])
        path = row["audio_path"]
        if row["variant"] not in variants:
            refused[index] = Rejection("invalid_variant", f"variant {row['variant']!r} is not one of {list(variants)}")
        elif path is None or path == "":
            refused[index] = Rejection("audio_missing", "no audio_path")
        elif not Path(path).is_absolute():
            refused[index] = Rejection("audio_path_not_absolute", f"audio_path {path!r} is relative")
        elif key in seen:
            refused[index] = Rejection("duplicate_recording", f"a second row for {key}")
        else:
            seen.add(key)
    return refused


def _plain(value) -> str | None:
    """A table cell as ``str`` (``None`` for a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)


#: Below this many rows a worker pool costs more to start than it saves (a clip takes tens of milliseconds).
POOL_MIN_ROWS = 64


def map_recordings(
    recordings: pd.DataFrame,
    function: Callable[[dict], object],
    variants: Sequence[str],
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> tuple[list[tuple[dict, object]], pd.DataFrame]:
    """Run ``function`` on every usable recording row; every input row ends in exactly one of the two outputs.

    Args:
        recordings: one row per recording and variant with :data:`RECORDING_COLUMNS`.
        function: ``function(row) -> result`` on a dict of those columns (``str`` or ``None`` values); raises
            :class:`InputRejected` to quarantine the row. Module-level (picklable) when ``workers > 1``.
        variants: accepted ``variant`` values; other rows are quarantined as ``invalid_variant``.
        workers: processes (:func:`cough_pipeline.parallel.process_map`); fewer than :data:`POOL_MIN_ROWS` rows
            run in this process, since starting a worker (importing librosa and numba) costs seconds.
        progress: ``progress(done, total)`` after each processed row.

    Returns:
        ``(accepted, quarantine)``: ``[(row, result), ...]`` in input order, and a table of
        :data:`QUARANTINE_COLUMNS` (input order).
    """
    missing = [column for column in RECORDING_COLUMNS if column not in recordings.columns]
    if missing:
        raise ClassificationError(f"recordings table lacks columns {missing}")
    rows = [
        {column: _plain(value) for column, value in zip(RECORDING_COLUMNS, values)}
        for values in recordings[list(RECORDING_COLUMNS)].itertuples(index=False, name=None)
    ]
    outcomes: dict[int, object] = dict(_screen(rows, variants))
    todo = [index for index in range(len(rows)) if index not in outcomes]
    with process_map(workers if len(todo) >= POOL_MIN_ROWS else 1) as mapper:
        results = mapper(partial(_guarded, function), [rows[index] for index in todo], chunksize=1)
        for done, (index, result) in enumerate(zip(todo, results), start=1):
            outcomes[index] = result
            notify(progress, done, len(todo))
    accepted, refused = [], []
    for index in range(len(rows)):
        outcome = outcomes[index]
        if isinstance(outcome, Rejection):
            refused.append({**{c: rows[index][c] for c in QUARANTINE_COLUMNS[:3]}, **outcome._asdict()})
        else:
            accepted.append((rows[index], outcome))
    check_accounting(len(rows), len(accepted), len(refused))
    return accepted, quarantine_frame(refused)


def check_accounting(n_in: int, n_out: int, n_quarantined: int) -> None:
    """Raise :class:`ClassificationError` unless every input row is either an output or a quarantine row."""
    if n_in != n_out + n_quarantined:
        raise ClassificationError(f"{n_in} input rows but {n_out} output + {n_quarantined} quarantined")


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    """Quarantine rows as a table of :data:`QUARANTINE_COLUMNS`, all strings (empty table for no rows)."""
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)).astype("string")


def id_frame(rows: list[dict]) -> pd.DataFrame:
    """The :data:`ID_COLUMNS` of accepted rows as a string table."""
    return pd.DataFrame([{c: row[c] for c in ID_COLUMNS} for row in rows], columns=list(ID_COLUMNS)).astype("string")


def checked_clip(samples, n_fft: int) -> np.ndarray:
    """``samples`` as float32 mono, or :class:`InputRejected` (``non_finite_samples``, ``too_short``: fewer than
    ``n_fft`` samples, ``silent``: all zeros); a non-mono array is a :class:`ClassificationError`."""
    clip = np.asarray(samples, dtype=np.float32)
    if clip.ndim != 1:
        raise ClassificationError(f"expected mono samples of shape (n,), got shape {clip.shape}")
    if not np.isfinite(clip).all():
        raise InputRejected("non_finite_samples", "samples contain NaN or infinity")
    if clip.size < n_fft:
        raise InputRejected("too_short", f"{clip.size} samples, need at least n_fft={n_fft}")
    if not np.any(clip):
        raise InputRejected("silent", "every sample is zero")
    return clip
