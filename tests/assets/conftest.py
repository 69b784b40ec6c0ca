"""Fixtures of the asset tests: the demo corpus materialised once per session up to the separated clips."""

from __future__ import annotations

import pytest
from dagster import materialize

from assets.cough_filter import cough_filter_model, cough_list
from assets.manifest import manifest
from assets.resources import build_resources
from assets.segmentation import cough_segments
from assets.separation import (
    separated_clips,
    separation_mixtures,
    separation_report,
    separator,
    separator_pruned,
    subset_split,
)
from cough_pipeline.schema import COVID_DATASETS

SEPARATION = [subset_split, separation_mixtures, separator, separator_pruned, separation_report, separated_clips]
UPSTREAM = [manifest, cough_segments, cough_list, cough_filter_model]


@pytest.fixture(scope="session")
def separated(tmp_path_factory):
    """(the separation run's result, its storage): every dataset partition up to ``cough_list``, then the
    separation branch, in one storage shared by the asset tests of this session."""
    root = tmp_path_factory.mktemp("storage")
    resources = build_resources(str(root), str(root / "warehouse.duckdb"))
    assert materialize([cough_filter_model], resources=resources).success
    for partition in COVID_DATASETS:
        assert materialize(
            [manifest, cough_segments, cough_list, cough_filter_model],
            partition_key=partition,
            resources=resources,
            selection=[manifest, cough_segments, cough_list],
        ).success
    result = materialize([*SEPARATION, *UPSTREAM], selection=SEPARATION, resources=resources)
    return result, resources["storage"]
