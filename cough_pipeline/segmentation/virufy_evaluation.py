"""Both segmentation methods scored against Virufy's manual single-cough segments (Atmaja et al. 2023).

Per original recording and method: automatic and manual counts, the precision proxy (share of automatic segments
overlapping exactly one manual segment, located in the original by cross-correlation) and, where the folder carries
``reference_segment_counts.csv``, the published counts. Agreement between manual, hysteresis and RMS labels over
50 ms frames is summarised with Fleiss' kappa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import load_mono
from cough_pipeline.datasets import get_loader
from cough_pipeline.segmentation.evaluation import fleiss_kappa, locate_clips, precision_proxy
from cough_pipeline.segmentation.io import segment_file
from cough_pipeline.segmentation.segments import Segment

#: Columns of ``reference_segment_counts.csv`` with the published folders' counts, per method.
PUBLISHED_COLUMNS = {"hysteresis": "published_hysteresis_segment_dir", "rms": "published_rms_simple_dir"}
KAPPA_FRAME_S = 0.05


@dataclass
class VirufyEvaluation:
    """``per_file``: one row per original and method; ``summary``: one row per method."""

    per_file: pd.DataFrame
    summary: pd.DataFrame
    fleiss_kappa: float
    example: tuple[str, np.ndarray, int, dict[str, list[Segment]]] | None


def evaluate_virufy(root: Path, methods: dict[str, object]) -> VirufyEvaluation:
    """Segment every Virufy original under ``root`` with each configured method and compare with the manual cuts.

    Args:
        root: a Virufy folder (``clinical/`` with originals and manual segments).
        methods: method name -> its config, as :func:`~cough_pipeline.segmentation.segment_file` takes them.

    Returns:
        Per-file and per-method comparisons, Fleiss' kappa over frames, and the original with the most manual
        segments (name, samples, rate, segments by rater) for a plot.
    """
    root = Path(root)
    originals = get_loader("virufy", unit="original").read_metadata(root).rows
    manual_clips = get_loader("virufy", unit="segment").read_metadata(root).rows
    clips_by_patient: dict[str, list[str]] = {}
    for row in sorted(manual_clips, key=lambda r: r["audio_path"]):
        clips_by_patient.setdefault(row["participant_id"], []).append(row["audio_path"])
    published = _published_counts(root)
    rows, frame_votes, example = [], [], None
    for original in sorted(originals, key=lambda r: r["audio_path"]):
        name = Path(original["audio_path"]).name
        samples, rate = load_mono(root / original["audio_path"])
        manual = locate_clips(
            samples, [load_mono(root / p, rate)[0] for p in clips_by_patient.get(original["participant_id"], [])], rate
        )
        automatic = {m: list(segment_file(root / original["audio_path"], m, c).segments) for m, c in methods.items()}
        for method, found in automatic.items():
            rows.append(
                {
                    "file": name,
                    "label": original["covid_label"],
                    "method": method,
                    "automatic": len(found),
                    "manual": len(manual),
                    "difference": len(found) - len(manual),
                    "precision_proxy": precision_proxy(found, manual),
                    "published": published.get((name, method)),
                }
            )
        frame_votes.append(_frame_votes(samples.size / rate, [manual, *automatic.values()]))
        if example is None or len(manual) > len(example[3]["manual"]):
            example = (name, samples, rate, {"manual": manual, **automatic})
    per_file = pd.DataFrame(rows)
    return VirufyEvaluation(
        per_file, _summary(per_file), fleiss_kappa(np.concatenate(frame_votes)) if frame_votes else math.nan, example
    )


def _published_counts(root: Path) -> dict[tuple[str, str], int]:
    """``(file, method) -> count`` from ``reference_segment_counts.csv`` when present beside ``clinical/``."""
    path = root / "reference_segment_counts.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    table = table[table["file"] != "TOTAL"]
    return {
        (row["file"], method): int(row[column])
        for row in table.to_dict("records")
        for method, column in PUBLISHED_COLUMNS.items()
        if column in table.columns
    }


def _frame_votes(duration_s: float, raters: list[list[Segment]]) -> np.ndarray:
    """``(frames, 2)`` rater counts (not cough, cough) over frames of :data:`KAPPA_FRAME_S` seconds."""
    centres = (np.arange(int(duration_s / KAPPA_FRAME_S)) + 0.5) * KAPPA_FRAME_S
    cough = np.zeros(centres.size, dtype=int)
    for segments in raters:
        inside = np.zeros(centres.size, dtype=bool)
        for segment in segments:
            inside |= (centres >= segment.start_s) & (centres < segment.end_s)
        cough += inside
    return np.stack([len(raters) - cough, cough], axis=1)


def _summary(per_file: pd.DataFrame) -> pd.DataFrame:
    """Per method: totals, files within ±0 and ±1 of manual (and of published), pooled precision proxy."""
    if per_file.empty:
        return pd.DataFrame()
    rows = []
    for method, group in per_file.groupby("method", sort=True):
        pooled = (group["precision_proxy"] * group["automatic"]).sum() / max(group["automatic"].sum(), 1)
        published = group["published"].dropna()
        rows.append(
            {
                "method": method,
                "files": len(group),
                "automatic_total": int(group["automatic"].sum()),
                "manual_total": int(group["manual"].sum()),
                "files_equal_manual": int((group["difference"] == 0).sum()),
                "files_within_1_of_manual": int((group["difference"].abs() <= 1).sum()),
                "published_total": int(published.sum()) if len(published) else None,
                "files_equal_published": int((group["automatic"] == group["published"]).sum())
                if len(published)
                else None,
                "precision_proxy": round(float(pooled), 4),
            }
        )
    return pd.DataFrame(rows)
