"""Which executor the jobs run their steps with, chosen by ``COUGH_PIPELINE_EXECUTOR`` (configuration only: the
assets and jobs are the same whichever is chosen).

* unset or ``default``: Dagster's own default, ``multi_or_in_process_executor`` (a subprocess per step, or one
  process when run config says so): what ``make demo``, ``make ui`` and the tests use;
* ``in_process``: every step in the run's process;
* ``multiprocess``: a subprocess per step, always;
* ``celery``: every step is a Celery task, run by whichever worker takes it (``make services`` starts two), with
  the broker and result backend from ``COUGH_PIPELINE_CELERY_BROKER`` / ``COUGH_PIPELINE_CELERY_BACKEND`` (by
  default the Redis that ``make services`` starts). The run and the workers must share an instance that is not
  SQLite-in-a-folder-of-one-host (``deploy/dagster.yaml``: PostgreSQL) and the storage root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # dagster is imported when an executor is built, so the settings check stays quick
    from dagster import ExecutorDefinition

EXECUTOR = "COUGH_PIPELINE_EXECUTOR"
CELERY_BROKER = "COUGH_PIPELINE_CELERY_BROKER"
CELERY_BACKEND = "COUGH_PIPELINE_CELERY_BACKEND"
EXECUTORS = ("default", "in_process", "multiprocess", "celery")
#: The Redis of ``make services`` (``deploy/services.py``): database 0 carries the tasks, database 1 their results.
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6380/0"
DEFAULT_CELERY_BACKEND = "redis://127.0.0.1:6380/1"


def executor_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """One line when ``COUGH_PIPELINE_EXECUTOR`` names no executor (or Celery cannot be imported); else ``None``."""
    name = environ.get(EXECUTOR, "")
    if name and name not in EXECUTORS:
        return f"{EXECUTOR}={name!r} is not an executor; choose one of {', '.join(EXECUTORS)}"
    if name == "celery":
        import importlib.util

        if importlib.util.find_spec("dagster_celery") is None:
            return f"{EXECUTOR}=celery needs the dagster-celery package, which is not installed; run make install"
    for setting in (CELERY_BROKER, CELERY_BACKEND):
        value = environ.get(setting, "")
        if value and "://" not in value:
            return f"{setting}={value!r} is not a URL (e.g. {DEFAULT_CELERY_BROKER})"
    return None


def celery_urls(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(broker, result backend) for the Celery executor and its workers."""
    return (
        environ.get(CELERY_BROKER) or DEFAULT_CELERY_BROKER,
        environ.get(CELERY_BACKEND) or DEFAULT_CELERY_BACKEND,
    )


def build_executor(environ: Mapping[str, str] = os.environ) -> ExecutorDefinition | None:
    """The executor ``COUGH_PIPELINE_EXECUTOR`` names; ``None`` (Dagster's default) when it is unset or
    ``default``. Raises ``ValueError`` with the settings check's message for an invalid value."""
    problem = executor_problem(environ)
    if problem:
        raise ValueError(problem)
    from dagster import in_process_executor, multiprocess_executor

    name = environ.get(EXECUTOR, "") or "default"
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        broker, backend = celery_urls(environ)
        return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")
    return None
