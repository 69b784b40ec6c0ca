"""A ``dataset_job`` run SIGKILLed in the middle of a partitioned stage is marked failed and re-executed from
failure; afterwards no reader sees a partial file, the catalog is intact and every input row is accounted for."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)

from assets.definitions import defs
from assets.orphans import mark_orphaned_runs
from tests.processes import child_process, kill_session, log_tail
from tests.reliability.dataset_runs import (
    REPO,
    assert_catalog_intact,
    assert_nothing_partial,
    assert_segment_files_match_the_table,
    child_environment,
    demo_rows_in,
    pipeline_home,
)

PARTITION = "ccs"
#: The steps run in the run's own process, where the slowed-down writing below is installed (the re-execution
#: inherits this config from the killed run).
RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}
#: Seconds each recording's segment WAVs are held back in the killed run, so the kill lands mid-stage.
SLOW_WRITE_S = 1.0

#: The run to kill: ``dataset_job`` for one partition, tagged with its process as the project's commands tag theirs,
#: with the writing of each recording's segment WAVs slowed down.
KILLED_RUN = f"""
import sys, time
import cough_pipeline.segmentation.batch as batch
write = batch.write_recording_segments
def slow_write(*args, **kwargs):
    time.sleep({SLOW_WRITE_S})
    return write(*args, **kwargs)
batch.write_recording_segments = slow_write
from dagster import DagsterInstance, execute_job, reconstructable
from assets.orphans import process_tags
from tests.reliability.test_kill_and_resume import RUN_CONFIG, dataset_job
with DagsterInstance.get() as instance:
    result = execute_job(reconstructable(dataset_job), instance, run_config=RUN_CONFIG,
                         tags={{**process_tags(), "dagster/partition": sys.argv[1]}})
sys.exit(0 if result.success else 1)
"""


def dataset_job():
    """The project's ``dataset_job`` (reconstructable: the run and its re-execution load it by this name)."""
    return defs.resolve_job_def("dataset_job")


def steps(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> set[str]:
    return {record.step_key for record in instance.all_logs(run_id, of_type=event_type)}


def kill_mid_segmentation(instance: DagsterInstance, env: dict[str, str], log) -> str:
    """Start the run in its own session, SIGKILL the session once segment WAVs are being written; the run id."""
    segments = Path(env["COUGH_PIPELINE_STORAGE"]) / "segments" / PARTITION
    command = [sys.executable, "-c", KILLED_RUN, PARTITION]
    with child_process(command, log, cwd=REPO, env=child_environment(env)) as child:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if sum(1 for _ in segments.rglob("*.wav")) >= 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"the run ended before it could be killed:\n{log_tail(log)}"
        assert time.monotonic() < deadline, f"no segment WAV written in time:\n{log_tail(log)}"
        kill_session(child)
    (run,) = instance.get_runs()
    return run.run_id


def test_a_run_killed_mid_stage_resumes_from_failure_and_leaves_consistent_tables(tmp_path, monkeypatch, cough_model):
    env = pipeline_home(tmp_path, cough_model)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the re-execution below runs in this process
    data = tmp_path / "data"
    with DagsterInstance.get() as instance:
        run_id = kill_mid_segmentation(instance, env, tmp_path / "killed_run.log")

        # Killed mid-stage: the segmentation step started and never finished, its table was never committed and
        # its half-written generation folder is still on disk.
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        started = steps(instance, run_id, DagsterEventType.STEP_START)
        succeeded = steps(instance, run_id, DagsterEventType.STEP_SUCCESS)
        assert "cough_segments" in started and "cough_segments" not in succeeded
        assert "manifest" in succeeded
        assert not (data / "tables" / "cough_segments").exists()
        assert list((data / "segments" / PARTITION).rglob("*.wav"))

        (marked,) = mark_orphaned_runs(instance, "the test")
        assert run_id in marked
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE

        result = execute_job(
            reconstructable(dataset_job),
            instance,
            reexecution_options=ReexecutionOptions.from_failure(run_id, instance),
            tags={"dagster/partition": PARTITION},
        )
        assert result.success
        rerun = result.dagster_run
        assert rerun.parent_run_id == run_id and rerun.tags["dagster/partition"] == PARTITION
        # from failure: exactly the steps the killed run did not finish, not the committed manifest step
        unfinished = {node.name for node in dataset_job().graph.nodes} - succeeded
        assert "manifest" not in unfinished
        assert steps(instance, rerun.run_id, DagsterEventType.STEP_START) == unfinished
        assert steps(instance, rerun.run_id, DagsterEventType.STEP_SUCCESS) == unfinished
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
        (manifest_record,) = instance.fetch_materializations(AssetKey("manifest"), limit=5).records
        assert manifest_record.run_id == run_id
        rows_in = manifest_record.asset_materialization.metadata["rows_in"].value

    assert_nothing_partial(data, {PARTITION})
    assert_segment_files_match_the_table(data, {PARTITION})
    counts = assert_catalog_intact(tmp_path / "warehouse.duckdb", data / "tables")
    # every input row of the demo dataset (counted from its files) is kept or quarantined, exactly once
    expected_rows = demo_rows_in(PARTITION, data / "demo_corpus" / PARTITION)
    assert counts["manifest"] + counts["manifest_quarantine"] == rows_in == expected_rows
    assert counts["cough_list"] == counts["manifest"]  # one cough-list row per manifest row
