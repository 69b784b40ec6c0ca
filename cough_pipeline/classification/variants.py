"""The classification subset in two variants per recording: ``original`` and ``separated``.

* ``original``: the recording's own audio file, as the manifest lists it.
* ``separated``: the recording's coughs after the separation stage (each cough mixed with held-out noise and passed
  through the separator), cut from their separated clips at the cough's onset and duration and joined in cough
  order into one WAV per recording at the clips' sample rate.

Every classification-subset row ends in exactly one place per variant: a row of :func:`classification_recordings`
or a quarantine row with a reason (``label_unknown``: the participant's label is neither positive nor negative;
``no_separated_clip``: none of the recording's coughs reached the separated clips; ``audio_unreadable``: a
separated clip could not be read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.naming import artefact_stem

VARIANTS = ("original", "separated")
CLASSIFIED_LABELS = ("positive", "negative")
RECORDING_COLUMNS = ["dataset", "recording_id", "participant_id", "covid_label", "variant", "audio_path", "n_coughs"]
QUARANTINE_COLUMNS = ["dataset", "recording_id", "variant", "reason", "detail"]


@dataclass(frozen=True)
class VariantTables:
    """``recordings``: one row per recording and variant (``audio_path`` absolute); ``quarantine``: the rest."""

    recordings: pd.DataFrame
    quarantine: pd.DataFrame


def _quarantine(rows: pd.DataFrame, variant: str, reason: str, detail) -> pd.DataFrame:
    frame = rows[["dataset", "recording_id"]].assign(variant=variant, reason=reason, detail=detail)
    return frame[QUARANTINE_COLUMNS]


def _event_audio(clip: pd.Series, root: Path) -> tuple[np.ndarray, int]:
    """The cough's window of one separated clip: ``(samples,)`` float32 and its sample rate."""
    info = sf.info(str(root / clip["separated_path"]))
    start = int(round(float(clip["onset_s"]) * info.samplerate))
    stop = min(info.frames, start + int(round(float(clip["event_duration_s"]) * info.samplerate)))
    samples, rate = sf.read(str(root / clip["separated_path"]), start=start, stop=stop, dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def join_separated(clips: pd.DataFrame, root: Path, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One WAV per recording: its separated coughs, cut at each event and joined in cough order.

    Args:
        clips: rows of the separated-clips table (``recording_id``, ``cough_file``, ``separated_path`` relative to
            ``root``, ``onset_s``, ``event_duration_s``).
        root: the folder the clip paths are relative to.
        out_dir: where the joined WAVs go (``<artefact stem of the recording id>.wav``).

    Returns:
        ``(joined, unreadable)``: ``recording_id, audio_path, n_coughs`` and ``recording_id, detail``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    joined, unreadable = [], []
    for recording_id, group in clips.sort_values(["recording_id", "cough_file"]).groupby("recording_id", sort=True):
        try:
            pieces = [_event_audio(clip, root) for _, clip in group.iterrows()]
        except (OSError, RuntimeError, sf.LibsndfileError) as error:
            unreadable.append({"recording_id": recording_id, "detail": f"{type(error).__name__}: {error}"})
            continue
        rates = {rate for _, rate in pieces}
        if len(rates) != 1:
            unreadable.append({"recording_id": recording_id, "detail": f"separated clips at several rates {rates}"})
            continue
        path = out_dir / f"{artefact_stem(str(recording_id))}.wav"
        sf.write(str(path), np.concatenate([samples for samples, _ in pieces]), rates.pop(), subtype="FLOAT")
        joined.append({"recording_id": recording_id, "audio_path": str(path), "n_coughs": len(pieces)})
    return (
        pd.DataFrame(joined, columns=["recording_id", "audio_path", "n_coughs"]),
        pd.DataFrame(unreadable, columns=["recording_id", "detail"]),
    )


def classification_recordings(
    subset: pd.DataFrame, audio_root: Path, joined: pd.DataFrame, unreadable: pd.DataFrame
) -> VariantTables:
    """Both variants of each classification-subset recording, or a quarantine row saying why not.

    Args:
        subset: classification-subset rows of one dataset joined with the manifest (``dataset``, ``recording_id``,
            ``participant_id``, ``covid_label``, ``audio_path`` relative to ``audio_root``).
        audio_root: the dataset's root folder.
        joined, unreadable: the output of :func:`join_separated` for the same recordings.
    """
    labelled = subset["covid_label"].isin(CLASSIFIED_LABELS)
    quarantine = [
        _quarantine(subset[~labelled], variant, "label_unknown", "covid_label " + subset.loc[~labelled, "covid_label"])
        for variant in VARIANTS
    ]
    keep = subset[labelled]
    base = keep[["dataset", "recording_id", "participant_id", "covid_label"]]
    original = base.assign(
        variant="original", audio_path=[str(audio_root / p) for p in keep["audio_path"]], n_coughs=pd.NA
    )
    separated = base.merge(joined, on="recording_id").assign(variant="separated")
    missing = keep[~keep["recording_id"].isin(joined["recording_id"])]
    bad = missing.merge(unreadable, on="recording_id")
    quarantine.append(_quarantine(bad, "separated", "audio_unreadable", bad["detail"]))
    absent = missing[~missing["recording_id"].isin(unreadable["recording_id"])]
    quarantine.append(_quarantine(absent, "separated", "no_separated_clip", "no cough of it in separated_clips"))
    recordings = pd.concat([original, separated], ignore_index=True)[RECORDING_COLUMNS]
    recordings["n_coughs"] = recordings["n_coughs"].astype("Int64")
    return VariantTables(
        recordings.sort_values(["recording_id", "variant"], ignore_index=True),
        pd.concat(quarantine, ignore_index=True).astype({"detail": "string"}),
    )
