"""The README's one-command backfill of a single dataset partition, run exactly as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

REPO = Path(__file__).resolve().parents[2]


def backfill_command(partition: str) -> list[str]:
    """The command behind ``make backfill PARTITION=...`` (kept in step with the Makefile by the test below)."""
    return [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "assets.definitions",
            "--partition", partition, "--select", "manifest*,manifest_quarantine*"]


def test_makefile_and_readme_show_this_command():
    makefile = (REPO / "Makefile").read_text()
    readme = (REPO / "README.md").read_text()
    assert "--partition $(PARTITION) --select 'manifest*,manifest_quarantine*'" in makefile
    assert "--partition coughvid --select 'manifest*,manifest_quarantine*'" in readme


def test_backfill_one_partition_from_the_cli(tmp_path):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "COUGH_PIPELINE_STORAGE": str(data),
           "COUGH_PIPELINE_CATALOG": str(tmp_path / "warehouse.duckdb")}
    # The partitioned stages use the unpartitioned cough filter model, which a backfill does not rebuild.
    model = [backfill_command("x")[0], "asset", "materialize", "-m", "assets.definitions", "--select",
             "cough_filter_model"]
    for command in (model, backfill_command("coughvid")):
        completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
    for table in ("manifest", "manifest_quarantine", "cough_segments", "cough_list"):
        assert sorted(p.name for p in (data / "tables" / table).iterdir()) == ["coughvid.parquet"], table
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey("manifest"), limit=5).records
    assert [r.partition_key for r in records] == ["coughvid"]
