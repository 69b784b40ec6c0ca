"""The code location's graph as a reviewed snapshot, and the jobs that run its partitions.

A change to the graph (an asset, group, partitioning, kind, check or job) changes ``definitions_snapshot.json``;
rewrite it with ``UPDATE_SNAPSHOT=1 make test`` (or ``pytest tests/assets/test_definitions.py``) and review the
diff with the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import DagsterInstance, Definitions, materialize

from assets.cough_filter import cough_filter_model
from assets.definitions import ALL_ASSETS, defs
from assets.jobs import build_jobs
from assets.partitions import dataset_partitions
from assets.resources import build_resources

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def graph_snapshot(definitions: Definitions) -> dict:
    """Asset keys with group, partitions, kinds and IO manager; checks; jobs with their assets."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": sorted(partitions.get_partition_keys()) if partitions is not None else None,
            "kinds": sorted(node.kinds),
            "io_manager": node.io_manager_key,
            "parents": sorted(k.to_user_string() for k in node.parent_keys),
        }
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    jobs = {}
    for job in definitions.jobs or []:
        job_def = definitions.resolve_job_def(job.name)
        jobs[job.name] = sorted(k.to_user_string() for k in job_def.asset_layer.executable_asset_keys)
    return {"assets": assets, "checks": checks, "jobs": jobs}


def test_the_graph_matches_its_reviewed_snapshot():
    current = graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT.name} is missing: create it with UPDATE_SNAPSHOT=1 and review it"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "the asset graph changed: rerun with UPDATE_SNAPSHOT=1 and review the snapshot diff"


def test_the_dataset_jobs_together_select_every_dataset_partitioned_asset():
    jobs = graph_snapshot(defs)["jobs"]
    first, later = set(jobs["dataset_job"]), set(jobs["dataset_classification_job"])
    partitioned = {key.to_user_string() for a in ALL_ASSETS if a.partitions_def == dataset_partitions for key in a.keys}
    assert first | later == partitioned and not first & later
    assert first == {"manifest", "manifest_quarantine", "cough_segments", "cough_list"}
    assert {"classification_recordings", "cough_features", "classification_inputs"} <= later


def test_dataset_job_for_one_partition_materialises_that_partition_of_every_per_dataset_asset(tmp_path):
    resources = build_resources(str(tmp_path / "storage"), str(tmp_path / "warehouse.duckdb"))
    assert materialize([cough_filter_model], resources=resources).success  # the model the cough list reads
    local = Definitions(assets=ALL_ASSETS, jobs=build_jobs(ALL_ASSETS), resources=resources)
    instance = DagsterInstance.ephemeral()
    result = local.resolve_job_def("dataset_job").execute_in_process(partition_key="ccs", instance=instance)
    assert result.success
    materialised = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    expected = {(key, "ccs") for key in graph_snapshot(local)["jobs"]["dataset_job"]}
    assert materialised == expected
    storage = resources["storage"]
    for table in ("manifest", "cough_segments", "cough_list"):
        assert set(storage.read_table(table)["dataset"]) == {"ccs"}
