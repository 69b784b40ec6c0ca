"""The code location: ``dagster dev -w workspace.yaml`` (``make ui``) loads ``defs`` from here."""

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from assets import (
    classification,
    classifiers,
    cough_filter,
    distillation,
    icbhi,
    manifest,
    retraining,
    segmentation,
    separation,
)
from assets.automation import pipeline_failure_alerts, raw_data_sensor, summary_automation
from assets.jobs import build_jobs
from assets.resources import build_resources
from resources.executor import build_executor

ASSET_MODULES = [manifest, segmentation, cough_filter, separation, classification, classifiers, icbhi, distillation]

ALL_ASSETS = load_assets_from_modules(ASSET_MODULES)

defs = Definitions(
    assets=ALL_ASSETS,
    asset_checks=load_asset_checks_from_modules([*ASSET_MODULES, retraining]),
    jobs=[*build_jobs(ALL_ASSETS), retraining.retraining_job, retraining.champion_age_job],
    schedules=[retraining.retraining_schedule, retraining.champion_age_schedule],
    sensors=[raw_data_sensor, pipeline_failure_alerts, summary_automation],
    resources=build_resources(),
    executor=build_executor(),
)
