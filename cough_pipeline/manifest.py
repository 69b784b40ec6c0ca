"""Build one dataset's harmonised manifest: read metadata, account for every file, probe the audio, dedupe.

Every input row ends up in exactly one of two tables: the manifest (decodable, labelled within the documented
vocabulary; possibly with a non-null ``exclude_reason``) or the quarantine (with a machine-readable reason).
``ManifestBuild.rows_in`` is counted before any of that happens, so ``rows_in == kept + quarantined`` is a real check.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cough_pipeline.audio import AudioDecodeError, probe_audio
from cough_pipeline.datasets import get_loader
from cough_pipeline.datasets.base import MetadataRead
from cough_pipeline.parallel import ProgressCallback, notify
from cough_pipeline.schema import COVID_LABELS, QuarantineReason, manifest_frame, quarantine_frame


@dataclass(frozen=True)
class ManifestBuild:
    """The outcome for one dataset."""

    dataset: str
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def accounted(self) -> bool:
        """Every input row is in the manifest or the quarantine."""
        return self.rows_in == len(self.manifest) + len(self.quarantine)


def build_manifest(
    dataset: str,
    root: str | Path,
    *,
    options: dict | None = None,
    workers: int = 4,
    on_progress: ProgressCallback | None = None,
) -> ManifestBuild:
    """Read ``dataset`` from its native layout under ``root`` and return its manifest and quarantine."""
    started = time.perf_counter()
    root = Path(root)
    loader = get_loader(dataset, **(options or {}))
    read = loader.read_metadata(root)
    candidates, quarantine = _split_duplicate_ids(dataset, read)
    quarantine += _unlisted_files(dataset, read)
    rows_in = len(candidates) + len(quarantine)

    kept = _probe_all(root, candidates, quarantine, workers, on_progress)
    _mark_content_duplicates(kept)
    manifest = manifest_frame(kept).sort_values("recording_id", kind="stable").reset_index(drop=True)
    quarantined = quarantine_frame(quarantine)
    return ManifestBuild(dataset, manifest, quarantined, rows_in, time.perf_counter() - started, tuple(read.notes))


def _split_duplicate_ids(dataset: str, read: MetadataRead) -> tuple[list[dict], list[dict]]:
    """Keep the first row of each recording id; later ones are quarantined as ``duplicate_id``."""
    first_seen: dict[str, dict] = {}
    candidates: list[dict] = []
    quarantine = list(read.quarantine)
    for row in read.rows:
        seen = first_seen.get(row["recording_id"])
        if seen is None:
            first_seen[row["recording_id"]] = row
            candidates.append(row)
            continue
        quarantine.append(
            _quarantine_row(
                dataset,
                row,
                QuarantineReason.DUPLICATE_ID,
                f"recording id already given by {seen.get('_source_file')} row {seen.get('_source_row')}",
            )
        )
    return candidates, quarantine


def _unlisted_files(dataset: str, read: MetadataRead) -> list[dict]:
    """Audio files in the layout that no metadata row (kept or quarantined) refers to."""
    referenced = {r.get("audio_path") for r in read.rows} | {r.get("audio_path") for r in read.quarantine}
    return [
        {
            "dataset": dataset,
            "recording_id": None,
            "native_id": Path(path).stem,
            "audio_path": path,
            "reason": QuarantineReason.UNLISTED_FILE.value,
            "detail": "audio file present but not listed in the metadata",
            "source_file": None,
            "source_row": None,
        }
        for path in read.audio_files
        if path not in referenced
    ]


def _probe_all(
    root: Path, candidates: list[dict], quarantine: list[dict], workers: int, on_progress: ProgressCallback | None
) -> list[dict]:
    """Decode every candidate's audio in parallel; failures move to ``quarantine``."""

    def probe(row: dict):
        """The row's audio summary, or the decode error (returned, so one bad file does not stop the map)."""
        try:
            return probe_audio(root / row["audio_path"])
        except AudioDecodeError as error:
            return error

    kept: list[dict] = []
    total = len(candidates)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (row, result) in enumerate(zip(candidates, pool.map(probe, candidates)), start=1):
            if isinstance(result, AudioDecodeError):
                quarantine.append(_quarantine_row(row["dataset"], row, result.reason, result.detail))
            else:
                kept.append(
                    {
                        **_public(row),
                        "audio_format": result.audio_format,
                        "sample_rate": result.sample_rate,
                        "channels": result.channels,
                        "duration_s": result.duration_s,
                        "content_hash": result.content_hash,
                    }
                )
            notify(on_progress, done, total)
    return kept


def _mark_content_duplicates(rows: list[dict]) -> None:
    """Rows with identical decoded audio: keep one (preferring one with an official split), mark the rest.

    The kept copy is the first row, in recording-id order, among those with an ``official_split``, else the first.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["content_hash"], []).append(row)
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (r.get("official_split") is None, r["recording_id"]))
        keeper = group[0]["recording_id"]
        for row in group[1:]:
            extra = json.loads(row.get("extra") or "{}")
            extra["duplicate_of"] = keeper
            if row.get("exclude_reason"):
                extra["exclude_reason_before_dedupe"] = row["exclude_reason"]
            row["extra"] = json.dumps(extra, sort_keys=True, ensure_ascii=False)
            row["exclude_reason"] = "duplicate"


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _quarantine_row(dataset: str, row: dict, reason: QuarantineReason, detail: str) -> dict:
    return {
        "dataset": dataset,
        "recording_id": row.get("recording_id"),
        "native_id": row.get("native_id"),
        "audio_path": row.get("audio_path"),
        "reason": reason.value,
        "detail": detail,
        "source_file": row.get("_source_file"),
        "source_row": row.get("_source_row"),
    }


def duplicate_recording_ids(manifest: pd.DataFrame) -> list[str]:
    """Recording ids that occur more than once (should be none)."""
    counts = manifest["recording_id"].value_counts()
    return sorted(counts[counts > 1].index)


def undecoded_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Kept rows whose audio was not fully decoded: no positive rate/channels/duration or no content hash."""
    bad = (
        manifest["sample_rate"].isna()
        | (manifest["sample_rate"] <= 0)
        | manifest["channels"].isna()
        | (manifest["channels"] <= 0)
        | manifest["duration_s"].isna()
        | (manifest["duration_s"] <= 0)
        | manifest["content_hash"].isna()
    )
    return manifest[bad.fillna(True)]


def dataset_summary_table(manifest: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset: recordings kept and quarantined, distinct participants, recordings per COVID-19 label
    (one column per label in :data:`COVID_LABELS`) and hours of audio. Datasets with rows only in the quarantine
    appear with zero kept recordings."""
    datasets = sorted(set(manifest["dataset"].dropna()) | set(quarantine["dataset"].dropna()))
    kept = manifest.groupby("dataset")
    labels = (
        manifest.pivot_table(index="dataset", columns="covid_label", values="recording_id", aggfunc="count")
        .reindex(index=datasets, columns=list(COVID_LABELS))
        .fillna(0)
        .astype(int)
    )
    table = pd.DataFrame(
        {
            "dataset": datasets,
            "recordings": kept.size().reindex(datasets, fill_value=0).to_numpy(),
            "quarantined": quarantine.groupby("dataset").size().reindex(datasets, fill_value=0).to_numpy(),
            "participants": kept["participant_id"].nunique().reindex(datasets, fill_value=0).to_numpy(),
            "hours": (kept["duration_s"].sum().reindex(datasets, fill_value=0).astype(float) / 3600).to_numpy(),
        }
    )
    for label in COVID_LABELS:
        table[f"label_{label}"] = labels[label].to_numpy()
    return table
