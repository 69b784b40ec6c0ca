"""Bad config values are refused when a run is launched, by Dagster's config error naming the field, before any
step runs (no table, no model, no file is written)."""

from __future__ import annotations

import pytest
from dagster import DagsterInvalidConfigError, materialize

from assets.definitions import ALL_ASSETS
from assets.resources import build_resources

CASES = {
    "fraction_above_one": (
        ["subset_split"],
        {"ops": {"subset_split": {"config": {"separation_fraction": 1.5}}}},
        "root:ops:subset_split:config:separation_fraction",
    ),
    "bad_label_rule": (
        ["icbhi_tables"],
        {"ops": {"icbhi_tables": {"config": {"label_rule": "mode"}}}},
        "root:ops:icbhi_tables:config:label_rule",
    ),
    "choice_not_in_literal": (
        ["cough_segments"],
        {"ops": {"cough_segments": {"config": {"methods": ["hysteresis", "zero_crossings"]}}}},
        "root:ops:cough_segments:config:methods",
    ),
    "probability_above_one": (
        ["cough_filter_model"],
        {"ops": {"cough_filter_model": {"config": {"threshold": 1.5}}}},
        "root:ops:cough_filter_model:config:threshold",
    ),
    "unknown_profile": (
        ["cough_filter_model"],
        {"resources": {"settings": {"config": {"profile": "huge"}}}},
        "root:resources:settings:config:profile",
    ),
    "zero_workers": (
        ["cough_list"],
        {"ops": {"cough_list": {"config": {"workers": 0}}}},
        "root:ops:cough_list:config:workers",
    ),
}


def selected(ops: list[str]) -> list:
    """The assets computed by the ops named ``ops``."""
    return [asset for asset in ALL_ASSETS if asset.op.name in ops]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_fails_at_launch_naming_the_field_before_any_step(case, tmp_path):
    names, run_config, path = CASES[case]
    root = tmp_path / "storage"
    resources = build_resources(str(root), str(tmp_path / "warehouse.duckdb"))
    partition = {"partition_key": "ccs"} if names in (["cough_segments"], ["cough_list"]) else {}
    with pytest.raises(DagsterInvalidConfigError) as error:
        materialize(
            ALL_ASSETS,
            selection=selected(names),
            resources=resources,
            run_config=run_config,
            **partition,
        )
    assert path in str(error.value)
    assert not root.exists() or not any(root.rglob("*.parquet")), "a step ran before the config was checked"
