"""The classification branch on the demo corpus: both variants, features, inputs, folds, ranking, classical
models and their report."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import materialize

from assets.classification import (
    classical_models,
    classification_folds,
    classification_inputs,
    classification_recordings,
    cough_feature_catalog,
    cough_features,
    cross_dataset_duplicates,
    feature_ranking,
)
from assets.resources import build_resources
from cough_pipeline.classification.classical import column_sets
from cough_pipeline.classification.features import FEATURE_DOMAINS, feature_blocks
from cough_pipeline.classification.stage import StageConfig, best_models, top_features, train_and_evaluate
from cough_pipeline.schema import COVID_DATASETS
from tests.assets.conftest import SEPARATION, UPSTREAM

PER_DATASET = [classification_recordings, cough_features, classification_inputs]
SUMMARIES = [cough_feature_catalog, cross_dataset_duplicates, classification_folds, feature_ranking, classical_models]


@pytest.fixture(scope="module")
def classified(separated):
    _, storage = separated
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    everything = [*PER_DATASET, *SUMMARIES, *SEPARATION, *UPSTREAM]
    for partition in COVID_DATASETS:
        run = materialize(everything, selection=PER_DATASET, partition_key=partition, resources=resources)
        assert run.success, partition
    result = materialize(everything, selection=SUMMARIES, resources=resources)
    return result, storage


def test_every_classification_asset_materialises_and_its_checks_pass(classified):
    result, _ = classified
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"participant_disjoint_folds": True, "resampling_saw_training_rows_only": True}


def test_every_classification_subset_recording_is_accounted_for_in_both_variants(classified):
    _, storage = classified
    subset = storage.query("SELECT count(*) AS n FROM subset_split WHERE subset = 'classification'")["n"][0]
    kept = storage.query("SELECT count(*) AS n FROM classification_recordings")["n"][0]
    quarantined = storage.query("SELECT count(*) AS n FROM classification_quarantine")["n"][0]
    assert kept + quarantined == 2 * subset
    features = storage.query("SELECT count(*) AS n FROM cough_features")["n"][0]
    rejected = storage.query("SELECT count(*) AS n FROM cough_feature_quarantine")["n"][0]
    assert features + rejected == kept


def test_tables_are_queryable_and_the_features_are_the_catalogued_15_by_7(classified):
    _, storage = classified
    features = storage.query("SELECT * FROM cough_features")
    catalog = storage.query("SELECT * FROM cough_feature_catalog")
    assert set(feature_blocks(features.columns)) == set(catalog["feature"]) == set(FEATURE_DOMAINS)
    assert set(features["variant"]) == {"original", "separated"}
    assert np.isfinite(features.select_dtypes("number").to_numpy()).all()
    ranking = storage.query("SELECT variant, count(*) AS n FROM feature_ranking GROUP BY variant")
    assert dict(zip(ranking["variant"], ranking["n"])) == {"original": 15, "separated": 15}
    report = storage.query("SELECT DISTINCT evaluation FROM classification_report")
    assert {"cv", "holdout"} <= set(report["evaluation"])


def _best_holdout_auc(storage, shuffle_seed: int | None = None):
    features = storage.query("SELECT * FROM cough_features")
    folds = storage.query("SELECT * FROM classification_folds")
    ranking = storage.query("SELECT * FROM feature_ranking")
    if shuffle_seed is not None:  # labels shuffled across participants: nothing left to learn
        participants = folds.drop_duplicates("participant_id")[["participant_id", "label"]]
        shuffled = np.random.default_rng(shuffle_seed).permutation(participants["label"].to_numpy())
        folds = folds.drop(columns="label").merge(participants.assign(label=shuffled), on="participant_id")
    blocks = feature_blocks(features.columns)
    sets = {v: column_sets(blocks, top_features(ranking, v, 5), 5) for v in ("original", "separated")}
    result = train_and_evaluate(features, folds, None, sets, StageConfig())
    return best_models(result.report), result.report


def test_the_best_classical_model_separates_the_demo_classes_in_both_variants(classified):
    _, storage = classified
    stored = storage.query(
        "SELECT variant, max(value) AS auc FROM classification_report WHERE evaluation = 'holdout' "
        "AND dataset = 'all' AND metric = 'roc_auc' GROUP BY variant"
    )
    assert dict(zip(stored["variant"], stored["auc"] > 0.8)) == {"original": True, "separated": True}, stored


def test_with_shuffled_labels_the_same_models_fall_to_chance(classified):
    _, storage = classified
    _, report = _best_holdout_auc(storage, shuffle_seed=1)
    cv = report[(report["evaluation"] == "cv") & (report["dataset"] == "all") & (report["metric"] == "roc_auc")]
    assert abs(cv["value"].mean() - 0.5) < 0.15, cv[["model", "variant", "value"]]
