"""Segmentation, the cough filter model and the cough list, materialised on the demo corpus."""

from __future__ import annotations

import json

import pytest
from dagster import materialize

from assets.cough_filter import cough_filter_model, cough_list
from assets.manifest import manifest
from assets.resources import build_resources
from assets.segmentation import cough_segments, segmentation_evaluation

PARTITIONED = [manifest, cough_segments, cough_list]


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    resources = build_resources(str(root), str(root / "warehouse.duckdb"))
    result = materialize([cough_filter_model, segmentation_evaluation], resources=resources)
    assert result.success
    return resources, result


def plot_in(metadata, key):
    return "data:image/png;base64," in metadata[key].value


def test_the_cough_filter_model_is_trained_and_saved_without_pickles(resources):
    resources_, result = resources
    metadata = result.asset_materializations_for_node("cough_filter_model")[0].metadata
    assert metadata["cv_mean_roc_auc"].value > 0.8 and metadata["coughs"].value > 0
    folder = resources_["model_store"].model_folder("cough_filter_model")
    assert sorted(p.name for p in folder.iterdir()) == ["booster.json", "model_card.json", "scaler.json"]
    assert json.loads((folder / "model_card.json").read_text())["input_sample_rate"] == 48_000


def test_segmentation_evaluation_scores_both_methods(resources):
    resources_, result = resources
    metadata = result.asset_materializations_for_node("segmentation_evaluation")[0].metadata
    table = resources_["storage"].read_table("segmentation_evaluation")
    assert set(table["method"]) == {"hysteresis", "rms"} and (table["manual"] > 0).all()
    assert plot_in(metadata, "example_plot") and 0 < metadata["fleiss_kappa_manual_hysteresis_rms"].value <= 1


@pytest.mark.parametrize("partition", ["ccs", "coughvid"])
def test_partitioned_stages_materialise_with_plots_and_counts(resources, partition):
    resources_, _ = resources
    result = materialize(
        [*PARTITIONED, cough_filter_model], partition_key=partition, resources=resources_, selection=PARTITIONED
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks) and "every_manifest_row_scored" in {c.check_name for c in checks}
    segments_metadata = result.asset_materializations_for_node("cough_segments")[0].metadata
    assert plot_in(segments_metadata, "example_plot") and segments_metadata["dagster/row_count"].value > 0
    assert "coughs_per_minute" in segments_metadata
    list_metadata = result.asset_materializations_for_node("cough_list")[0].metadata
    assert plot_in(list_metadata, "probability_histogram")
    storage = resources_["storage"]
    scored = storage.read_table("cough_list", [partition])
    assert len(scored) == len(storage.read_table("manifest", [partition]))
    segments = storage.read_table("cough_segments", [partition])
    assert all((storage.root_path / p).is_file() for p in segments["path"])
