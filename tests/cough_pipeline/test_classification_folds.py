"""Participant-grouped folds, cross-dataset duplicates and leave-one-dataset-out splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification.errors import FoldError
from cough_pipeline.classification.folds import (
    FOLD_COLUMNS,
    LABELS,
    FoldConfig,
    LodoConfig,
    assign_folds,
    cross_dataset_duplicates,
    early_stopping_rows,
    fold_violations,
    group_ids,
    leave_one_dataset_out,
)


def _recordings(per_class: int = 20, per_participant: int = 3, datasets=("coswara", "coughvid")) -> pd.DataFrame:
    """``per_class`` participants of each label per dataset, ``per_participant`` recordings each, distinct hashes."""
    rows = []
    for dataset in datasets:
        for label in ("positive", "negative"):
            for number in range(per_class):
                participant = f"{dataset}:{label[:3]}{number:03d}"
                for take in range(per_participant):
                    recording = f"{participant}/r{take}"
                    rows.append((dataset, recording, participant, label, f"h-{recording}"))
    return pd.DataFrame(rows, columns=["dataset", "recording_id", "participant_id", "covid_label", "content_hash"])


def _clean(violations: dict[str, list[str]]) -> bool:
    return all(not values for values in violations.values())


def test_labels_map_negative_to_0_and_positive_to_1():
    assert LABELS == {"negative": 0, "positive": 1}


def test_cross_dataset_duplicates_lists_only_hashes_in_several_datasets():
    manifest = pd.DataFrame(
        {
            "dataset": ["b", "a", "a", "a", "c", "c"],
            "recording_id": ["b1", "a1", "a2", "a3", "c1", "c2"],
            "participant_id": ["b:p", "a:p", "a:q", "a:r", "c:s", "c:t"],
            "content_hash": ["x", "x", "y", "y", "x", None],
        }
    )
    duplicates = cross_dataset_duplicates(manifest)
    # "y" repeats within dataset a only; the missing hash never matches.
    assert duplicates["recording_id"].tolist() == ["a1", "b1", "c1"]
    assert duplicates["n_datasets"].tolist() == [3, 3, 3]
    assert list(duplicates.columns) == ["content_hash", "dataset", "recording_id", "participant_id", "n_datasets"]


def test_group_ids_join_participants_sharing_audio_transitively():
    recordings = pd.DataFrame(
        {
            "participant_id": ["c:3", "b:2", "b:2", "a:9", "d:1", "e:5"],
            "content_hash": ["h1", "h1", "h2", "h2", "h3", None],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    groups = group_ids(recordings)
    assert groups.index.tolist() == [10, 11, 12, 13, 14, 15]
    # c:3 ~ b:2 (h1) and b:2 ~ a:9 (h2): one group named by its smallest participant id.
    assert groups.tolist() == ["a:9", "a:9", "a:9", "a:9", "d:1", "e:5"]


def test_assign_folds_makes_a_clean_stratified_table():
    recordings = _recordings()
    folds = assign_folds(recordings, FoldConfig(holdout_fraction=0.15, n_folds=5, seed=3))
    assert list(folds.columns) == list(FOLD_COLUMNS)
    assert folds["recording_id"].tolist() == recordings["recording_id"].tolist()
    assert _clean(fold_violations(folds))
    cv = folds[folds["split"] == "cv"]
    assert sorted(cv["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (folds.loc[folds["split"] == "holdout", "fold"] == -1).all()
    share = (folds["split"] == "holdout").mean()
    assert 0.1 <= share <= 0.2  # 1/7 of the groups for 0.15
    for _, fold in cv.groupby("fold"):
        assert set(fold["label"]) == {0, 1}
    assert set(folds.loc[folds["split"] == "holdout", "label"]) == {0, 1}
    assert (folds["label"] == folds["covid_label"].map(LABELS)).all()


def test_assign_folds_is_seeded_and_independent_of_row_order():
    recordings = _recordings(per_class=12)
    config = FoldConfig(seed=7)
    first = assign_folds(recordings, config)
    pd.testing.assert_frame_equal(first, assign_folds(recordings, config))
    shuffled = recordings.sample(frac=1.0, random_state=1)
    again = assign_folds(shuffled, config).set_index("recording_id").loc[first["recording_id"]].reset_index()
    pd.testing.assert_frame_equal(first, again)
    other = assign_folds(recordings, FoldConfig(seed=8))
    assert not first[["split", "fold"]].equals(other[["split", "fold"]])


def test_assign_folds_keeps_participants_sharing_audio_across_datasets_together():
    recordings = _recordings(per_class=12)
    # The same audio in two datasets under two participant ids, several times over.
    for number in range(6):
        first = recordings.index[recordings["participant_id"] == f"coswara:pos{number:03d}"][0]
        second = recordings.index[recordings["participant_id"] == f"coughvid:pos{number + 3:03d}"][0]
        recordings.loc[second, "content_hash"] = recordings.loc[first, "content_hash"]
    for seed in range(4):
        folds = assign_folds(recordings, FoldConfig(seed=seed))
        assert _clean(fold_violations(folds))
        joined = folds[folds["group_id"] == "coswara:pos000"]
        assert set(joined["participant_id"]) == {"coswara:pos000", "coughvid:pos003"}
        assert joined[["split", "fold"]].drop_duplicates().shape[0] == 1


def test_assign_folds_refuses_unknown_labels():
    recordings = _recordings(per_class=8)
    recordings.loc[0, "covid_label"] = "unknown"
    with pytest.raises(FoldError, match="unknown"):
        assign_folds(recordings)


def test_assign_folds_names_a_class_with_too_few_groups():
    recordings = _recordings(per_class=10, datasets=("coswara",))
    few = recordings[(recordings["covid_label"] == "negative") | recordings["participant_id"].str.endswith(("0", "1"))]
    # Two positive groups, five folds: too few; the message names the class, its count and the need.
    with pytest.raises(FoldError, match=r"'positive' has \d participant groups .* at least 5"):
        assign_folds(few, FoldConfig(holdout_fraction=0.0, n_folds=5))
    single = recordings[(recordings["covid_label"] == "negative") | (recordings["participant_id"] == "coswara:pos000")]
    with pytest.raises(FoldError, match=r"'positive' has 1 participant groups in all recordings; need at least 2"):
        assign_folds(single)


def test_assign_folds_refuses_missing_columns_and_repeated_ids():
    recordings = _recordings(per_class=8)
    with pytest.raises(FoldError, match="content_hash"):
        assign_folds(recordings.drop(columns="content_hash"))
    with pytest.raises(FoldError, match="unique"):
        assign_folds(pd.concat([recordings, recordings.head(1)]))


def test_holdout_fraction_zero_keeps_everything_in_cross_validation():
    folds = assign_folds(_recordings(per_class=6), FoldConfig(holdout_fraction=0.0, n_folds=3))
    assert (folds["split"] == "cv").all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2]


def test_fold_config_bounds():
    with pytest.raises(ValueError, match="holdout_fraction"):
        FoldConfig(holdout_fraction=0.7)
    with pytest.raises(ValueError, match="n_folds"):
        FoldConfig(n_folds=1)
    with pytest.raises(ValueError, match="seed"):
        FoldConfig(seed=-1)


def test_fold_violations_reports_each_kind_of_leak():
    folds = pd.DataFrame(
        [
            ("r1", "p1", "g1", "cv", 0),
            ("r2", "p1", "g1", "cv", 1),  # participant (and group) in two folds
            ("r3", "p2", "g2", "cv", 0),
            ("r4", "p3", "g2", "cv", 2),  # group in two folds through two participants
            ("r5", "p4", "g4", "cv", 1),
            ("r6", "p4", "g4", "holdout", -1),  # participant in cv and holdout
            ("r7", "p5", "g5", "holdout", 3),  # holdout row with a fold number
            ("r8", "p6", "g6", "cv", -1),  # cv row without one
        ],
        columns=["recording_id", "participant_id", "group_id", "split", "fold"],
    )
    violations = fold_violations(folds, separation_participants={"p5", "elsewhere"})
    assert violations == {
        "participants_in_several_folds": ["p1"],
        "participants_in_cv_and_holdout": ["p4"],
        "groups_in_several_folds": ["g1", "g2"],
        "groups_in_cv_and_holdout": ["g4"],
        "separation_participants": ["p5"],
        "bad_fold_numbers": ["r7", "r8"],
    }
    assert _clean(fold_violations(folds.iloc[[0, 2, 4]]))


def _lodo_recordings() -> pd.DataFrame:
    recordings = _recordings(per_class=3, per_participant=2, datasets=("a", "b"))
    only_negative = _recordings(per_class=2, per_participant=1, datasets=("c",))
    recordings = pd.concat([recordings, only_negative[only_negative["covid_label"] == "negative"]], ignore_index=True)
    # a:pos000 and b:pos001 share one recording's audio: one group spanning datasets a and b.
    shared = recordings.index[recordings["recording_id"] == "b:pos001/r0"][0]
    recordings.loc[shared, "content_hash"] = "h-a:pos000/r0"
    return recordings


def test_leave_one_dataset_out_drops_spanning_groups_from_training():
    splits = leave_one_dataset_out(_lodo_recordings())
    assert splits.skipped.to_dict("records") == [
        {"dataset": "c", "reason": "too_few_positive", "n_positive": 0, "n_negative": 2}
    ]
    table = splits.table
    assert sorted(table["test_dataset"].unique()) == ["a", "b"]
    for dataset, split in table.groupby("test_dataset"):
        test, train = split[split["role"] == "test"], split[split["role"] == "train"]
        assert (test["dataset"] == dataset).all()
        assert not set(train["group_id"]) & set(test["group_id"])
        assert not (train["dataset"] == dataset).any()
    # Testing on a: b:pos001 (a:pos000's group) is on neither side; c's negatives train.
    on_a = table[table["test_dataset"] == "a"]
    assert "b:pos001" not in set(on_a["participant_id"])
    assert "c" in set(on_a.loc[on_a["role"] == "train", "dataset"])


def test_leave_one_dataset_out_can_put_spanning_groups_on_the_test_side():
    table = leave_one_dataset_out(_lodo_recordings(), LodoConfig(spanning_groups="test_side")).table
    on_a = table[table["test_dataset"] == "a"]
    moved = on_a[on_a["participant_id"] == "b:pos001"]
    assert len(moved) == 2 and (moved["role"] == "test").all()
    assert not set(on_a.loc[on_a["role"] == "train", "group_id"]) & set(on_a.loc[on_a["role"] == "test", "group_id"])


def test_leave_one_dataset_out_skips_datasets_short_of_a_class_minimum():
    splits = leave_one_dataset_out(_lodo_recordings(), LodoConfig(min_class_recordings=7))
    assert splits.table.empty
    assert splits.skipped["reason"].tolist() == ["too_few_positive", "too_few_positive", "too_few_positive"]
    with pytest.raises(ValueError, match="spanning_groups"):
        LodoConfig(spanning_groups="both")


def test_leave_one_dataset_out_skips_when_training_lacks_a_class():
    recordings = _recordings(per_class=2, per_participant=1, datasets=("a", "b"))
    recordings = recordings[(recordings["dataset"] == "a") | (recordings["covid_label"] == "negative")]
    splits = leave_one_dataset_out(recordings)
    assert splits.skipped[["dataset", "reason"]].values.tolist() == [
        ["a", "train_too_few_positive"],
        ["b", "too_few_positive"],
    ]
    assert np.array_equal(splits.skipped["n_positive"], [2, 0])


def test_early_stopping_rows_are_a_grouped_stratified_fifth_independent_of_row_order():
    table = assign_folds(_recordings(per_class=10), FoldConfig(holdout_fraction=0))
    stop = early_stopping_rows(table, seed=4)
    assert not set(table.loc[stop, "group_id"]) & set(table.loc[~stop, "group_id"])
    assert table.loc[stop, "label"].nunique() == 2 and table.loc[~stop, "label"].nunique() == 2
    assert 0.1 < stop.mean() < 0.3
    shuffled = table.sample(frac=1, random_state=1)
    again = early_stopping_rows(shuffled, seed=4)
    assert set(shuffled.loc[again, "recording_id"]) == set(table.loc[stop, "recording_id"])
    assert set(table.loc[early_stopping_rows(table, seed=5), "recording_id"]) != set(table.loc[stop, "recording_id"])


def test_early_stopping_rows_need_two_groups_of_each_class():
    table = assign_folds(_recordings(per_class=3), FoldConfig(holdout_fraction=0, n_folds=2))
    positive = table.loc[table["label"] == 1, "participant_id"].iloc[0]
    one_positive = table[table["label"].eq(0) | table["participant_id"].eq(positive)]
    with pytest.raises(FoldError, match="class 'positive' has 1 participant groups"):
        early_stopping_rows(one_positive)
