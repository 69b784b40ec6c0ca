"""Jobs: one per partitions definition (a job cannot mix them)."""

from dagster import AssetSelection, define_asset_job

#: Everything partitioned by dataset: backfill one dataset with ``--partition <name>``.
dataset_job = define_asset_job(
    "dataset_job",
    selection=AssetSelection.groups("manifest"),
    description="Materialise the per-dataset assets for one or more dataset partitions.",
)
