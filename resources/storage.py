"""Where tables and files live: parquet files per asset and partition, a DuckDB catalog of views over them, and
generation folders for the files an asset writes.

Tables. The parquet files are the source of truth (writing every partition into one DuckDB file would hit its
single-writer lock when partitions run in parallel); the catalog only holds views (:mod:`resources.catalog`).
Writes are transactions: every table of a step is written to a staging folder first, then a journal naming all
of them is written (the commit point) and the files are renamed into place. A step that fails or is killed
before the commit leaves every table as it was; one killed during the renames is rolled forward by the next
storage access (:meth:`Storage.recover`). Re-materialising a partition replaces its rows, never appends.

Files. An asset writes its WAVs and arrays into a new *generation* folder (``<parts>/<timestamp>-<run>/``), never
into the folder the current table points at. The committed table is what makes a generation current; only then
are older generations deleted (models are versioned by the model store instead: ``resources/model_store.py``).
A failed or killed stage therefore leaves the previous table and every file it lists intact.
"""

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext

from resources.catalog import Catalog
from resources.processes import process_alive
from resources.table_metadata import table_metadata

UNPARTITIONED = "__all__"
STAGING = ".staging"
JOURNAL = ".journal"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_dagster_home() -> Path:
    """``$DAGSTER_HOME``, else ``./dagster_home`` (the Makefile sets the former)."""
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()


def _pid_alive(pid: int) -> bool:
    return pid == os.getpid() or process_alive(pid, "")


def _owner_pid(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


class Storage(ConfigurableResource):
    """The storage root (tables, audio artefacts, models, the demo corpus) and the DuckDB catalog path.

    Empty fields fall back to ``$COUGH_PIPELINE_STORAGE`` / ``$COUGH_PIPELINE_CATALOG``, then to
    ``$DAGSTER_HOME/data`` and ``$DAGSTER_HOME/warehouse.duckdb``.
    """

    root: str = ""
    catalog: str = ""

    @property
    def root_path(self) -> Path:
        return Path(self.root or os.environ.get("COUGH_PIPELINE_STORAGE") or default_dagster_home() / "data")

    @property
    def catalog_path(self) -> Path:
        return Path(
            self.catalog or os.environ.get("COUGH_PIPELINE_CATALOG") or default_dagster_home() / "warehouse.duckdb"
        )

    @property
    def tables_root(self) -> Path:
        return self.root_path / "tables"

    def catalog_handle(self) -> Catalog:
        return Catalog(self.catalog_path, self.tables_root)

    # -- files --------------------------------------------------------------------------------------------------

    def artefact_dir(self, *parts: str) -> Path:
        """A folder that is not versioned (caches), created on demand."""
        path = self.root_path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_generation(self, *parts: str, run_id: str = "") -> Path:
        """A new, empty folder ``<root>/<parts>/<generation>/`` for one materialisation's files.

        The files become current when the table listing them is committed (then call :meth:`retire_generations`).
        """
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        label = _UNSAFE.sub("", run_id)[:8] or uuid.uuid4().hex[:8]
        path = self.root_path.joinpath(*parts) / f"{stamp}-{label}-{uuid.uuid4().hex[:4]}"
        path.mkdir(parents=True)
        return path

    @contextmanager
    def generation(self, *parts: str, run_id: str = "") -> Iterator[Path]:
        """:meth:`new_generation` for a block that writes into it; if the block raises, the folder is deleted
        again (nothing can point at it yet)."""
        folder = self.new_generation(*parts, run_id=run_id)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def retire_generations(self, *parts: str, keep: Path | None = None) -> list[str]:
        """Delete every generation under ``<root>/<parts>`` except ``keep`` (call it only after the table or
        pointer naming ``keep`` is committed); returns the names deleted."""
        parent = self.root_path.joinpath(*parts)
        if not parent.is_dir():
            return []
        keep = Path(keep).resolve() if keep is not None else None
        retired = []
        for child in sorted(parent.iterdir()):
            if (
                child.is_dir()
                and not child.name.startswith(".")
                and child.resolve() != keep
                and re.fullmatch(r"\d{8}T\d{6}-[A-Za-z0-9._-]+", child.name)
            ):
                shutil.rmtree(child, ignore_errors=True)
                retired.append(child.name)
        return retired

    # -- tables -------------------------------------------------------------------------------------------------

    def table_path(self, table: str, partition: str | None) -> Path:
        return self.tables_root / table / f"{partition or UNPARTITIONED}.parquet"

    def write_table(self, table: str, frame: pd.DataFrame, partition: str | None = None) -> Path:
        """Replace ``table``'s rows for ``partition`` with ``frame`` (one transaction) and ensure its view."""
        return self.write_tables({(table, partition): frame})[0]

    def write_tables(self, frames: dict[tuple[str, str | None], pd.DataFrame]) -> list[Path]:
        """Replace several tables' partitions together: all of them become visible, or none."""
        batch = self.new_batch()
        for (table, partition), frame in frames.items():
            self.stage_table(batch, table, partition, frame)
        paths, warnings = self.commit_batch(batch)
        for warning in warnings:
            print(f"warning: {warning}")
        return paths

    def new_batch(self, label: str = "") -> str:
        """A staging batch id owned by this process (its pid leads the name, so a dead owner is recognisable)."""
        return f"{os.getpid()}-{_UNSAFE.sub('_', label)[:80] or uuid.uuid4().hex[:12]}"

    def _batch_dir(self, batch: str) -> Path:
        return self.tables_root / STAGING / batch

    def stage_table(self, batch: str, table: str, partition: str | None, frame: pd.DataFrame) -> Path:
        """Write ``frame`` into the staging folder of ``batch``; nothing is visible until :meth:`commit_batch`."""
        folder = self._batch_dir(batch) / table
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f"{partition or UNPARTITIONED}.parquet"
        frame.to_parquet(staged, index=False)
        return staged

    def staged_count(self, batch: str) -> int:
        folder = self._batch_dir(batch)
        return sum(1 for _ in folder.glob("*/*.parquet")) if folder.is_dir() else 0

    def commit_batch(self, batch: str) -> tuple[list[Path], list[str]]:
        """Move every table staged in ``batch`` into place as one unit; returns the paths and catalog warnings."""
        folder = self._batch_dir(batch)
        moves = [
            (staged, self.tables_root / staged.parent.name / staged.name)
            for staged in sorted(folder.glob("*/*.parquet"))
        ]
        if not moves:
            return [], []
        journal = self.tables_root / JOURNAL / f"{batch}.json"
        journal.parent.mkdir(parents=True, exist_ok=True)
        record = [
            [staged.relative_to(self.tables_root).as_posix(), final.relative_to(self.tables_root).as_posix()]
            for staged, final in moves
        ]
        pending = journal.with_suffix(".tmp")
        pending.write_text(json.dumps(record), encoding="utf-8")
        pending.replace(journal)  # the commit point: from here on the batch is rolled forward, never back
        self._replay(journal)
        tables = sorted({final.parent.name for _, final in moves})
        warnings = self.catalog_handle().ensure_views(tables, self.root_path)
        return [final for _, final in moves], warnings

    def discard_batch(self, batch: str) -> None:
        shutil.rmtree(self._batch_dir(batch), ignore_errors=True)

    def _replay(self, journal: Path) -> None:
        for staged, final in json.loads(journal.read_text(encoding="utf-8")):
            source, target = self.tables_root / staged, self.tables_root / final
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
            except FileNotFoundError:  # already moved (a replay after a crash, or a concurrent recovery)
                pass
        journal.unlink(missing_ok=True)
        shutil.rmtree(self._batch_dir(journal.stem), ignore_errors=True)

    def recover(self) -> None:
        """Finish commits whose process died mid-way, and drop staging folders of dead processes."""
        journals = self.tables_root / JOURNAL
        if journals.is_dir():
            for journal in journals.glob("*.json"):
                pid = _owner_pid(journal.stem)
                if pid is None or not _pid_alive(pid):
                    self._replay(journal)
        staging = self.tables_root / STAGING
        if staging.is_dir():
            for folder in staging.iterdir():
                pid = _owner_pid(folder.name)
                if (pid is None or not _pid_alive(pid)) and not (journals / f"{folder.name}.json").exists():
                    shutil.rmtree(folder, ignore_errors=True)

    def read_table(self, table: str, partitions: list[str] | None = None) -> pd.DataFrame:
        """Rows of the given partitions (all written ones when ``None``), in partition order: what a DuckDB reader
        of the catalog sees."""
        self.recover()
        folder = self.tables_root / table
        if partitions is None:
            paths = sorted(folder.glob("*.parquet"))
        else:
            paths = [self.table_path(table, p) for p in partitions]
        missing = [p for p in paths if not p.is_file()]
        if missing or not paths:
            raise FileNotFoundError(
                f"table {table!r} has no materialised data at {missing or folder}; materialise it first"
            )
        frames = [pd.read_parquet(p) for p in paths]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def query(self, sql: str) -> pd.DataFrame:
        """Run read-only SQL against the catalog (used by tests and the demo summary)."""
        self.recover()
        with duckdb.connect(str(self.catalog_path), read_only=True) as connection:
            return connection.execute(sql).df()


class ParquetCatalogIOManager(ConfigurableIOManager):
    """Stores DataFrame outputs through :class:`Storage`; an unpartitioned reader of a partitioned table gets
    the concatenation of the partitions it depends on.

    All the table outputs of one step (a multi-asset's tables, e.g. ``manifest`` + ``manifest_quarantine``) are
    staged and committed together when the last of them arrives, so readers see all of them or none. A catalog
    that another client holds locked is a warning in the run's log with the command to run later, never a
    failed step: the tables are written either way.
    """

    storage: Storage

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | dict[str, pd.DataFrame]) -> None:
        """Stage (and, with the step's last table, commit) one partition's frame, or, for a run over a range of
        partitions, a dict from partition key to frame."""
        table = asset_name(context)
        frames = partition_values(context, obj)
        batch, expected = _step_batch(self.storage, context)
        try:
            for partition, frame in frames.items():
                if not isinstance(frame, pd.DataFrame):
                    raise TypeError(
                        f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(frame)}"
                    )
                self.storage.stage_table(batch, table, partition, frame)
        except BaseException:
            self.storage.discard_batch(batch)  # the step fails: none of its tables is committed
            raise
        if len(frames) == 1:
            partition, frame = next(iter(frames.items()))
            path = self.storage.table_path(table, partition)
        else:
            frame, path = pd.concat(frames.values(), ignore_index=True), self.storage.tables_root / table
        metadata = table_metadata(frame, path, table, self.storage.catalog_path)
        if self.storage.staged_count(batch) >= expected * len(frames):
            _, warnings = self.storage.commit_batch(batch)
            for warning in warnings:
                context.log.warning(warning)
            if warnings:
                metadata["catalog_warning"] = warnings[0]
        else:
            metadata["committed_with"] = "the step's other table outputs"
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> pd.DataFrame:
        table = asset_name(context.upstream_output) if context.upstream_output else asset_name(context)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.storage.read_table(table, partitions)


def _step_batch(storage: Storage, context: OutputContext) -> tuple[str, int]:
    """The staging batch of this step and how many table outputs it will stage (1 outside a step, e.g. in a
    direct ``build_output_context`` call)."""
    try:
        step = context.step_context
    except Exception:  # noqa: BLE001 - no step: an IO manager called directly
        return storage.new_batch(), 1
    op = step.op_def
    key = op.output_dict[context.name].io_manager_key
    selected = step.selected_output_names
    expected = sum(1 for out in op.output_defs if out.io_manager_key == key and out.name in selected)
    return storage.new_batch(f"{context.run_id[:8]}-{context.step_key}"), max(expected, 1)


def partition_values(context: OutputContext, obj) -> dict:
    """Partition key (``None`` when unpartitioned) -> value of an output: ``{key: obj}`` for one partition; for a
    run over a range of partitions, ``obj`` itself, which must be a dict with exactly the range's keys."""
    keys = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
    if len(keys) == 1:
        return {keys[0]: obj}
    if not isinstance(obj, dict) or set(obj) != set(keys):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise TypeError(
            f"{context.asset_key.to_user_string()}: a run over partitions {keys} returns a dict with exactly "
            f"those keys, got {got}"
        )
    return {key: obj[key] for key in keys}


def asset_name(context) -> str:
    """The name an asset's stored value goes by (its table, its model folder): the asset key joined by ``_``."""
    return "_".join(context.asset_key.path)
