"""Jobs: a job cannot mix partitions definitions, and a run for one partition cannot wait for an unpartitioned
asset that reads every partition, so the per-dataset assets form two jobs (see :mod:`assets.stages`):

* ``dataset_job``: the per-dataset assets that a dataset's raw files feed (manifest, quarantine, cough segments,
  cough list);
* ``dataset_classification_job``: the per-dataset assets that read the unpartitioned separation outputs as well
  (both variants of the classification subset, cough features, neural-model inputs);

``icbhi_balancing_job`` selects every asset partitioned by balancing strategy, ``classifier_training_job`` every
asset partitioned by neural model (retrain one model, or a backfill over all seven), and ``distillation_job`` every
asset partitioned by low sample rate. The selections are computed from
the assets' own partitions definitions and stages, so an asset added later joins the right job without touching
this file.
"""

from collections.abc import Sequence

from dagster import AssetsDefinition, AssetSelection, PartitionsDefinition, define_asset_job

from assets.partitions import balance_partitions, dataset_partitions, model_partitions, rate_partitions
from assets.stages import stages

#: Jobs over every asset of one partitions definition, built when the graph has such assets: (name, partitions,
#: description).
OPTIONAL_PARTITION_JOBS = (
    (
        "classifier_training_job",
        model_partitions,
        "Train one or more neural classifiers (one partition per model) on the classification inputs and folds, "
        "with their predictions and training histories.",
    ),
    (
        "distillation_job",
        rate_partitions,
        "Train the distillation teachers and students of one or more low sample rates (1k, 2k) and score every "
        "strategy on the test folds; then materialise distillation_report.",
    ),
)


def partitioned_by(assets: Sequence[AssetsDefinition], partitions_def: PartitionsDefinition) -> AssetSelection:
    """Every asset in ``assets`` partitioned by ``partitions_def`` (their checks come with them)."""
    keys = [key for asset in assets if asset.partitions_def == partitions_def for key in asset.keys]
    if not keys:
        raise ValueError("no asset is partitioned by this partitions definition")
    return AssetSelection.assets(*keys)


def dataset_stage_keys(assets: Sequence[AssetsDefinition]) -> tuple[list, list]:
    """(asset keys of the first per-dataset stage, asset keys of the later per-dataset stages)."""
    per_dataset = [stage for stage in stages(assets) if stage.partitions_def == dataset_partitions]
    first = sorted(per_dataset[0].keys) if per_dataset else []
    later = sorted(key for stage in per_dataset[1:] for key in stage.keys)
    return first, later


def build_jobs(assets: Sequence[AssetsDefinition]) -> list:
    """``dataset_job``, ``icbhi_balancing_job``, the :data:`OPTIONAL_PARTITION_JOBS` whose assets the graph has
    (``classifier_training_job``, ``distillation_job``) and ``dataset_classification_job`` (when the graph has such
    assets)."""
    first, later = dataset_stage_keys(assets)
    jobs = [
        define_asset_job(
            "dataset_job",
            selection=AssetSelection.assets(*first),
            description="Materialise the per-dataset assets a dataset's files feed (manifest, quarantine, cough "
            "segments, cough list) for one or more dataset partitions.",
        ),
        define_asset_job(
            "icbhi_balancing_job",
            selection=partitioned_by(assets, balance_partitions),
            description="Build the balanced ICBHI training set and its log-mel / MFCC features for one or more "
            "strategies.",
        ),
    ]
    for name, partitions_def, description in OPTIONAL_PARTITION_JOBS:
        if any(asset.partitions_def == partitions_def for asset in assets):
            selection = partitioned_by(assets, partitions_def)
            jobs.append(define_asset_job(name, selection=selection, description=description))
    if later:
        jobs.append(
            define_asset_job(
                "dataset_classification_job",
                selection=AssetSelection.assets(*later),
                description="Materialise the per-dataset assets that also read the separation outputs (both "
                "variants of the classification subset, cough features, neural-model inputs) for one or more "
                "dataset partitions; run it after dataset_job and the separation assets.",
            )
        )
    return jobs
