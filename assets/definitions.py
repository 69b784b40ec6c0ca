"""The code location: ``dagster dev -w workspace.yaml`` (``make ui``) loads ``defs`` from here."""

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from assets import cough_filter, icbhi, manifest, segmentation, separation
from assets.jobs import dataset_job, icbhi_balancing_job
from assets.resources import build_resources

ASSET_MODULES = [manifest, segmentation, cough_filter, separation, icbhi]

defs = Definitions(
    assets=load_assets_from_modules(ASSET_MODULES),
    asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
    jobs=[dataset_job, icbhi_balancing_job],
    resources=build_resources(),
)
