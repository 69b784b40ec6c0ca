"""The leaderboard over classifier families: reports joined with a family column, the matched holdout that exposes
a model which only knows who coughs, calibration fitted on validation rows only, and the separated-vs-original
comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS, fold_ensemble
from cough_pipeline.classification.leaderboard import (
    CALIBRATED,
    LEADERBOARD_COLUMNS,
    MATCHED,
    LeaderboardConfig,
    build_leaderboard,
    ranking,
    separation_verdict,
    variant_comparison,
)
from cough_pipeline.classification.stage import EvaluationConfig, report_table

EVALUATION = EvaluationConfig(n_boot=50, seed=0)


def _people(seed: int = 0) -> pd.DataFrame:
    """120 participants in two datasets; dataset "a" mostly positive, "b" mostly negative; one recording each;
    folds 0-4 for the first 100, the holdout for the rest."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(120):
        dataset = "a" if number % 2 else "b"
        positive = rng.random() < (0.8 if dataset == "a" else 0.2)
        rows.append(
            {
                "dataset": dataset,
                "participant_id": f"p{number:03d}",
                "recording_id": f"r{number:03d}",
                "label": int(positive),
                "gender": rng.choice(["female", "male"]),
                "age": float(rng.integers(18, 80)),
                "fold": number % 5 if number < 100 else None,
            }
        )
    return pd.DataFrame(rows)


def _predictions(people: pd.DataFrame, model: str, variant: str, score) -> pd.DataFrame:
    """Validation rows per fold, holdout rows of every fold model and the fold ensemble."""
    cv, holdout = people[people["fold"].notna()], people[people["fold"].isna()]
    validation = cv.assign(split="validation", fold=cv["fold"].astype(int))
    per_fold = pd.concat([holdout.assign(split="holdout", fold=k) for k in range(5)], ignore_index=True)
    table = pd.concat([validation, per_fold], ignore_index=True)
    table = table.assign(model=model, variant=variant, probability=score(table))[list(PREDICTION_COLUMNS)]
    return pd.concat([table, fold_ensemble(table)], ignore_index=True)


def _families(people: pd.DataFrame) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    knows_label = lambda t: np.clip(0.25 + 0.5 * t["label"] + rng.normal(0, 0.15, len(t)), 0, 1)  # noqa: E731
    knows_dataset = lambda t: np.where(t["dataset"] == "a", 0.9, 0.1)  # noqa: E731
    classical = pd.concat(
        [
            _predictions(people, "svm@all", "original", knows_dataset),
            _predictions(people, "svm@all", "separated", knows_dataset),
        ],
        ignore_index=True,
    )
    neural = pd.concat(
        [
            _predictions(people, "mfcc_mlp", "original", knows_label),
            _predictions(people, "mfcc_mlp", "separated", knows_label),
        ],
        ignore_index=True,
    )
    predictions = {"classical": classical, "neural": neural}
    reports = {family: report_table(rows, EVALUATION) for family, rows in predictions.items()}
    return reports, predictions


@pytest.fixture(scope="module")
def board():
    people = _people()
    reports, predictions = _families(people)
    manifest = people[["dataset", "recording_id", "gender", "age"]]
    return build_leaderboard(reports, predictions, manifest, LeaderboardConfig(), EVALUATION)


def test_every_family_is_on_one_board_with_the_matched_and_calibrated_evaluations(board):
    table = board.table
    assert list(table.columns) == LEADERBOARD_COLUMNS
    assert dict(table.drop_duplicates("model")[["model", "family"]].values) == {
        "svm@all": "classical",
        "mfcc_mlp": "neural",
    }
    assert {"cv", "holdout", MATCHED, CALIBRATED} <= set(table["evaluation"])
    assert set(table.loc[table["evaluation"] == "holdout", "dataset"]) == {"all", "a", "b"}


def test_the_matched_holdout_exposes_a_model_that_only_knows_the_dataset(board):
    plain = ranking(board.table).set_index(["model", "variant"])["value"]
    matched = ranking(board.table, evaluation=MATCHED).set_index(["model", "variant"])["value"]
    assert plain[("svm@all", "original")] > 0.7
    assert matched[("svm@all", "original")] == pytest.approx(0.5)
    assert matched[("mfcc_mlp", "original")] > 0.8
    assert (board.matching["status"] == "matched").any()
    kept = board.matched.groupby("label")["participant_id"].nunique()
    assert kept[0] == kept[1]


def test_calibration_is_fitted_on_validation_rows_only_and_keeps_the_holdout_ranking(board):
    calibration = board.calibration
    assert set(calibration["method"]) == {"temperature"}
    assert calibration["calibrator"].str.contains("temperature").all()
    holdout = ranking(board.table).set_index(["model", "variant"])["value"]
    calibrated = ranking(board.table, evaluation=CALIBRATED).set_index(["model", "variant"])["value"]
    assert np.allclose(holdout.sort_index(), calibrated.sort_index())  # temperature keeps the ranking
    ensemble = board.calibrated[board.calibrated["fold"] == FOLD_ENSEMBLE]
    assert set(ensemble["split"]) == {"holdout"}


def test_a_model_that_is_in_two_families_is_refused():
    people = _people()
    reports, predictions = _families(people)
    predictions["neural"] = predictions["classical"]
    with pytest.raises(ClassificationError, match="more than one family"):
        build_leaderboard(reports, predictions, people, LeaderboardConfig(), EVALUATION)


def test_the_variant_comparison_says_whether_separation_helped(board):
    comparison = variant_comparison(board.table)
    assert set(comparison["model"]) == {"svm@all", "mfcc_mlp"}
    assert np.allclose(comparison["difference"], comparison["separated"] - comparison["original"])
    verdict = separation_verdict(comparison)
    assert "of 2 models" in verdict
    assert "not measured" in separation_verdict(comparison.iloc[:0])


def test_the_config_refuses_repeated_match_keys():
    with pytest.raises(ValueError, match="distinct"):
        LeaderboardConfig(match_on=("dataset", "dataset"))
