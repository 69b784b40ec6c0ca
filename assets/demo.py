"""``make demo``: materialise the whole asset graph on the embedded demo corpus, then say where to look.

Runs are recorded in the Dagster instance under ``$DAGSTER_HOME`` (``dagster_home/``), so ``make ui`` shows
them with their metadata, plots and check results.
"""

from __future__ import annotations

import sys
import time

from dagster import AssetsDefinition, DagsterInstance, materialize

from assets.definitions import defs
from assets.orphans import process_tags, report_orphaned_runs
from assets.resources import build_resources
from assets.stages import Stage, stages
from cough_pipeline.distillation.report import wide_table
from resources.environment import check_settings, prepare_dagster_home
from resources.instance import instance_setup_lock
from resources.storage import default_dagster_home

#: Console logs at INFO: the assets' own progress lines, without Dagster's per-step DEBUG events.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_assets(
    assets: list[AssetsDefinition], label: str, instance: DagsterInstance, resources: dict, **kwargs
) -> bool:
    """One in-process ``materialize`` run recorded in ``instance`` and tagged with this process (so a later command
    can tell when the process died mid-run); prints its outcome and time, returns success."""
    started = time.perf_counter()
    tags = {**process_tags(), **kwargs.pop("tags", {})}
    result = materialize(
        assets, instance=instance, resources=resources, run_config=RUN_CONFIG, raise_on_error=False, tags=tags, **kwargs
    )
    print(f"  {label:<24} {'ok' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f}s")
    return result.success


def stage_label(stage: Stage, first: bool, partition: str | None = None) -> str:
    """What the demo and backfill print for one run of ``stage``."""
    if partition is not None:
        return f"partition {partition}"
    return "unpartitioned inputs" if first else f"summaries (level {stage.level})"


def materialize_everything(instance: DagsterInstance, resources: dict) -> bool:
    """Every stage of the graph in order (unpartitioned assets in one run, partitioned ones in one run per
    partition); True when all succeeded. A failed stage does not stop the later ones: they run on what exists."""
    everything = list(defs.assets or [])
    ok = True
    for number, stage in enumerate(stages(everything)):
        if stage.partitions_def is None:
            label = stage_label(stage, first=number == 0)
            ok &= run_assets(everything, label, instance, resources, selection=list(stage.assets))
            continue
        for key in stage.partitions_def.get_partition_keys():
            label = stage_label(stage, False, key)
            ok &= run_assets(everything, label, instance, resources, selection=list(stage.assets), partition_key=key)
    return ok


def summary(resources: dict) -> str:
    storage = resources["storage"]
    counts = storage.query(
        "SELECT m.dataset, count(*) AS kept, count(*) FILTER (WHERE exclude_reason IS NULL) AS usable, "
        "coalesce(max(q.quarantined), 0) AS quarantined FROM manifest m LEFT JOIN "
        "(SELECT dataset, count(*) AS quarantined FROM manifest_quarantine GROUP BY dataset) q USING (dataset) "
        "GROUP BY m.dataset ORDER BY m.dataset"
    )
    coughs = storage.query(
        "SELECT dataset, count(*) FILTER (WHERE is_cough) AS coughs_kept, count(*) FILTER (WHERE NOT is_cough) "
        "AS rejected, (SELECT count(*) FROM cough_segments s WHERE s.dataset = l.dataset AND method = 'hysteresis') "
        "AS hysteresis_segments, (SELECT count(*) FROM cough_segments s WHERE s.dataset = l.dataset AND "
        "method = 'rms') AS rms_segments FROM cough_list l GROUP BY dataset ORDER BY dataset"
    )
    icbhi = storage.query(
        "SELECT level, variable || ' x ' || grouping AS test, n, df, round(statistic, 3) AS statistic, "
        "round(p_value, 4) AS p, effect_name, round(effect, 3) AS effect FROM icbhi_associations"
    )
    leaders = storage.query(
        "SELECT family, variant, model, round(value, 3) AS holdout_roc_auc, round(ci_low, 3) AS ci_low, "
        "round(ci_high, 3) AS ci_high, n_participants FROM classifier_evaluation WHERE metric = 'roc_auc' AND "
        "dataset = 'all' AND evaluation = 'holdout' QUALIFY row_number() OVER (PARTITION BY family, variant "
        "ORDER BY value DESC, model) = 1 ORDER BY family, variant"
    )
    champion = storage.query(
        "SELECT model, variant, version, round(score, 3) AS score, round(threshold, 3) AS threshold, decision "
        "FROM champion_classifier"
    ).iloc[0]
    distilled = wide_table(storage.query("SELECT * FROM distillation_report"))
    home = default_dagster_home()
    return "\n".join(
        [
            counts.to_string(index=False),
            "",
            coughs.to_string(index=False),
            "",
            "ICBHI association tests (icbhi_associations):",
            icbhi.to_string(index=False),
            "",
            "Best model per family and variant (classifier_evaluation): holdout ROC-AUC, 95 % CI over participants",
            leaders.to_string(index=False),
            "",
            f"Champion (champion_classifier): {champion['model']} on {champion['variant']} audio, holdout ROC-AUC "
            f"{champion['score']}, threshold {champion['threshold']}, version {champion['version']}",
            f"  {champion['decision']}",
            "  score a recording:  make predict FILE=path/to/recording.wav",
            "",
            "Low-rate students (distillation_report): test score per strategy, mean ± sd over folds",
            distilled.to_string(index=False),
            "",
            f"Tables (parquet): {storage.root_path / 'tables'}",
            f"DuckDB catalog:   {storage.catalog_path}",
            '  query it:       make sql Q="SELECT dataset, covid_label, count(*) FROM manifest GROUP BY ALL"',
            f"Demo corpus:      {storage.root_path / 'demo_corpus'}",
            f"Dagster runs:     {home} — open the UI with `make ui`, then http://127.0.0.1:3000 (Assets tab)",
        ]
    )


def main() -> int:
    check_settings()
    prepare_dagster_home()
    with instance_setup_lock():
        instance = DagsterInstance.get()
    report_orphaned_runs(instance, "python -m assets.demo")
    resources = build_resources()
    print(f"materialising the asset graph on the demo corpus (DAGSTER_HOME={default_dagster_home()})")
    ok = materialize_everything(instance, resources)
    print(summary(resources))
    if not ok:
        print("some runs failed: see `make ui` (Runs tab) for the logs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
