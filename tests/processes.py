"""Child processes for tests that start and kill Dagster commands.

Each child runs in its own session with its output in a file. Killing the session ends the child's descendants
too (a run's compute-log capture starts ``tail -F`` helpers that outlive a killed parent), and nothing in the test
reads a pipe that a surviving descendant could hold open forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def child_process(args: list[str], log: Path, **popen) -> Iterator[subprocess.Popen]:
    """``args`` started in a new session, stdout and stderr written to ``log``; the session is killed on exit."""
    with open(log, "wb") as output:
        process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    try:
        yield process
    finally:
        kill_session(process)


def kill_session(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL every process in ``process``'s session (it is the session leader) and reap the leader."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a child's output, for an assertion message."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""
