"""Settings of the pipeline's automation, read from the environment when the code location loads.

* ``COUGH_PIPELINE_RETRAINING_CRON``: when the retraining schedule fires (default ``0 3 * * 1``: Mondays 03:00).
* ``COUGH_PIPELINE_RETRAINING_SCHEDULE``: ``stopped`` (default) or ``running``: the schedule's status until someone
  turns it on or off in the UI (the UI's choice wins from then on).
* ``COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS``: the champion check warns when the champion model was trained longer ago
  than this (default 30 days).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RETRAINING_CRON = "COUGH_PIPELINE_RETRAINING_CRON"
RETRAINING_SCHEDULE = "COUGH_PIPELINE_RETRAINING_SCHEDULE"
CHAMPION_MAX_AGE_DAYS = "COUGH_PIPELINE_CHAMPION_MAX_AGE_DAYS"
SETTINGS = (RETRAINING_CRON, RETRAINING_SCHEDULE, CHAMPION_MAX_AGE_DAYS)

DEFAULT_RETRAINING_CRON = "0 3 * * 1"
DEFAULT_CHAMPION_MAX_AGE_DAYS = 30.0
SCHEDULE_STATUSES = ("stopped", "running")


def operations_problems(environ: Mapping[str, str] = os.environ) -> list[str]:
    """One line per automation setting that is malformed; empty when all are fine (or unset)."""
    problems = []
    cron = environ.get(RETRAINING_CRON, "")
    # Dagster's own cron check, imported only when needed: commands such as `make predict` start without Dagster.
    if cron and not _valid_cron(cron):
        problems.append(f"{RETRAINING_CRON}={cron!r} is not a cron expression (e.g. {DEFAULT_RETRAINING_CRON!r})")
    status = environ.get(RETRAINING_SCHEDULE, "")
    if status and status not in SCHEDULE_STATUSES:
        problems.append(f"{RETRAINING_SCHEDULE}={status!r} must be one of {', '.join(SCHEDULE_STATUSES)}")
    age = environ.get(CHAMPION_MAX_AGE_DAYS, "")
    if age:
        try:
            valid = float(age) > 0
        except ValueError:
            valid = False
        if not valid:
            problems.append(f"{CHAMPION_MAX_AGE_DAYS}={age!r} must be a positive number of days")
    return problems


def _valid_cron(cron: str) -> bool:
    from dagster._utils.schedules import is_valid_cron_string

    return is_valid_cron_string(cron)


def _checked(environ: Mapping[str, str]) -> None:
    problems = operations_problems(environ)
    if problems:
        raise ValueError("; ".join(problems))


def retraining_cron(environ: Mapping[str, str] = os.environ) -> str:
    _checked(environ)
    return environ.get(RETRAINING_CRON) or DEFAULT_RETRAINING_CRON


def retraining_status(environ: Mapping[str, str] = os.environ) -> str:
    """``"stopped"`` or ``"running"``."""
    _checked(environ)
    return environ.get(RETRAINING_SCHEDULE) or "stopped"


def champion_max_age_days(environ: Mapping[str, str] = os.environ) -> float:
    _checked(environ)
    return float(environ.get(CHAMPION_MAX_AGE_DAYS) or DEFAULT_CHAMPION_MAX_AGE_DAYS)
