"""The separation branch on the demo profile: subsets, mixtures, both separators, the report and the clips."""

from __future__ import annotations

import torch
from dagster import materialize

from assets.resources import build_resources
from assets.separation import (
    separated_clips,
    separation_mixtures,
    separator,
)
from tests.assets.conftest import SEPARATION, UPSTREAM


def test_every_separation_stage_materialises_and_its_checks_pass(separated):
    result, _ = separated
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "participant_disjoint": True,
        "no_classification_coughs": True,
        "artefact_paths_unique_and_present": True,
    }


def test_subsets_are_participant_disjoint_and_mixtures_use_only_separation_coughs(separated):
    _, storage = separated
    subsets = storage.read_table("subset_split")
    by_subset = subsets.groupby("subset")["participant_id"].apply(set)
    assert not by_subset["separation"] & by_subset["classification"]
    mixtures = storage.read_table("separation_mixtures")
    separation_recordings = set(subsets.loc[subsets["subset"] == "separation", "recording_id"])
    assert set(mixtures["recording_ids"].str.split(";").explode()) <= separation_recordings
    assert mixtures.groupby("split").size().to_dict() == {"test": 12, "train": 48, "validation": 12}
    assert mixtures["snr_db"].between(-5, 5).all()


def test_report_has_the_three_systems_and_complexity_has_both_models(separated):
    _, storage = separated
    report = storage.read_table("separation_report")
    assert report["system"].tolist()[0] == "unprocessed mixture"
    assert {"separator", "separator_pruned"} <= set(report["system"])
    assert {"sdr_median", "sir_median", "sar_median", "isr_median", "snr_median"} <= set(report.columns)
    complexity = storage.read_table("separator_complexity")
    assert len(complexity) >= 2 and (complexity["nonzero_parameters"] <= complexity["parameters"]).all()


def test_separated_clips_link_back_to_classification_recordings(separated):
    _, storage = separated
    clips = storage.read_table("separated_clips")
    subsets = storage.read_table("subset_split").set_index("recording_id")
    assert len(clips) > 0 and (subsets.loc[clips["recording_id"], "subset"] == "classification").all()
    assert all((storage.root_path / p).is_file() for p in clips["separated_path"])
    assert set(clips["covid_label"]) <= {"positive", "negative", "unknown"}


def test_a_mistyped_profile_fails_before_touching_the_mixtures(separated, monkeypatch):
    result, storage = separated
    before = storage.read_table("separation_mixtures")
    monkeypatch.setenv("COUGH_PIPELINE_PROFILE", "papr")
    failed = materialize(
        [*SEPARATION, *UPSTREAM],
        selection=[separation_mixtures],
        raise_on_error=False,
        resources=build_resources(str(storage.root_path), str(storage.catalog_path)),
    )
    assert not failed.success
    after = storage.read_table("separation_mixtures")
    assert after.equals(before)
    for column in ("mixture_path", "cough_path", "noise_path", "jams_path"):
        assert all((storage.root_path / p).is_file() for p in after[column])


def test_each_separator_run_is_a_new_model_version_and_downstream_uses_the_latest(separated):
    result, storage = separated
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    store = resources["model_store"]
    first_version = store.latest_version("separator")
    first_weights = store.load("separator").model.state_dict()
    report = result.asset_materializations_for_node("separation_report")[0].metadata
    assert report["model_versions"].data["separator"] == first_version
    rerun = materialize(
        [*SEPARATION, *UPSTREAM],
        selection=[separator, separated_clips],
        resources=resources,
        run_config={
            "ops": {
                "separator": {"config": {"epochs": 1, "learning_rate": 5e-4}},
                "separated_clips": {"config": {"use": "separator"}},
            }
        },
    )
    assert rerun.success
    assert store.versions("separator") == [first_version, rerun.run_id]
    earlier, latest = store.load("separator", first_version), store.load("separator")
    assert latest.version == rerun.run_id
    assert (latest.card.config["epochs"], latest.card.config["learning_rate"]) == (1, 5e-4)
    assert earlier.card.config["epochs"] == 4 and earlier.card.training_data == latest.card.training_data
    for name, tensor in first_weights.items():
        assert torch.equal(earlier.model.state_dict()[name], tensor), name
    assert not all(torch.equal(latest.model.state_dict()[name], t) for name, t in first_weights.items())
    clips = rerun.asset_materializations_for_node("separated_clips")[0].metadata
    assert clips["model_version"].text == rerun.run_id == store.latest_version("separator")
