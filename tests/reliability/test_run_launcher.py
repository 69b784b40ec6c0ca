"""A run launched through a code server (the UI, a schedule, a sensor) whose worker process is gone is marked failed
by run monitoring, naming the process, even when the code server that launched it is gone too."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEvent
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.test_utils import create_run_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._grpc.client import DagsterGrpcClient

from resources.processes import process_start_time
from tests.processes import child_process, kill_session, log_tail

REPO = Path(__file__).resolve().parents[2]
LOCATION = "sleepy_location"

#: Code location with one job whose only op sleeps (in the run worker itself: in-process executor).
SLEEPY_DEFS = """
import time
from dagster import Definitions, in_process_executor, job, op

@op
def sleepy():
    time.sleep(120)

@job(executor_def=in_process_executor)
def sleepy_job():
    sleepy()

defs = Definitions(jobs=[sleepy_job])
"""


@pytest.fixture
def instance() -> DagsterInstance:
    """The project's instance configuration, in the test's own ``DAGSTER_HOME``."""
    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    with DagsterInstance.get() as instance:
        yield instance


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert events, "no run failure event"
    return events[-1].dagster_event.message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ping(port: int) -> bool:
    try:
        DagsterGrpcClient(port=port, host="localhost").ping("")
    except Exception:
        return False
    return True


def _started(instance: DagsterInstance, run_id: str) -> DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    assert run.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED), run.status
    return run if run.status == DagsterRunStatus.STARTED else None


def _run_start_pid(instance: DagsterInstance, run_id: str) -> int | None:
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
    return events[0].dagster_event.pid if events else None


def test_the_project_instance_checks_run_workers(instance):
    assert instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled
    assert 0 < instance.run_monitoring_settings["poll_interval_seconds"] <= 60
    assert instance.run_monitoring_max_resume_run_attempts == 0


def test_a_run_whose_worker_and_code_server_are_killed_is_failed_by_run_monitoring(instance, tmp_path):
    (tmp_path / "sleepy_defs.py").write_text(SLEEPY_DEFS)
    port = _free_port()
    # Its own session, so that one killpg ends the code server and the run worker it starts, as a killed
    # ``dagster dev`` does.
    log = tmp_path / "code_server.log"
    command = [
        sys.executable,
        "-m",
        "dagster",
        "api",
        "grpc",
        "--python-file",
        str(tmp_path / "sleepy_defs.py"),
        "--host",
        "localhost",
        "--port",
        str(port),
        "--location-name",
        LOCATION,
    ]
    with child_process(command, log, cwd=tmp_path, env=dict(os.environ)) as server:
        _wait(lambda: _ping(port) or server.poll() is not None, "the code server")
        assert server.poll() is None, log_tail(log)
        target = GrpcServerTarget(host="localhost", port=port, socket=None, location_name=LOCATION)
        with WorkspaceProcessContext(instance, target) as context:
            workspace = context.create_request_context()
            remote_job = (
                workspace.get_code_location(LOCATION).get_repository("__repository__").get_full_job("sleepy_job")
            )
            run = create_run_for_test(
                instance,
                job_name="sleepy_job",
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.launch_run(run.run_id, workspace)
            run = _wait(lambda: _started(instance, run.run_id), "the run to start")
            pid = _run_start_pid(instance, run.run_id)
            assert pid not in (os.getpid(), server.pid)  # written by the run worker, a child of the code server

            alive = instance.run_launcher.check_run_worker_health(run)
            assert alive.status == WorkerStatus.RUNNING, alive

            kill_session(server)
            _wait(lambda: process_start_time(pid) is None, "the run worker to die", timeout=10)
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

            gone = instance.run_launcher.check_run_worker_health(run)
            assert gone.status == WorkerStatus.FAILED
            assert f"run worker process {pid} on host {socket.gethostname()} is gone" in gone.msg

            list(execute_run_monitoring_iteration(context, logging.getLogger("test")))

            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
            assert f"run worker process {pid} on host {socket.gethostname()} is gone (killed or crashed)" in (
                _failure_message(instance, run.run_id)
            )


def _started_run(instance: DagsterInstance, pid: int, timestamp: float, grpc_info: dict | None) -> DagsterRun:
    """A run in the instance as a run worker with ``pid`` left it at ``timestamp``, launched through a code server
    at ``grpc_info``."""
    tags = {GRPC_INFO_TAG: json.dumps(grpc_info)} if grpc_info else {}
    run = instance.add_run(
        DagsterRun(job_name="sleepy_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTING, tags=tags)
    )
    event = DagsterEvent(DagsterEventType.RUN_START.value, "sleepy_job", pid=pid)
    instance.report_dagster_event(event, run.run_id, timestamp=timestamp)
    run = instance.get_run_by_id(run.run_id)
    assert run.status == DagsterRunStatus.STARTED
    return run


def test_which_runs_are_checked_and_how(instance):
    local = {"host": "localhost", "port": 4000}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    check = instance.run_launcher.check_run_worker_health

    assert check(_started_run(instance, os.getpid(), time.time(), local)).status == WorkerStatus.RUNNING
    for info in (
        {"host": "127.0.0.1", "port": 4000},
        {"host": socket.gethostname(), "port": 4000},
        {"host": "localhost", "socket": "/tmp/code.sock"},
    ):
        assert check(_started_run(instance, dead.pid, time.time(), info)).status == WorkerStatus.FAILED, info
    gone = check(_started_run(instance, dead.pid, time.time(), local))
    assert gone.msg == f"run worker process {dead.pid} on host {socket.gethostname()} is gone (killed or crashed)"

    # Runs this host cannot judge read as running.
    elsewhere = check(_started_run(instance, dead.pid, time.time(), {"host": "code.example.org", "port": 4000}))
    assert (elsewhere.status, elsewhere.msg) == (WorkerStatus.RUNNING, "code server on another host; not checked")
    in_process = check(_started_run(instance, dead.pid, time.time(), None))
    assert in_process.status == WorkerStatus.RUNNING
    assert in_process.msg == "not launched through a code server; not checked"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_a_recycled_pid_is_not_the_run_worker(instance):
    """A live process that started after the run worker wrote its RUN_START event got the pid when it was free."""
    started = process_start_time(os.getpid())
    assert started is not None and abs(started - time.time()) < 24 * 3600
    recycled = instance.run_launcher.check_run_worker_health(
        _started_run(instance, os.getpid(), started - 60, {"host": "localhost", "port": 4000})
    )
    assert recycled.status == WorkerStatus.FAILED
    assert str(os.getpid()) in recycled.msg
