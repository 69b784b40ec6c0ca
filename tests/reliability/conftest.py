"""Fixtures of the reliability tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import materialize

from assets.cough_filter import cough_filter_model
from assets.resources import build_resources


@pytest.fixture(scope="session")
def cough_model(tmp_path_factory) -> Path:
    """The model store folder of ``cough_filter_model`` trained once on the demo clips (the per-dataset stage reads
    it); tests copy it into their own storage root."""
    root = tmp_path_factory.mktemp("cough_model")
    assert materialize([cough_filter_model], resources=build_resources(str(root), str(root / "w.duckdb"))).success
    return root / "models" / "cough_filter_model"
