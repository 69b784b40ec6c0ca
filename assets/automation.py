"""Sensors: new raw data → a run of ``dataset_job`` for exactly that dataset's partition; a failed run → an alert.

``raw_data_sensor`` watches the root of every dataset whose root is configured (by the ``data_roots`` resource or
``COUGH_PIPELINE_<NAME>_ROOT``; the embedded demo corpus is generated, not delivered, so it is not watched). Its
cursor holds one cheap fingerprint per dataset: a hash of every file's relative path, size and modification time,
with no file opened. The first tick records what is there; after that a dataset whose fingerprint changed (a file
added, changed or removed) gets one run request for its partition, whose ``run_key`` is the fingerprint, so a
repeated tick never launches the same run twice. A root that disappears is reported in the tick's message and
keeps its last fingerprint until it is back.

``pipeline_failure_alerts`` records every failed run of this code location in the ``pipeline_alerts`` table (one
partition per run, so alerts are only ever added) and POSTs the same row as JSON to the ``alert_webhook`` resource's
URL when one is configured; a webhook that cannot be reached is logged, never raised.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from cough_pipeline.schema import COVID_DATASETS
from resources.alerts import AlertWebhook
from resources.data_roots import DataRoots
from resources.storage import Storage

DATASET_JOB = "dataset_job"
#: The run tag naming what requested a run (a sensor or a schedule).
TRIGGER_TAG = "cough_pipeline/trigger"


def folder_fingerprint(root: str | Path) -> str:
    """A hash of every file under ``root`` (relative path, size, modification time in ns), sorted by path; no file
    is read. Hidden files and folders (names starting with ``.``) are left out."""
    root = Path(root)
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:  # removed between the listing and the stat: the next tick sees it gone
                continue
            entries.append(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


@sensor(
    job_name=DATASET_JOB,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests a dataset_job run for a dataset partition when files under its configured root are "
    "added, changed or removed (fingerprint of names, sizes and modification times; no file is read).",
)
def raw_data_sensor(context: SensorEvaluationContext, data_roots: DataRoots):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests, missing = [], []
    for dataset in COVID_DATASETS:
        configured = data_roots.configured_root(dataset)
        if not configured:
            continue
        root = Path(configured).expanduser()
        if not root.is_dir():
            missing.append(f"{dataset} ({root})")
            continue
        fingerprint = folder_fingerprint(root)
        if dataset in seen and seen[dataset] != fingerprint:
            requests.append(
                RunRequest(
                    run_key=f"{dataset}:{fingerprint}",
                    partition_key=dataset,
                    tags={TRIGGER_TAG: "raw_data_sensor"},
                )
            )
        seen[dataset] = fingerprint
    message = f"roots not found: {', '.join(missing)}" if missing else None
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(message or "no dataset root changed"), cursor=json.dumps(seen, sort_keys=True)
        )
    if message:
        context.log.warning(message)
    return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


#: The condition of the cheap summaries over every dataset partition (``dataset_summary``, ``cross_dataset_duplicates``:
#: a few tables, no audio): materialise once after any manifest partition changes, when every partition exists and
#: none is being written. Heavy assets (features, separation, training) carry no condition: they run on the
#: retraining schedule or by hand, so new data never starts hours of training on its own.
SUMMARY_AUTOMATION = AutomationCondition.eager()
SUMMARY_ASSETS = ("dataset_summary", "cross_dataset_duplicates")

summary_automation = AutomationConditionSensorDefinition(
    "summary_automation",
    target=AssetSelection.assets(*SUMMARY_ASSETS),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Evaluates the automation conditions of the cheap per-dataset summaries (dataset_summary, "
    "cross_dataset_duplicates) and materialises them after a manifest partition changes.",
)


ALERTS_TABLE = "pipeline_alerts"
#: The columns of :data:`ALERTS_TABLE`: one row per failed run.
ALERT_COLUMNS = ("run_id", "job", "partition", "failed_steps", "error", "failed_at")


def failure_alert(context: RunFailureSensorContext) -> dict:
    """The alert row of a failed run: its id, job, partition, the steps that failed and the first error."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    errors = [event.event_specific_data.error for event in steps if event.event_specific_data is not None]
    error = errors[0] if errors else context.failure_event.event_specific_data.error
    # Dagster wraps what the step raised: the alert names the user's error, not the wrapper
    while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    summary = error.message.strip() if error is not None else context.failure_event.message
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition", ""),
        "failed_steps": ",".join(event.step_key for event in steps if event.step_key),
        "error": (summary or "")[:2000],
        "failed_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


@run_failure_sensor(
    name="pipeline_failure_alerts",
    monitor_all_code_locations=False,
    default_status=DefaultSensorStatus.RUNNING,
    description="Records every failed run (id, job, partition, failing steps, error) in the pipeline_alerts table "
    "and POSTs it as JSON to the alert webhook when one is configured.",
)
def pipeline_failure_alerts(context: RunFailureSensorContext, storage: Storage, alert_webhook: AlertWebhook):
    alert = failure_alert(context)
    storage.write_table(ALERTS_TABLE, pd.DataFrame([alert], columns=list(ALERT_COLUMNS)), partition=alert["run_id"])
    delivery = alert_webhook.send(alert)
    context.log.info(f"alert for run {alert['run_id']} ({alert['job']}): recorded; webhook {delivery}")
