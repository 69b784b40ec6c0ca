"""``make backfill PARTITION=coughvid``: re-materialise one dataset partition of the per-dataset assets that raw data
feeds (manifest, segments, cough list; replacing its rows and files), and with ``--with-summaries`` every later
stage too: the unpartitioned assets that read all partitions (subsets, mixtures, separators, folds, models...) and
this partition of the per-dataset assets that read them (features). Runs are recorded in the instance under
``$DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import sys

from dagster import AssetKey, AssetSelection, DagsterInstance

from assets.definitions import defs
from assets.demo import run_assets, stage_label
from assets.orphans import report_orphaned_runs
from assets.partitions import dataset_partitions
from assets.resources import build_resources
from assets.stages import Stage, stages
from resources.environment import check_settings, prepare_dagster_home
from resources.instance import instance_setup_lock


def downstream_of_manifest() -> list[Stage]:
    """The stages of the assets downstream of ``manifest`` (the manifest included), in run order."""
    graph = defs.resolve_asset_graph()
    keys = AssetSelection.assets(AssetKey("manifest")).downstream().resolve(graph)
    return stages([a for a in defs.assets or [] if set(a.keys) & keys])


def per_dataset_stages(chosen: list[Stage]) -> list[Stage]:
    """The leading partitioned stages: what one partition's raw data feeds before any unpartitioned summary."""
    leading = []
    for stage in chosen:
        if stage.partitions_def is None:
            break
        leading.append(stage)
    return leading


def check_partition(partition: str) -> None:
    if partition not in dataset_partitions.get_partition_keys():
        raise SystemExit(f"unknown partition {partition!r}; choose one of {dataset_partitions.get_partition_keys()}")


def backfill(partition: str, with_summaries: bool, instance: DagsterInstance, resources: dict) -> bool:
    """Re-materialise ``partition`` of the per-dataset stages; with summaries, every later stage too (the
    unpartitioned ones whole, the partitioned ones for ``partition`` only), stopping at the first failure."""
    check_partition(partition)
    chosen = downstream_of_manifest()
    everything = list(defs.assets or [])
    for stage in chosen if with_summaries else per_dataset_stages(chosen):
        key = partition if stage.partitions_def is not None else None
        label = stage_label(stage, False, key)
        if not run_assets(everything, label, instance, resources, selection=list(stage.assets), partition_key=key):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partition", required=True, help="dataset partition, e.g. coughvid")
    parser.add_argument(
        "--with-summaries",
        action="store_true",
        help="also re-materialise the unpartitioned assets downstream (retrains the separators)",
    )
    arguments = parser.parse_args(argv)
    check_settings()
    check_partition(arguments.partition)
    prepare_dagster_home()
    with instance_setup_lock():
        instance = DagsterInstance.get()
    report_orphaned_runs(instance, "python -m assets.backfill")
    ok = backfill(arguments.partition, arguments.with_summaries, instance, build_resources())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
