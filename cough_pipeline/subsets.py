"""Split the filtered cough recordings into the separation subset and the classification subset.

The separator is trained on mixtures built from the *separation* subset; the classifiers are trained and evaluated
on the *classification* subset (after separation). A participant must never be on both sides, or the classifier
would be evaluated on a voice the separator has already learnt, so the split is made over participants:

* ``n_separation = floor(separation_fraction * n_participants + 0.5)`` (round half up, so it never depends on
  banker's rounding). When ``0 < separation_fraction < 1`` and there are at least two participants, the count is
  clamped to ``[1, n_participants - 1]`` so that neither subset is empty. ``separation_fraction`` 0 puts everyone
  in classification, 1 puts everyone in separation; a single participant goes to separation when the fraction is
  at least 0.5.
* The separation count is shared among datasets in proportion to their participants (largest remainder, ties by
  dataset name), so each dataset is represented in both subsets whenever its size allows.
* Within a dataset, participants are sorted and then shuffled with ``numpy.random.default_rng([seed, crc32(dataset)])``:
  the same input and seed give the same split, and adding a dataset does not reshuffle the others.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from cough_pipeline.mixtures import split_noise_bank

SEPARATION = "separation"
CLASSIFICATION = "classification"
SUBSETS = (SEPARATION, CLASSIFICATION)
REQUIRED_COLUMNS = ("recording_id", "participant_id", "dataset")


def _validate_recordings(recordings: pd.DataFrame, separation_fraction: float) -> None:
    """Raise ``ValueError`` for missing columns, blank ids, duplicate recordings or a fraction outside [0, 1]."""
    missing = [column for column in REQUIRED_COLUMNS if column not in recordings.columns]
    if missing:
        raise ValueError(f"recordings lack the columns {missing}; need {list(REQUIRED_COLUMNS)}")
    if not 0.0 <= float(separation_fraction) <= 1.0:
        raise ValueError(f"separation_fraction must lie in [0, 1], got {separation_fraction}")
    for column in REQUIRED_COLUMNS:
        if recordings[column].isna().any():
            raise ValueError(f"column {column!r} has missing values; every recording needs one")
    duplicated = recordings["recording_id"][recordings["recording_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"recording ids must be unique; repeated: {sorted(duplicated.astype(str).unique())[:5]}")


def separation_count(n_participants: int, separation_fraction: float) -> int:
    """How many participants go to the separation subset (see the module docstring for the rounding rule)."""
    count = int(np.floor(separation_fraction * n_participants + 0.5))
    if 0.0 < separation_fraction < 1.0 and n_participants >= 2:
        count = min(max(count, 1), n_participants - 1)
    return count


def _participant_datasets(recordings: pd.DataFrame) -> pd.Series:
    """participant_id -> the dataset it is stratified in (its most frequent dataset; ties by name)."""
    counts = recordings.groupby(["participant_id", "dataset"]).size().rename("rows").reset_index()
    counts = counts.sort_values(["participant_id", "rows", "dataset"], ascending=[True, False, True])
    return counts.drop_duplicates("participant_id").set_index("participant_id")["dataset"]


def _share_by_dataset(sizes: pd.Series, total: int) -> dict[str, int]:
    """Split ``total`` over datasets in proportion to ``sizes`` (largest remainder; ties by dataset name)."""
    quotas = sizes / sizes.sum() * total
    shares = np.floor(quotas).astype(int)
    remainders = (quotas - shares).sort_index()
    order = sorted(remainders.index, key=lambda name: (-remainders[name], name))
    for name in order[: total - int(shares.sum())]:
        shares[name] += 1
    return {name: int(shares[name]) for name in sizes.index}


def _separation_participants(datasets: pd.Series, n_separation: int, seed: int) -> set[str]:
    """The participants drawn into the separation subset, dataset by dataset."""
    sizes = datasets.value_counts().sort_index()
    chosen: set[str] = set()
    for dataset, share in _share_by_dataset(sizes, n_separation).items():
        participants = np.array(sorted(datasets.index[datasets == dataset]), dtype=object)
        rng = np.random.default_rng([seed, zlib.crc32(str(dataset).encode("utf-8"))])
        chosen.update(rng.permutation(participants)[:share])
    return chosen


def split_subsets(recordings: pd.DataFrame, separation_fraction: float, seed: int) -> pd.DataFrame:
    """``recordings`` (row order kept) plus a ``subset`` column, ``separation`` or ``classification``.

    Participant-disjoint, seeded and stratified by dataset; ``separation_fraction`` counts participants, not
    recordings. Raises ``ValueError`` on missing columns or ids, duplicate recording ids, or a fraction outside
    [0, 1]. An empty table comes back empty, with the column.
    """
    _validate_recordings(recordings, separation_fraction)
    datasets = _participant_datasets(recordings)
    n_separation = separation_count(len(datasets), float(separation_fraction))
    separation = _separation_participants(datasets, n_separation, seed)
    subset = np.where(recordings["participant_id"].isin(separation), SEPARATION, CLASSIFICATION)
    return recordings.assign(subset=pd.Series(subset, index=recordings.index, dtype="string"))


def leakage(separation_table: pd.DataFrame, classification_table: pd.DataFrame) -> dict[str, list[str]]:
    """Recording and participant ids found in both tables (both need ``recording_id`` and ``participant_id``).

    ``{"recording_ids": [...], "participant_ids": [...]}``, sorted; both lists empty means no leakage.
    """
    overlap = {}
    for key, column in (("recording_ids", "recording_id"), ("participant_ids", "participant_id")):
        for name, table in (("separation_table", separation_table), ("classification_table", classification_table)):
            if column not in table.columns:
                raise ValueError(f"{name} has no {column!r} column")
        shared = set(separation_table[column].dropna().astype(str))
        overlap[key] = sorted(shared & set(classification_table[column].dropna().astype(str)))
    return overlap


def split_coughs(coughs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Separation coughs (``path``, ``participant_id``, ``dataset``) plus ``split`` (train / validation / test),
    disjoint by participant and stratified by dataset with the noise bank's rule, so test mixtures hold no voice
    the separator trained on."""
    labelled = split_noise_bank(coughs.assign(category=coughs["dataset"], group=coughs["participant_id"]), seed=seed)
    return labelled.drop(columns=["category", "group"])
