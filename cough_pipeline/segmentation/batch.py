"""Segment every cough recording of a manifest with one or more methods, writing each cough as a WAV.

Every manifest row is accounted for in ``per_recording``: ``segmented`` (one row per method), ``skipped`` (excluded
upstream, or not a cough sound) or ``failed`` (the audio could not be decoded now), each with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import AudioDecodeError, decode_audio
from cough_pipeline.naming import artefact_stem
from cough_pipeline.parallel import ProgressCallback, notify
from cough_pipeline.segmentation import (
    Segment,
    SegmentedRecording,
    coughs_per_minute,
    segment_file,
    write_recording_segments,
)
from cough_pipeline.segmentation.methods import resolve_method

SEGMENT_COLUMNS = [
    "dataset",
    "recording_id",
    "participant_id",
    "covid_label",
    "method",
    "segment_index",
    "start_s",
    "end_s",
    "duration_s",
    "sample_rate",
    "path",
]
RECORDING_COLUMNS = ["recording_id", "method", "status", "reason", "segments", "duration_s", "coughs_per_minute"]


@dataclass(frozen=True)
class SegmentationRun:
    """What to run: ``methods`` maps a method name in :data:`METHODS` to its config."""

    methods: Mapping[str, object]
    output_dir: Path | None = None
    relative_to: Path | None = None
    skip_exclude_reasons: tuple[str, ...] = ("not_cough", "duplicate")
    workers: int = 2

    def __post_init__(self):
        if not self.methods:
            raise ValueError("at least one segmentation method is needed")
        for method, config in self.methods.items():
            resolve_method(method, config)  # unknown method or a config of another method: a clear error now


@dataclass
class ExampleRecording:
    """One recording kept in memory for a plot: its mono samples ``(samples,)`` and each method's segments."""

    recording_id: str
    samples: np.ndarray
    sample_rate: int
    segments_by_method: dict[str, list[Segment]]


@dataclass
class SegmentationResult:
    """The segment table (:data:`SEGMENT_COLUMNS`), the per-recording status table (:data:`RECORDING_COLUMNS`),
    a recording for a plot, and the skipped and failed recordings counted by reason."""

    segments: pd.DataFrame
    per_recording: pd.DataFrame
    example: ExampleRecording | None = None
    skipped_counts: dict[str, int] = field(default_factory=dict)
    failed_counts: dict[str, int] = field(default_factory=dict)


def segment_recordings(
    manifest: pd.DataFrame, root: Path, run: SegmentationRun, on_progress: ProgressCallback | None = None
) -> SegmentationResult:
    """Segment the cough recordings of ``manifest`` with every method of ``run``.

    Args:
        manifest: manifest rows (``audio_path`` relative to ``root``).
        root: the dataset folder.
        run: the methods, where segments are written, and which rows are skipped.
        on_progress: called as ``on_progress(done, total)`` after every recording that is segmented.

    Returns:
        The segment table, one status row per recording and method (or per skipped or failed recording), the
        recording with the most segments for a plot, and the skipped and failed counts by reason.
    """
    rows = manifest.to_dict("records")
    skip = {i: _skip_reason(row, run) for i, row in enumerate(rows)}
    pending = [row for i, row in enumerate(rows) if skip[i] is None]
    per_recording = [_status_row(row["recording_id"], "skipped", skip[i]) for i, row in enumerate(rows) if skip[i]]
    segments: list[dict] = []
    best: tuple[int, dict, dict] | None = None  # (segment total, row, segments by method) of the richest recording
    with ThreadPoolExecutor(max_workers=max(1, run.workers)) as pool:
        outcomes = pool.map(lambda row: _segment_one(row, Path(root), run), pending)
        for done, (row, outcome) in enumerate(zip(pending, outcomes), start=1):
            if isinstance(outcome, AudioDecodeError):
                per_recording.append(_status_row(row["recording_id"], "failed", outcome.reason.value))
            else:
                found, summaries, by_method = outcome
                segments += found
                per_recording += summaries
                total = sum(len(s) for s in by_method.values())
                if best is None or total > best[0]:
                    best = (total, row, by_method)
            notify(on_progress, done, len(pending))
    recordings = pd.DataFrame(per_recording, columns=RECORDING_COLUMNS)
    return SegmentationResult(
        segments=pd.DataFrame(segments, columns=SEGMENT_COLUMNS),
        per_recording=recordings,
        example=_example(best, Path(root)),
        skipped_counts=dict(Counter(recordings.loc[recordings["status"] == "skipped", "reason"])),
        failed_counts=dict(Counter(recordings.loc[recordings["status"] == "failed", "reason"])),
    )


def _skip_reason(row: dict, run: SegmentationRun) -> str | None:
    if row.get("sound_type") != "cough":
        return f"sound_type_{row.get('sound_type')}"
    reason = row.get("exclude_reason")
    return f"excluded_{reason}" if reason in run.skip_exclude_reasons else None


def _status_row(recording_id: str, status: str, reason: str) -> dict:
    return {
        "recording_id": recording_id,
        "method": None,
        "status": status,
        "reason": reason,
        "segments": None,
        "duration_s": None,
        "coughs_per_minute": None,
    }


def _example(best: tuple[int, dict, dict] | None, root: Path) -> ExampleRecording | None:
    """Decode the recording with the most segments again, for a plot (only its samples are ever kept)."""
    if best is None:
        return None
    _, row, by_method = best
    decoded = decode_audio(root / row["audio_path"])
    return ExampleRecording(row["recording_id"], decoded.mono(), decoded.sample_rate, by_method)


def _segment_one(row: dict, root: Path, run: SegmentationRun):
    """Each method on one recording (long files are streamed by :func:`segment_file`); returns segment rows,
    summary rows and the segments by method, or the decode error."""
    found, summaries, by_method = [], [], {}
    for method, config in run.methods.items():
        try:
            recording = segment_file(root / row["audio_path"], method, config)
        except AudioDecodeError as error:
            return error
        by_method[method] = list(recording.segments)
        paths = [None] * len(recording.segments)
        if run.output_dir is not None:
            written = write_recording_segments(recording, run.output_dir / method, artefact_stem(row["recording_id"]))
            paths = [_relative(p, run.relative_to) for p in written]
        found += _segment_rows(row, recording, paths)
        summaries.append(_summary_row(row["recording_id"], recording))
    return found, summaries, by_method


def _segment_rows(row: dict, recording: SegmentedRecording, paths: list[str | None]) -> list[dict]:
    """One :data:`SEGMENT_COLUMNS` row per segment of ``recording`` (``paths``: its WAVs, None when not written)."""
    return [
        {
            "dataset": row["dataset"],
            "recording_id": row["recording_id"],
            "participant_id": row["participant_id"],
            "covid_label": row["covid_label"],
            "method": recording.method,
            "segment_index": index,
            "start_s": round(item.start_s, 6),
            "end_s": round(item.end_s, 6),
            "duration_s": round(item.end_s - item.start_s, 6),
            "sample_rate": recording.sample_rate,
            "path": path,
        }
        for index, (item, path) in enumerate(zip(recording.segments, paths))
    ]


def _summary_row(recording_id: str, recording: SegmentedRecording) -> dict:
    """The ``segmented`` status row of one recording and method: its segment count, duration and cough rate."""
    return {
        "recording_id": recording_id,
        "method": recording.method,
        "status": "segmented",
        "reason": None,
        "segments": len(recording.segments),
        "duration_s": round(recording.duration_s, 6),
        "coughs_per_minute": round(coughs_per_minute(len(recording.segments), recording.duration_s), 3),
    }


def _relative(path: Path, base: Path | None) -> str:
    return path.relative_to(base).as_posix() if base is not None else path.as_posix()
