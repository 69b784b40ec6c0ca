"""Runs whose process is gone: the project's commands run assets in-process, so a killed ``make demo`` or
``make backfill`` leaves its run STARTED in the instance for ever (nothing else watches an in-process run).

Every run those commands launch is tagged with the launching process (host, pid and, where ``/proc`` exists, the
boot id and process start time, so a recycled pid is not mistaken for the original process). At start-up each
command fails the runs tagged with this host whose process no longer exists, with a message naming it.
``python -m assets.orphans`` does only that (``make ui`` runs it before starting the UI).

Runs launched from the UI or by the daemon are watched by Dagster itself: run monitoring
(``dagster_home/dagster.yaml``, with ``resources.run_launcher``) fails a run whose worker process is gone and runs
stuck starting or cancelling.
"""

from __future__ import annotations

import os
import socket
import sys

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason

from resources.environment import check_settings, prepare_dagster_home
from resources.instance import instance_setup_lock
from resources.processes import process_alive, process_identity

HOST_TAG = "cough_pipeline/host"
PID_TAG = "cough_pipeline/pid"
#: ``<boot id>:<start time in clock ticks>``; absent where ``/proc`` is not available.
PROCESS_TAG = "cough_pipeline/process"
#: Statuses of a run whose process may have died without recording an end.
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def process_tags() -> dict[str, str]:
    """Tags naming this process, for every run it launches."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = process_identity(os.getpid())
    return {**tags, PROCESS_TAG: identity} if identity else tags


def mark_orphaned_runs(instance: DagsterInstance, marked_by: str = "python -m assets.orphans") -> list[str]:
    """Fail (or, when it was being cancelled, cancel) every unfinished run launched from this host whose process is
    gone; one line per run so marked."""
    host = socket.gethostname()
    records = instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: host}))
    marked = []
    for record in records:
        run = record.dagster_run
        try:
            pid = int(run.tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if process_alive(pid, run.tags.get(PROCESS_TAG, "")):
            continue
        message = f"run process {pid} on host {host} is gone (killed or crashed); marked failed by {marked_by}"
        if run.status == DagsterRunStatus.CANCELING:
            message = message.replace("marked failed", "marked cancelled")
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(
                run, message, JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
            )
        marked.append(f"run {run.run_id} ({_describe(run)}): {message}")
    return marked


def _describe(run) -> str:
    partition = run.tags.get("dagster/partition")
    return f"{run.job_name}, partition {partition}" if partition else run.job_name


def report_orphaned_runs(instance: DagsterInstance, marked_by: str) -> None:
    """:func:`mark_orphaned_runs`, printing one line per run marked."""
    for line in mark_orphaned_runs(instance, marked_by):
        print(line)


def main() -> int:
    check_settings()
    prepare_dagster_home()
    with instance_setup_lock():
        instance = DagsterInstance.get()
    with instance:
        report_orphaned_runs(instance, "python -m assets.orphans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
