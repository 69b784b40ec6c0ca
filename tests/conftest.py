"""Shared fixtures: the location of ../shared/data (read in place, never copied) and tiny audio writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_DATA = Path(
    os.environ.get("COUGH_PIPELINE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not available at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


def write_tone(
    path: Path, seconds: float = 0.5, sample_rate: int = 16_000, frequency: float = 440.0, subtype: str = "PCM_16"
) -> Path:
    """A short sine tone as a wav (distinct frequencies give distinct content hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * frequency * t), sample_rate, subtype=subtype)
    return path


@pytest.fixture(autouse=True)
def _isolated_dagster_env(tmp_path_factory, monkeypatch):
    """No test reads or writes the developer's dagster_home or configured dataset roots."""
    home = tmp_path_factory.mktemp("dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("COUGH_PIPELINE_") and name != "COUGH_PIPELINE_SHARED_DATA":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The small demo corpus, generated once per test session (tests that modify it copy a dataset first)."""
    from cough_pipeline.demo_corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo_corpus")
    generate_demo_corpus(root)
    return root
