"""split_subsets: participant-disjoint, seeded, fraction counted in participants, stratified by dataset."""

from __future__ import annotations

import pandas as pd
import pytest

from cough_pipeline.subsets import CLASSIFICATION, SEPARATION, leakage, separation_count, split_coughs, split_subsets


def recordings_table(participants_per_dataset: dict[str, int], recordings_per_participant: int = 3) -> pd.DataFrame:
    """Rows of recordings: ``recordings_per_participant`` per participant, ids namespaced by dataset."""
    rows = []
    for dataset, n_participants in participants_per_dataset.items():
        for participant in range(n_participants):
            for take in range(recordings_per_participant):
                rows.append(
                    {
                        "dataset": dataset,
                        "participant_id": f"{dataset}:p{participant}",
                        "recording_id": f"{dataset}:p{participant}:r{take}",
                    }
                )
    return pd.DataFrame(rows)


def test_every_participant_is_in_exactly_one_subset():
    split = split_subsets(recordings_table({"ccs": 10, "coswara": 20}), 0.5, seed=3)
    subsets_per_participant = split.groupby("participant_id")["subset"].nunique()
    assert (subsets_per_participant == 1).all()
    assert set(split["subset"]) == {SEPARATION, CLASSIFICATION}
    assert leakage(split[split["subset"] == SEPARATION], split[split["subset"] == CLASSIFICATION]) == {
        "recording_ids": [],
        "participant_ids": [],
    }


def test_every_row_is_assigned_once_and_order_is_kept():
    recordings = recordings_table({"ccs": 7, "iatos": 5})
    split = split_subsets(recordings, 0.3, seed=0)
    assert len(split) == len(recordings)
    assert split["recording_id"].tolist() == recordings["recording_id"].tolist()
    assert split["subset"].notna().all()


def test_same_seed_same_split_and_other_seed_differs():
    recordings = recordings_table({"ccs": 30, "coswara": 30})
    first = split_subsets(recordings, 0.5, seed=11)
    assert first.equals(split_subsets(recordings, 0.5, seed=11))
    assert not first["subset"].equals(split_subsets(recordings, 0.5, seed=12)["subset"])


def test_fraction_counts_participants_and_is_stratified_by_dataset():
    recordings = recordings_table({"ccs": 10, "coswara": 30})
    split = split_subsets(recordings, 0.2, seed=1)
    separation = split[split["subset"] == SEPARATION].drop_duplicates("participant_id")
    assert len(separation) == 8
    assert separation["dataset"].value_counts().to_dict() == {"coswara": 6, "ccs": 2}


def test_a_tied_remainder_goes_to_the_dataset_first_by_name():
    split = split_subsets(recordings_table({"ccs": 10, "coswara": 30}), 0.25, seed=1)
    separation = split[split["subset"] == SEPARATION].drop_duplicates("participant_id")
    assert separation["dataset"].value_counts().to_dict() == {"coswara": 7, "ccs": 3}


def test_uneven_recordings_per_participant_do_not_change_the_participant_count():
    recordings = pd.concat([recordings_table({"ccs": 4}, 1), recordings_table({"ukcovid": 4}, 9)])
    split = split_subsets(recordings, 0.5, seed=0)
    assert split[split["subset"] == SEPARATION]["participant_id"].nunique() == 4


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, {CLASSIFICATION}), (1.0, {SEPARATION})])
def test_fraction_zero_or_one_puts_everyone_on_one_side(fraction, expected):
    assert set(split_subsets(recordings_table({"ccs": 5}), fraction, seed=0)["subset"]) == expected


def test_small_fractions_still_leave_both_subsets_non_empty():
    assert separation_count(10, 0.01) == 1
    assert separation_count(10, 0.99) == 9
    assert separation_count(5, 0.5) == 3  # round half up, not banker's rounding


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, SEPARATION), (0.4, CLASSIFICATION)])
def test_single_participant_follows_the_rounding_rule(fraction, expected):
    split = split_subsets(recordings_table({"ccs": 1}), fraction, seed=0)
    assert set(split["subset"]) == {expected}


def test_empty_input_comes_back_empty_with_the_column():
    split = split_subsets(recordings_table({}).reindex(columns=["recording_id", "participant_id", "dataset"]), 0.5, 0)
    assert split.empty and "subset" in split.columns


@pytest.mark.parametrize(
    ("recordings", "fraction", "message"),
    [
        (pd.DataFrame({"recording_id": ["a"], "dataset": ["ccs"]}), 0.5, "participant_id"),
        (recordings_table({"ccs": 2}), 1.5, r"\[0, 1\]"),
        (pd.concat([recordings_table({"ccs": 2})] * 2), 0.5, "unique"),
        (recordings_table({"ccs": 2}).assign(participant_id=None), 0.5, "missing values"),
    ],
)
def test_invalid_input_is_rejected_with_a_clear_error(recordings, fraction, message):
    with pytest.raises(ValueError, match=message):
        split_subsets(recordings, fraction, seed=0)


def test_leakage_reports_shared_recordings_and_participants():
    separation = pd.DataFrame({"recording_id": ["a:1", "b:1"], "participant_id": ["a", "b"]})
    classification = pd.DataFrame({"recording_id": ["b:2", "a:1"], "participant_id": ["b", "a"]})
    assert leakage(separation, classification) == {"recording_ids": ["a:1"], "participant_ids": ["a", "b"]}
    with pytest.raises(ValueError, match="participant_id"):
        leakage(separation[["recording_id"]], classification)


def test_separation_coughs_split_by_participant_across_train_validation_test():
    coughs = pd.DataFrame(
        {
            "path": [f"/c/{i}.wav" for i in range(60)],
            "participant_id": [f"p{i // 3}" for i in range(60)],
            "dataset": ["a" if i < 30 else "b" for i in range(60)],
        }
    )
    split = split_coughs(coughs, seed=0)
    assert set(split["split"]) == {"train", "validation", "test"}
    assert (split.groupby("participant_id")["split"].nunique() == 1).all()
    assert split_coughs(coughs, seed=0).equals(split)
    assert list(split.columns) == ["path", "participant_id", "dataset", "split"]
