"""The raw-data sensor: one run request for the partition whose files changed, none on a repeated tick."""

from __future__ import annotations

import json
import os

import pytest
from dagster import build_sensor_context

from assets.automation import folder_fingerprint, raw_data_sensor
from assets.definitions import defs
from cough_pipeline.schema import COVID_DATASETS
from resources.data_roots import DataRoots, env_var_for
from resources.storage import Storage


@pytest.fixture(autouse=True)
def no_roots_from_the_environment(monkeypatch):
    for dataset in COVID_DATASETS:
        monkeypatch.delenv(env_var_for(dataset), raising=False)


def _roots(tmp_path, **roots) -> DataRoots:
    return DataRoots(storage=Storage(root=str(tmp_path / "storage")), **{k: str(v) for k, v in roots.items()})


def _tick(roots: DataRoots, cursor: str | None):
    with build_sensor_context(cursor=cursor, resources={"data_roots": roots}, definitions=defs) as context:
        result = raw_data_sensor(context)
    return result, result.cursor


def test_fingerprint_notices_names_sizes_and_times_without_reading(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"1234")
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / ".hidden").write_bytes(b"x")
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "a.wav").write_bytes(b"12345")
    assert folder_fingerprint(tmp_path) != first
    sized = folder_fingerprint(tmp_path)
    os.utime(tmp_path / "a.wav", ns=(1, 1))
    assert folder_fingerprint(tmp_path) != sized


def test_a_new_file_requests_one_run_for_its_partition_and_a_repeated_tick_none(tmp_path):
    coughvid, coswara = tmp_path / "coughvid", tmp_path / "coswara"
    for root in (coughvid, coswara):
        root.mkdir()
        (root / "metadata.csv").write_text("uuid\n")
    roots = _roots(tmp_path, coughvid=coughvid, coswara=coswara)

    first, cursor = _tick(roots, None)
    assert not first.run_requests  # the first tick records what is there

    (coughvid / "new.webm").write_bytes(b"audio")
    added, cursor = _tick(roots, cursor)
    assert [(r.partition_key, r.job_name or "dataset_job") for r in added.run_requests] == [("coughvid", "dataset_job")]
    assert added.run_requests[0].run_key.startswith("coughvid:")

    again, cursor = _tick(roots, cursor)
    assert not again.run_requests

    (coughvid / "new.webm").unlink()
    removed, cursor = _tick(roots, cursor)
    assert [r.partition_key for r in removed.run_requests] == ["coughvid"]
    assert removed.run_requests[0].run_key != added.run_requests[0].run_key


def test_a_missing_root_is_reported_and_unconfigured_datasets_are_not_watched(tmp_path):
    present = tmp_path / "iatos"
    present.mkdir()
    roots = _roots(tmp_path, iatos=present, ccs=tmp_path / "not-there")
    result, cursor = _tick(roots, None)
    assert not result.run_requests
    assert "ccs" in result.skip_reason.skip_message
    assert set(json.loads(cursor)) == {"iatos"}
