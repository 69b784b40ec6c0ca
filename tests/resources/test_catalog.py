"""The DuckDB catalog when several pipeline processes create views at once, and when its file was left empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd

from resources.catalog import Catalog

REPO = Path(__file__).resolve().parents[2]

#: One pipeline process creating the view of its own table: it says when it is ready, waits for the go, and then
#: holds the DuckDB lock for a while inside its transaction (as a writer on a busy machine does).
WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
from resources.catalog import Catalog

root, table = Path(sys.argv[1]), sys.argv[2]
(root / "tables" / table).mkdir(parents=True)
pd.DataFrame({"v": [1]}).to_parquet(root / "tables" / table / "x.parquet")
record = Catalog._record
def slow_record(self, statements):
    time.sleep(1.5)
    record(self, statements)
Catalog._record = slow_record
print("ready", flush=True)
sys.stdin.readline()
print(repr(Catalog(root / "warehouse.duckdb", root / "tables").ensure_views([table], root)), flush=True)
"""


def views(catalog: Path) -> dict[str, int]:
    with duckdb.connect(str(catalog), read_only=True) as connection:
        names = [r[0] for r in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        return {name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def test_pipeline_writers_creating_a_new_catalog_at_once_take_turns_instead_of_warning(tmp_path):
    """Four writers, each holding the catalog 1.5 s: together longer than one writer waits for an outside client, so
    without taking turns the last ones would give up with a 'locked' warning, and the first ones could race to create
    the file (one left it empty for good)."""
    tables = [f"table_{i}" for i in range(4)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), table],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for table in tables
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stdout.read()
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120)[0] for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    assert [writer.returncode for writer in writers] == [0] * 4, outputs
    assert [output.strip() for output in outputs] == ["[]"] * 4
    assert views(tmp_path / "warehouse.duckdb") == dict.fromkeys(tables, 1)


def test_a_catalog_file_left_empty_is_replaced_rather_than_reported_as_locked(tmp_path):
    (tmp_path / "tables" / "t").mkdir(parents=True)
    pd.DataFrame({"v": [1, 2]}).to_parquet(tmp_path / "tables" / "t" / "x.parquet")
    catalog = tmp_path / "warehouse.duckdb"
    catalog.touch()  # what a client interrupted while creating it leaves
    assert Catalog(catalog, tmp_path / "tables").ensure_views(["t"], tmp_path, wait_s=0.5) == []
    assert views(catalog) == {"t": 2}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")]
