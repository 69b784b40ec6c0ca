"""The matched holdout: positives and negatives balanced within strata of who coughs (dataset, gender, age band).

A model can score well on a plain holdout by recognising *who* coughs (which dataset, which recording setup, sex or
age) instead of COVID-19, because positives and negatives differ in those mix-ups; published COVID-cough results
shrink when both classes are matched on them. Here every stratum of the ``keys`` keeps as many positive as negative
participants, so within a stratum those attributes carry no information about the label.

The rule, exactly:

1. Key values are text; a missing value (None, NaN, empty) is ``"unknown"``, and ``"unknown"`` is a level of its
   own: unknown-gender positives are matched with unknown-gender negatives, which controls nothing about gender
   inside that level (its size is in :func:`matching_summary`).
2. The unit is the participant (``group_column``): a participant's recordings are kept or dropped together. A
   participant whose recordings disagree on the label or on the stratum cannot be placed and is dropped (the
   summary row ``stratum == "mixed"`` counts them).
3. In each stratum with ``n_pos`` positive and ``n_neg`` negative participants, ``k = min(n_pos, n_neg)`` of each
   are kept: the smaller class whole, and the first ``k`` of the larger class's sorted participant ids after a
   random permutation seeded by ``(seed, crc32(stratum))``. A stratum's draw depends on nothing but its own
   participants and the seed, so it does not change when other strata or the row order change.
4. A stratum with one class only (``k = 0``) is dropped.

The balance is in participants; recording counts per class can still differ when participants have several
recordings (see the ``*_recordings_*`` columns of the summary).

Age bands (:func:`age_band`): numeric ``age`` in years falls into ``[edge_i, edge_i+1)`` of ``edges`` (default
``<30``, ``30-45``, ``45-60``, ``>=60``). Without a numeric age, a source's band text (``age_group``) is read by its
numbers: a range such as ``group_19_33`` or ``45-54`` counts as its midpoint, an open band such as ``80+``, ``>61``
or ``over 60`` as its bound, ``<20`` or ``under 20`` as one year below its bound; anything else is ``"unknown"``.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cough_pipeline.classification.errors import ClassificationError

UNKNOWN = "unknown"
MIXED = "mixed"
MATCH_KEYS = ("dataset", "gender", "age_band")
AGE_EDGES = (30.0, 45.0, 60.0)
SUMMARY_COUNTS = (
    "positive_participants_before",
    "negative_participants_before",
    "positive_recordings_before",
    "negative_recordings_before",
    "positive_participants_after",
    "negative_participants_after",
    "positive_recordings_after",
    "negative_recordings_after",
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BELOW = re.compile(r"<|\bunder\b|\bbelow\b|\byounger\b", re.IGNORECASE)


def age_band(age=None, age_group=None, edges: Sequence[float] = AGE_EDGES) -> str:
    """The age band of a numeric ``age`` (years), else of a source's band text ``age_group``, else ``"unknown"``
    (rules in the module docstring). Labels: ``<e0``, ``e0-e1``, ..., ``>=eN``."""
    years = _number(age)
    if years is None and isinstance(age_group, str):
        years = _band_years(age_group.strip())
    if years is None or years < 0:
        return UNKNOWN
    labels = _band_labels(tuple(float(edge) for edge in edges))
    return labels[int(np.searchsorted(np.asarray(edges, dtype=float), years, side="right"))]


def demographics(manifest: pd.DataFrame, edges: Sequence[float] = AGE_EDGES) -> pd.DataFrame:
    """``dataset, recording_id, gender, age_band`` per manifest row (missing gender: ``"unknown"``; ``age`` and
    ``age_group`` are optional columns)."""
    missing = [column for column in ("dataset", "recording_id") if column not in manifest.columns]
    if missing:
        raise ClassificationError(f"the manifest lacks the columns {missing}")
    ages = manifest["age"] if "age" in manifest.columns else pd.Series(None, index=manifest.index, dtype=object)
    groups = manifest["age_group"] if "age_group" in manifest.columns else pd.Series(None, index=manifest.index)
    gender = manifest["gender"] if "gender" in manifest.columns else pd.Series(None, index=manifest.index)
    return pd.DataFrame(
        {
            "dataset": manifest["dataset"].astype(str).to_numpy(),
            "recording_id": manifest["recording_id"].astype(str).to_numpy(),
            "gender": _levels(gender).to_numpy(),
            "age_band": [age_band(a, g, edges) for a, g in zip(ages.astype(object), groups.astype(object))],
        }
    )


def join_demographics(predictions: pd.DataFrame, manifest: pd.DataFrame, edges=AGE_EDGES) -> pd.DataFrame:
    """Prediction rows with ``gender`` and ``age_band`` of their recording (matched on dataset and recording_id).

    Raises:
        ClassificationError: a prediction row whose recording the manifest lacks, or a recording listed twice.
    """
    table = demographics(manifest, edges)
    if table.duplicated(["dataset", "recording_id"]).any():
        raise ClassificationError("the manifest lists a recording twice")
    own = predictions.drop(columns=[c for c in ("gender", "age_band") if c in predictions.columns])
    joined = own.astype({"dataset": str, "recording_id": str}).merge(
        table, on=["dataset", "recording_id"], how="left", validate="many_to_one"
    )
    absent = joined["gender"].isna()
    if absent.any():
        example = joined.loc[absent, "recording_id"].iloc[0]
        raise ClassificationError(f"{int(absent.sum())} prediction rows have no manifest row, e.g. {example}")
    return joined.set_axis(predictions.index)


def participant_units(
    rows: pd.DataFrame, keys: Sequence[str] = MATCH_KEYS, group_column: str = "participant_id"
) -> pd.DataFrame:
    """One row per participant: ``group_column``, ``label``, ``stratum``, the key values, ``recordings`` (distinct
    recording ids) and ``status`` (``"ok"``, ``"mixed_label"`` or ``"mixed_stratum"``; mixed rows have label -1 and
    stratum ``"mixed"``).

    Raises:
        ClassificationError: missing columns or labels other than 0/1.
    """
    keys = list(keys)
    needed = [group_column, "recording_id", "label", *keys]
    missing = [column for column in needed if column not in rows.columns]
    if missing:
        raise ClassificationError(f"rows to match lack the columns {missing}")
    labels = pd.to_numeric(rows["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise ClassificationError("rows to match need labels 0 or 1")
    table = pd.DataFrame({key: _levels(rows[key]).to_numpy() for key in keys})
    table.insert(0, group_column, rows[group_column].astype(str).to_numpy())
    table["recording_id"] = rows["recording_id"].astype(str).to_numpy()
    table["label"] = labels.astype(int).to_numpy()
    table["stratum"] = stratum_names(table, keys)
    grouped = table.drop_duplicates().groupby(group_column, sort=True)
    units = grouped.first()
    units["recordings"] = grouped["recording_id"].nunique()
    mixed_label, mixed_stratum = grouped["label"].nunique() > 1, grouped["stratum"].nunique() > 1
    units["status"] = np.where(mixed_label, "mixed_label", np.where(mixed_stratum, "mixed_stratum", "ok"))
    mixed = units["status"] != "ok"
    units.loc[mixed, "label"] = -1
    units.loc[mixed, ["stratum", *keys]] = MIXED
    return units.reset_index()[[group_column, "label", "stratum", *keys, "recordings", "status"]]


def stratum_names(table: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """``"key=value|key=value"`` per row (values as :func:`participant_units` reads them)."""
    names = pd.Series("", index=table.index, dtype=object)
    for number, key in enumerate(keys):
        names = names + ("|" if number else "") + f"{key}=" + _levels(table[key])
    return names


def matched_holdout(
    rows: pd.DataFrame, seed: int, keys: Sequence[str] = MATCH_KEYS, group_column: str = "participant_id"
) -> pd.DataFrame:
    """The rows of the participants kept by the matching rule (module docstring), with a ``stratum`` column.

    Args:
        rows: holdout prediction rows joined with the key columns (:func:`join_demographics`); rows of several
            models, variants or folds select the same participants, since the rule looks at participants only.
        seed: seeds each stratum's draw.
        keys: the columns defining a stratum.
        group_column: the unit kept or dropped whole.

    Returns:
        The kept rows of ``rows`` in their order and with their index, plus ``stratum``.
    """
    units = participant_units(rows, keys, group_column)
    kept = _chosen_participants(units, int(seed), group_column)
    participants = rows[group_column].astype(str)
    mask = participants.isin(kept).to_numpy()
    stratum = units.set_index(group_column)["stratum"]
    return rows[mask].assign(stratum=participants[mask].map(stratum).to_numpy())


def matching_summary(
    rows: pd.DataFrame, matched: pd.DataFrame, keys: Sequence[str] = MATCH_KEYS, group_column: str = "participant_id"
) -> pd.DataFrame:
    """Per stratum: participants and recordings of each class before (``rows``) and after (``matched``) the
    matching, and ``status``: ``"matched"``, ``"one_class"`` (dropped) or ``"mixed"`` (the row of participants
    dropped because their recordings disagree on label or stratum; their class counts are 0)."""
    keys = list(keys)
    units = participant_units(rows, keys, group_column)
    kept = set(matched[group_column].astype(str))
    units["kept"] = units[group_column].isin(kept)
    units["label_name"] = units["label"].map({1: "positive", 0: "negative"})
    counts = {}
    for when, chosen in (("before", units), ("after", units[units["kept"]])):
        for name in ("positive", "negative"):
            mine = chosen[chosen["label_name"] == name].groupby("stratum")
            counts[f"{name}_participants_{when}"] = mine.size()
            counts[f"{name}_recordings_{when}"] = mine["recordings"].sum()
    summary = units.groupby("stratum", sort=True)[keys].first()
    for column in SUMMARY_COUNTS:
        summary[column] = counts[column].reindex(summary.index).fillna(0).astype(int)
    one_class = (summary["positive_participants_before"] == 0) | (summary["negative_participants_before"] == 0)
    summary["status"] = np.where(summary.index == MIXED, "mixed", np.where(one_class, "one_class", "matched"))
    return summary.reset_index()[["stratum", *keys, *SUMMARY_COUNTS, "status"]]


def _chosen_participants(units: pd.DataFrame, seed: int, group_column: str) -> set[str]:
    """The participants kept: per stratum, the smaller class whole and a seeded draw of as many of the larger."""
    kept: set[str] = set()
    for stratum, members in units[units["status"] == "ok"].groupby("stratum", sort=True):
        positives = sorted(members.loc[members["label"] == 1, group_column])
        negatives = sorted(members.loc[members["label"] == 0, group_column])
        k = min(len(positives), len(negatives))
        if k == 0:
            continue
        # Seeded by the stratum's own name: its draw ignores every other stratum and the row order.
        rng = np.random.default_rng([seed, zlib.crc32(stratum.encode("utf-8"))])
        for ids in (positives, negatives):
            kept.update(ids[i] for i in rng.permutation(len(ids))[:k])
    return kept


def _levels(values: pd.Series) -> pd.Series:
    """Values as text with None, NaN and blanks as ``"unknown"``."""
    text = values.astype(object).where(values.notna(), UNKNOWN).astype(str).str.strip()
    return text.where(text != "", UNKNOWN)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@functools.lru_cache(maxsize=256)
def _band_years(text: str) -> float | None:
    """The age (years) a band text stands for, or None (rules in the module docstring)."""
    numbers = [float(n) for n in _NUMBER.findall(text)]
    if len(numbers) == 1 and _BELOW.search(text):
        return numbers[0] - 1
    if len(numbers) == 1:
        return numbers[0]  # a plain number or an open band such as "80+" / ">61" / "over 60"
    if len(numbers) == 2 and numbers[0] <= numbers[1]:
        return (numbers[0] + numbers[1]) / 2
    return None


@functools.lru_cache(maxsize=16)
def _band_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ClassificationError(f"age band edges must be increasing and not empty, got {list(edges)}")
    text = [f"{edge:g}" for edge in edges]
    return (f"<{text[0]}", *(f"{a}-{b}" for a, b in zip(text, text[1:])), f">={text[-1]}")
