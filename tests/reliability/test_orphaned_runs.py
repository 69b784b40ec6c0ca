"""A run whose process is killed does not stay STARTED: the next command marks it failed, naming the process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from assets.orphans import HOST_TAG, PID_TAG, PROCESS_TAG, mark_orphaned_runs, process_identity, process_tags
from tests.processes import child_process, kill_session, log_tail

REPO = Path(__file__).resolve().parents[2]

#: A command that runs one slow asset through the project's run launcher helper, as ``make demo`` does.
SLOW_RUN = """
import time
from dagster import DagsterInstance, asset
from assets.demo import run_assets

@asset
def slow_asset():
    time.sleep(120)
    return 1

run_assets([slow_asset], "slow", DagsterInstance.get(), {})
"""


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert events, "no run failure event"
    return events[-1].dagster_event.message


def _wait_for_started_run(instance: DagsterInstance, process: subprocess.Popen, log: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if runs and runs[0].status == DagsterRunStatus.STARTED:
            return runs[0]
        assert process.poll() is None, log_tail(log)
        time.sleep(0.2)
    raise AssertionError(f"the run did not start within {timeout:.0f} s:\n{log_tail(log)}")


def test_a_killed_run_is_marked_failed_naming_its_process(tmp_path):
    log = tmp_path / "run.log"
    with child_process([sys.executable, "-c", SLOW_RUN], log, cwd=REPO, env=dict(os.environ)) as process:
        with DagsterInstance.get() as instance:
            run = _wait_for_started_run(instance, process, log)
            assert run.tags[PID_TAG] == str(process.pid)
            assert run.tags[HOST_TAG] == socket.gethostname()
            # The whole session, as a killed terminal does: the run process and the log helpers it started.
            kill_session(process)
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

            marked = mark_orphaned_runs(instance, "the test")

            assert len(marked) == 1 and run.run_id in marked[0] and str(process.pid) in marked[0]
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
            message = _failure_message(instance, run.run_id)
            assert f"run process {process.pid} on host {socket.gethostname()} is gone" in message
            assert "marked failed by the test" in message
            assert mark_orphaned_runs(instance, "the test") == []


def _add_run(instance: DagsterInstance, status: DagsterRunStatus, tags: dict[str, str]) -> DagsterRun:
    return instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=status, tags=tags))


def test_only_runs_of_dead_processes_on_this_host_are_marked():
    me = process_tags()
    with DagsterInstance.get() as instance:
        alive = _add_run(instance, DagsterRunStatus.STARTED, me)
        other_host = _add_run(instance, DagsterRunStatus.STARTED, {**me, HOST_TAG: "another-host", PID_TAG: "1"})
        untagged = _add_run(instance, DagsterRunStatus.STARTED, {})
        finished = _add_run(instance, DagsterRunStatus.SUCCESS, {**me, PROCESS_TAG: "other-boot:1"})
        recycled_pid = _add_run(instance, DagsterRunStatus.STARTED, {**me, PROCESS_TAG: "other-boot:1"})
        never_started = _add_run(instance, DagsterRunStatus.NOT_STARTED, {**me, PROCESS_TAG: "other-boot:1"})

        marked = mark_orphaned_runs(instance)

        assert sorted(line.split()[1] for line in marked) == sorted([recycled_pid.run_id, never_started.run_id])
        status = {
            run.run_id: instance.get_run_by_id(run.run_id).status
            for run in (alive, other_host, untagged, finished, recycled_pid, never_started)
        }
        assert status == {
            alive.run_id: DagsterRunStatus.STARTED,
            other_host.run_id: DagsterRunStatus.STARTED,
            untagged.run_id: DagsterRunStatus.STARTED,
            finished.run_id: DagsterRunStatus.SUCCESS,
            recycled_pid.run_id: DagsterRunStatus.FAILURE,
            never_started.run_id: DagsterRunStatus.FAILURE,
        }


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_process_identity_tells_a_recycled_pid_apart():
    assert process_identity(os.getpid()) == process_identity(os.getpid()) != ""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_identity(child.pid) is None


def test_the_commands_mark_orphaned_runs_when_they_start():
    """``python -m assets.orphans`` (what ``make ui`` runs first; the demo and backfill commands share the code)."""
    with DagsterInstance.get() as instance:
        run = _add_run(instance, DagsterRunStatus.STARTED, {**process_tags(), PROCESS_TAG: "other-boot:1"})
    completed = subprocess.run(
        [sys.executable, "-m", "assets.orphans"],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines() == [
        f"run {run.run_id} (__ASSET_JOB): run process {os.getpid()} on host {socket.gethostname()} is gone "
        "(killed or crashed); marked failed by python -m assets.orphans"
    ]
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


def test_run_monitoring_is_enabled_in_the_project_instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert 0 < instance.run_monitoring_start_timeout_seconds <= 600
        assert 0 < instance.run_monitoring_cancel_timeout_seconds <= 600
        assert instance.run_monitoring_max_resume_run_attempts == 0  # the default launcher cannot resume a run


def test_demo_and_backfill_mark_orphans_before_running():
    for module in ("demo", "backfill"):
        source = (REPO / "assets" / f"{module}.py").read_text()
        main = source[source.index("def main(") :]
        assert (
            main.index("check_settings()")
            < main.index("DagsterInstance.get()")
            < main.index("report_orphaned_runs(")
            < main.index("build_resources()")
        ), module
