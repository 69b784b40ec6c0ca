"""The manifest assets materialised for real, on the demo corpus, into a temporary storage root."""

from __future__ import annotations

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from assets.definitions import defs
from assets.manifest import manifest
from assets.resources import build_resources
from cough_pipeline.schema import COVID_DATASETS
from tests.conftest import write_tone


@pytest.fixture(scope="module")
def storage_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    return root, root / "warehouse.duckdb"


def run(partition: str, storage_dirs, instance=None):
    resources = build_resources(str(storage_dirs[0]), str(storage_dirs[1]))
    result = materialize([manifest], partition_key=partition, resources=resources, instance=instance)
    return result, resources["storage"]


def test_definitions_load():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"manifest", "manifest_quarantine"} <= keys
    assert set(
        graph.get(
            next(k for k in graph.get_all_asset_keys() if k.to_user_string() == "manifest")
        ).partitions_def.get_partition_keys()
    ) == set(COVID_DATASETS)
    assert defs.resolve_job_def("dataset_job") is not None


@pytest.mark.parametrize("partition", COVID_DATASETS)
def test_every_partition_materialises_with_passing_checks(partition, storage_dirs):
    result, storage = run(partition, storage_dirs)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "unique_recording_ids",
        "labels_in_domain",
        "audio_decodable",
        "rows_accounted_for",
    }
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    materialization = next(
        m for m in result.asset_materializations_for_node("manifest") if m.asset_key.to_user_string() == "manifest"
    )
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value > 0
    assert {"counts_per_label", "preview", "seconds", "labels_plot"} <= set(metadata)
    assert "data:image/png;base64," in metadata["labels_plot"].value
    table = storage.read_table("manifest", [partition])
    assert len(table) == metadata["dagster/row_count"].value and set(table["dataset"]) == {partition}


def test_catalog_views_and_rematerialisation_replaces_rows(storage_dirs):
    run("ccs", storage_dirs)
    _, storage = run("ccs", storage_dirs)  # twice: rows must be replaced, not appended
    with duckdb.connect(str(storage_dirs[1]), read_only=True) as connection:
        ccs_rows = connection.execute("SELECT count(*) FROM manifest WHERE dataset = 'ccs'").fetchone()[0]
        duplicates = connection.execute(
            "SELECT count(*) FROM (SELECT recording_id FROM manifest GROUP BY 1 HAVING count(*) > 1)"
        ).fetchone()[0]
        quarantine_columns = [r[0] for r in connection.execute("DESCRIBE manifest_quarantine").fetchall()]
    assert ccs_rows == len(storage.read_table("manifest", ["ccs"])) > 0
    assert duplicates == 0
    assert {"reason", "detail", "source_file", "source_row"} <= set(quarantine_columns)


def test_runs_are_recorded_in_the_instance(storage_dirs, tmp_path):
    with DagsterInstance.ephemeral() as instance:
        result, _ = run("iatos", storage_dirs, instance)
        assert result.success
        records = instance.fetch_materializations(
            next(k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.to_user_string() == "manifest"),
            limit=10,
        ).records
        assert [r.partition_key for r in records] == ["iatos"]


def test_a_dataset_root_is_one_line_of_run_config(tmp_path):
    """Pointing a dataset at a real download: ``resources: {data_roots: {config: {ccs: /path}}}``."""
    (tmp_path / "ccs" / "dist" / "lab").mkdir(parents=True)
    (tmp_path / "ccs" / "dist" / "lab" / "train.csv").write_text("filename,label\ntrain_001.wav,positive\n")
    write_tone(tmp_path / "ccs" / "dist" / "wav" / "train_001.wav")
    resources = build_resources(str(tmp_path / "storage"), str(tmp_path / "warehouse.duckdb"))
    result = materialize(
        [manifest],
        partition_key="ccs",
        resources=resources,
        run_config={"resources": {"data_roots": {"config": {"ccs": str(tmp_path / "ccs")}}}},
    )
    table = result.output_for_node("manifest", "manifest")
    assert result.success and table["recording_id"].tolist() == ["ccs:train_001"]
    assert not (tmp_path / "storage" / "demo_corpus" / "ccs").exists()  # the demo copy was never needed
