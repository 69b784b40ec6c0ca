"""Resampling runs on training folds only: SMOTE inside the pipeline, its row ledger, and its small-fold fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification.classical import ClassicalConfig, train_classical
from cough_pipeline.classification.errors import ResamplingError
from cough_pipeline.classification.resampling import (
    ESTIMATORS,
    ResamplingConfig,
    TrackedSMOTE,
    build_pipeline,
    k_neighbors_used,
    resampling_leakage,
    resampling_summary,
    row_fingerprints,
)

STATS = ("min", "max", "mean", "median", "var", "q1", "q3")


def synthetic_tables(
    n_participants: int = 20,
    per_participant: int = 3,
    n_folds: int = 5,
    n_holdout: int = 5,
    informative: tuple[str, ...] = ("rms",),
    noise: tuple[str, ...] = ("zcr", "mfcc", "chroma_stft"),
    dims: int = 1,
    shift: float = 2.0,
    positive_share: float = 0.3,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A feature table (one variant) and its fold table: participants hold one label each, folds are participant-
    disjoint and stratified, ``n_holdout`` participants are the holdout; informative columns move with the label.

    Returns:
        ``(features, folds)`` following the classification interfaces.
    """
    rng = np.random.default_rng(seed)
    labels = (np.arange(n_participants) < round(positive_share * n_participants)).astype(int)
    order = rng.permutation(n_participants)
    holdout = set(order[:n_holdout])
    cv_order = sorted(order[n_holdout:], key=lambda p: (labels[p], p))  # round-robin per class: stratified folds
    fold_of = {p: i % n_folds for i, p in enumerate(cv_order)}
    rows, fold_rows = [], []
    for p in range(n_participants):
        for r in range(per_participant):
            recording, label = f"rec{p:03d}_{r}", int(labels[p])
            covid = "positive" if label else "negative"
            row = {"dataset": "demo", "recording_id": recording, "participant_id": f"p{p:03d}", "covid_label": covid}
            row |= {"variant": "original", "duration_s": 1.0}
            for feature in informative + noise:
                for dim in range(dims):
                    moved = shift * label if feature in informative else 0.0
                    row |= {f"{feature}_{dim}_{stat}": rng.normal() + moved for stat in STATS}
            rows.append(row)
            split = "holdout" if p in holdout else "cv"
            fold = -1 if p in holdout else fold_of[p]
            fold_rows.append({**{k: row[k] for k in ("recording_id", "dataset", "participant_id", "covid_label")}})
            fold_rows[-1] |= {"group_id": f"p{p:03d}", "label": label, "split": split, "fold": fold}
    return pd.DataFrame(rows), pd.DataFrame(fold_rows)


def feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c.rsplit("_", 1)[-1] in STATS]


def test_config_refuses_unknown_strategy_and_zero_neighbours():
    with pytest.raises(ValueError, match="strategy"):
        ResamplingConfig(strategy="oversample")
    with pytest.raises(ValueError, match="k_neighbors"):
        ResamplingConfig(k_neighbors=0)
    with pytest.raises(ResamplingError, match="unknown estimator"):
        build_pipeline("xgboost", ResamplingConfig())


def test_smote_runs_once_per_training_fold_and_never_on_held_out_rows(monkeypatch):
    """A spy on SMOTE sees exactly each fold's (scaled) training rows, once per fit, and nothing in predict."""
    features, folds = synthetic_tables()
    calls = []
    original = TrackedSMOTE._fit_resample

    def spy(self, X, y):
        calls.append(set(row_fingerprints(X).tolist()))
        return original(self, X, y)

    monkeypatch.setattr(TrackedSMOTE, "_fit_resample", spy)
    columns = feature_columns(features)
    config = ClassicalConfig(classifiers=("logistic_regression", "knn"))
    result = train_classical(features, folds, {"all": columns, "top": columns[:7]}, "original", config)
    assert len(calls) == 2 * 2 * 5 == len(result.models.pipelines)

    frame = folds.merge(features[["recording_id", *columns]], on="recording_id")
    for seen, ((model, _, k), pipeline) in zip(calls, result.models.pipelines.items()):
        used = result.models.columns[(model, "original")]
        scale = pipeline.named_steps["scale"]

        def rows(mask, scale=scale, used=used):
            return set(row_fingerprints(scale.transform(frame.loc[mask, used].to_numpy(float))).tolist())

        cv = frame["split"] == "cv"
        assert seen == rows(cv & (frame["fold"] != k))
        assert not seen & rows(cv & (frame["fold"] == k))
        assert not seen & rows(~cv)
    assert (result.resampling[["leaked_validation_rows", "leaked_holdout_rows"]] == 0).all().all()

    n_calls = len(calls)
    pipeline = next(iter(result.models.pipelines.values()))
    pipeline.predict_proba(
        frame[result.models.columns[(next(iter(result.models.pipelines))[0], "original")]].to_numpy()
    )
    assert len(calls) == n_calls  # predicting never resamples


def test_smote_before_splitting_is_reported_as_leakage():
    """The deliberate leak: oversampling the whole table, then splitting; the ledger and the data both show it."""
    features, folds = synthetic_tables(n_participants=30)
    columns = feature_columns(features)
    frame = folds.merge(features[["recording_id", *columns]], on="recording_id")
    X, y = frame[columns].to_numpy(float), frame["label"].to_numpy()
    holdout = (frame["split"] == "holdout").to_numpy()

    leaky = TrackedSMOTE(random_state=0)
    X_all, y_all = leaky.fit_resample(X, y)
    assert resampling_leakage(leaky, X[holdout]) == holdout.sum() > 0
    assert resampling_leakage(leaky.seen_, X[holdout]) == holdout.sum()

    # A random split of the oversampled table puts synthetic rows (interpolated across the split) into validation.
    validation = np.random.default_rng(0).permutation(len(X_all))[: len(X_all) // 5]
    synthetic_in_validation = ~np.isin(row_fingerprints(X_all[validation]), row_fingerprints(X))
    assert synthetic_in_validation.sum() > 0

    honest = build_pipeline("logistic_regression", ResamplingConfig(seed=0)).fit(X[~holdout], y[~holdout])
    assert resampling_leakage(honest, X[holdout]) == 0
    assert resampling_leakage(honest, X[~holdout]) == (~holdout).sum()


def _small_fold(minority: int, majority: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(majority, 4)), rng.normal(2.0, size=(minority, 4))])
    return X, np.r_[np.zeros(majority, int), np.ones(minority, int)]


def test_smote_with_more_neighbours_than_minority_rows_errors_or_falls_back():
    X, y = _small_fold(minority=3)
    strict = build_pipeline("logistic_regression", ResamplingConfig(k_neighbors=5, smote_fallback="error"))
    with pytest.raises(ResamplingError, match=r"k_neighbors=5.*minority class 1 has 3 rows"):
        strict.fit(X, y)

    reduced = build_pipeline("logistic_regression", ResamplingConfig(k_neighbors=5)).fit(X, y)
    assert k_neighbors_used(reduced) == 2
    assert resampling_summary(reduced) == {
        "strategy": "smote",
        "k_neighbors_used": 2,
        "rows_seen": 15,
        "synthetic_rows": 9,
        "note": "",
    }
    roomy = build_pipeline("logistic_regression", ResamplingConfig(k_neighbors=5)).fit(*_small_fold(minority=8))
    assert k_neighbors_used(roomy) == 5

    X1, y1 = _small_fold(minority=1)
    with pytest.raises(ResamplingError, match="at least 2 minority rows"):
        build_pipeline("logistic_regression", ResamplingConfig(k_neighbors=5)).fit(X1, y1)


def test_class_weight_balances_estimators_that_have_weights_and_knn_falls_back_unresampled():
    X, y = _small_fold(minority=4)
    config = ResamplingConfig(strategy="class_weight")
    for name in ("logistic_regression", "random_forest"):
        pipeline = build_pipeline(name, config).fit(X, y)
        assert pipeline.named_steps["model"].class_weight == "balanced"
        assert resampling_summary(pipeline)["synthetic_rows"] == 0
    svm = build_pipeline("svm", config).fit(X, y)
    assert svm.named_steps["model"].estimator.class_weight == "balanced"
    knn = build_pipeline("knn", config).fit(X, y)
    summary = resampling_summary(knn)
    assert summary["strategy"] == "none" and "no class weights" in summary["note"]
    assert resampling_summary(build_pipeline("knn", ResamplingConfig(strategy="none")).fit(X, y))["note"] == ""


@pytest.mark.parametrize("name", ESTIMATORS)
def test_pipelines_are_deterministic_given_the_seed(name):
    X, y = _small_fold(minority=6, majority=18, seed=1)
    X_new = np.random.default_rng(2).normal(1.0, size=(20, 4))  # between the classes, where synthetic rows lie
    first = build_pipeline(name, ResamplingConfig(seed=3)).fit(X, y).predict_proba(X_new)
    again = build_pipeline(name, ResamplingConfig(seed=3)).fit(X, y).predict_proba(X_new)
    other = build_pipeline(name, ResamplingConfig(seed=4)).fit(X, y).predict_proba(X_new)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # the seed reaches SMOTE (and the estimator where it draws)
