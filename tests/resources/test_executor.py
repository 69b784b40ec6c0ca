"""Switching executors is configuration only: ``COUGH_PIPELINE_EXECUTOR`` picks the executor every job of the code
location runs with; unset, the jobs keep Dagster's default."""

from __future__ import annotations

import pytest

from resources.environment import settings_problems
from resources.executor import DEFAULT_CELERY_BACKEND, DEFAULT_CELERY_BROKER, build_executor


def test_unset_or_default_keeps_dagsters_default_executor():
    from dagster import Definitions, asset, define_asset_job

    assert build_executor({}) is None and build_executor({"COUGH_PIPELINE_EXECUTOR": "default"}) is None

    @asset
    def one() -> int:
        return 1

    job = Definitions(assets=[one], jobs=[define_asset_job("j")], executor=build_executor({})).resolve_job_def("j")
    assert job.executor_def.name == "multi_or_in_process_executor"


@pytest.mark.parametrize("name", ["in_process", "multiprocess"])
def test_the_local_executors_by_name(name):
    assert build_executor({"COUGH_PIPELINE_EXECUTOR": name}).name == name


def test_celery_gets_its_broker_and_backend_from_the_environment():
    executor = build_executor({"COUGH_PIPELINE_EXECUTOR": "celery"})
    assert executor.name == "celery"
    config = _resolved(executor)
    assert (config["broker"], config["backend"]) == (DEFAULT_CELERY_BROKER, DEFAULT_CELERY_BACKEND)
    custom = build_executor(
        {
            "COUGH_PIPELINE_EXECUTOR": "celery",
            "COUGH_PIPELINE_CELERY_BROKER": "redis://broker:6379/0",
            "COUGH_PIPELINE_CELERY_BACKEND": "redis://broker:6379/1",
        }
    )
    config = _resolved(custom)
    assert (config["broker"], config["backend"]) == ("redis://broker:6379/0", "redis://broker:6379/1")


def _resolved(executor) -> dict:
    """The executor's config as a run without execution config gets it."""
    result = executor.config_schema.resolve_config({})
    assert result.success, result.errors
    return result.value["config"]


def test_an_invalid_executor_is_one_line_naming_the_choices(monkeypatch):
    monkeypatch.setenv("COUGH_PIPELINE_EXECUTOR", "dask")
    assert settings_problems() == [
        "COUGH_PIPELINE_EXECUTOR='dask' is not an executor; choose one of default, in_process, multiprocess, celery"
    ]
    with pytest.raises(ValueError, match="is not an executor"):
        build_executor()
    monkeypatch.setenv("COUGH_PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("COUGH_PIPELINE_CELERY_BROKER", "localhost:6380")
    assert settings_problems() == [
        "COUGH_PIPELINE_CELERY_BROKER='localhost:6380' is not a URL (e.g. redis://127.0.0.1:6380/0)"
    ]
