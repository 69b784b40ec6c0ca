"""Files an asset writes: a failed or killed stage leaves the previous table and its files consistent, and no two
ids ever share a file name."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from assets.artefacts import artefact_paths_check
from assets.manifest import manifest
from assets.resources import build_resources
from assets.segmentation import cough_segments
from cough_pipeline.manifest import build_manifest
from cough_pipeline.naming import artefact_stem
from cough_pipeline.segmentation import HysteresisConfig
from cough_pipeline.segmentation.batch import SegmentationRun, segment_recordings
from tests.processes import child_process, kill_session

REPO = Path(__file__).resolve().parents[2]

#: Re-materialises ccs's cough segments with every recording's WAV writing slowed down, so the test can kill
#: the process while it is writing.
SLOW_SEGMENTATION = """
import sys, time
import cough_pipeline.segmentation.batch as batch
write = batch.write_recording_segments
def slow_write(*args, **kwargs):
    time.sleep(0.3)
    return write(*args, **kwargs)
batch.write_recording_segments = slow_write
from dagster import materialize
from assets.manifest import manifest
from assets.resources import build_resources
from assets.segmentation import cough_segments
materialize([manifest, cough_segments], selection=[cough_segments], partition_key="ccs",
            resources=build_resources(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def segmented(tmp_path):
    resources = build_resources(str(tmp_path / "data"), str(tmp_path / "warehouse.duckdb"))
    assert materialize([manifest, cough_segments], partition_key="ccs", resources=resources).success
    return resources


def consistent(storage) -> pd.DataFrame:
    """The committed segment table, asserting every file it lists exists and no two rows share one."""
    table = storage.read_table("cough_segments", ["ccs"])
    paths = table["path"].dropna()
    assert len(paths) > 0 and not paths.duplicated().any()
    assert all((storage.root_path / p).is_file() for p in paths)
    return table


def test_a_failing_config_touches_no_file(segmented):
    storage = segmented["storage"]
    before = consistent(storage)
    failed = materialize(
        [manifest, cough_segments],
        selection=[cough_segments],
        partition_key="ccs",
        resources=segmented,
        raise_on_error=False,
        run_config={"ops": {"cough_segments": {"config": {"methods": []}}}},
    )
    assert not failed.success
    after = consistent(storage)
    pd.testing.assert_frame_equal(before, after)
    generations = [p for p in (storage.root_path / "segments" / "ccs").iterdir() if p.is_dir()]
    assert len(generations) == 1  # the failed run's folder was removed again


def test_a_stage_killed_while_writing_leaves_the_previous_table_and_files(segmented, tmp_path):
    storage = segmented["storage"]
    before = consistent(storage)
    folder = storage.root_path / "segments" / "ccs"
    started = time.time()
    command = [sys.executable, "-c", SLOW_SEGMENTATION, str(storage.root_path), str(storage.catalog_path)]
    with child_process(command, tmp_path / "segmentation.log", cwd=REPO) as child:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            written = [p for p in folder.rglob("*.wav") if p.stat().st_mtime >= started]
            if len(written) >= 3:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the stage finished before it could be killed"
        kill_session(child)
    pd.testing.assert_frame_equal(before, consistent(storage))
    # the next successful run removes the killed run's files and the superseded generation
    assert materialize(
        [manifest, cough_segments], selection=[cough_segments], partition_key="ccs", resources=segmented
    ).success
    consistent(storage)
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("first, second", [("a é", "a ü"), ("a b", "a_b"), ("ccs:x", "ccs_x"), ("x/y", "x_y")])
def test_artefact_stems_differ_for_ids_that_sanitise_alike(first, second):
    assert artefact_stem(first) != artefact_stem(second)
    assert "/" not in artefact_stem(first) and not artefact_stem(first).startswith(".")


def test_recordings_whose_ids_sanitise_alike_keep_their_own_segment_files(demo_corpus, tmp_path):
    build = build_manifest("ccs", demo_corpus / "ccs")
    rows = build.manifest[build.manifest["exclude_reason"].isna()].head(4).copy()
    rows["recording_id"] = ["ccs:a é", "ccs:a ü", "ccs:a b", "ccs:a_b"]
    run = SegmentationRun(
        methods={"hysteresis": HysteresisConfig()}, output_dir=tmp_path / "out", relative_to=tmp_path, workers=1
    )
    segments = segment_recordings(rows, demo_corpus / "ccs", run).segments
    assert segments["recording_id"].nunique() == 4
    assert not segments["path"].duplicated().any()
    assert len(list((tmp_path / "out").rglob("*.wav"))) == len(segments)


def test_the_artefact_check_fails_on_a_shared_or_absent_file(tmp_path):
    storage = build_resources(str(tmp_path / "data"), str(tmp_path / "w.duckdb"))["storage"]
    (storage.root_path / "a").mkdir(parents=True)
    (storage.root_path / "a" / "1.wav").write_bytes(b"x")
    assert artefact_paths_check(pd.DataFrame({"path": ["a/1.wav", None]}), storage, ["path"]).passed
    assert not artefact_paths_check(pd.DataFrame({"path": ["a/1.wav", "a/1.wav"]}), storage, ["path"]).passed
    assert not artefact_paths_check(pd.DataFrame({"path": ["a/2.wav"]}), storage, ["path"]).passed
    arrays = pd.DataFrame({"path": ["a/1.wav", "a/1.wav"], "row": [0, 1]})
    assert artefact_paths_check(arrays, storage, ["path"], index_column="row").passed
