"""Jobs: one per partitions definition (a job cannot mix them)."""

from dagster import AssetSelection, define_asset_job

#: Everything partitioned by dataset: backfill one dataset with ``--partition <name>``.
dataset_job = define_asset_job(
    "dataset_job",
    selection=AssetSelection.groups("manifest"),
    description="Materialise the per-dataset assets for one or more dataset partitions.",
)

#: The ICBHI training sets and features, one partition per class-balancing strategy.
icbhi_balancing_job = define_asset_job(
    "icbhi_balancing_job",
    selection=AssetSelection.assets("icbhi_training_set", "icbhi_features"),
    description="Build the balanced ICBHI training set and its log-mel / MFCC features for one or more strategies.",
)
