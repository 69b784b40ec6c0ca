"""The DuckDB catalog: one view per table over the glob of its parquet files.

A view over ``<tables>/<table>/*.parquet`` re-reads the glob on every query, so a partition written later (even
with new columns) is visible without touching the catalog: a view only has to be created once. That matters
because DuckDB lets one process at a time open the catalog for writing, and an analyst's client may hold it for
as long as they like. Which views exist is remembered in a small record file beside the catalog, so writing a
table never needs the catalog lock once its view is there; when a view must be created and the catalog is
locked, the write still succeeds and :meth:`Catalog.ensure_views` returns a warning with the command that creates
the missing views later (``python -m resources.catalog``). The pipeline's own writers (parallel runs, concurrent
backfills) take turns on a lock file beside the catalog first, so they never wait each other out of that deadline:
only a client outside the pipeline can.

    python -m resources.catalog [--storage DIR] [--catalog FILE]   # create or repair every view
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: Per process, after this much waiting for the catalog lock a missing view becomes a warning.
LOCK_WAIT_S = 3.0
#: Per process, how long a writer may queue behind the pipeline's other writers (each holds the catalog for one short
#: transaction, or for :data:`LOCK_WAIT_S` while an outside client holds it) before a missing view becomes a warning.
WRITERS_WAIT_S = 60.0


def quoted_glob(table: str, tables_root: Path) -> str:
    """The SQL string literal of ``table``'s partition files glob."""
    return "'" + (tables_root / table / "*.parquet").resolve().as_posix().replace("'", "''") + "'"


def view_statement(table: str, tables_root: Path) -> str:
    """The ``CREATE VIEW`` statement of ``table`` over all its partition files."""
    return (
        f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM '
        f"read_parquet({quoted_glob(table, tables_root)}, union_by_name = true)"
    )


class CatalogLockedError(RuntimeError):
    """Another process holds the DuckDB catalog open for writing."""


class Catalog:
    """The catalog file at ``path`` with views over the tables under ``tables_root``."""

    def __init__(self, path: Path, tables_root: Path):
        self.path = Path(path)
        self.tables_root = Path(tables_root)

    @property
    def record_path(self) -> Path:
        return self.path.with_name(self.path.name + ".views.json")

    def refresh_command(self, storage_root: Path) -> str:
        """The exact command that creates the missing views once the catalog is free."""
        return f"{sys.executable} -m resources.catalog --storage '{storage_root}' --catalog '{self.path}'"

    def ensure_views(self, tables: list[str], storage_root: Path, wait_s: float = LOCK_WAIT_S) -> list[str]:
        """Create the views of ``tables`` that do not exist yet; returns warnings (empty when every view is in
        place). Never raises for a locked catalog: the tables are already written and readable as parquet."""
        wanted = {table: view_statement(table, self.tables_root) for table in tables}
        missing = {t: s for t, s in wanted.items() if self._recorded().get(t) != s}
        if not missing:
            return []
        try:
            self._create(missing, wait_s)
        except CatalogLockedError as error:
            return [
                f"DuckDB catalog view(s) {', '.join(sorted(missing))} not created: {error}. The tables are "
                f"written; run `{self.refresh_command(storage_root)}` once the other client has closed the "
                f"catalog to make them queryable there."
            ]
        return []

    def refresh_all(self, wait_s: float = 30.0) -> list[str]:
        """(Re)create the view of every table folder under the tables root; returns the table names."""
        tables = (
            sorted(
                p.name
                for p in self.tables_root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.parquet"))
            )
            if self.tables_root.is_dir()
            else []
        )
        self._create({t: view_statement(t, self.tables_root) for t in tables}, wait_s, force=True)
        return tables

    def _create(self, statements: dict[str, str], wait_s: float, force: bool = False) -> None:
        with self._writers_turn():
            self._ensure_file()
            deadline = time.monotonic() + wait_s
            delay = 0.05
            while True:
                try:
                    with duckdb.connect(str(self.path)) as connection:
                        existing = dict(
                            connection.execute(
                                "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"
                            ).fetchall()
                        )
                        for table, statement in statements.items():
                            # DuckDB keeps its own rendering of the statement: compare the glob it reads
                            if force or quoted_glob(table, self.tables_root) not in existing.get(table, ""):
                                connection.execute(statement)
                        self._record(statements)
                    return
                except duckdb.IOException as error:  # the catalog is open in another client (an analyst's)
                    if time.monotonic() >= deadline:
                        raise CatalogLockedError(
                            f"{self.path} is locked by another process ({str(error).splitlines()[0][:200]})"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)

    @property
    def writers_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writers.lock")

    @contextmanager
    def _writers_turn(self, wait_s: float = WRITERS_WAIT_S) -> Iterator[None]:
        """Take this catalog's writer turn: an exclusive ``flock`` on a file beside it, released by the kernel even
        when the holder is killed. The pipeline's own writers (parallel runs, concurrent backfills) queue here, so
        they never spend each other's :data:`LOCK_WAIT_S` on the DuckDB lock: only a client outside the pipeline can
        turn a missing view into a warning. It also serialises the record file's read-modify-write."""
        if fcntl is None:  # no flock on this platform: writers contend on the DuckDB lock alone
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.writers_lock_path, "a") as handle:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CatalogLockedError(
                            f"{self.path}: other pipeline processes kept the catalog's writer turn for {wait_s:.0f} s"
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _ensure_file(self) -> None:
        """Make sure the catalog exists as a complete DuckDB file before anyone connects to it.

        A client that opens a missing file creates it empty and only then locks it and writes the header; a second
        client opening it in between finds a file that "is not a valid DuckDB database", and if it took the lock
        first, the creator fails too and the empty file stays for good: every later write and ``python -m
        resources.catalog`` would read it as a held catalog. So a new catalog is written under a private name and
        linked into place (never over an existing catalog); an empty file, which holds no views, is replaced.
        """
        try:
            if self.path.stat().st_size > 0:
                return
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.new")
        try:
            duckdb.connect(str(scratch)).close()
            try:
                os.link(scratch, self.path)
            except FileExistsError:  # created meanwhile: keep it unless it is (still) empty
                if self.path.stat().st_size == 0:
                    os.replace(scratch, self.path)
            except OSError:  # a file system without hard links
                if not self.path.exists() or self.path.stat().st_size == 0:
                    os.replace(scratch, self.path)
        finally:
            for leftover in (scratch, scratch.with_name(scratch.name + ".wal")):
                leftover.unlink(missing_ok=True)

    def _identity(self) -> list[int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return [stat.st_dev, stat.st_ino]

    def _recorded(self) -> dict[str, str]:
        """Views known to exist in this very catalog file (a deleted or replaced catalog forgets them)."""
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record.get("views", {}) if record.get("catalog") == self._identity() else {}

    def _record(self, statements: dict[str, str]) -> None:
        views = {**self._recorded(), **statements}
        staging = self.record_path.with_name(f"{self.record_path.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps({"catalog": self._identity(), "views": views}, indent=1), encoding="utf-8")
        staging.replace(self.record_path)


def main(argv: list[str] | None = None) -> int:
    from resources.storage import Storage  # the defaults ($COUGH_PIPELINE_STORAGE, $DAGSTER_HOME) live there

    parser = argparse.ArgumentParser(description="Create or repair the DuckDB view of every table.")
    parser.add_argument(
        "--storage", default="", help="storage root (default: $COUGH_PIPELINE_STORAGE or $DAGSTER_HOME/data)"
    )
    parser.add_argument(
        "--catalog",
        default="",
        help="catalog file (default: $COUGH_PIPELINE_CATALOG or $DAGSTER_HOME/warehouse.duckdb)",
    )
    arguments = parser.parse_args(argv)
    storage = Storage(root=arguments.storage, catalog=arguments.catalog)
    # this module's own class: run as ``-m``, it is not the module Storage imports, nor is its CatalogLockedError
    catalog = Catalog(storage.catalog_path, storage.tables_root)
    try:
        tables = catalog.refresh_all()
    except CatalogLockedError as error:
        print(f"catalog not updated: {error}; close the other client and run this again", file=sys.stderr)
        return 1
    print(f"{catalog.path}: {len(tables)} view(s): {', '.join(tables) or 'none (no tables written yet)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
