"""The harmonised manifest of the six COVID-19 cough datasets, one partition per dataset, and its quarantine."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from assets.automation import SUMMARY_AUTOMATION
from assets.metadata import counts, image, preview
from assets.partitions import dataset_partitions
from cough_pipeline.manifest import (
    ManifestBuild,
    build_manifest,
    dataset_summary_table,
    duplicate_recording_ids,
    undecoded_rows,
)
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import stacked_bar_png
from cough_pipeline.schema import domain_violations
from resources.data_roots import DataRoots
from resources.storage import Storage

PREVIEW_COLUMNS = [
    "recording_id",
    "covid_label",
    "label_source",
    "exclude_reason",
    "audio_format",
    "sample_rate",
    "duration_s",
    "official_split",
]
QUARANTINE_PREVIEW = ["recording_id", "audio_path", "reason", "detail"]

MANIFEST_CHECKS = [
    AssetCheckSpec(
        "unique_recording_ids",
        asset="manifest",
        blocking=True,
        description="No recording id occurs twice in the partition.",
    ),
    AssetCheckSpec(
        "labels_in_domain",
        asset="manifest",
        blocking=True,
        description="Every enum column (covid_label, label_source, gender, …) holds a documented value.",
    ),
    AssetCheckSpec(
        "audio_decodable",
        asset="manifest",
        blocking=True,
        description="Every kept row was decoded: rate, channels, duration and content hash present.",
    ),
    AssetCheckSpec(
        "rows_accounted_for",
        asset="manifest",
        blocking=True,
        description="Input rows = kept + quarantined: nothing disappears silently.",
    ),
]


@multi_asset(
    outs={
        "manifest": AssetOut(
            description="One row per usable audio file, in the harmonised schema.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
        "manifest_quarantine": AssetOut(
            description="Every rejected input row with a machine-readable reason.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
    },
    partitions_def=dataset_partitions,
    check_specs=MANIFEST_CHECKS,
    group_name="manifest",
)
def manifest(context: AssetExecutionContext, data_roots: DataRoots, storage: Storage):
    """Read one dataset from its native layout, probe every audio file and quarantine what cannot be used.

    Both tables are committed together; the checks then read them back as readers see them."""
    dataset = context.partition_key
    root = data_roots.root_for(dataset)
    context.log.info(f"{dataset}: reading {data_roots.source(dataset)} ({root})")
    build = build_manifest(
        dataset,
        root,
        options=data_roots.loader_options(dataset),
        on_progress=throttled(context.log.info, f"{dataset}: probed audio files", every=200),
    )
    for note in build.notes:
        context.log.info(f"{dataset}: {note}")
    yield Output(build.manifest, output_name="manifest", metadata=_manifest_metadata(build, data_roots.source(dataset)))
    yield Output(build.quarantine, output_name="manifest_quarantine", metadata=_quarantine_metadata(build))
    yield from _checks(
        build.rows_in, storage.read_table("manifest", [dataset]), storage.read_table("manifest_quarantine", [dataset])
    )


def _manifest_metadata(build: ManifestBuild, source: str) -> dict:
    frame = build.manifest
    usable = frame["exclude_reason"].isna()
    by_label = {
        label: {
            "usable": int((group["exclude_reason"].isna()).sum()),
            "excluded": int(group["exclude_reason"].notna().sum()),
        }
        for label, group in frame.groupby("covid_label", observed=True)
    }
    return {
        "source": source,
        "rows_in": build.rows_in,
        "usable_rows": int(usable.sum()),
        "counts_per_label": MetadataValue.json(counts(frame["covid_label"])),
        "exclude_reasons": MetadataValue.json(counts(frame["exclude_reason"])),
        "participants": int(frame["participant_id"].nunique()),
        "total_audio_hours": round(float(frame["duration_s"].sum()) / 3600, 3),
        "sample_rates": MetadataValue.json(counts(frame["sample_rate"])),
        "seconds": round(build.seconds, 2),
        "labels_plot": image(stacked_bar_png(by_label, f"{build.dataset}: recordings per label"), "labels"),
        "key_columns": preview(frame, PREVIEW_COLUMNS),
    }


def _quarantine_metadata(build: ManifestBuild) -> dict:
    frame = build.quarantine
    return {
        "reasons": MetadataValue.json(counts(frame["reason"])),
        "key_columns": preview(frame, QUARANTINE_PREVIEW),
    }


def _checks(rows_in: int, manifest: pd.DataFrame, quarantine: pd.DataFrame):
    """The blocking checks, on the committed tables."""
    duplicates = duplicate_recording_ids(manifest)
    yield AssetCheckResult(
        check_name="unique_recording_ids",
        asset_key="manifest",
        passed=not duplicates,
        severity=AssetCheckSeverity.ERROR,
        metadata={"duplicates": MetadataValue.json(duplicates[:50])},
    )
    violations = domain_violations(manifest)
    yield AssetCheckResult(
        check_name="labels_in_domain",
        asset_key="manifest",
        passed=not violations,
        severity=AssetCheckSeverity.ERROR,
        metadata={"violations": MetadataValue.json(violations)},
    )
    undecoded = undecoded_rows(manifest)
    yield AssetCheckResult(
        check_name="audio_decodable",
        asset_key="manifest",
        passed=undecoded.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "undecoded": len(undecoded),
            "examples": MetadataValue.json(undecoded["recording_id"].head(20).tolist()),
        },
    )
    yield AssetCheckResult(
        check_name="rows_accounted_for",
        asset_key="manifest",
        passed=rows_in == len(manifest) + len(quarantine),
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows_in": rows_in, "kept": len(manifest), "quarantined": len(quarantine)},
    )


@asset(
    ins={"manifest": AssetIn(), "manifest_quarantine": AssetIn()},
    io_manager_key="table_io_manager",
    group_name="manifest",
    kinds={"pandas"},
    automation_condition=SUMMARY_AUTOMATION,
)
def dataset_summary(manifest: pd.DataFrame, manifest_quarantine: pd.DataFrame) -> Output:
    """One row per dataset: recordings kept and quarantined, participants, labels, hours of audio; kept current
    by declarative automation whenever a dataset partition of the manifest is re-materialised."""
    table = dataset_summary_table(manifest, manifest_quarantine)
    return Output(
        table,
        metadata={
            "recordings": int(table["recordings"].sum()),
            "quarantined": int(table["quarantined"].sum()),
            "hours": float(table["hours"].sum()),
            "summary": preview(table, rows=len(table)),
        },
    )
