"""``make backfill PARTITION=coughvid``: re-materialise one dataset partition of every per-dataset asset downstream
of the manifest (replacing its rows and files), and with ``--with-summaries`` also the unpartitioned assets that
read all partitions (subsets, mixtures, separators...). Runs are recorded in the instance under ``$DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import sys

from dagster import AssetKey, AssetSelection, DagsterInstance

from assets.definitions import defs
from assets.demo import run_assets
from assets.orphans import report_orphaned_runs
from assets.partitions import dataset_partitions
from assets.resources import build_resources
from resources.environment import check_settings, prepare_dagster_home


def downstream_of_manifest() -> tuple[list, list]:
    """(partitioned, unpartitioned) assets definitions downstream of ``manifest``, the manifest included."""
    keys = AssetSelection.assets(AssetKey("manifest")).downstream().resolve(defs.resolve_asset_graph())
    chosen = [a for a in defs.assets or [] if set(a.keys) & keys]
    return ([a for a in chosen if a.partitions_def is not None], [a for a in chosen if a.partitions_def is None])


def check_partition(partition: str) -> None:
    if partition not in dataset_partitions.get_partition_keys():
        raise SystemExit(f"unknown partition {partition!r}; choose one of {dataset_partitions.get_partition_keys()}")


def backfill(partition: str, with_summaries: bool, instance: DagsterInstance, resources: dict) -> bool:
    check_partition(partition)
    partitioned, unpartitioned = downstream_of_manifest()
    everything = list(defs.assets or [])
    ok = run_assets(
        everything, f"partition {partition}", instance, resources, selection=partitioned, partition_key=partition
    )
    if ok and with_summaries and unpartitioned:
        ok = run_assets(everything, "summaries", instance, resources, selection=unpartitioned)
    return ok


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
    instance = DagsterInstance.get()
    report_orphaned_runs(instance, "python -m assets.backfill")
    ok = backfill(arguments.partition, arguments.with_summaries, instance, build_resources())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
