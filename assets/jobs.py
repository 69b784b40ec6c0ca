"""Jobs: one per partitions definition (a job cannot mix them), each selecting every asset partitioned by it.

The selections are computed from the assets' own partitions definitions, so an asset added later with
``partitions_def=dataset_partitions`` joins ``dataset_job`` without touching this file.
"""

from collections.abc import Sequence

from dagster import AssetsDefinition, AssetSelection, PartitionsDefinition, define_asset_job

from assets.partitions import balance_partitions, dataset_partitions


def partitioned_by(assets: Sequence[AssetsDefinition], partitions_def: PartitionsDefinition) -> AssetSelection:
    """Every asset in ``assets`` partitioned by ``partitions_def`` (their checks come with them)."""
    keys = [key for asset in assets if asset.partitions_def == partitions_def for key in asset.keys]
    if not keys:
        raise ValueError("no asset is partitioned by this partitions definition")
    return AssetSelection.assets(*keys)


def build_jobs(assets: Sequence[AssetsDefinition]) -> list:
    """``dataset_job`` (the whole per-dataset chain for one or more datasets) and ``icbhi_balancing_job``."""
    return [
        define_asset_job(
            "dataset_job",
            selection=partitioned_by(assets, dataset_partitions),
            description="Materialise every per-dataset asset (manifest, quarantine, cough segments, cough list, ...) "
            "for one or more dataset partitions.",
        ),
        define_asset_job(
            "icbhi_balancing_job",
            selection=partitioned_by(assets, balance_partitions),
            description="Build the balanced ICBHI training set and its log-mel / MFCC features for one or more "
            "strategies.",
        ),
    ]
