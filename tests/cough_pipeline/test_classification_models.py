"""CoughFeatureRanker and the classical models: ranking on cv rows only, holdout skill, skops storage."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score

from cough_pipeline.classification.classical import (
    INDEX_FILE,
    PREDICTION_COLUMNS,
    ClassicalConfig,
    ClassicalModels,
    UntrustedModelFile,
    column_sets,
    train_classical,
    trusted_type,
)
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.ranking import RankerConfig, rank_features, ranking_bar_png
from cough_pipeline.classification.resampling import ESTIMATORS
from resources.model_store import ModelStore, TrainedModel
from resources.storage import Storage
from tests.cough_pipeline.test_classification_resampling import STATS, feature_columns, synthetic_tables

FEATURES = ("rms", "zcr", "mfcc", "chroma_stft")
DOMAINS = {"rms": "time", "zcr": "time", "mfcc": "cepstral", "chroma_stft": "tonal"}
FAST_RANKER = RankerConfig(classifiers=("logistic_regression", "knn"), top_k=2)


def blocks_of(features: pd.DataFrame) -> dict[str, list[str]]:
    return {f: [c for c in feature_columns(features) if c.startswith(f"{f}_")] for f in FEATURES}


@pytest.fixture(scope="module")
def separable():
    """Tables where only ``rms`` carries the label, and the four classifiers x two sets trained on them."""
    features, folds = synthetic_tables(n_participants=30, n_holdout=10, shift=2.5, seed=1)
    sets = column_sets(blocks_of(features), ["rms", "zcr"], top_k=1)
    return features, folds, sets, train_classical(features, folds, sets, "original", ClassicalConfig())


def _ensemble_auc(predictions: pd.DataFrame) -> dict[str, float]:
    holdout = predictions[predictions["split"] == "holdout"]
    mean = holdout.groupby(["model", "recording_id"], as_index=False).agg(
        p=("probability", "mean"), y=("label", "first")
    )
    return {model: roc_auc_score(rows["y"], rows["p"]) for model, rows in mean.groupby("model")}


def test_ranking_puts_the_informative_feature_first_with_per_fold_scores():
    features, folds = synthetic_tables(n_participants=25, shift=2.5)
    done = []
    result = rank_features(features, folds, blocks_of(features), DOMAINS, FAST_RANKER, lambda d, t: done.append(t))
    assert len(result.scores) == 4 * 2 * 5 and done[-1] == len(done) == 4  # progress per feature
    assert set(result.scores.columns) >= {"feature", "domain", "classifier", "fold", "roc_auc", "precision", "recall"}
    ranking = result.ranking
    assert ranking["rank"].tolist() == [1, 2, 3, 4] and ranking.iloc[0]["feature"] == "rms"
    assert ranking.iloc[0]["roc_auc"] > 0.9 and ranking.iloc[1:]["roc_auc"].max() < 0.8
    assert ranking.set_index("feature").loc["mfcc", "domain"] == "cepstral"
    assert (ranking["n_columns"] == len(STATS)).all()
    assert result.top_features() == ranking["feature"].head(2).tolist()
    assert result.top_columns(1) == [f"rms_0_{s}" for s in STATS]
    by_recall = rank_features(features, folds, blocks_of(features), DOMAINS, RankerConfig(metric="recall", **_fast()))
    assert by_recall.ranking["recall"].is_monotonic_decreasing


def test_ranking_in_two_worker_processes_equals_one_process():
    features, folds = synthetic_tables(n_participants=25, shift=2.5)
    one = rank_features(features, folds, blocks_of(features), DOMAINS, FAST_RANKER)
    two = rank_features(features, folds, blocks_of(features), DOMAINS, dataclasses.replace(FAST_RANKER, workers=2))
    pd.testing.assert_frame_equal(one.scores, two.scores)
    pd.testing.assert_frame_equal(one.ranking, two.ranking)


def _fast() -> dict:
    return {"classifiers": FAST_RANKER.classifiers, "top_k": 2}


def test_holdout_rows_never_reach_a_ranking_fit_or_score():
    features, folds = synthetic_tables(n_participants=25, shift=2.5)
    clean = rank_features(features, folds, blocks_of(features), DOMAINS, FAST_RANKER)
    poisoned = features.copy()
    holdout = poisoned["recording_id"].isin(folds.loc[folds["split"] == "holdout", "recording_id"])
    columns = feature_columns(features)
    poisoned.loc[holdout, columns] = np.nan
    poisoned.loc[holdout.idxmax(), columns[0]] = np.inf
    again = rank_features(poisoned, folds, blocks_of(features), DOMAINS, FAST_RANKER)
    pd.testing.assert_frame_equal(clean.scores, again.scores)
    pd.testing.assert_frame_equal(clean.ranking, again.ranking)

    poisoned.loc[~holdout.to_numpy().astype(bool), "zcr_0_var"] = np.nan  # the same poison in a cv row is caught
    with pytest.raises(ClassificationError, match="zcr_0_var"):
        rank_features(poisoned, folds, blocks_of(features), DOMAINS, FAST_RANKER)


def test_ranking_refuses_mixed_variants_and_features_without_a_domain():
    features, folds = synthetic_tables()
    mixed = pd.concat([features, features.assign(variant="separated")])
    with pytest.raises(ClassificationError, match="one variant"):
        rank_features(mixed, folds, blocks_of(features), DOMAINS, FAST_RANKER)
    with pytest.raises(ClassificationError, match="without a domain"):
        rank_features(features, folds, blocks_of(features), {"rms": "time"}, FAST_RANKER)
    with pytest.raises(ValueError, match="metric"):
        RankerConfig(metric="accuracy")


def test_ranking_bar_chart_is_a_png():
    ranking = pd.DataFrame(
        {"feature": ["rms", "mfcc"], "domain": ["time", "cepstral"], "roc_auc": [0.8, 0.6], "rank": [1, 2]}
    )
    png = ranking_bar_png(ranking, "roc_auc")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with pytest.raises(ClassificationError, match="metric"):
        ranking_bar_png(ranking, "accuracy")


def test_classical_predictions_follow_the_interface_and_separate_the_holdout(separable):
    features, folds, sets, result = separable
    predictions = result.predictions
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    models = {f"{c}@{s}" for c in ESTIMATORS for s in ("all", "top1")}
    assert set(predictions["model"]) == models and set(predictions["variant"]) == {"original"}
    n_cv, n_holdout = (folds["split"] == "cv").sum(), (folds["split"] == "holdout").sum()
    per_model = predictions.groupby(["model", "split"]).size().unstack()
    assert (per_model["validation"] == n_cv).all() and (per_model["holdout"] == 5 * n_holdout).all()
    validation = predictions[predictions["split"] == "validation"].merge(folds, on="recording_id")
    assert (validation["fold_x"] == validation["fold_y"]).all()  # each cv row is predicted by its own fold's model
    assert predictions["probability"].between(0, 1).all()
    aucs = _ensemble_auc(predictions)
    assert min(aucs.values()) > 0.9, aucs
    notes = result.resampling
    assert len(notes) == len(models) * 5 and (notes["strategy"] == "smote").all()
    assert (notes[["leaked_validation_rows", "leaked_holdout_rows"]] == 0).all().all()
    assert (notes["k_neighbors_used"] == 5).all() and (notes["synthetic_rows"] > 0).all()


def test_shuffled_labels_fall_to_chance():
    """The same pipelines on labels shuffled across participants: no skill on a 100-participant balanced holdout
    (a null AUC's standard deviation is about 0.06 there)."""
    features, folds = synthetic_tables(
        n_participants=200, per_participant=1, n_holdout=100, shift=2.5, positive_share=0.5, seed=2
    )
    participants = folds.drop_duplicates("participant_id")
    shuffled = dict(zip(participants["participant_id"], np.random.default_rng(0).permutation(participants["label"])))
    folds = folds.assign(label=folds["participant_id"].map(shuffled))
    sets = {"top1": [f"rms_0_{s}" for s in STATS]}
    result = train_classical(features, folds, sets, "original", ClassicalConfig(seed=0))
    aucs = _ensemble_auc(result.predictions)
    assert abs(np.mean(list(aucs.values())) - 0.5) < 0.1, aucs
    assert max(abs(a - 0.5) for a in aucs.values()) < 0.2, aucs


def test_stored_models_round_trip_with_identical_probabilities(separable, tmp_path):
    features, _, _, result = separable
    store = ModelStore(storage=Storage(root=str(tmp_path / "storage"), catalog=str(tmp_path / "w.duckdb")))
    card = store.save("classical_models", TrainedModel(result.models), run_id="run-a")
    assert card.model_format == "skops_classical_models"
    files = {p.suffix for p in store.model_folder("classical_models").iterdir()}
    assert files == {".skops", ".json"}  # no pickles
    loaded = store.load("classical_models").model
    assert loaded.columns == result.models.columns and loaded.config == json.loads(json.dumps(result.models.config))
    assert set(loaded.pipelines) == set(result.models.pipelines)
    for model, variant in result.models.columns:
        for fold in [None, *result.models.folds(model, variant)]:
            np.testing.assert_array_equal(
                loaded.predict(features, model, variant, fold), result.models.predict(features, model, variant, fold)
            )
    ensemble = result.models.predict(features, "svm@all", "original")
    folds = [result.models.predict(features, "svm@all", "original", k) for k in range(5)]
    np.testing.assert_allclose(ensemble, np.mean(folds, axis=0))
    with pytest.raises(ClassificationError, match="rms_0_min"):
        loaded.predict(features.drop(columns="rms_0_min"), "svm@top1", "original")
    with pytest.raises(ClassificationError, match="folds"):
        loaded.predict(features, "svm@top1", "original", fold=7)


class Smuggled(BaseEstimator, ClassifierMixin):
    """A class from outside the allow-list, standing in for a tampered model file."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self


def test_a_model_file_naming_an_untrusted_type_is_refused(separable, tmp_path):
    _, _, _, result = separable
    folder = result.models.save(tmp_path / "models")
    index = json.loads((folder / INDEX_FILE).read_text())
    victim = folder / index["pipelines"][0]["file"]
    pipeline = sio.load(victim, trusted=sio.get_untrusted_types(file=victim))
    pipeline.steps[-1] = ("model", Smuggled().fit([[0.0]], [0, 1][:1]))
    sio.dump(pipeline, victim)
    with pytest.raises(UntrustedModelFile, match="Smuggled"):
        ClassicalModels.load(folder)

    victim.write_bytes(b"not a zip")
    with pytest.raises(ClassificationError, match="not a readable skops file"):
        ClassicalModels.load(folder)
    index["pipelines"][0]["file"] = "../elsewhere.skops"
    (folder / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(UntrustedModelFile, match="plain file name"):
        ClassicalModels.load(folder)
    assert trusted_type("sklearn.svm._classes.SVC") and trusted_type("imblearn.pipeline.Pipeline")
    assert not trusted_type("builtins.eval") and not trusted_type("numpy.load")  # functions are never trusted
    assert not trusted_type("os.system") and not trusted_type("sklearn.no_such_module.Thing")


def test_training_refuses_bad_input():
    features, folds = synthetic_tables()
    columns = feature_columns(features)
    config = ClassicalConfig(classifiers=("knn",))
    with pytest.raises(ClassificationError, match="separated"):
        train_classical(features, folds, {"all": columns}, "separated", config)
    with pytest.raises(ClassificationError, match="twice"):
        train_classical(pd.concat([features, features.head(1)]), folds, {"all": columns}, "original", config)
    with pytest.raises(ClassificationError, match="at least 2 folds"):
        train_classical(features, folds.assign(fold=folds["fold"].clip(upper=0)), {"all": columns}, "original", config)
    with pytest.raises(ClassificationError, match="no model 'knn@all'"):
        ClassicalModels.combine().predict(features, "knn@all", "original")
    with pytest.raises(ValueError, match="classifiers"):
        ClassicalConfig(classifiers=("knn", "knn"))
