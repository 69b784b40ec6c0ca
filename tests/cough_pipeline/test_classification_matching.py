"""The matched holdout: age bands, balanced participants per stratum of dataset/gender/age band, participants kept
whole, seeded draws, and a model that only recognises who coughs falling to chance on the matched rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import binary_metrics
from cough_pipeline.classification.matching import (
    MIXED,
    SUMMARY_COUNTS,
    UNKNOWN,
    age_band,
    demographics,
    join_demographics,
    matched_holdout,
    matching_summary,
)

MODELS = ("logistic_regression", "svm")


def _rows(seed: int = 0, per_participant: int = 3) -> pd.DataFrame:
    """Holdout rows of two models: dataset "a" mostly positive, dataset "b" mostly negative; a few recordings per
    participant; gender and age band drawn per participant (some unknown)."""
    rng = np.random.default_rng(seed)
    people = []
    for dataset, n_pos, n_neg in (("a", 40, 12), ("b", 12, 40)):
        for n in range(n_pos + n_neg):
            people.append(
                {
                    "dataset": dataset,
                    "participant_id": f"{dataset}{n:03d}",
                    "label": int(n < n_pos),
                    "gender": rng.choice(["female", "male", None]),
                    "age_band": rng.choice(["<30", "30-45", "45-60"]),
                }
            )
    frames = []
    for model in MODELS:
        for person in people:
            recordings = [f"{person['participant_id']}/r{k}" for k in range(1 + rng.integers(per_participant))]
            frames.append(pd.DataFrame({"recording_id": recordings, "model": model, **person}))
    table = pd.concat(frames, ignore_index=True)
    # A model that only knows the dataset: P(positive) = 1 for "a", 0 for "b".
    table["probability"] = (table["dataset"] == "a").astype(float)
    return table.assign(variant="original", split="holdout", fold=-1)


def test_age_band_reads_numeric_ages_and_source_bands():
    assert [age_band(a) for a in (0, 29.9, 30, 44.9, 45, 59.99, 60, 97)] == [
        "<30",
        "<30",
        "30-45",
        "30-45",
        "45-60",
        "45-60",
        ">=60",
        ">=60",
    ]
    assert age_band(float("nan")) == UNKNOWN and age_band(None) == UNKNOWN and age_band(-3) == UNKNOWN
    assert age_band(pd.NA, "group_19_33") == "<30"  # midpoint 26
    assert age_band(None, "group_34_48") == "30-45"  # midpoint 41
    assert age_band(None, "45-54") == "45-60"
    assert age_band(None, "80+") == ">=60" and age_band(None, ">61") == ">=60"
    assert age_band(None, "under 30") == "<30"
    assert age_band(None, "prefer_not_to_say") == UNKNOWN
    assert age_band(50, "group_0_2") == "45-60"  # a numeric age wins over a band
    assert age_band(50, edges=(18, 65)) == "18-65"
    with pytest.raises(ClassificationError, match="increasing"):
        age_band(50, edges=(60, 30))


def test_demographics_join_adds_gender_and_age_band():
    manifest = pd.DataFrame(
        {
            "dataset": ["a", "a", "b"],
            "recording_id": ["r1", "r2", "r3"],
            "age": [25.0, None, None],
            "age_group": [None, "group_49_64", None],
            "gender": ["female", None, "male"],
        }
    )
    assert demographics(manifest)[["gender", "age_band"]].values.tolist() == [
        ["female", "<30"],
        [UNKNOWN, "45-60"],
        ["male", UNKNOWN],
    ]
    predictions = pd.DataFrame({"dataset": ["b", "a"], "recording_id": ["r3", "r2"], "label": [0, 1]}, index=[7, 3])
    joined = join_demographics(predictions, manifest)
    assert joined.index.tolist() == [7, 3]
    assert joined["gender"].tolist() == ["male", UNKNOWN] and joined["age_band"].tolist() == [UNKNOWN, "45-60"]
    with pytest.raises(ClassificationError, match="no manifest row"):
        join_demographics(predictions.assign(dataset="a"), manifest)


def test_matched_holdout_balances_participants_per_stratum_and_keeps_them_whole():
    rows = _rows()
    matched = matched_holdout(rows, seed=0)
    assert set(matched.columns) == set(rows.columns) | {"stratum"}
    assert len(matched) > 0 and matched.index.isin(rows.index).all()
    per_stratum = matched.groupby(["stratum", "label"])["participant_id"].nunique().unstack()
    assert (per_stratum[0] == per_stratum[1]).all()
    # Every kept participant brings all its rows (all its recordings, under every model).
    kept = matched["participant_id"].unique()
    assert len(matched) == rows["participant_id"].isin(kept).sum()
    # The same participants for every model.
    by_model = matched.groupby("model")["participant_id"].apply(frozenset)
    assert by_model[MODELS[0]] == by_model[MODELS[1]]
    # The stratum names its keys; a participant's stratum matches its rows.
    first = matched.iloc[0]
    assert first["stratum"].startswith(f"dataset={first['dataset']}|gender=")


def test_unknown_values_are_a_level_and_one_class_strata_are_dropped():
    rows = _rows()
    matched = matched_holdout(rows, seed=0)
    assert (matched["stratum"].str.contains(f"gender={UNKNOWN}")).any()
    assert matched.loc[matched["gender"].isna(), "stratum"].str.contains(f"gender={UNKNOWN}").all()
    summary = matching_summary(rows, matched)
    assert summary["status"].isin(["matched", "one_class"]).all()
    one_class = summary[summary["status"] == "one_class"]
    assert (one_class[["positive_participants_after", "negative_participants_after"]] == 0).all().all()
    done = summary[summary["status"] == "matched"]
    assert (done["positive_participants_after"] == done["negative_participants_after"]).all()
    expected = done[["positive_participants_before", "negative_participants_before"]].min(axis=1)
    assert (done["positive_participants_after"] == expected).all()
    assert summary["positive_participants_before"].sum() == rows.loc[rows["label"] == 1, "participant_id"].nunique()
    after = matched.drop_duplicates("recording_id")
    assert summary["positive_recordings_after"].sum() == int((after["label"] == 1).sum())
    assert summary["negative_recordings_after"].sum() == int((after["label"] == 0).sum())
    assert set(SUMMARY_COUNTS) <= set(summary.columns)


def test_matching_is_seeded_and_ignores_row_order():
    rows = _rows()
    first = matched_holdout(rows, seed=3)
    shuffled = rows.sample(frac=1.0, random_state=1)
    again = matched_holdout(shuffled, seed=3)
    assert set(first["participant_id"]) == set(again["participant_id"])
    assert first.equals(matched_holdout(rows, seed=3))
    other = matched_holdout(rows, seed=4)
    assert set(other["participant_id"]) != set(first["participant_id"])
    assert len(other["participant_id"].unique()) == len(first["participant_id"].unique())


def test_participants_with_mixed_labels_or_strata_are_dropped_and_reported():
    rows = _rows()
    changed = rows.copy()
    flip = changed["recording_id"] == "a000/r0"  # a positive participant gets one negative recording
    changed.loc[flip, "label"] = 0
    moved = changed["recording_id"] == "b020/r0"  # a participant whose recordings disagree on gender
    changed.loc[moved, "gender"] = "other"
    matched = matched_holdout(changed, seed=0)
    assert not matched["participant_id"].isin(["a000", "b020"]).any()
    summary = matching_summary(changed, matched)
    mixed = summary[summary["status"] == "mixed"]
    assert len(mixed) == 1 and mixed.iloc[0]["stratum"] == MIXED
    assert (mixed[list(SUMMARY_COUNTS)] == 0).all().all()


def test_a_who_coughs_model_drops_to_chance_on_the_matched_holdout():
    rows = _rows()
    plain = rows[rows["model"] == MODELS[0]]
    assert binary_metrics(plain["label"], plain["probability"])["roc_auc"] > 0.7
    matched = matched_holdout(rows, seed=0)
    mine = matched[matched["model"] == MODELS[0]]
    assert mine["label"].nunique() == 2
    assert binary_metrics(mine["label"], mine["probability"])["roc_auc"] == pytest.approx(0.5, abs=0.1)


def test_matching_refuses_missing_columns_and_bad_labels():
    rows = _rows()
    with pytest.raises(ClassificationError, match="age_band"):
        matched_holdout(rows.drop(columns="age_band"), seed=0)
    with pytest.raises(ClassificationError, match="labels"):
        matched_holdout(rows.assign(label=2), seed=0)
    # Other keys work too: matching on dataset alone.
    matched = matched_holdout(rows, seed=0, keys=("dataset",))
    assert set(matched["stratum"]) == {"dataset=a", "dataset=b"}
    assert matched.groupby("label")["participant_id"].nunique().tolist() == [24, 24]
