"""Classification metrics, participant-bootstrap intervals, fold ensembles and summaries, and their figures."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import (
    FOLD_ENSEMBLE,
    METRICS,
    PREDICTION_COLUMNS,
    binary_metrics,
    bootstrap_metrics,
    check_predictions,
    fold_ensemble,
    fold_summary,
    metric_table,
    per_dataset_table,
)
from cough_pipeline.plots import confusion_matrix_png, roc_curves_png

LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBABILITIES = [0.9, 0.8, 0.4, 0.6, 0.7, 0.3, 0.2, 0.1, 0.5, 0.05]


def _predictions(n_participants: int = 40, per_participant: int = 3, seed: int = 0, **columns) -> pd.DataFrame:
    """Predictions of a weakly informative model: one label per participant, probabilities noisy around it."""
    rng = np.random.default_rng(seed)
    participant = np.repeat([f"p{n:03d}" for n in range(n_participants)], per_participant)
    label = np.repeat(np.arange(n_participants) % 2, per_participant)
    probability = np.clip(0.35 + 0.3 * label + rng.normal(0, 0.2, len(label)), 0, 1)
    table = pd.DataFrame(
        {
            "recording_id": [f"{p}/r{i % per_participant}" for i, p in enumerate(participant)],
            "participant_id": participant,
            "dataset": np.where(np.arange(len(label)) % 3 == 0, "coswara", "coughvid"),
            "model": "logistic_regression",
            "variant": "original",
            "split": "validation",
            "fold": 0,
            "probability": probability,
            "label": label,
        }
    )
    return table.assign(**columns)


def test_binary_metrics_match_hand_computed_values():
    metrics = binary_metrics(LABELS, PROBABILITIES)
    assert list(metrics) == list(METRICS)
    # At 0.5: TP 3 (0.9, 0.8, 0.6), FP 2 (0.7, 0.5), FN 1 (0.4), TN 4.
    expected = {
        "accuracy": 7 / 10,
        "precision": 3 / 5,
        "recall": 3 / 4,
        "specificity": 4 / 6,
        "f1": 6 / 9,
        "balanced_accuracy": (3 / 4 + 4 / 6) / 2,
        "roc_auc": 21 / 24,  # positive-negative pairs ranked correctly: 6 + 6 + 5 + 4
        "pr_auc": (1 + 1 + 3 / 4 + 4 / 6) / 4,  # precision at each positive, ranked by probability
        "specificity_at_80_sensitivity": 4 / 6,  # 3 of 4 positives is < 0.8: all four needed, down to 0.4
    }
    assert metrics == pytest.approx(expected)
    strict = binary_metrics(LABELS, PROBABILITIES, threshold=0.75)
    assert strict["recall"] == pytest.approx(2 / 4) and strict["specificity"] == pytest.approx(1.0)


def test_specificity_at_80_sensitivity_uses_every_threshold():
    # Ranked: P N P N P P N N. Sensitivity 3/4 at 0.6 is not enough; 4/4 at 0.5 costs one more negative (2 of 4).
    labels = [1, 0, 1, 0, 1, 1, 0, 0]
    probabilities = [0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.3, 0.1]
    assert binary_metrics(labels, probabilities)["specificity_at_80_sensitivity"] == pytest.approx(0.5)
    five = binary_metrics([1, 1, 1, 1, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.2, 0.5, 0.1])
    assert five["specificity_at_80_sensitivity"] == pytest.approx(1.0)  # 4 of 5 positives above every negative


def test_binary_metrics_are_nan_where_undefined():
    negatives = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert negatives["accuracy"] == 1.0 and negatives["specificity"] == 1.0
    for name in ("precision", "recall", "f1", "balanced_accuracy", "roc_auc", "pr_auc"):
        assert np.isnan(negatives[name]), name
    assert np.isnan(negatives["specificity_at_80_sensitivity"])
    positives = binary_metrics([1, 1], [0.9, 0.2])
    assert positives["pr_auc"] == 1.0 and np.isnan(positives["roc_auc"]) and np.isnan(positives["specificity"])
    assert binary_metrics([1, 0], [0.5, 0.5])["roc_auc"] == 0.5  # a tie counts half
    assert all(np.isnan(value) for value in binary_metrics([], []).values())


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    probabilities = np.round(rng.random(50), 1)  # rounded: many ties
    metrics = binary_metrics(labels, probabilities)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(labels, probabilities))
    fpr, tpr, _ = roc_curve(labels, probabilities, drop_intermediate=False)
    assert metrics["specificity_at_80_sensitivity"] == pytest.approx((1 - fpr[tpr >= 0.8]).max())


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 2], [0.1, 0.2], "labels must be 0 or 1"),
        ([0, 1], [0.1, 1.2], "outside"),
        ([0, 1], [0.1, np.nan], "outside"),
        ([0, 1], [0.1], "must match"),
    ],
)
def test_binary_metrics_refuse_bad_input(labels, probabilities, message):
    with pytest.raises(ClassificationError, match=message):
        binary_metrics(labels, probabilities)


def test_bootstrap_metrics_table_and_seeding():
    predictions = _predictions()
    table = bootstrap_metrics(predictions, n_boot=200, seed=1)
    assert list(table.columns) == ["metric", "value", "ci_low", "ci_high", "n", "n_participants", "n_boot_valid"]
    assert table["metric"].tolist() == list(METRICS)
    values = binary_metrics(predictions["label"], predictions["probability"])
    assert table.set_index("metric")["value"].to_dict() == pytest.approx(values)
    assert (table["n"] == 120).all() and (table["n_participants"] == 40).all() and (table["n_boot_valid"] == 200).all()
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    assert (table["ci_low"] < table["ci_high"]).all()
    pd.testing.assert_frame_equal(table, bootstrap_metrics(predictions, n_boot=200, seed=1))
    assert not table.equals(bootstrap_metrics(predictions, n_boot=200, seed=2))
    narrower = bootstrap_metrics(predictions, n_boot=200, seed=1, confidence=0.5)
    assert ((narrower["ci_high"] - narrower["ci_low"]) < (table["ci_high"] - table["ci_low"])).all()


def test_bootstrap_resamples_participants_with_all_their_rows():
    # One participant: every replicate draws it with all its rows, so the interval collapses onto the value.
    single = _predictions(n_participants=1, per_participant=30).assign(label=[0, 1] * 15)
    table = bootstrap_metrics(single, n_boot=50).set_index("metric")
    assert (table["ci_low"] == table["value"]).all() and (table["ci_high"] == table["value"]).all()
    rows = bootstrap_metrics(single, n_boot=50, group_column="recording_id").set_index("metric")
    assert (rows.loc["accuracy", "ci_high"] - rows.loc["accuracy", "ci_low"]) > 0.1


def test_participant_bootstrap_is_wider_than_row_bootstrap_for_a_dominant_participant():
    others = _predictions(n_participants=40, per_participant=1, seed=3)
    # 100 identical, confidently correct rows of one participant make a row bootstrap overconfident.
    dominant = others.iloc[[1] * 100].assign(participant_id="dominant", probability=0.95, label=1)
    dominant["recording_id"] = [f"dominant/r{n}" for n in range(100)]
    predictions = pd.concat([others, dominant], ignore_index=True)
    by_participant = bootstrap_metrics(predictions, n_boot=400, seed=0).set_index("metric")
    by_row = bootstrap_metrics(predictions, n_boot=400, seed=0, group_column="recording_id").set_index("metric")
    width = by_participant["ci_high"] - by_participant["ci_low"]
    row_width = by_row["ci_high"] - by_row["ci_low"]
    assert width["accuracy"] > 2 * row_width["accuracy"]
    assert width["specificity"] > 1.5 * row_width["specificity"] or width["recall"] > 2 * row_width["recall"]
    assert by_participant.loc["accuracy", "n_participants"] == 41 and by_row.loc["accuracy", "n_participants"] == 140


def test_bootstrap_counts_replicates_where_a_metric_is_undefined():
    # Two single-class participants: about half the replicates draw one of them twice, leaving one class.
    predictions = _predictions(n_participants=2, per_participant=4)
    table = bootstrap_metrics(predictions, n_boot=400, seed=0).set_index("metric")
    assert table.loc["accuracy", "n_boot_valid"] == 400
    assert 120 < table.loc["roc_auc", "n_boot_valid"] < 280
    assert 120 < table.loc["specificity", "n_boot_valid"] < 400


def test_bootstrap_of_1000_replicates_of_200_rows_is_fast():
    predictions = _predictions(n_participants=80, per_participant=1).sample(200, replace=True, random_state=0)
    start = time.perf_counter()
    bootstrap_metrics(predictions, n_boot=1000)
    assert time.perf_counter() - start < 1.0


def test_bootstrap_refuses_bad_settings():
    with pytest.raises(ClassificationError, match="confidence"):
        bootstrap_metrics(_predictions(), n_boot=10, confidence=1.0)
    with pytest.raises(ClassificationError, match="speaker"):
        bootstrap_metrics(_predictions(), n_boot=10, group_column="speaker")


def test_metric_table_scores_every_cell():
    predictions = pd.concat(
        [
            _predictions(seed=fold, fold=fold, model=model)
            for fold in (0, 1)
            for model in ("logistic_regression", "random_forest")
        ],
        ignore_index=True,
    )
    table = metric_table(predictions, n_boot=20)
    assert list(table.columns) == [
        *("model", "variant", "split", "fold"),
        *("metric", "value", "ci_low", "ci_high", "n", "n_participants", "n_boot_valid"),
    ]
    assert len(table) == 4 * len(METRICS)
    cell = predictions[(predictions["model"] == "random_forest") & (predictions["fold"] == 1)]
    scored = table[(table["model"] == "random_forest") & (table["fold"] == 1)].set_index("metric")["value"]
    assert scored.to_dict() == pytest.approx(binary_metrics(cell["label"], cell["probability"]))
    by_dataset = per_dataset_table(predictions, n_boot=20)
    assert len(by_dataset) == 8 * len(METRICS)
    assert set(by_dataset["dataset"]) == {"coswara", "coughvid"}
    with pytest.raises(ClassificationError, match="grouping"):
        metric_table(predictions.drop(columns="variant"))


def _holdout(folds=(0, 1, 2)) -> pd.DataFrame:
    base = _predictions(n_participants=6, per_participant=1, split="holdout")
    return pd.concat(
        [base.assign(fold=fold, probability=base["probability"] * (fold + 1) / 4) for fold in folds], ignore_index=True
    )


def test_fold_ensemble_averages_holdout_predictions_over_fold_models():
    holdout = _holdout()
    validation = _predictions(n_participants=4, per_participant=1)
    ensemble = fold_ensemble(pd.concat([holdout, validation], ignore_index=True))
    assert list(ensemble.columns) == list(PREDICTION_COLUMNS)
    assert len(ensemble) == 6 and (ensemble["fold"] == FOLD_ENSEMBLE).all() and (ensemble["split"] == "holdout").all()
    base = holdout[holdout["fold"] == 0].set_index("recording_id")["probability"] * 4  # fold f scaled by (f+1)/4
    expected = base * (1 + 2 + 3) / 12
    assert ensemble.set_index("recording_id")["probability"].to_dict() == pytest.approx(expected.to_dict())
    check_predictions(ensemble)
    again = fold_ensemble(pd.concat([holdout, ensemble], ignore_index=True))  # earlier ensemble rows are ignored
    pd.testing.assert_frame_equal(again, ensemble)


def test_fold_ensemble_refuses_incomplete_or_inconsistent_predictions():
    holdout = _holdout()
    with pytest.raises(ClassificationError, match="lack some fold models"):
        fold_ensemble(holdout.drop(index=holdout.index[-1]))
    disagreeing = holdout.copy()
    disagreeing.loc[disagreeing.index[-1], "label"] = 1 - disagreeing.loc[disagreeing.index[-1], "label"]
    with pytest.raises(ClassificationError, match="disagree"):
        fold_ensemble(disagreeing)
    with pytest.raises(ClassificationError, match="more than once"):
        fold_ensemble(pd.concat([holdout, holdout.head(1)]))


def test_fold_summary_takes_mean_and_sd_over_validation_folds():
    rows = [("lr", "original", "validation", fold, "roc_auc", value) for fold, value in enumerate((0.6, 0.7, 0.8))]
    rows += [
        ("lr", "original", "holdout", FOLD_ENSEMBLE, "roc_auc", 0.1),
        ("lr", "original", "holdout", 0, "roc_auc", 0.2),
    ]
    rows += [
        ("lr", "separated", "validation", 0, "roc_auc", np.nan),
        ("lr", "separated", "validation", 1, "roc_auc", 0.5),
    ]
    table = pd.DataFrame(rows, columns=["model", "variant", "split", "fold", "metric", "value"])
    summary = fold_summary(table)
    assert list(summary.columns) == ["model", "variant", "metric", "mean", "sd", "n_folds"]
    summary = summary.set_index("variant")
    assert summary.loc["original", "mean"] == pytest.approx(0.7)
    assert summary.loc["original", "sd"] == pytest.approx(0.1)
    assert summary.loc["original", "n_folds"] == 3
    assert summary.loc["separated", "mean"] == 0.5 and summary.loc["separated", "n_folds"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.drop(columns=["fold", "variant"]), r"\['variant', 'fold'\]"),
        (lambda p: p.assign(probability=p["probability"] + 2), "outside"),
        (lambda p: p.assign(label=3), "labels must be 0 or 1"),
        (lambda p: p.assign(split="test"), "split"),
        (lambda p: p.assign(fold=0.5), "fold"),
        (lambda p: p.assign(model=None), "model"),
    ],
)
def test_check_predictions_names_the_problem(change, message):
    check_predictions(_predictions())
    with pytest.raises(ClassificationError, match=message):
        check_predictions(change(_predictions()))


def test_figures_are_png():
    confusion = confusion_matrix_png([0, 1, 1, 0], [0, 1, 0, 0], "holdout")
    assert confusion.startswith(b"\x89PNG")
    curves = {"original": (LABELS, PROBABILITIES), "separated": ([0, 0], [0.2, 0.4])}
    assert roc_curves_png(curves, "holdout ROC").startswith(b"\x89PNG")
