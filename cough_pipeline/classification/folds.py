"""Participant-grouped holdout and cross-validation folds, cross-dataset duplicates and leave-one-dataset-out splits.

A classifier must never be scored on a voice it was trained on, so every split here is made over *groups*, not
recordings: one group per participant, and participants whose recordings share an identical ``content_hash`` (the
same audio submitted under two ids, possibly in two datasets) join one group (:func:`group_ids`).

:func:`assign_folds` makes the fold table:

* Holdout: ``StratifiedGroupKFold(round(1 / holdout_fraction), shuffle=True, random_state=seed)`` over all groups,
  stratified by label; the first of its folds that holds both classes (fold 0 when none does) becomes the holdout,
  so about ``holdout_fraction`` of the recordings (``1 / round(1 / holdout_fraction)`` exactly when the groups
  split evenly; 0.15 gives 1/7). ``holdout_fraction`` 0 keeps every recording in cross-validation.
* Cross-validation: ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)`` over the remaining groups.

Only ``covid_label`` positive and negative are classified; a row with any other label (``unknown``, missing) raises
:class:`FoldError` rather than being dropped silently, so the caller filters and counts them. Rows are ordered by
``recording_id`` before splitting, so the same recordings and seed give the same table whatever their input order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from cough_pipeline.bounds import Bounds, PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import FoldError

LABELS = {"negative": 0, "positive": 1}
CV = "cv"
HOLDOUT = "holdout"
#: ``fold`` of a holdout row.
HOLDOUT_FOLD = -1
REQUIRED_COLUMNS = ("recording_id", "dataset", "participant_id", "covid_label", "content_hash")
FOLD_COLUMNS = ("recording_id", "dataset", "participant_id", "group_id", "covid_label", "label", "split", "fold")
#: At most half the groups can be held out: ``round(1 / fraction)`` must be at least 2 splits.
HoldoutFraction = Annotated[float, Bounds(ge=0.0, le=0.5)]


@dataclass(frozen=True)
class FoldConfig:
    """How recordings are split: ``holdout_fraction`` of them (by groups, 0 for none, at most 0.5) are held out,
    the rest go to ``n_folds`` cross-validation folds; ``seed`` fixes both draws."""

    holdout_fraction: HoldoutFraction = 0.15
    n_folds: Annotated[int, Bounds(ge=2)] = 5
    seed: Seed = 0

    def __post_init__(self):
        check_fields(self)


def cross_dataset_duplicates(manifest: pd.DataFrame) -> pd.DataFrame:
    """Recordings whose ``content_hash`` appears in more than one dataset (the same audio published twice).

    Returns:
        One row per such recording: content_hash, dataset, recording_id, participant_id, n_datasets (how many
        datasets hold that hash), sorted by content_hash, dataset and recording_id. Rows without a hash never match.
    """
    columns = ["content_hash", "dataset", "recording_id", "participant_id"]
    _require(manifest, columns)
    table = manifest.loc[manifest["content_hash"].notna(), columns]
    table = table.astype({"content_hash": str, "dataset": str, "recording_id": str, "participant_id": str})
    n_datasets = table.groupby("content_hash")["dataset"].transform("nunique").astype(int)
    shared = table.assign(n_datasets=n_datasets)[n_datasets > 1]
    return shared.sort_values(["content_hash", "dataset", "recording_id"]).reset_index(drop=True)


def group_ids(recordings: pd.DataFrame) -> pd.Series:
    """The group of each recording: its participant, merged with every participant it shares a ``content_hash``
    with (transitively, across datasets). A group is named by its smallest participant id.

    Returns:
        ``group_id`` (str), indexed like ``recordings``.
    """
    _require(recordings, ("participant_id", "content_hash"))
    participants = recordings["participant_id"].astype(str)
    parent = {participant: participant for participant in participants.unique()}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving keeps the trees flat
            node = parent[node]
        return node

    hashed = pd.DataFrame({"participant": participants, "hash": recordings["content_hash"]}).dropna()
    hashed = hashed.drop_duplicates()
    hashed = hashed[hashed["hash"].duplicated(keep=False)]  # only hashes shared by two participants join anything
    for members in hashed.groupby("hash")["participant"].unique():
        first = root(members[0])
        for other in members[1:]:
            second = root(other)
            # The smaller id becomes the root, so the root is the group's smallest participant id.
            first, second = min(first, second), max(first, second)
            parent[second] = first
    return pd.Series([root(p) for p in participants], index=recordings.index, name="group_id", dtype=str)


def assign_folds(recordings: pd.DataFrame, config: FoldConfig | None = None) -> pd.DataFrame:
    """The fold table: each recording's group, label, split (``cv`` / ``holdout``) and fold.

    Args:
        recordings: recording_id, dataset, participant_id, covid_label (positive / negative only), content_hash.
        config: holdout share, number of folds and seed (see the module docstring for the method).

    Returns:
        recording_id, dataset, participant_id, group_id, covid_label, label (0/1), split, fold (0..n_folds-1 for
        cv rows, -1 for holdout), one row per recording in input order.

    Raises:
        FoldError: missing columns or ids, repeated recording ids, labels other than positive/negative, a class
            with fewer than 2 groups, fewer groups than the holdout needs, a class with fewer cross-validation
            groups than ``n_folds``, or a fold left without one class.
    """
    config = config or FoldConfig()
    table = _labelled(recordings)
    _check_class_groups(table, 2, "all recordings")
    holdout = _holdout_mask(table, config)
    cv = table[~holdout]
    _check_class_groups(cv, config.n_folds, "the cross-validation part")
    fold = np.full(len(table), HOLDOUT_FOLD, dtype=int)
    splitter = StratifiedGroupKFold(config.n_folds, shuffle=True, random_state=config.seed)
    positions = np.flatnonzero(~holdout)
    for number, (_, test) in enumerate(_quiet_split(splitter, cv)):
        fold[positions[test]] = number
    table = table.assign(split=np.where(holdout, HOLDOUT, CV), fold=fold)
    for number, labels in table[~holdout].groupby("fold")["label"]:
        if labels.nunique() < 2:
            raise FoldError(f"cross-validation fold {number} holds only label {int(labels.iloc[0])}; need both classes")
    return table.sort_values("_order")[list(FOLD_COLUMNS)].reset_index(drop=True)


def fold_violations(folds: pd.DataFrame, separation_participants: set[str] | None = None) -> dict[str, list[str]]:
    """The blocking leakage check of a fold table; every list empty means the table is clean.

    Returns:
        ``participants_in_several_folds`` / ``groups_in_several_folds`` (cv rows in two folds),
        ``participants_in_cv_and_holdout`` / ``groups_in_cv_and_holdout``, ``separation_participants`` (fold-table
        participants that belong to the separation subset) and ``bad_fold_numbers`` (recording ids whose fold does
        not match their split: cv needs fold >= 0, holdout fold -1), each sorted.
    """
    _require(folds, ("recording_id", "participant_id", "group_id", "split", "fold"))
    cv, holdout = folds[folds["split"] == CV], folds[folds["split"] == HOLDOUT]
    result = {}
    for column, name in (("participant_id", "participants"), ("group_id", "groups")):
        per_fold = cv.groupby(cv[column].astype(str))["fold"].nunique()
        result[f"{name}_in_several_folds"] = sorted(per_fold.index[per_fold > 1])
        result[f"{name}_in_cv_and_holdout"] = sorted(set(cv[column].astype(str)) & set(holdout[column].astype(str)))
    separation = set(map(str, separation_participants or ()))
    result["separation_participants"] = sorted(set(folds["participant_id"].astype(str)) & separation)
    bad = ((folds["split"] == CV) & (folds["fold"] < 0)) | ((folds["split"] == HOLDOUT) & (folds["fold"] != -1))
    bad |= ~folds["split"].isin([CV, HOLDOUT])
    result["bad_fold_numbers"] = sorted(folds.loc[bad, "recording_id"].astype(str))
    return result


@dataclass(frozen=True)
class LodoConfig:
    """Leave-one-dataset-out settings.

    ``spanning_groups``: what happens to a group with recordings both in the test dataset and elsewhere:
    ``drop_from_train`` (default) keeps only its test-dataset recordings, on the test side, and drops the rest, so
    the test side is that dataset alone; ``test_side`` puts all its recordings on the test side (the test side then
    holds a few recordings of other datasets). ``min_class_recordings``: a dataset is tested only when it, and the
    training side, have at least this many recordings of each class.
    """

    spanning_groups: Literal["drop_from_train", "test_side"] = "drop_from_train"
    min_class_recordings: PositiveInt = 1

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class LodoSplits:
    """``table``: test_dataset, recording_id, dataset, participant_id, group_id, label, role (``train`` / ``test``),
    one row per recording used for each tested dataset. ``skipped``: dataset, reason (``too_few_positive``,
    ``too_few_negative``, ``train_too_few_positive``, ``train_too_few_negative``), n_positive, n_negative."""

    table: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)


def leave_one_dataset_out(recordings: pd.DataFrame, config: LodoConfig | None = None) -> LodoSplits:
    """Train on all datasets but one and test on that one, for every dataset whose two classes can be tested.

    Groups never straddle train and test (see :class:`LodoConfig` for the rule). Input columns and label rules
    are those of :func:`assign_folds`.
    """
    config = config or LodoConfig()
    table = _labelled(recordings).sort_values("_order")
    parts, skipped = [], []
    for dataset in sorted(table["dataset"].unique()):
        in_test = (table["dataset"] == dataset).to_numpy()
        spanning = table["group_id"].isin(table.loc[in_test, "group_id"]).to_numpy()
        test = in_test | spanning if config.spanning_groups == "test_side" else in_test
        train = ~spanning
        reason = _lodo_skip_reason(table[test], table[train], config.min_class_recordings)
        if reason:
            counts = table.loc[in_test, "label"].value_counts()
            n_positive, n_negative = int(counts.get(1, 0)), int(counts.get(0, 0))
            skipped.append({"dataset": dataset, "reason": reason, "n_positive": n_positive, "n_negative": n_negative})
            continue
        for role, mask in (("train", train), ("test", test)):
            parts.append(table[mask].assign(test_dataset=dataset, role=role))
    columns = ["test_dataset", "recording_id", "dataset", "participant_id", "group_id", "label", "role"]
    result = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    skipped_table = pd.DataFrame(skipped, columns=["dataset", "reason", "n_positive", "n_negative"])
    return LodoSplits(table=result, skipped=skipped_table)


def early_stopping_rows(table: pd.DataFrame, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """The rows of a training side to stop training on, kept out of the training: about ``1 / n_splits`` of its
    groups, stratified by label (``StratifiedGroupKFold``, seeded; the first fold that leaves both classes on both
    sides), so no participant is on both sides. ``table``: recording_id, group_id, label; the same rows in any order
    give the same choice.

    Returns:
        A boolean mask over ``table``'s rows (True: stop on it).

    Raises:
        FoldError: a class with fewer than 2 groups, or no fold with both classes on both sides.
    """
    _require(table, ("recording_id", "group_id", "label"))
    _check_class_groups(table, 2, "the training side")
    groups_per_class = min(table.loc[table["label"] == label, "group_id"].nunique() for label in LABELS.values())
    order = np.argsort(table["recording_id"].to_numpy(str), kind="stable")
    ordered = table.iloc[order].reset_index(drop=True)
    splitter = StratifiedGroupKFold(min(n_splits, groups_per_class), shuffle=True, random_state=seed)
    labels = ordered["label"].to_numpy()
    for _, test in _quiet_split(splitter, ordered):
        chosen = np.zeros(len(ordered), dtype=bool)
        chosen[test] = True
        if len(np.unique(labels[chosen])) == 2 and len(np.unique(labels[~chosen])) == 2:
            mask = np.zeros(len(table), dtype=bool)
            mask[order[chosen]] = True
            return mask
    raise FoldError("no participant-grouped split of the training side keeps both classes on both sides")


def _lodo_skip_reason(test: pd.DataFrame, train: pd.DataFrame, minimum: int) -> str | None:
    """Why a dataset cannot be tested (a class short on either side), or ``None``."""
    for prefix, side in (("", test), ("train_", train)):
        for name, label in (("positive", 1), ("negative", 0)):
            if int((side["label"] == label).sum()) < minimum:
                return f"{prefix}too_few_{name}"
    return None


def _require(table: pd.DataFrame, columns) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise FoldError(f"table lacks the columns {missing}; need {list(columns)}")


def _labelled(recordings: pd.DataFrame) -> pd.DataFrame:
    """Validated recordings with label, group_id and input position (``_order``), sorted by recording_id."""
    _require(recordings, REQUIRED_COLUMNS)
    if recordings.empty:
        raise FoldError("no recordings to split")
    for column in ("recording_id", "dataset", "participant_id"):
        if recordings[column].isna().any():
            raise FoldError(f"column {column!r} has missing values; every recording needs one")
    repeated = recordings["recording_id"][recordings["recording_id"].duplicated()]
    if len(repeated):
        raise FoldError(f"recording ids must be unique; repeated: {sorted(repeated.astype(str).unique())[:5]}")
    labels = recordings["covid_label"].map(LABELS)
    if labels.isna().any():
        other = recordings.loc[labels.isna(), "covid_label"].astype(object).fillna("<missing>").value_counts()
        raise FoldError(
            f"only covid_label {sorted(LABELS)} can be classified; filter the others first: {other.to_dict()}"
        )
    table = pd.DataFrame(
        {
            "recording_id": recordings["recording_id"].astype(str).to_numpy(),
            "dataset": recordings["dataset"].astype(str).to_numpy(),
            "participant_id": recordings["participant_id"].astype(str).to_numpy(),
            "group_id": group_ids(recordings).to_numpy(),
            "covid_label": recordings["covid_label"].astype(str).to_numpy(),
            "label": labels.astype(int).to_numpy(),
            "_order": np.arange(len(recordings)),
        }
    )
    return table.sort_values("recording_id", kind="stable").reset_index(drop=True)


def _check_class_groups(table: pd.DataFrame, needed: int, where: str) -> None:
    """FoldError when a class has fewer than ``needed`` groups in ``table``."""
    for name, label in LABELS.items():
        count = table.loc[table["label"] == label, "group_id"].nunique()
        if count < needed:
            raise FoldError(
                f"class {name!r} has {count} participant groups in {where}; need at least {needed} "
                f"(n_folds or the holdout's share of groups)"
            )


def _quiet_split(splitter: StratifiedGroupKFold, table: pd.DataFrame):
    """The splitter's folds; its row-count warning is silenced because the group counts are checked here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(table, table["label"], table["group_id"]))


def _holdout_mask(table: pd.DataFrame, config: FoldConfig) -> np.ndarray:
    """True for the held-out rows (see the module docstring)."""
    if config.holdout_fraction == 0:
        return np.zeros(len(table), dtype=bool)
    n_splits = max(2, round(1 / config.holdout_fraction))
    n_groups = table["group_id"].nunique()
    if n_groups < n_splits:
        raise FoldError(
            f"holdout_fraction {config.holdout_fraction:g} splits groups {n_splits} ways; only {n_groups} groups"
        )
    splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=config.seed)
    folds = [test for _, test in _quiet_split(splitter, table)]
    chosen = next((test for test in folds if table["label"].iloc[test].nunique() == 2), folds[0])
    mask = np.zeros(len(table), dtype=bool)
    mask[chosen] = True
    return mask
