"""The README's one-command backfill of a single dataset partition, run exactly as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from assets.backfill import downstream_of_manifest, per_dataset_stages
from assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_makefile_and_readme_show_this_command():
    assert "$(PY) -m assets.backfill --partition $(PARTITION)" in (REPO / "Makefile").read_text()
    assert "make backfill PARTITION=coughvid" in (REPO / "README.md").read_text()


def test_the_backfill_covers_the_per_dataset_stages_only():
    chosen = downstream_of_manifest()
    first = {key.to_user_string() for stage in per_dataset_stages(chosen) for key in stage.keys}
    assert first == {"manifest", "manifest_quarantine", "cough_segments", "cough_list"}
    later = [{key.to_user_string() for key in stage.keys} for stage in chosen[len(per_dataset_stages(chosen)) :]]
    assert "subset_split" in later[0]
    # every stage runs after the stages it reads from
    seen: set = set()
    graph = defs.resolve_asset_graph()
    chosen_keys = set().union(*(stage.keys for stage in chosen))
    for stage in chosen:
        parents = {p for key in stage.keys for p in graph.get(key).parent_keys} - stage.keys
        assert parents & chosen_keys <= seen, stage
        seen |= stage.keys


def test_backfill_one_partition_from_the_cli(tmp_path):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "COUGH_PIPELINE_STORAGE": str(data),
        "COUGH_PIPELINE_CATALOG": str(tmp_path / "warehouse.duckdb"),
    }
    # The per-dataset stages use the unpartitioned cough filter model, which a backfill does not rebuild.
    model = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "assets.definitions",
        "--select",
        "cough_filter_model",
    ]
    backfill = [sys.executable, "-m", "assets.backfill", "--partition", "coughvid"]
    for command in (model, backfill):
        completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    for table in ("manifest", "manifest_quarantine", "cough_segments", "cough_list"):
        assert sorted(p.name for p in (data / "tables" / table).iterdir()) == ["coughvid.parquet"], table
    assert not (data / "tables" / "subset_split").exists()
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey("manifest"), limit=5).records
    assert [r.partition_key for r in records] == ["coughvid"]
