"""Two ``make backfill`` processes of different partitions, started together against the same instance, storage
root and DuckDB catalog, both succeed and leave both partitions whole and every catalog view queryable."""

from __future__ import annotations

import sys
import time

import duckdb
import pandas as pd
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from tests.processes import child_process, log_tail
from tests.reliability.dataset_runs import (
    REPO,
    assert_catalog_intact,
    assert_nothing_partial,
    assert_segment_files_match_the_table,
    child_environment,
    demo_rows_in,
    pipeline_home,
)

PARTITIONS = ("ccs", "coughvid")


def backfill(partition: str) -> list[str]:
    """``make backfill PARTITION=<partition>``."""
    return [sys.executable, "-m", "assets.backfill", "--partition", partition]


def test_two_backfills_at_once_both_succeed_and_leave_the_catalog_intact(tmp_path, cough_model):
    """On a fresh home, so the two processes also create the instance's databases and the catalog together (both
    races are real: unserialised, they stamped two schema versions into the instance, or left the catalog an empty
    file), then create the same tables' views while the other one writes."""
    env = pipeline_home(tmp_path, cough_model)
    data, catalog = tmp_path / "data", tmp_path / "warehouse.duckdb"
    logs = {partition: tmp_path / f"backfill_{partition}.log" for partition in PARTITIONS}
    with (
        child_process(backfill("ccs"), logs["ccs"], cwd=REPO, env=child_environment(env)) as first,
        child_process(backfill("coughvid"), logs["coughvid"], cwd=REPO, env=child_environment(env)) as second,
    ):
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and (first.poll() is None or second.poll() is None):
            time.sleep(0.2)
        codes = {"ccs": first.poll(), "coughvid": second.poll()}
    for partition, code in codes.items():
        assert code == 0, f"backfill of {partition} ended with {code}:\n{log_tail(logs[partition])}"
        output = logs[partition].read_text(errors="replace")
        assert "not created" not in output, f"a catalog view was not created:\n{log_tail(logs[partition])}"

    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert sorted(run.tags.get("dagster/partition") for run in runs) == sorted(PARTITIONS)
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
        materialised = {
            (record.partition_key, record.asset_materialization.metadata["rows_in"].value)
            for record in instance.fetch_materializations(AssetKey("manifest"), limit=10).records
        }

    assert_nothing_partial(data, set(PARTITIONS))
    segments = assert_segment_files_match_the_table(data, set(PARTITIONS))
    counts = assert_catalog_intact(catalog, data / "tables")
    with duckdb.connect(str(catalog), read_only=True) as connection:
        per_dataset = {
            table: dict(connection.execute(f'SELECT dataset, count(*) FROM "{table}" GROUP BY dataset').fetchall())
            for table in counts
        }
    for partition in PARTITIONS:
        rows_in = demo_rows_in(partition, data / "demo_corpus" / partition)  # counted from the dataset's files
        assert (partition, rows_in) in materialised
        assert per_dataset["manifest"][partition] + per_dataset["manifest_quarantine"][partition] == rows_in
        assert per_dataset["cough_list"][partition] == per_dataset["manifest"][partition]
        committed = pd.read_parquet(data / "tables" / "cough_segments" / f"{partition}.parquet")
        assert per_dataset["cough_segments"][partition] == len(committed) == (segments["dataset"] == partition).sum()
        assert len(committed) > 0
    for table in counts:  # each partition file holds its own dataset's rows only
        for partition in PARTITIONS:
            rows = pd.read_parquet(data / "tables" / table / f"{partition}.parquet")
            assert set(rows["dataset"]) == {partition}, (table, partition)
