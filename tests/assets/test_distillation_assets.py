"""The distillation assets on the demo corpus: both tasks, both rates, the report and its accounting."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import materialize

from assets.classification import classification_folds, classification_recordings
from assets.distillation import distillation_clips, distillation_report, distillation_students, distillation_teachers
from assets.partitions import DISTILLATION_RATES
from assets.resources import build_resources
from cough_pipeline.schema import COVID_DATASETS
from resources.model_store import stored_name
from tests.assets.conftest import SEPARATION, UPSTREAM

DISTILLATION = [distillation_clips, distillation_teachers, distillation_students, distillation_report]
EVERYTHING = [classification_recordings, classification_folds, *DISTILLATION, *SEPARATION, *UPSTREAM]
#: The asset tests check wiring, storage and accounting, not how well a CNN learns the demo corpus.
RUN_CONFIG = {
    "ops": {
        "distillation_teachers": {"config": {"epochs": 1, "max_folds": 2}},
        "distillation_students": {"config": {"alphas": [0.5], "temperatures": [2.0, 4.0]}},
    }
}


@pytest.fixture(scope="module")
def distilled(separated):
    _, storage = separated
    resources = build_resources(str(storage.root_path), str(storage.catalog_path))
    for partition in COVID_DATASETS:
        run = materialize(
            EVERYTHING, selection=[classification_recordings], partition_key=partition, resources=resources
        )
        assert run.success, partition
    assert materialize(EVERYTHING, selection=[classification_folds, distillation_clips], resources=resources).success
    runs = {}
    for rate in DISTILLATION_RATES:
        runs[rate] = materialize(
            EVERYTHING,
            selection=[distillation_teachers, distillation_students],
            partition_key=rate,
            resources=resources,
            run_config=RUN_CONFIG,
        )
        assert runs[rate].success, rate
    assert materialize(EVERYTHING, selection=[distillation_report], resources=resources).success
    return storage, resources


def test_every_clip_is_kept_or_quarantined_and_the_folds_are_grouped(distilled):
    storage, resources = distilled
    clips = storage.read_table("distillation_clips")
    quarantine = storage.read_table("distillation_quarantine")
    meta = pd.read_csv(resources["data_roots"].root_for("esc50") / "meta" / "esc50.csv")
    esc50 = clips[clips["task"] == "esc50"]
    assert len(esc50) + (quarantine["task"] == "esc50").sum() == len(meta)
    folds = storage.read_table("classification_folds")
    coughs = clips[clips["task"] == "coughs"]
    assert set(coughs["clip_id"]) | set(quarantine.loc[quarantine["task"] == "coughs", "clip_id"]) == set(
        folds.loc[folds["split"] == "cv", "recording_id"]
    )
    assert clips.groupby(["task", "group"])["fold"].nunique().max() == 1


def test_the_report_covers_both_rates_both_tasks_and_every_strategy(distilled):
    storage, resources = distilled
    report = storage.query("SELECT * FROM distillation_report")
    assert set(report["rate"]) == {1_000, 2_000, 16_000}
    assert set(report["task"]) == {"esc50", "coughs"}
    assert set(report["metric"]) == {"macro_accuracy", "macro_f1", "roc_auc"}
    low = report[report["rate"] < 16_000]
    assert set(low["strategy"]) == {"raw", "fine_tuned", "fine_tuned_direct", "basd", "cssd"}
    assert (low.loc[low["metric"] != "roc_auc", "folds"] == 2).all()
    weights = storage.read_table("distillation_loss_weights")
    assert (
        set(weights["temperature"]) == {2.0, 4.0}
        and weights.groupby(["task", "rate", "strategy"])["chosen"].sum().eq(1).all()
    )
    changes = storage.read_table("distillation_class_changes")
    assert {"coughing", "crying_baby", "snoring"} == set(changes["class_name"])
    # the students of each rate are one stored version holding only students, two folds per task
    store = resources["model_store"]
    for rate in DISTILLATION_RATES:
        students = store.load(stored_name("distillation_students", rate)).model
        assert {strategy for _, _, strategy in students.entries()} == {"basd", "cssd"}
        assert {(task, fold) for task, fold, _ in students.entries()} == {
            (t, f) for t in ("esc50", "coughs") for f in (0, 1)
        }
        teachers = store.load(stored_name("distillation_teachers", rate)).model
        assert {strategy for _, _, strategy in teachers.entries()} == {"full_rate", "fine_tuned"}


def test_students_refuse_teachers_trained_on_another_clip_table(distilled):
    """Runs last in this module: it replaces distillation_clips with the ESC-50 task alone."""
    storage, resources = distilled
    esc50_only = {"ops": {"distillation_clips": {"config": {"tasks": ["esc50"]}}}}
    assert materialize(EVERYTHING, selection=[distillation_clips], resources=resources, run_config=esc50_only).success
    run = materialize(
        EVERYTHING,
        selection=[distillation_students],
        partition_key="1k",
        resources=resources,
        run_config={"ops": {"distillation_students": RUN_CONFIG["ops"]["distillation_students"]}},
        raise_on_error=False,
    )
    assert not run.success
    failure = next(event for event in run.all_events if event.event_type_value == "STEP_FAILURE")
    error, messages = failure.event_specific_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any("trained on another distillation_clips table" in message for message in messages), messages
