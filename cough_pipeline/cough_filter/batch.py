"""Score every recording of a manifest with the cough filter; every row stays, with its decision and reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import AudioDecodeError, resample
from cough_pipeline.cough_filter.model import CoughClassifier
from cough_pipeline.cough_filter.training import LabelledClip, clips_from_frame
from cough_pipeline.parallel import ProgressCallback, notify

COUGH_LIST_COLUMNS = [
    "dataset",
    "recording_id",
    "participant_id",
    "covid_label",
    "upstream_exclude_reason",
    "cough_probability",
    "is_cough",
    "reason",
    "clipping_fraction",
    "threshold",
]
#: ``reason`` for a recording scored below the threshold (other reasons come from the classifier or decoder).
BELOW_THRESHOLD = "below_threshold"
NOT_A_COUGH_RECORDING = "not_a_cough_recording"


def classify_recordings(
    manifest: pd.DataFrame,
    root: Path,
    classifier: CoughClassifier,
    threshold: float,
    workers: int = 2,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """One row per manifest row: the cough probability and the decision at ``threshold``.

    A rejected recording keeps its row with ``is_cough=False`` and a reason: ``below_threshold``, a signal problem
    found by the classifier (``silent``, ``too_short``, …), a decode failure (``audio_unreadable``, …), or
    ``not_a_cough_recording`` for breath/speech rows, which are not scored.

    Args:
        manifest: manifest rows (``audio_path`` relative to ``root``).
        root: the dataset folder.
        classifier: the fitted cough filter.
        threshold: the probability at or above which a recording is a cough.
        workers: recordings decoded and scored at once (threads).
        on_progress: called as ``on_progress(done, total)`` after every recording.

    Returns:
        A table with :data:`COUGH_LIST_COLUMNS`, one row per manifest row, in manifest order.
    """
    rows = manifest.to_dict("records")
    scored = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(partial(_score_row, root=Path(root), classifier=classifier, threshold=threshold), rows)
        for done, result in enumerate(results, start=1):
            scored.append(result)
            notify(on_progress, done, len(rows))
    frame = pd.DataFrame(scored, columns=COUGH_LIST_COLUMNS)
    return frame.astype({"cough_probability": "Float64", "clipping_fraction": "Float64", "is_cough": "boolean"})


def _score_row(row: dict, root: Path, classifier: CoughClassifier, threshold: float) -> dict:
    """The cough-list row of one manifest row: scored when it is a cough recording that decodes."""
    base = {
        "dataset": row["dataset"],
        "recording_id": row["recording_id"],
        "participant_id": row["participant_id"],
        "covid_label": row["covid_label"],
        "upstream_exclude_reason": row.get("exclude_reason"),
        "threshold": threshold,
        "cough_probability": None,
        "clipping_fraction": None,
    }
    if row.get("sound_type") != "cough":
        return {**base, "is_cough": False, "reason": NOT_A_COUGH_RECORDING}
    try:
        decision = classifier.classify_file(root / row["audio_path"])
    except AudioDecodeError as error:
        return {**base, "is_cough": False, "reason": error.reason.value}
    is_cough = decision.reason is None and decision.probability >= threshold
    return {
        **base,
        "cough_probability": round(float(decision.probability), 6),
        "is_cough": is_cough,
        "reason": decision.reason or (None if is_cough else BELOW_THRESHOLD),
        "clipping_fraction": round(float(decision.clipping_fraction), 6),
    }


def prepared_clips(
    clips: list[LabelledClip] | pd.DataFrame, sample_rate: int | None, trim_silence: bool = True
) -> list[LabelledClip]:
    """Training clips (a list or a ``source``/``label``/``group`` table) brought to ``sample_rate`` (files when
    their features are computed, samples now), as :meth:`CoughClassifier.classify_file` does with
    ``input_sample_rate``, and set to drop zero padding."""
    clip_list = clips_from_frame(clips) if isinstance(clips, pd.DataFrame) else list(clips)
    if sample_rate is None:
        return [replace(clip, trim_silence=trim_silence) for clip in clip_list]
    return [
        replace(
            clip,
            trim_silence=trim_silence,
            sample_rate=sample_rate,
            source=resample(clip.source, clip.sample_rate, sample_rate)
            if isinstance(clip.source, np.ndarray)
            else clip.source,
        )
        for clip in clip_list
    ]
