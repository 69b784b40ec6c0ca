"""Where tables live: one parquet file per asset and partition, plus a DuckDB catalog of views over them.

Writing every partition into one DuckDB file would hit DuckDB's single-writer lock when partitions run in
parallel, so the parquet files are the source of truth and the catalog only holds ``CREATE VIEW`` statements.
Re-materialising a partition replaces its file (written to a temporary name, then renamed), never appends.
"""


import os
import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext

UNPARTITIONED = "__all__"


def default_dagster_home() -> Path:
    """``$DAGSTER_HOME``, else ``./dagster_home`` (the Makefile sets the former)."""
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()


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
        return Path(self.catalog or os.environ.get("COUGH_PIPELINE_CATALOG")
                    or default_dagster_home() / "warehouse.duckdb")

    def artefact_dir(self, *parts: str) -> Path:
        """A folder for files an asset writes (segments, mixtures, models), created on demand."""
        path = self.root_path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fresh_artefact_dir(self, *parts: str) -> Path:
        """:meth:`artefact_dir`, emptied first: re-materialising replaces an asset's files, never adds to them."""
        path = self.root_path.joinpath(*parts)
        if path.is_dir():
            shutil.rmtree(path)
        return self.artefact_dir(*parts)

    def table_path(self, table: str, partition: str | None) -> Path:
        return self.root_path / "tables" / table / f"{partition or UNPARTITIONED}.parquet"

    def write_table(self, table: str, frame: pd.DataFrame, partition: str | None = None) -> Path:
        """Replace ``table``'s rows for ``partition`` with ``frame`` and (re)create its catalog view."""
        path = self.table_path(table, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        frame.to_parquet(staging, index=False)
        staging.replace(path)
        self.refresh_view(table)
        return path

    def read_table(self, table: str, partitions: list[str] | None = None) -> pd.DataFrame:
        """Rows of the given partitions (all written ones when ``None``), in partition order."""
        folder = self.root_path / "tables" / table
        if partitions is None:
            paths = sorted(folder.glob("*.parquet"))
        else:
            paths = [self.table_path(table, p) for p in partitions]
        missing = [p for p in paths if not p.is_file()]
        if missing or not paths:
            raise FileNotFoundError(f"table {table!r} has no materialised data at {missing or folder}; "
                                    f"materialise it first")
        frames = [pd.read_parquet(p) for p in paths]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def refresh_view(self, table: str, attempts: int = 20) -> None:
        """``CREATE OR REPLACE VIEW table`` over all its parquet files; retries while another writer holds the lock."""
        pattern = (self.root_path / "tables" / table / "*.parquet").resolve().as_posix()
        statement = (f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM '
                     f"read_parquet('{pattern}', union_by_name = true)")
        self.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            try:
                with duckdb.connect(str(self.catalog_path)) as connection:
                    connection.execute(statement)
                return
            except duckdb.IOException as error:  # the catalog is open elsewhere (a parallel run, an analyst)
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"could not update the DuckDB catalog {self.catalog_path}: {error}. Close other "
                        f"connections to it (the data is safe in {pattern})") from error
                time.sleep(0.25 * (attempt + 1))

    def query(self, sql: str) -> pd.DataFrame:
        """Run read-only SQL against the catalog (used by tests and the demo summary)."""
        with duckdb.connect(str(self.catalog_path), read_only=True) as connection:
            return connection.execute(sql).df()


class ParquetCatalogIOManager(ConfigurableIOManager):
    """Stores DataFrame outputs through :class:`Storage`; an unpartitioned reader of a partitioned table gets
    the concatenation of the partitions it depends on."""

    storage: Storage

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj)}")
        partition = context.partition_key if context.has_partition_key else None
        path = self.storage.write_table(_table_name(context), obj, partition)
        context.add_output_metadata({"path": str(path), "catalog": str(self.storage.catalog_path)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        table = _table_name(context.upstream_output) if context.upstream_output else _table_name(context)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.storage.read_table(table, partitions)


def _table_name(context) -> str:
    return "_".join(context.asset_key.path)
