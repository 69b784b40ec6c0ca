"""A partition's tables become visible together or not at all, whatever holds the DuckDB catalog."""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import AssetOut, Output, materialize, multi_asset

from assets.manifest import manifest
from assets.resources import build_resources

HOLD_CATALOG = (
    "import duckdb, sys\nconnection = duckdb.connect(sys.argv[1])\nprint('holding', flush=True)\nsys.stdin.read()\n"
)


@contextmanager
def catalog_held(catalog: Path):
    """Another process (an analyst's DuckDB client) holding the catalog open for writing."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_CATALOG, str(catalog)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def visible(catalog: Path, dataset: str) -> tuple[int, int]:
    """(manifest rows, quarantine rows) of ``dataset`` as a DuckDB reader of the catalog sees them."""
    with duckdb.connect(str(catalog), read_only=True) as connection:
        kept = connection.execute("SELECT count(*) FROM manifest WHERE dataset = ?", [dataset]).fetchone()[0]
        quarantined = connection.execute(
            "SELECT count(*) FROM manifest_quarantine WHERE dataset = ?", [dataset]
        ).fetchone()[0]
    return kept, quarantined


@pytest.fixture
def ccs_copy(tmp_path, demo_corpus):
    root = tmp_path / "ccs"
    shutil.copytree(demo_corpus / "ccs", root)
    return root


def materialise_ccs(tmp_path, root):
    resources = build_resources(str(tmp_path / "data"), str(tmp_path / "warehouse.duckdb"))
    return materialize(
        [manifest],
        partition_key="ccs",
        resources=resources,
        raise_on_error=False,
        run_config={"resources": {"data_roots": {"config": {"ccs": str(root)}}}},
    )


def rows_in(result) -> int:
    return (
        next(
            m for m in result.asset_materializations_for_node("manifest") if m.asset_key.to_user_string() == "manifest"
        )
        .metadata["rows_in"]
        .value
    )


def test_a_held_catalog_and_a_corrupt_file_never_leave_a_partition_half_written(tmp_path, ccs_copy):
    catalog = tmp_path / "warehouse.duckdb"
    first = materialise_ccs(tmp_path, ccs_copy)
    assert first.success
    total = rows_in(first)
    kept, quarantined = visible(catalog, "ccs")
    assert kept + quarantined == total

    victim = sorted((ccs_copy / "dist" / "wav").glob("*.wav"))[0]
    victim.write_bytes(b"RIFF not really a wav file" * 10)
    with catalog_held(catalog):
        second = materialise_ccs(tmp_path, ccs_copy)
        assert second.success
        checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
        assert checks["rows_accounted_for"]
    kept_after, quarantined_after = visible(catalog, "ccs")
    assert kept_after + quarantined_after == total == rows_in(second)
    assert (kept_after, quarantined_after) == (kept - 1, quarantined + 1)


def test_a_view_that_cannot_be_created_is_a_warning_with_the_command_that_creates_it(tmp_path, ccs_copy):
    catalog = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(catalog)).close()
    with catalog_held(catalog):
        result = materialise_ccs(tmp_path, ccs_copy)
    assert result.success  # the tables are written; only the views are missing
    warning = next(
        m.metadata["catalog_warning"].value
        for m in result.asset_materializations_for_node("manifest")
        if "catalog_warning" in m.metadata
    )
    assert "locked" in warning and "-m resources.catalog" in warning
    with duckdb.connect(str(catalog), read_only=True) as connection:
        views = {
            row[0] for row in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
    assert "manifest" not in views
    command = warning.split("run `", 1)[1].split("`", 1)[0]
    subprocess.run(command, shell=True, check=True, capture_output=True)
    kept, quarantined = visible(catalog, "ccs")
    assert kept + quarantined == rows_in(result)


@multi_asset(
    outs={
        "first_table": AssetOut(io_manager_key="table_io_manager"),
        "second_table": AssetOut(io_manager_key="table_io_manager"),
    }
)
def two_tables(context):
    yield Output(pd.DataFrame({"version": [context.run.tags.get("version")]}), output_name="first_table")
    if context.run.tags.get("version") == "broken":
        # a value the table store cannot write, after the first table was handed over
        yield Output({"not": "a table"}, output_name="second_table")
    else:
        yield Output(pd.DataFrame({"version": [context.run.tags.get("version")]}), output_name="second_table")


def test_a_step_whose_second_table_fails_leaves_the_first_unchanged(tmp_path):
    resources = build_resources(str(tmp_path / "data"), str(tmp_path / "warehouse.duckdb"))
    assert materialize([two_tables], resources=resources, tags={"version": "good"}).success
    broken = materialize([two_tables], resources=resources, tags={"version": "broken"}, raise_on_error=False)
    assert not broken.success
    storage = resources["storage"]
    assert storage.read_table("first_table")["version"].tolist() == ["good"]
    assert storage.query("SELECT version FROM first_table")["version"].tolist() == ["good"]
    assert materialize([two_tables], resources=resources, tags={"version": "again"}).success
    assert storage.read_table("first_table")["version"].tolist() == ["again"]
    assert not list((storage.tables_root / ".staging").glob("*/first_table/*.parquet"))


def test_a_commit_interrupted_after_its_journal_is_rolled_forward(tmp_path):
    resources = build_resources(str(tmp_path / "data"), str(tmp_path / "warehouse.duckdb"))
    storage = resources["storage"]
    storage.write_tables({("a", "x"): pd.DataFrame({"v": [1]}), ("b", "x"): pd.DataFrame({"v": [1]})})
    # A writer that died between its two renames: journal written, one file moved, one still staged.
    batch = "999999999-dead-writer"
    storage.stage_table(batch, "a", "x", pd.DataFrame({"v": [2]}))
    storage.stage_table(batch, "b", "x", pd.DataFrame({"v": [2]}))
    journal = storage.tables_root / ".journal" / f"{batch}.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(
        f'[[".staging/{batch}/a/x.parquet", "a/x.parquet"], [".staging/{batch}/b/x.parquet", "b/x.parquet"]]'
    )
    (storage.tables_root / ".staging" / batch / "a" / "x.parquet").replace(storage.table_path("a", "x"))
    assert storage.read_table("b", ["x"])["v"].tolist() == [2]  # reading finishes the commit first
    assert storage.read_table("a", ["x"])["v"].tolist() == [2]
    assert not journal.exists() and not (storage.tables_root / ".staging" / batch).exists()
