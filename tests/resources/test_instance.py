"""A fresh ``$DAGSTER_HOME`` opened by several of the project's processes at once ends up as one sound instance."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[2]

#: A command's start: it says when it is ready, waits for the go, then opens the instance as the commands do.
OPENER = """
import sys
from dagster import DagsterInstance
from resources.instance import instance_setup_lock
print("ready", flush=True)
sys.stdin.readline()
with instance_setup_lock():
    instance = DagsterInstance.get()
instance.get_runs(limit=1)
instance.dispose()
print("opened", flush=True)
"""


def test_processes_opening_a_fresh_instance_at_once_leave_one_schema_version_per_database(tmp_path):
    """Without the lock, four processes opening a fresh home together crashed ('table ... already exists') or
    stamped two schema versions into one database (every later load then fails), in each of five tries."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for opener in openers:
            assert opener.stdout.readline().strip() == "ready", opener.stdout.read()
        for opener in openers:
            opener.stdin.write("go\n")
            opener.stdin.flush()
        outputs = [opener.communicate(timeout=180)[0] for opener in openers]
    finally:
        for opener in openers:
            opener.kill()
            opener.wait()
    assert all(output.strip().endswith("opened") for output in outputs), [o[-2000:] for o in outputs]
    databases = sorted(home.rglob("*.db"))
    assert {db.name for db in databases} >= {"runs.db", "schedules.db", "index.db"}
    for db in databases:
        with sqlite3.connect(db) as connection:
            assert connection.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1, db
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []


def test_the_commands_open_the_instance_under_the_lock():
    for module in ("demo", "backfill", "orphans"):
        source = (REPO / "assets" / f"{module}.py").read_text()
        main = source[source.index("def main(") :]
        assert "with instance_setup_lock():\n        instance = DagsterInstance.get()" in main, module
