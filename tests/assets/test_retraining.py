"""The retraining schedule, the champion-age check and the declarative automation of the cheap summaries."""

from __future__ import annotations

import importlib
from datetime import datetime, timezone

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultScheduleStatus,
    build_schedule_context,
    evaluate_automation_conditions,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

import assets.retraining
from assets.automation import SUMMARY_ASSETS
from assets.definitions import ALL_ASSETS, defs
from assets.manifest import dataset_summary, manifest
from assets.partitions import model_partitions
from assets.resources import build_resources
from cough_pipeline.schema import COVID_DATASETS
from resources.storage import Storage

MONDAY = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


def test_the_schedule_requests_one_run_over_every_model_partition_once_per_tick():
    schedule = assets.retraining.retraining_schedule
    assert schedule.job_name == "retraining"
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.default_status == DefaultScheduleStatus.STOPPED
    requests = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=MONDAY)).run_requests
    assert len(requests) == 1
    models = model_partitions.get_partition_keys()
    assert requests[0].tags[ASSET_PARTITION_RANGE_START_TAG] == models[0]
    assert requests[0].tags[ASSET_PARTITION_RANGE_END_TAG] == models[-1]
    again = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=MONDAY)).run_requests[0]
    assert again.run_key == requests[0].run_key  # the same tick twice launches one run
    next_week = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=MONDAY.replace(day=14)))
    assert next_week.run_requests[0].run_key != requests[0].run_key


def test_the_retraining_job_spans_features_to_champion_but_no_per_dataset_asset():
    job = defs.resolve_job_def("retraining")
    assert job.partitions_def == model_partitions
    steps = {node.name for node in job.graph.node_defs}
    assert {"classification_folds", "feature_ranking", "classical_models", "classifiers"} <= steps
    assert {"classifier_evaluation", "champion_classifier", "classifier_complexity"} <= steps
    assert not steps & {"manifest", "cough_features", "classification_inputs", "separator"}


def test_cron_and_status_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("COUGH_PIPELINE_RETRAINING_CRON", "30 1 * * *")
    monkeypatch.setenv("COUGH_PIPELINE_RETRAINING_SCHEDULE", "running")
    try:
        reloaded = importlib.reload(assets.retraining)
        assert reloaded.retraining_schedule.cron_schedule == "30 1 * * *"
        assert reloaded.retraining_schedule.default_status == DefaultScheduleStatus.RUNNING
        monkeypatch.setenv("COUGH_PIPELINE_RETRAINING_CRON", "every monday")
        with pytest.raises(ValueError, match="COUGH_PIPELINE_RETRAINING_CRON='every monday' is not a cron"):
            importlib.reload(assets.retraining)
    finally:
        monkeypatch.delenv("COUGH_PIPELINE_RETRAINING_CRON")
        monkeypatch.delenv("COUGH_PIPELINE_RETRAINING_SCHEDULE")
        importlib.reload(assets.retraining)


def _materialised(instance: DagsterInstance, key: str, partitions=(None,)) -> None:
    for partition in partitions:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))


def _requested(result) -> set[str]:
    keys = {key for asset in ALL_ASSETS for key in asset.keys}
    return {key.to_user_string() for key in keys if result.get_num_requested(key)}


def test_only_the_cheap_summaries_follow_a_changed_manifest_partition():
    conditioned = {
        key.to_user_string()
        for asset in ALL_ASSETS
        for key in asset.keys
        if asset.automation_conditions_by_key.get(key)
    }
    assert conditioned == set(SUMMARY_ASSETS), "heavy assets must run on the schedule or by hand only"
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # no manifest yet: nothing to summarise
        for table in ("manifest", "manifest_quarantine"):
            _materialised(instance, table, COVID_DATASETS)
        ready = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert _requested(ready) == set(SUMMARY_ASSETS)
        for key in SUMMARY_ASSETS:
            _materialised(instance, key)
        quiet = evaluate_automation_conditions(defs=defs, instance=instance, cursor=ready.cursor)
        assert quiet.total_requested == 0
        _materialised(instance, "manifest", ["coughvid"])  # new data in one dataset
        changed = evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert _requested(changed) == set(SUMMARY_ASSETS)


def test_the_dataset_summary_accounts_for_every_manifest_and_quarantine_row(separated):
    _, storage = separated
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    assert materialize([manifest, dataset_summary], selection=[dataset_summary], resources=resources).success
    summary = Storage(root=str(storage.root_path), catalog=str(storage.catalog_path)).query(
        "SELECT * FROM dataset_summary ORDER BY dataset"
    )
    kept = storage.read_table("manifest")
    quarantined = storage.read_table("manifest_quarantine")
    assert list(summary["dataset"]) == sorted(COVID_DATASETS)
    assert summary["recordings"].sum() == len(kept) and summary["quarantined"].sum() == len(quarantined)
    labels = summary[["label_positive", "label_negative", "label_unknown"]].sum(axis=1)
    assert (labels == summary["recordings"]).all()
    ccs = summary.set_index("dataset").loc["ccs"]
    assert ccs["participants"] == kept.loc[kept["dataset"] == "ccs", "participant_id"].nunique()
    assert ccs["hours"] == pytest.approx(kept.loc[kept["dataset"] == "ccs", "duration_s"].sum() / 3600)
    assert AssetKey("dataset_summary") in {k for a in ALL_ASSETS for k in a.keys}


def test_malformed_automation_settings_are_one_line_each_in_the_settings_check():
    from resources.environment import settings_problems

    problems = settings_problems(
        {
            "COUGH_PIPELINE_RETRAINING_CRON": "0 3 * *",
            "COUGH_PIPELINE_RETRAINING_SCHEDULE": "on",
            "COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS": "a month",
        }
    )
    assert any(p.startswith("COUGH_PIPELINE_RETRAINING_CRON='0 3 * *' is not a cron expression") for p in problems)
    assert any(
        p.startswith("COUGH_PIPELINE_RETRAINING_SCHEDULE='on' must be one of stopped, running") for p in problems
    )
    assert any(p.startswith("COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS='a month' must be a positive") for p in problems)
    fine = {"COUGH_PIPELINE_RETRAINING_CRON": "0 4 * * 0", "COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS": "7"}
    assert not [p for p in settings_problems(fine) if "RETRAINING" in p or "CHAMPION" in p]
