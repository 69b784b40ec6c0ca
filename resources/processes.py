"""Whether a process still runs on this host, telling a recycled pid apart from the process that first had it.

Where ``/proc`` exists a process is identified by its pid, the boot id and its start time; elsewhere only by whether
the pid exists, so a recycled pid reads as the original process.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
#: Seconds a process may seem to have started after a moment it was already running: ``/proc/stat``'s boot time
#: is whole seconds, and the wall clock may be stepped.
START_TIME_SLACK_SECONDS = 5.0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)``; ``None`` when the process does not exist."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # state is the first of these fields, starttime the 20th


def _has_proc() -> bool:
    return (PROC / "self" / "stat").is_file()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time>`` of a live process from ``/proc``; ``None`` when it does not exist (or is a
    zombie); ``""`` where ``/proc`` is not available."""
    if not _has_proc():
        return ""
    fields = _stat_fields(pid)
    try:
        boot_id = (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return f"{boot_id}:{fields[19]}"


def process_alive(pid: int, identity: str) -> bool:
    """Whether the process that had ``pid`` (and ``identity``, when recorded) still runs on this host."""
    if identity:
        current = process_identity(pid)
        if current != "":
            return current == identity
    return _pid_exists(pid)


def _boot_time() -> float | None:
    """When this host booted, in whole seconds since the epoch, from ``/proc/stat``."""
    try:
        stat = (PROC / "stat").read_text()
    except OSError:
        return None
    return next((float(line.split()[1]) for line in stat.splitlines() if line.startswith("btime ")), None)


def _started_at(fields: list[str], boot_time: float) -> float:
    return boot_time + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime is in clock ticks since boot


def process_start_time(pid: int) -> float | None:
    """When a live process started, in seconds since the epoch (to within a second), from ``/proc``; ``None`` when
    it does not exist, is a zombie, or ``/proc`` is not available."""
    fields = _stat_fields(pid)
    boot_time = _boot_time()
    if fields is None or fields[0] in ("Z", "X") or boot_time is None:
        return None
    return _started_at(fields, boot_time)


def process_running_since(pid: int, timestamp: float) -> bool:
    """Whether the process that had ``pid`` at ``timestamp`` (seconds since the epoch) still runs on this host: the
    pid is alive and, where ``/proc`` tells, its process started no later than ``timestamp`` (a later start is
    another process that was given the same pid)."""
    if not _has_proc():
        return _pid_exists(pid)
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    boot_time = _boot_time()
    if boot_time is None:
        return True
    return _started_at(fields, boot_time) <= timestamp + START_TIME_SLACK_SECONDS
