"""The instance's run launcher (``dagster_home/dagster.yaml``): Dagster's default launcher, plus a health check of
the run worker, so that run monitoring fails a run whose worker process is gone.

The default launcher starts each run in a worker process of the code server. When that worker dies, the code
server fails its run; when the code server dies too (``dagster dev`` killed, the machine's OOM killer), nothing
does, and the run stays STARTED for ever. Run monitoring (the daemon ``make ui`` starts) asks the launcher about
every STARTED run; this one answers from the run's own event log: the ``RUN_START`` event is written by the run
worker and carries its pid and the time it was written.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from dagster import DagsterEventType, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

from resources.processes import process_running_since

#: Code server hosts that are this machine.
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


class LocalRunLauncher(DefaultRunLauncher):
    """:class:`DefaultRunLauncher` that checks run workers' health.

    A run worker is the child of the code server that launched the run. The check applies to runs launched through
    a code server on this host (``localhost``, a loopback address, this host's name, or a unix socket, as
    ``dagster dev`` and ``workspace.yaml`` set it up) and assumes that the daemon asking runs on the same host, as
    it does wherever the default launcher's code servers are local, and shares its process table (not so for a
    code server in another container that is reached through ``localhost``). Such a run's worker is RUNNING while
    the pid of its ``RUN_START`` event belongs to a live process that had started by the time of that event (a
    process started later was given a recycled pid), and FAILED otherwise. Other runs (a code server on another
    host, a run executed in-process by ``make demo`` or ``make backfill``, which ``assets.orphans`` watches) are
    not checked: they read as RUNNING, since any other answer makes run monitoring fail the run.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        grpc_info = run.tags.get(GRPC_INFO_TAG)
        if grpc_info is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched through a code server; not checked")
        if not _on_this_host(json.loads(grpc_info)):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "code server on another host; not checked")
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1, ascending=False
        ).records
        started = records[0].event_log_entry if records else None
        pid = started.dagster_event.pid if started is not None and started.dagster_event is not None else None
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded; not checked")
        if process_running_since(pid, started.timestamp):
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"run worker process {pid} is running", run_worker_id=str(pid)
            )
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} on host {socket.gethostname()} is gone (killed or crashed)",
            run_worker_id=str(pid),
        )


def _on_this_host(grpc_info: dict) -> bool:
    """Whether the code server named by a run's ``GRPC_INFO_TAG`` runs on this host."""
    if grpc_info.get("socket"):
        return True
    host = str(grpc_info.get("host", ""))
    if host in LOCAL_HOSTS or host == socket.gethostname():
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
