"""``make demo``: materialise the whole asset graph on the embedded demo corpus, then say where to look.

Runs are recorded in the Dagster instance under ``$DAGSTER_HOME`` (``dagster_home/``), so ``make ui`` shows
them with their metadata, plots and check results.
"""

from __future__ import annotations

import sys
import time

from dagster import AssetsDefinition, DagsterInstance, materialize

from assets.definitions import defs
from assets.resources import build_resources
from resources.storage import default_dagster_home


def _assets_by_partitioning() -> tuple[dict[object, list[AssetsDefinition]], list[AssetsDefinition]]:
    partitioned: dict[object, list[AssetsDefinition]] = {}
    unpartitioned: list[AssetsDefinition] = []
    for asset in defs.assets or []:
        if asset.partitions_def is None:
            unpartitioned.append(asset)
        else:
            partitioned.setdefault(asset.partitions_def, []).append(asset)
    return partitioned, unpartitioned


#: Console logs at INFO: the assets' own progress lines, without Dagster's per-step DEBUG events.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def materialize_everything(instance: DagsterInstance, resources: dict) -> bool:
    """Every partition of every partitioned asset, then the unpartitioned assets; True when all succeeded."""
    partitioned, unpartitioned = _assets_by_partitioning()
    ok = True
    for partitions_def, group in partitioned.items():
        for key in partitions_def.get_partition_keys():
            started = time.perf_counter()
            result = materialize(group, partition_key=key, instance=instance, resources=resources,
                                 run_config=RUN_CONFIG, raise_on_error=False)
            print(f"  {key:<10} {'ok' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f}s")
            ok &= result.success
    if unpartitioned:
        sources = [a for group in partitioned.values() for a in group]
        result = materialize([*unpartitioned, *sources], selection=unpartitioned, instance=instance,
                             resources=resources, run_config=RUN_CONFIG, raise_on_error=False)
        ok &= result.success
    return ok


def summary(resources: dict) -> str:
    storage = resources["storage"]
    counts = storage.query(
        "SELECT m.dataset, count(*) AS kept, count(*) FILTER (WHERE exclude_reason IS NULL) AS usable, "
        "coalesce(max(q.quarantined), 0) AS quarantined FROM manifest m LEFT JOIN "
        "(SELECT dataset, count(*) AS quarantined FROM manifest_quarantine GROUP BY dataset) q USING (dataset) "
        "GROUP BY m.dataset ORDER BY m.dataset"
    )
    home = default_dagster_home()
    return "\n".join([
        counts.to_string(index=False),
        "",
        f"Tables (parquet): {storage.root_path / 'tables'}",
        f"DuckDB catalog:   {storage.catalog_path}",
        "  query it:       make sql Q=\"SELECT dataset, covid_label, count(*) FROM manifest GROUP BY ALL\"",
        f"Demo corpus:      {storage.root_path / 'demo_corpus'}",
        f"Dagster runs:     {home} — open the UI with `make ui`, then http://127.0.0.1:3000 (Assets tab)",
    ])


def main() -> int:
    instance = DagsterInstance.get()
    resources = build_resources()
    print(f"materialising the asset graph on the demo corpus (DAGSTER_HOME={default_dagster_home()})")
    ok = materialize_everything(instance, resources)
    print(summary(resources))
    if not ok:
        print("some runs failed: see `make ui` (Runs tab) for the logs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
