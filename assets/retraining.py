"""Scheduled retraining, and a check that warns when the champion model grows old.

``retraining`` is one job over everything the classifiers' training data feeds: the folds, the feature ranking and
the classical models, every neural classifier, the leaderboard with its calibration, the complexity table and the
champion. Its runs span the neural-model partitions: ``retraining_schedule`` (cron ``COUGH_PIPELINE_RETRAINING_CRON``,
default Mondays 03:00 UTC; stopped until turned on in the UI or by ``COUGH_PIPELINE_RETRAINING_SCHEDULE=running``)
requests one run over the range of every model partition, so the models train one after another inside it and the
leaderboard and the champion are computed once, after all of them. The champion changes only by the promotion rule
of the classifier stage; the run's tags say whether it was promoted or kept, and why.

The per-dataset features (``cough_features``, ``classification_inputs``) are refreshed by
``dataset_classification_job``, not here: a job's runs cannot span two partitionings.

``champion_age`` (on ``champion_classifier``) warns when the champion model was trained more than
``COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS`` ago (default 30). It runs with every materialisation of the champion and
daily through ``champion_age_schedule``: a champion that is kept by every retraining still ages.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    asset_check,
    define_asset_job,
    schedule,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.automation import TRIGGER_TAG
from assets.classification import current_champion
from assets.distillation import GROUP as DISTILLATION_GROUP
from assets.partitions import model_partitions
from resources.model_store import ModelStore, ModelStoreError
from resources.operations import champion_max_age_days, retraining_cron, retraining_status
from resources.storage import Storage

RETRAINING_JOB = "retraining"

retraining_job = define_asset_job(
    RETRAINING_JOB,
    # the distillation stage reads the folds too, but is partitioned by rate and retrained on its own
    selection=AssetSelection.assets("classification_folds", "leave_one_dataset_out_folds").downstream()
    - AssetSelection.groups(DISTILLATION_GROUP),
    description="Retrain on the current features: folds, feature ranking, classical models, every neural "
    "classifier (a run over a range of model partitions trains them one after another), the leaderboard, the "
    "complexity table and the champion, which changes only when a challenger beats it by the margin.",
)


def retraining_request(scheduled: datetime) -> RunRequest:
    """One run of the retraining job over every neural-model partition; the run key makes a repeated tick of the
    same scheduled time a no-op."""
    models = model_partitions.get_partition_keys()
    return RunRequest(
        run_key=f"retraining:{scheduled.isoformat()}",
        tags={
            ASSET_PARTITION_RANGE_START_TAG: models[0],
            ASSET_PARTITION_RANGE_END_TAG: models[-1],
            TRIGGER_TAG: "retraining_schedule",
        },
    )


@schedule(
    job=retraining_job,
    cron_schedule=retraining_cron(),
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus(retraining_status().upper()),
    description="Retrains every classifier on the current features and re-selects the champion (one run over all "
    "neural-model partitions).",
)
def retraining_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return retraining_request(context.scheduled_execution_time)


def champion_age_days(storage: Storage, model_store: ModelStore, now: pd.Timestamp | None = None) -> dict | None:
    """The champion's model, version, when that version was trained and its age in days; ``None`` before the
    first champion."""
    champion = current_champion(storage)
    if champion is None:
        return None
    try:
        trained_at = pd.Timestamp(model_store.card(champion.asset, champion.version).created_at)
    except (ModelStoreError, FileNotFoundError) as error:
        raise ModelStoreError(
            f"the champion {champion.model} names {champion.asset} version {champion.version}, which the model "
            f"store does not hold: {error}"
        ) from error
    if trained_at.tzinfo is None:
        trained_at = trained_at.tz_localize("UTC")
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    return {
        "model": champion.model,
        "variant": champion.variant,
        "version": champion.version,
        "trained_at": trained_at.isoformat(),
        "age_days": (now - trained_at).total_seconds() / 86400,
    }


@asset_check(
    asset="champion_classifier",
    name="champion_age",
    blocking=False,
    description="Warns when the champion model was trained longer ago than COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS "
    "(default 30 days).",
)
def champion_age(storage: Storage, model_store: ModelStore) -> AssetCheckResult:
    limit = champion_max_age_days()
    age = champion_age_days(storage, model_store)
    if age is None:
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN, metadata={"max_age_days": limit, "champion": "none yet"}
        )
    return AssetCheckResult(
        passed=age["age_days"] <= limit,
        severity=AssetCheckSeverity.WARN,
        description=f"{age['model']} ({age['variant']}) was trained {age['age_days']:.1f} days ago (limit {limit:g})",
        metadata={**age, "max_age_days": limit},
    )


champion_age_job = define_asset_job(
    "champion_age_job",
    selection=AssetSelection.checks(champion_age),
    description="Evaluates the champion_age check alone (no asset is materialised).",
)


@schedule(
    job=champion_age_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily: warns when the champion model is older than COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS.",
)
def champion_age_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"champion_age:{context.scheduled_execution_time.isoformat()}")
