"""The settings read from the environment, checked before any command touches the instance or a file.

``python -m resources.environment`` (``make settings``) prints the effective settings, or one line per problem on
stderr and exits with status 2. ``make demo``, ``make backfill`` and ``make ui`` run the same checks first, so a
typo or a bad value fails at once, in one line naming the setting, instead of being ignored or failing mid-run.

Nothing here creates a folder or leaves a file behind: a path that does not exist yet is probed in its nearest
existing parent.
"""

from __future__ import annotations

import difflib
import errno
import os
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from cough_pipeline.profiles import PROFILES
from cough_pipeline.schema import ALL_DATASETS
from resources.executor import CELERY_BACKEND, CELERY_BROKER, EXECUTOR, celery_urls, executor_problem
from resources.operations import (
    CHAMPION_MAX_AGE_DAYS,
    DEFAULT_CHAMPION_MAX_AGE_DAYS,
    DEFAULT_RETRAINING_CRON,
    RETRAINING_CRON,
    RETRAINING_SCHEDULE,
    operations_problems,
)
from resources.operations import SETTINGS as AUTOMATION_SETTINGS

PREFIX = "COUGH_PIPELINE_"
PROFILE = "COUGH_PIPELINE_PROFILE"
DEFAULT_PROFILE = "demo"
STORAGE = "COUGH_PIPELINE_STORAGE"
CATALOG = "COUGH_PIPELINE_CATALOG"
COUGH_MODEL_DIR = "COUGH_PIPELINE_COUGH_MODEL_DIR"
#: Where failure alerts are POSTed (``resources.alerts``).
ALERT_WEBHOOK = "COUGH_PIPELINE_ALERT_WEBHOOK"
#: Scratch folder of the paper-memory benchmark.
SCRATCH = "COUGH_PIPELINE_SCRATCH"
#: Raw-data roots (``resources.data_roots``): every dataset a loader exists for, the noise bank and ESC-50 (the
#: distillation stage).
ROOT_SOURCES = ALL_DATASETS + ("noise", "esc50")
ROOTS = {f"{PREFIX}{source.upper()}_ROOT": source for source in ROOT_SOURCES}
#: Where the test suite finds the real-data samples; not a pipeline setting, so never reported.
EXEMPT = frozenset({"COUGH_PIPELINE_SHARED_DATA"})
KNOWN = (
    PROFILE,
    STORAGE,
    CATALOG,
    COUGH_MODEL_DIR,
    ALERT_WEBHOOK,
    SCRATCH,
    EXECUTOR,
    CELERY_BROKER,
    CELERY_BACKEND,
    *AUTOMATION_SETTINGS,
    *ROOTS,
)
#: The files a pretrained cough model folder holds: either set is enough (``resources.cough_model``).
COUGH_MODEL_FILE_SETS = (("cough_classifier.json", "cough_classification_scaler.json"), ("booster.json", "scaler.json"))


def profile_problem(setting: str, value: str) -> str | None:
    """One line when ``value`` is not a profile name, naming ``setting`` and the profiles; ``None`` when it is."""
    if value in PROFILES:
        return None
    return f"{setting}={value!r} is not a profile; choose one of {', '.join(PROFILES)}"


def dagster_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$DAGSTER_HOME``, else ``./dagster_home`` (the Makefile default)."""
    return Path(environ.get("DAGSTER_HOME") or "dagster_home").expanduser().resolve()


def prepare_dagster_home(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Create the Dagster home (Dagster wants an existing folder) and set ``$DAGSTER_HOME`` to its absolute path, so
    runs and tables land in the same place when it was unset; call after :func:`check_settings`."""
    home = dagster_home(environ)
    home.mkdir(parents=True, exist_ok=True)
    environ["DAGSTER_HOME"] = str(home)
    return home


def settings_problems(environ: Mapping[str, str] = os.environ) -> list[str]:
    """One line per setting that is unknown, malformed or unusable; empty when every setting is fine."""
    problems = []
    home = environ.get("DAGSTER_HOME", "")
    if home and not os.path.isabs(os.path.expanduser(home)):
        problems.append(f"DAGSTER_HOME={home} must be an absolute path (Dagster requires one)")
    else:
        problems += _writable_folder(f"DAGSTER_HOME={dagster_home(environ)}", dagster_home(environ))
    profile = environ.get(PROFILE, "")
    if profile:
        problems += filter(None, [profile_problem(PROFILE, profile)])
    problems += filter(None, [executor_problem(environ)])
    problems += operations_problems(environ)
    if environ.get(STORAGE):
        problems += _writable_folder(f"{STORAGE}={environ[STORAGE]}", Path(environ[STORAGE]).expanduser())
    if environ.get(CATALOG):
        catalog = Path(environ[CATALOG]).expanduser()
        if catalog.is_dir():
            problems.append(f"{CATALOG}={catalog} is a folder; it names the DuckDB catalog file")
        else:
            problems += _writable_folder(
                f"{CATALOG}={catalog}", catalog.parent, what="is in a folder that is not writable"
            )
    if environ.get(SCRATCH):
        problems += _writable_folder(f"{SCRATCH}={environ[SCRATCH]}", Path(environ[SCRATCH]).expanduser())
    for name in ROOTS:
        if environ.get(name) and not Path(environ[name]).expanduser().is_dir():
            problems.append(f"{name}={environ[name]} is not an existing folder (unset it to use the demo corpus)")
    if environ.get(COUGH_MODEL_DIR):
        folder = Path(environ[COUGH_MODEL_DIR]).expanduser()
        if not any(all((folder / name).is_file() for name in files) for files in COUGH_MODEL_FILE_SETS):
            problems.append(
                f"{COUGH_MODEL_DIR}={folder} holds neither "
                + " nor ".join(" + ".join(files) for files in COUGH_MODEL_FILE_SETS)
                + " (unset it to train the cough filter)"
            )
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in KNOWN and name not in EXEMPT:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"{name} is not a setting; {hint}known settings: {', '.join(KNOWN)}")
    return problems


def _writable_folder(setting: str, path: Path, what: str = "is not writable") -> list[str]:
    """``[]`` when ``path`` is a folder, or could be created as one, that accepts a new file; else one line
    ``"<setting> <what>: <reason>"``."""
    existing = path.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"{setting} {what}: {os.strerror(errno.ENOTDIR)} ({existing} is a file)"]
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".settings-probe-"):
            pass
    except OSError as error:
        return [f"{setting} {what}: {error.strerror or error}"]
    return []


def effective_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each setting's value and where it comes from, as the pipeline will use it."""
    home = dagster_home(environ)

    def chosen(name: str, default: str) -> str:
        return f"{environ[name]}  (environment)" if environ.get(name) else f"{default}  (default)"

    settings = {
        "DAGSTER_HOME": chosen("DAGSTER_HOME", str(home)),
        PROFILE: chosen(PROFILE, DEFAULT_PROFILE),
        STORAGE: chosen(STORAGE, str(home / "data")),
        CATALOG: chosen(CATALOG, str(home / "warehouse.duckdb")),
        COUGH_MODEL_DIR: chosen(COUGH_MODEL_DIR, "none: the cough filter is trained"),
        EXECUTOR: chosen(EXECUTOR, "default: Dagster's multi_or_in_process_executor"),
    }
    if environ.get(EXECUTOR) == "celery":
        broker, backend = celery_urls(environ)
        settings[CELERY_BROKER] = chosen(CELERY_BROKER, broker)
        settings[CELERY_BACKEND] = chosen(CELERY_BACKEND, backend)
    settings[RETRAINING_CRON] = chosen(RETRAINING_CRON, DEFAULT_RETRAINING_CRON)
    settings[RETRAINING_SCHEDULE] = chosen(RETRAINING_SCHEDULE, "stopped")
    settings[CHAMPION_MAX_AGE_DAYS] = chosen(CHAMPION_MAX_AGE_DAYS, str(DEFAULT_CHAMPION_MAX_AGE_DAYS))
    settings.update({name: chosen(name, "demo corpus") for name in ROOTS})
    if environ.get(SCRATCH):
        settings[SCRATCH] = chosen(SCRATCH, "")
    return settings


def check_settings(environ: Mapping[str, str] = os.environ) -> None:
    """Exit with status 2 after printing one line per problem on stderr; return when every setting is fine."""
    problems = settings_problems(environ)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise SystemExit(2)


def main() -> int:
    check_settings()
    settings = effective_settings()
    width = max(map(len, settings))
    for name, value in settings.items():
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
