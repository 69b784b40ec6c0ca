"""The classification branch on the demo corpus: both variants, features, inputs, folds, ranking, classical
models and their report."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import timm
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, Definitions, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG

from assets.classification import (
    CHAMPION_TABLE,
    classical_models,
    classification_folds,
    classification_inputs,
    classification_recordings,
    cough_feature_catalog,
    cough_features,
    cross_dataset_duplicates,
    feature_ranking,
)
from assets.classifiers import (
    CHAMPION_DECISION_TAG,
    CHAMPION_TAG,
    champion_classifier,
    classifier_complexity,
    classifier_evaluation,
    classifiers,
)
from assets.predict import main as predict_main
from assets.resources import build_resources
from assets.retraining import champion_age, champion_age_days, champion_age_job, retraining_job, retraining_request
from cough_pipeline.classification.classical import column_sets
from cough_pipeline.classification.classifiers import train_classifier
from cough_pipeline.classification.evaluation import binary_metrics
from cough_pipeline.classification.features import FEATURE_DOMAINS, feature_blocks
from cough_pipeline.classification.networks import CNN_NAMES, MODEL_NAMES
from cough_pipeline.classification.neural import NeuralTrainingConfig
from cough_pipeline.classification.stage import StageConfig, best_models, top_features, train_and_evaluate
from cough_pipeline.schema import COVID_DATASETS
from resources.model_store import stored_name
from tests.assets.conftest import SEPARATION, UPSTREAM

PER_DATASET = [classification_recordings, cough_features, classification_inputs]
SUMMARIES = [
    cough_feature_catalog,
    cross_dataset_duplicates,
    classification_folds,
    feature_ranking,
    classical_models,
]
LEADERBOARD = [classifier_evaluation, champion_classifier, classifier_complexity]
EVERYTHING = [*PER_DATASET, *SUMMARIES, classifiers, *LEADERBOARD, *SEPARATION, *UPSTREAM]


@pytest.fixture(scope="module")
def classified(separated):
    _, storage = separated
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    for partition in COVID_DATASETS:
        run = materialize(EVERYTHING, selection=PER_DATASET, partition_key=partition, resources=resources)
        assert run.success, partition
    result = materialize(EVERYTHING, selection=SUMMARIES, resources=resources)
    return result, storage


#: The asset tests check wiring, storage and evaluation, not how well a CNN learns the demo corpus.
TRAINING = {"ops": {"classifiers": {"config": {"training": {"epochs": 2}}}}}


@pytest.fixture(scope="module")
def trained(classified):
    """Every neural classifier partition, then the leaderboard, the complexity table and the champion."""
    _, storage = classified
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    for model in MODEL_NAMES:
        run = materialize(
            EVERYTHING, selection=[classifiers], partition_key=model, resources=resources, run_config=TRAINING
        )
        assert run.success, model
    assert materialize(EVERYTHING, selection=LEADERBOARD, resources=resources).success
    return storage


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


@pytest.mark.timeout(1800)  # sets up every classifier partition: minutes on two cores
def test_the_champion_stays_when_the_challenger_is_not_better_by_the_margin(trained):
    storage = trained
    original = storage.read_table(CHAMPION_TABLE)
    assert original["score"][0] > 0.8 and 0 < original["threshold"][0] <= 1
    storage.write_table(CHAMPION_TABLE, original.assign(score=1.5, version="an-earlier-run"))
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    try:
        instance = DagsterInstance.ephemeral()
        result = materialize(EVERYTHING, selection=[champion_classifier], resources=resources, instance=instance)
        assert result.success
        kept = storage.read_table(CHAMPION_TABLE).iloc[0]
        assert kept["version"] == "an-earlier-run" and "stays" in kept["decision"]
        tags = instance.get_run_by_id(result.run_id).tags  # the run says so too
        assert tags[CHAMPION_TAG] == "kept" and tags[CHAMPION_DECISION_TAG] == kept["decision"]
    finally:
        storage.write_table(CHAMPION_TABLE, original)  # the real champion, for the tests that predict


@pytest.fixture
def predicting(trained, monkeypatch):
    storage = trained
    monkeypatch.setenv("COUGH_PIPELINE_STORAGE", str(storage.root_path))
    monkeypatch.setenv("COUGH_PIPELINE_CATALOG", str(storage.catalog_path))
    return storage


def test_predict_scores_a_demo_recording(predicting, capsys):
    recording = predicting.query(
        "SELECT m.audio_path, m.dataset FROM classification_recordings m WHERE variant = 'original' LIMIT 1"
    )
    assert predict_main([recording["audio_path"][0]]) == 0
    out = capsys.readouterr().out
    assert "COVID-19 probability" in out and "version" in out and "per cough" in out


@pytest.mark.shared_data
def test_predict_scores_a_real_cough_and_refuses_a_non_cough_with_the_filters_reason(predicting, shared_data, capsys):
    model = ["--cough-model-dir", str(shared_data / "coughvid_model")]
    samples = shared_data / "coughvid_model" / "sample_recordings"
    assert predict_main([str(samples / "cough.wav"), *model]) == 0
    assert "COVID-19 probability" in capsys.readouterr().out
    assert predict_main([str(samples / "not_cough.wav"), *model]) == 2
    assert "refused (not_cough)" in capsys.readouterr().err


def test_predict_refuses_an_unreadable_file_without_a_traceback(predicting, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt ")
    assert predict_main([str(broken)]) == 2
    err = capsys.readouterr().err
    assert "refused (audio_" in err and "Traceback" not in err


def test_every_neural_model_is_trained_stored_and_on_the_leaderboard_with_both_families(trained):
    storage = trained
    board = storage.query(
        "SELECT family, model, variant, value FROM classifier_evaluation WHERE evaluation = 'holdout' "
        "AND dataset = 'all' AND metric = 'roc_auc'"
    )
    neural = board[board["family"] == "neural"]
    assert set(neural["model"]) == set(MODEL_NAMES)
    expected = {(model, variant) for model in MODEL_NAMES for variant in ("original", "separated")}
    assert set(zip(neural["model"], neural["variant"])) == expected
    assert (board["family"] == "classical").any()
    evaluations = storage.query("SELECT DISTINCT evaluation FROM classifier_evaluation")["evaluation"]
    assert {"cv", "holdout", "holdout_matched", "holdout_calibrated"} <= set(evaluations)
    # leave-one-dataset-out rows for both families, on the datasets the fold table could test
    lodo = storage.query(
        "SELECT DISTINCT family, model, evaluation FROM classifier_evaluation WHERE evaluation LIKE 'lodo:%' "
        "AND dataset = 'all'"
    )
    tested = {
        f"lodo:{d}"
        for d in storage.query("SELECT DISTINCT test_dataset FROM leave_one_dataset_out_folds")["test_dataset"]
    }
    assert len(tested) >= 3
    for model in MODEL_NAMES:
        assert set(lodo.loc[lodo["model"] == model, "evaluation"]) == tested, model
    assert set(lodo.loc[lodo["family"] == "classical", "evaluation"]) == tested
    versions = storage.query("SELECT DISTINCT model, model_version FROM classifier_predictions")
    for row in versions.itertuples():
        latest = (storage.root_path / "models" / "classifiers" / row.model / "LATEST").read_text().strip()
        assert row.model_version == latest
    calibration = storage.query("SELECT * FROM classifier_calibration WHERE split = 'holdout'")
    assert calibration[["brier_before", "brier_after", "ece_before", "ece_after"]].notna().all().all()


def test_the_complexity_table_counts_the_parameters_timm_builds_for_one_channel_and_two_classes(trained):
    storage = trained
    table = storage.query("SELECT * FROM classifier_complexity WHERE device = 'cpu'").set_index("model")
    assert set(table.index) == set(MODEL_NAMES)
    for name, timm_name in CNN_NAMES.items():
        reference = timm.create_model(timm_name, pretrained=False, in_chans=1, num_classes=2)
        assert table.loc[name, "parameters"] == sum(p.numel() for p in reference.parameters()), name
    assert (table["flops"] == 2 * table["macs"]).all() and (table["latency_ms"] > 0).all()


def test_the_champion_is_the_best_of_every_family_above_0_8_on_the_holdout(trained):
    storage = trained
    champion = storage.read_table(CHAMPION_TABLE).iloc[0]
    best = storage.query(
        "SELECT max(value) AS best FROM classifier_evaluation WHERE evaluation = 'holdout' AND dataset = 'all' "
        "AND metric = 'roc_auc'"
    )["best"][0]
    assert champion["score"] == pytest.approx(best) and champion["score"] > 0.8
    assert champion["calibrator"] is not None and 0 < champion["threshold"] <= 1


def test_with_shuffled_labels_the_neural_models_fall_to_chance(classified):
    _, storage = classified
    inputs = storage.query("SELECT * FROM classification_inputs")
    folds = storage.query("SELECT * FROM classification_folds")
    participants = folds.drop_duplicates("participant_id")[["participant_id", "label"]]
    shuffled = np.random.default_rng(3).permutation(participants["label"].to_numpy())
    folds = folds.drop(columns="label").merge(participants.assign(label=shuffled), on="participant_id")
    config = NeuralTrainingConfig(epochs=3, device="cpu")
    aucs = []
    for name in ("mfcc_mlp", "chroma_mlp", "cough2covid19"):
        run = train_classifier(inputs, folds, name, ("original", "separated"), storage.root_path, config)
        validation = run.predictions[run.predictions["split"] == "validation"]
        aucs += [binary_metrics(r["label"], r["probability"])["roc_auc"] for _, r in validation.groupby("variant")]
    assert abs(np.mean(aucs) - 0.5) < 0.15, aucs


def test_predict_scores_a_demo_recording_with_a_neural_champion(predicting, capsys):
    original = predicting.read_table(CHAMPION_TABLE)
    version = (predicting.root_path / "models" / "classifiers" / "mobilenetv3_small" / "LATEST").read_text().strip()
    neural = original.assign(
        model="mobilenetv3_small", variant="separated", asset="classifiers/mobilenetv3_small", version=version
    )
    predicting.write_table(CHAMPION_TABLE, neural)
    recording = predicting.query("SELECT audio_path FROM classification_recordings WHERE variant = 'original' LIMIT 1")
    try:
        assert predict_main([recording["audio_path"][0]]) == 0
    finally:
        predicting.write_table(CHAMPION_TABLE, original)
    out = capsys.readouterr().out
    assert "mobilenetv3_small (separated audio)" in out and version in out


#: The retraining job's steps after the features (folds, ranking and classical models are not retrained here, to
#: keep the test short; the job's composition is tested in test_retraining).
RETRAINED_STEPS = [
    "classifiers",
    "classifier_predictions",
    "classifier_training_history",
    "classifier_evaluation",
    "classifier_calibration",
    "matched_holdout",
    "champion_classifier",
]


@pytest.mark.timeout(1800)
def test_a_retraining_run_over_a_range_of_models_keeps_a_better_champion_and_says_so(trained):
    """The schedule's run shape (one run over a range of model partitions) on the last two models: each gets a
    new stored version and new predictions, the others are untouched, and an unbeatable champion stays."""
    storage = trained
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    store = resources["model_store"]
    original = storage.read_table(CHAMPION_TABLE)
    storage.write_table(CHAMPION_TABLE, original.assign(score=1.5))
    retrained, untouched = MODEL_NAMES[-2:], MODEL_NAMES[:-2]
    before = {name: store.versions(stored_name("classifiers", name)) for name in MODEL_NAMES}
    request = retraining_request(datetime(2026, 12, 7, 3, tzinfo=timezone.utc))
    tags = {**request.tags, ASSET_PARTITION_RANGE_START_TAG: retrained[0]}
    job = Definitions(assets=EVERYTHING, asset_checks=[champion_age], jobs=[retraining_job], resources=resources)
    instance = DagsterInstance.ephemeral()
    try:
        result = job.resolve_job_def("retraining").execute_in_process(
            instance=instance,
            tags=tags,
            run_config={"ops": {"classifiers": TRAINING["ops"]["classifiers"]}},
            asset_selection=[AssetKey(name) for name in RETRAINED_STEPS],
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        # the champion (a model this run did not retrain, or one it could not beat by the margin) is kept
        assert run.tags[CHAMPION_TAG] == "kept"
        assert re.match(r"the champion \S+ \(\w+\) (is unchanged|.* stays)", run.tags[CHAMPION_DECISION_TAG])
        for name in retrained:
            assert store.versions(stored_name("classifiers", name)) == [*before[name], result.run_id]
            predictions = storage.read_table("classifier_predictions", [name])
            assert set(predictions["model_version"]) == {result.run_id}
        for name in untouched:
            assert store.versions(stored_name("classifiers", name)) == before[name]
        board = storage.read_table("classifier_evaluation")
        assert set(MODEL_NAMES) <= set(board["model"])
        assert storage.read_table(CHAMPION_TABLE).iloc[0]["score"] == 1.5
        check = result.get_asset_check_evaluations()[0]
        assert check.check_name == "champion_age" and check.passed
    finally:
        storage.write_table(CHAMPION_TABLE, original)


def test_the_champion_age_check_warns_past_the_configured_age(trained, monkeypatch):
    storage = trained
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    age = champion_age_days(storage, resources["model_store"])
    assert 0 <= age["age_days"] < 1
    later = champion_age_days(storage, resources["model_store"], now=pd.Timestamp.now(tz="UTC") + pd.Timedelta("31D"))
    assert later["age_days"] > 30
    monkeypatch.setenv("COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS", "0.000001")
    checks = Definitions(
        assets=EVERYTHING, asset_checks=[champion_age], jobs=[champion_age_job], resources=resources
    ).resolve_job_def("champion_age_job")
    result = checks.execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success  # a warning, not a failed run
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert evaluation.metadata["model"].value == storage.read_table(CHAMPION_TABLE).iloc[0]["model"]
