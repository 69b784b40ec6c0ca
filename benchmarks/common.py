"""Timing helpers and the JSON result writer shared by every benchmark."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def stopwatch():
    """``with stopwatch() as elapsed: ...`` then ``elapsed()`` gives the seconds taken."""
    started = time.perf_counter()
    finished: list[float] = []
    yield lambda: (finished[0] if finished else time.perf_counter()) - started
    finished.append(time.perf_counter())


def machine() -> dict:
    """What the figures were measured on: CPU count, platform and Python version."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_result(name: str, figures: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the figures, the machine and the time of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def best_of(repeats: int, task) -> float:
    """Shortest wall time of ``repeats`` calls of ``task``."""
    times = []
    for _ in range(repeats):
        with stopwatch() as elapsed:
            task()
        times.append(elapsed())
    return min(times)
