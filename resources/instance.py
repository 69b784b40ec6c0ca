"""Opening the Dagster instance from the project's commands (``make demo``, ``make backfill``, ``make ui``).

Dagster creates a SQLite instance's databases (``history/runs.db``, ``schedules/schedules.db``, the event log
index) the first time the instance is opened, checking each schema version and then stamping it in separate steps.
Two processes opening a fresh ``$DAGSTER_HOME`` at once (two backfills started together, a backfill beside ``make
ui``) can both stamp, one the current version and one an older one, and from then on every load of the instance
fails with "Version table 'alembic_version' has more than one head present". The commands therefore open it while
holding an exclusive lock on a file in ``$DAGSTER_HOME``: only the first opening creates anything, so later holders
keep the lock for a fraction of a second. The kernel releases the lock of a killed process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resources.environment import dagster_home

try:
    import fcntl
except ImportError:  # Windows: no flock; opening a fresh instance from two processes at once stays unsafe there
    fcntl = None

LOCK_FILE = ".instance.lock"


@contextmanager
def instance_setup_lock(home: Path | None = None) -> Iterator[None]:
    """Hold the lock under which this project's processes open (and so, the first time, create) the instance in
    ``home`` (default ``$DAGSTER_HOME``); blocks while another process holds it."""
    home = Path(home) if home is not None else dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
