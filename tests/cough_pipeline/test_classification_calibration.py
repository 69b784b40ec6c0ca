"""Calibration of classifier probabilities: temperature and isotonic calibrators fitted on validation rows only,
Brier score, ECE and NLL against hand-computed values, the before/after table and the reliability figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from cough_pipeline.classification.calibration import (
    CALIBRATION_TABLE_COLUMNS,
    Calibrator,
    brier_score,
    calibrate_predictions,
    calibration_table,
    expected_calibration_error,
    fit_calibrator,
    negative_log_likelihood,
    reliability_curve,
)
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS
from cough_pipeline.plots import reliability_png


def _overconfident(n: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and a model reporting sigmoid(sharpness * z): over-confident by ``sharpness``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-sharpness * z))


def _table(seed: int = 0, models=("logistic_regression", "svm")) -> pd.DataFrame:
    """Validation rows of three folds, holdout rows of each fold model and fold-ensemble rows, per model."""
    frames = []
    for number, model in enumerate(models):
        labels, p = _overconfident(300, seed + number, sharpness=2.0 + number)
        validation = pd.DataFrame(
            {"recording_id": [f"v{i}" for i in range(300)], "fold": np.arange(300) % 3, "split": "validation"}
        )
        frames.append(validation.assign(model=model, probability=p, label=labels))
        labels, p = _overconfident(60, seed + 10 + number, sharpness=2.0 + number)
        for fold in (0, 1, 2, FOLD_ENSEMBLE):
            holdout = pd.DataFrame({"recording_id": [f"h{i}" for i in range(60)], "fold": fold, "split": "holdout"})
            frames.append(holdout.assign(model=model, probability=p, label=labels))
    table = pd.concat(frames, ignore_index=True)
    table["participant_id"] = "p" + table["recording_id"]
    table["dataset"], table["variant"] = "coswara", "original"
    return table[list(PREDICTION_COLUMNS)]


def test_brier_nll_and_ece_match_hand_computed_values():
    assert brier_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]) == pytest.approx((0.01 + 0.04 + 0.16 + 0.25) / 4)
    assert negative_log_likelihood([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # Two bins: [0, 0.5) holds 0.3 and 0.1 (confidence 0.2, accuracy 1/2); [0.5, 1] holds 0.9, 0.8, 1.0
    # (confidence 0.9, accuracy 2/3); p = 1 belongs to the last bin.
    ece = expected_calibration_error([1, 0, 1, 0, 1], [0.9, 0.8, 0.3, 0.1, 1.0], n_bins=2)
    assert ece == pytest.approx((2 * 0.3 + 3 * (0.9 - 2 / 3)) / 5)
    # A bin's lower edge belongs to it: 0.5 falls into [0.5, 1].
    curve = reliability_curve([0, 1], [0.5, 0.49], n_bins=2)
    assert curve["n"].tolist() == [1, 1]
    assert curve["accuracy"].tolist() == [1.0, 0.0]
    assert expected_calibration_error([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0]) == 0.0


def test_empty_bins_are_nan_and_bad_values_are_refused():
    curve = reliability_curve([1, 0], [0.95, 0.05], n_bins=10)
    assert curve["n"].sum() == 2 and curve["confidence"].isna().sum() == 8
    with pytest.raises(ClassificationError, match=r"\[0, 1\]"):
        brier_score([1, 0], [1.2, 0.5])
    with pytest.raises(ClassificationError, match="0 and 1"):
        expected_calibration_error([2, 0], [0.5, 0.5])
    with pytest.raises(ClassificationError, match="same shape"):
        negative_log_likelihood([1, 0, 1], [0.5, 0.5])
    assert math.isnan(brier_score([], []))


def test_temperature_applies_the_logit_division():
    calibrator = Calibrator("temperature", n_fit=10, n_positive=5, temperature=2.0)
    # logit(0.8) = ln 4; halved: ln 2; sigmoid(ln 2) = 2/3.
    assert calibrator.apply([0.8, 0.5, 0.2]) == pytest.approx([2 / 3, 0.5, 1 / 3])
    assert np.isfinite(calibrator.apply([0.0, 1.0])).all()


def test_temperature_scaling_recovers_the_overconfidence_and_helps_held_out_data():
    labels, p = _overconfident(4000, seed=1, sharpness=3.0)
    calibrator = fit_calibrator(labels, p, "temperature")
    assert calibrator.temperature == pytest.approx(3.0, rel=0.15)
    test_labels, test_p = _overconfident(4000, seed=2, sharpness=3.0)
    calibrated = calibrator.apply(test_p)
    assert negative_log_likelihood(test_labels, calibrated) < negative_log_likelihood(test_labels, test_p) - 0.05
    assert expected_calibration_error(test_labels, calibrated) < 0.5 * expected_calibration_error(test_labels, test_p)
    # One monotone map: the ranking, and so the AUC, is unchanged.
    assert roc_auc_score(test_labels, calibrated) == pytest.approx(roc_auc_score(test_labels, test_p))


def test_isotonic_calibrator_predicts_as_sklearn_and_clips_out_of_range():
    labels, p = _overconfident(500, seed=3)
    p = 0.1 + 0.8 * p  # the fit sees [0.1, 0.9] only
    calibrator = fit_calibrator(labels, p, "isotonic")
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, labels)
    probe = np.linspace(0.0, 1.0, 201)
    assert calibrator.apply(probe) == pytest.approx(reference.predict(probe))
    assert calibrator.apply([0.0])[0] == pytest.approx(calibrator.y[0])
    assert np.all(np.diff(calibrator.apply(probe)) >= 0)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibrators_round_trip_through_json(method):
    labels, p = _overconfident(300, seed=4)
    calibrator = fit_calibrator(labels, p, method)
    text = calibrator.to_json()
    assert "pickle" not in text and '"format"' in text
    again = Calibrator.from_json(text)
    assert again == calibrator
    assert again.apply(p) == pytest.approx(calibrator.apply(p))


def test_fit_refuses_one_class_unknown_methods_and_bad_json():
    with pytest.raises(ClassificationError, match="both classes"):
        fit_calibrator([1, 1, 1], [0.2, 0.5, 0.9], "temperature")
    with pytest.raises(ClassificationError, match="method"):
        fit_calibrator([1, 0], [0.6, 0.4], "platt")
    with pytest.raises(ClassificationError, match="format"):
        Calibrator.from_json('{"format": "other", "method": "temperature"}')
    with pytest.raises(ClassificationError, match="unreadable"):
        Calibrator.from_json("not json")
    with pytest.raises(ClassificationError, match="positive temperature"):
        Calibrator("temperature", n_fit=1, n_positive=1, temperature=-1.0)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibrate_predictions_fits_per_model_on_validation_rows_only(method):
    table = _table()
    calibrated, calibrators = calibrate_predictions(table, method)
    assert set(calibrators) == {("logistic_regression", "original"), ("svm", "original")}
    assert list(calibrated.columns) == list(table.columns) and len(calibrated) == len(table)
    for (model, _), calibrator in calibrators.items():
        rows = table["model"] == model
        validation = rows & (table["split"] == "validation")
        assert calibrator.n_fit == int(validation.sum())
        expected = fit_calibrator(table.loc[validation, "label"], table.loc[validation, "probability"], method)
        assert calibrator == expected
        # Holdout rows of fold models and of the ensemble go through the same map.
        assert calibrated.loc[rows, "probability"].to_numpy() == pytest.approx(
            calibrator.apply(table.loc[rows, "probability"])
        )

    # Poisoned holdout rows (labels flipped, probabilities scrambled) leave every calibrator unchanged.
    poisoned = table.copy()
    holdout = poisoned["split"] == "holdout"
    poisoned.loc[holdout, "label"] = 1 - poisoned.loc[holdout, "label"]
    poisoned.loc[holdout, "probability"] = np.random.default_rng(9).random(int(holdout.sum()))
    _, poisoned_calibrators = calibrate_predictions(poisoned, method)
    assert poisoned_calibrators == calibrators


def test_calibrate_predictions_handles_a_repeated_index_and_refuses_missing_validation():
    table = _table(models=("logistic_regression",))
    repeated = table.set_index(pd.Index(np.zeros(len(table), dtype=int)))
    calibrated, calibrators = calibrate_predictions(repeated, "temperature")
    calibrator = calibrators[("logistic_regression", "original")]
    assert calibrated["probability"].to_numpy() == pytest.approx(calibrator.apply(table["probability"]))
    with pytest.raises(ClassificationError, match="no validation predictions"):
        calibrate_predictions(table[table["split"] == "holdout"], "temperature")
    one_class = table.assign(label=np.where(table["split"] == "validation", 1, table["label"]))
    with pytest.raises(ClassificationError, match="logistic_regression .original.: calibration needs both"):
        calibrate_predictions(one_class, "isotonic")


def test_calibration_table_reports_each_split_and_prediction_kind():
    table = _table(models=("logistic_regression",))
    calibrated, _ = calibrate_predictions(table, "temperature")
    report = calibration_table(table, calibrated)
    assert list(report.columns) == list(CALIBRATION_TABLE_COLUMNS)
    cells = set(zip(report["split"], report["predictions"]))
    assert cells == {("validation", "fold_models"), ("holdout", "fold_models"), ("holdout", "fold_ensemble")}
    ensemble = report[report["predictions"] == "fold_ensemble"].iloc[0]
    rows = table["fold"] == FOLD_ENSEMBLE
    assert ensemble["n"] == int(rows.sum())
    assert ensemble["brier_before"] == pytest.approx(
        brier_score(table.loc[rows, "label"], table.loc[rows, "probability"])
    )
    after = calibrated.loc[rows, "probability"]
    assert ensemble["ece_after"] == pytest.approx(expected_calibration_error(table.loc[rows, "label"], after))
    validation = report[report["split"] == "validation"].iloc[0]
    assert validation["nll_after"] < validation["nll_before"]
    # Rows that differ between the tables are refused.
    with pytest.raises(ClassificationError, match="only one of the two"):
        calibration_table(table, calibrated.iloc[1:])
    with pytest.raises(ClassificationError, match="labels differ"):
        calibration_table(table, calibrated.assign(label=1 - calibrated["label"]))


def test_reliability_png_draws_curves():
    labels, p = _overconfident(200, seed=5)
    png = reliability_png({"raw": (labels, p), "one class": ([1, 1], [0.9, 0.8])}, "reliability", n_bins=5)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
