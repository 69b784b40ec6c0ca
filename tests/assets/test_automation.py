"""The raw-data sensor: one run request for the partition whose files changed, none on a repeated tick."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from dagster import (
    DagsterInstance,
    StaticPartitionsDefinition,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    op,
)

from assets.automation import ALERTS_TABLE, folder_fingerprint, pipeline_failure_alerts, raw_data_sensor
from assets.definitions import defs
from cough_pipeline.schema import COVID_DATASETS
from resources.alerts import AlertWebhook
from resources.data_roots import DataRoots, env_var_for
from resources.storage import Storage


@pytest.fixture(autouse=True)
def no_roots_from_the_environment(monkeypatch):
    for dataset in COVID_DATASETS:
        monkeypatch.delenv(env_var_for(dataset), raising=False)


def _roots(tmp_path, **roots) -> DataRoots:
    return DataRoots(storage=Storage(root=str(tmp_path / "storage")), **{k: str(v) for k, v in roots.items()})


def _tick(roots: DataRoots, cursor: str | None):
    with build_sensor_context(cursor=cursor, resources={"data_roots": roots}, definitions=defs) as context:
        result = raw_data_sensor(context)
    return result, result.cursor


def test_fingerprint_notices_names_sizes_and_times_without_reading(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"1234")
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / ".hidden").write_bytes(b"x")
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "a.wav").write_bytes(b"12345")
    assert folder_fingerprint(tmp_path) != first
    sized = folder_fingerprint(tmp_path)
    os.utime(tmp_path / "a.wav", ns=(1, 1))
    assert folder_fingerprint(tmp_path) != sized


def test_a_new_file_requests_one_run_for_its_partition_and_a_repeated_tick_none(tmp_path):
    coughvid, coswara = tmp_path / "coughvid", tmp_path / "coswara"
    for root in (coughvid, coswara):
        root.mkdir()
        (root / "metadata.csv").write_text("uuid\n")
    roots = _roots(tmp_path, coughvid=coughvid, coswara=coswara)

    first, cursor = _tick(roots, None)
    assert not first.run_requests  # the first tick records what is there

    (coughvid / "new.webm").write_bytes(b"audio")
    added, cursor = _tick(roots, cursor)
    assert [(r.partition_key, r.job_name or "dataset_job") for r in added.run_requests] == [("coughvid", "dataset_job")]
    assert added.run_requests[0].run_key.startswith("coughvid:")

    again, cursor = _tick(roots, cursor)
    assert not again.run_requests

    (coughvid / "new.webm").unlink()
    removed, cursor = _tick(roots, cursor)
    assert [r.partition_key for r in removed.run_requests] == ["coughvid"]
    assert removed.run_requests[0].run_key != added.run_requests[0].run_key


def test_a_missing_root_is_reported_and_unconfigured_datasets_are_not_watched(tmp_path):
    present = tmp_path / "iatos"
    present.mkdir()
    roots = _roots(tmp_path, iatos=present, ccs=tmp_path / "not-there")
    result, cursor = _tick(roots, None)
    assert not result.run_requests
    assert "ccs" in result.skip_reason.skip_message
    assert set(json.loads(cursor)) == {"iatos"}


@op
def fails_on_purpose():
    raise ValueError("the audio root is unreadable")


@job(partitions_def=StaticPartitionsDefinition(["coughvid"]))
def failing_job():
    fails_on_purpose()


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _failure_context(instance, resources):
    result = failing_job.execute_in_process(instance=instance, partition_key="coughvid", raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return build_run_status_sensor_context(
        sensor_name="pipeline_failure_alerts",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    ).for_run_failure()


def test_a_failed_run_is_recorded_in_the_alerts_table_and_posted_to_the_webhook(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    storage = Storage(root=str(tmp_path / "storage"))
    webhook = AlertWebhook(url=f"http://127.0.0.1:{server.server_port}/alerts")
    try:
        with DagsterInstance.ephemeral() as instance:
            context = _failure_context(instance, {"storage": storage, "alert_webhook": webhook})
            pipeline_failure_alerts(context)
            run_id = context.dagster_run.run_id
    finally:
        server.shutdown()
    alerts = storage.query(f"SELECT * FROM {ALERTS_TABLE}")
    assert len(alerts) == 1
    alert = alerts.iloc[0]
    assert (alert["run_id"], alert["job"], alert["partition"]) == (run_id, "failing_job", "coughvid")
    assert alert["failed_steps"] == "fails_on_purpose"
    assert alert["error"] == "ValueError: the audio root is unreadable"
    assert _Receiver.received[-1]["run_id"] == run_id
    assert _Receiver.received[-1]["error"] == alert["error"]


def test_an_unreachable_webhook_is_reported_not_raised(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    storage = Storage(root=str(tmp_path / "storage"))
    with DagsterInstance.ephemeral() as instance:
        context = _failure_context(
            instance, {"storage": storage, "alert_webhook": AlertWebhook(url=f"http://127.0.0.1:{port}/")}
        )
        pipeline_failure_alerts(context)
    assert len(storage.query(f"SELECT * FROM {ALERTS_TABLE}")) == 1
    assert AlertWebhook(url=f"http://127.0.0.1:{port}/", timeout_s=2).send({}).startswith("not sent")
    assert AlertWebhook().send({}) == "not configured"


def test_training_and_mixture_steps_carry_their_concurrency_pools():
    from assets.definitions import ALL_ASSETS
    from assets.pools import MIXTURES_POOL, TRAINING_POOL

    pools = {key.to_user_string(): asset.node_def.pool for asset in ALL_ASSETS for key in asset.keys}
    assert {name for name, pool in pools.items() if pool == MIXTURES_POOL} == {"separation_mixtures"}
    trained = {name for name, pool in pools.items() if pool == TRAINING_POOL}
    assert {"separator", "separator_pruned", "classical_models", "classifiers"} <= trained
    assert pools["manifest"] is None and pools["classifier_evaluation"] is None
