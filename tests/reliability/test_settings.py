"""Settings are never silently ignored: the environment wins over the Makefile, and every command checks its
settings first, failing in one line that names the setting (and the allowed values) before it touches anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.environment import KNOWN, settings_problems
from resources.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[2]
PRINT_HOME = ["make", "-s", "--no-print-directory", "--eval", "print-home: ; @echo $(DAGSTER_HOME)", "print-home"]
COMMANDS = {"backfill": ["-m", "assets.backfill", "--partition", "ccs"], "demo": ["-m", "assets.demo"]}


def _run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The test's environment with storage and catalog under ``tmp_path`` plus ``settings``."""
    return {
        **os.environ,
        "COUGH_PIPELINE_STORAGE": str(tmp_path / "data"),
        "COUGH_PIPELINE_CATALOG": str(tmp_path / "warehouse.duckdb"),
        **settings,
    }


def test_dagster_home_from_the_environment_wins_over_the_makefile(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    assert subprocess.run(
        PRINT_HOME, cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout.strip() == str(tmp_path)
    without = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
    assert subprocess.run(
        PRINT_HOME, cwd=REPO, env=without, capture_output=True, text=True, check=True
    ).stdout.strip() == str(REPO / "dagster_home")


def test_the_makefile_checks_settings_before_the_ui():
    makefile = (REPO / "Makefile").read_text()
    ui = makefile[makefile.index("\nui:") :]
    assert ui.index("$(PY) -m resources.environment") < ui.index("dagster dev")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_profile_stops_the_command_before_anything_is_written(command, tmp_path):
    home = Path(os.environ["DAGSTER_HOME"])
    completed = _run(COMMANDS[command], _environment(tmp_path, COUGH_PIPELINE_PROFILE="bogus"))
    assert completed.returncode != 0
    assert completed.stderr.splitlines() == [
        "COUGH_PIPELINE_PROFILE='bogus' is not a profile; choose one of demo, modest, paper"
    ]
    assert list(home.iterdir()) == []  # no run recorded: not even the instance's database was created
    assert not (tmp_path / "data").exists() and not (tmp_path / "warehouse.duckdb").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unwritable_dagster_home_is_one_line_not_a_traceback(command, tmp_path):
    (tmp_path / "a_file").write_text("")
    home = tmp_path / "a_file" / "dagster_home"
    completed = _run(COMMANDS[command], _environment(tmp_path, DAGSTER_HOME=str(home)))
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert completed.stderr.splitlines() == [
        f"DAGSTER_HOME={home} is not writable: Not a directory ({tmp_path / 'a_file'} is a file)"
    ]


def test_a_misspelt_setting_is_reported_with_the_known_ones(tmp_path):
    completed = _run(COMMANDS["backfill"], _environment(tmp_path, COUGH_PIPELINE_PROFLE="paper"))
    assert completed.returncode != 0
    [line] = completed.stderr.splitlines()
    assert line.startswith("COUGH_PIPELINE_PROFLE is not a setting; did you mean COUGH_PIPELINE_PROFILE?")
    assert all(name in line for name in KNOWN)
    assert list(Path(os.environ["DAGSTER_HOME"]).iterdir()) == []


def test_the_settings_command_prints_the_effective_settings_or_exits_2(tmp_path):
    completed = _run(["-m", "resources.environment"], _environment(tmp_path, COUGH_PIPELINE_PROFILE="modest"))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["DAGSTER_HOME", os.environ["DAGSTER_HOME"], "(environment)"]
    assert ["COUGH_PIPELINE_PROFILE", "modest", "(environment)"] in [line.split() for line in lines]
    bad = _run(
        ["-m", "resources.environment"],
        _environment(tmp_path, COUGH_PIPELINE_PROFILE="bogus", COUGH_PIPELINE_CCS_ROOT=str(tmp_path / "no")),
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 2


def test_each_setting_is_checked(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    model = tmp_path / "model"
    model.mkdir()
    ok = {
        "DAGSTER_HOME": str(tmp_path / "new" / "home"),
        "COUGH_PIPELINE_PROFILE": "paper",
        "COUGH_PIPELINE_STORAGE": str(tmp_path / "data"),
        "COUGH_PIPELINE_CATALOG": str(tmp_path / "w.duckdb"),
        "COUGH_PIPELINE_COUGHVID_ROOT": str(tmp_path),
        "COUGH_PIPELINE_NOISE_ROOT": str(tmp_path),
        "COUGH_PIPELINE_SHARED_DATA": "/anywhere",
    }
    assert settings_problems(ok) == []
    assert not (tmp_path / "new").exists()  # checking creates nothing
    bad = {
        "DAGSTER_HOME": "relative/home",
        "COUGH_PIPELINE_STORAGE": str(a_file / "data"),
        "COUGH_PIPELINE_CATALOG": str(a_file / "w.duckdb"),
        "COUGH_PIPELINE_ICBHI_ROOT": str(tmp_path / "none"),
        "COUGH_PIPELINE_COUGH_MODEL_DIR": str(model),
        "COUGH_PIPELINE_COUGHVID_ROOTS": "/data",
    }
    problems = settings_problems(bad)
    assert [p.split("=")[0].split()[0] for p in problems] == [
        "DAGSTER_HOME",
        "COUGH_PIPELINE_STORAGE",
        "COUGH_PIPELINE_CATALOG",
        "COUGH_PIPELINE_ICBHI_ROOT",
        "COUGH_PIPELINE_COUGH_MODEL_DIR",
        "COUGH_PIPELINE_COUGHVID_ROOTS",
    ]
    assert "must be an absolute path" in problems[0]
    assert "cough_classifier.json" in problems[4]
    assert "did you mean COUGH_PIPELINE_COUGHVID_ROOT?" in problems[5]
    for name in ("cough_classifier.json", "cough_classification_scaler.json"):
        (model / name).write_text("{}")
    assert settings_problems({"COUGH_PIPELINE_COUGH_MODEL_DIR": str(model)}) == []


def test_a_bad_profile_in_config_or_environment_names_the_setting(monkeypatch):
    with pytest.raises(
        ValueError,
        match=r"^resources\.settings\.config\.profile='bogus' is not a profile; "
        r"choose one of demo, modest, paper$",
    ):
        PipelineSettings(profile="bogus").scale()
    monkeypatch.setenv("COUGH_PIPELINE_PROFILE", "huge")
    with pytest.raises(
        ValueError,
        match=r"^COUGH_PIPELINE_PROFILE='huge' is not a profile; choose one of demo, "
        r"modest, paper$",
    ):
        PipelineSettings().scale()
    monkeypatch.setenv("COUGH_PIPELINE_PROFILE", "modest")
    assert PipelineSettings().scale().name == "modest"
    monkeypatch.setenv("COUGH_PIPELINE_PROFILE", "")
    assert PipelineSettings().scale().name == "demo"
