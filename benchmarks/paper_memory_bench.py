"""Peak memory of a paper-profile separation run: it should stay under 4 GB because nothing holds all mixtures in
RAM.

Runs ``python -m cough_pipeline.separation.experiment --profile paper`` on the real coughs and ESC-50 noise in the
shared data folder (``$COUGH_PIPELINE_SHARED_DATA``, by default ``shared/data`` beside the repository): all
14,500 mixtures (12,000 / 1,500 / 1,000) are generated with two worker processes, then the separator and the
SNIP-pruned separator train over the 12,000 training mixtures. Two shortcuts keep the run under an hour on 2 cores,
neither of which changes what is held in memory: ``EPOCHS`` epochs instead of 50 (every epoch reads the same files
through the same lazy data set) and the museval report on the first ``TEST_LIMIT`` test mixtures (it scores one
clip at a time).

Memory is sampled from ``/proc`` every 0.2 s: ``peak_tree_rss_mb`` is the largest sum of ``VmRSS`` over the
experiment process and all its descendants (an overestimate: pages shared between the parent and its forked
workers are counted once per process), ``peak_process_rss_mb`` the largest single process. The mixtures go to a
temporary folder on disk (about 38 GB of 32-bit WAVs) that is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import write_result

EPOCHS = 1
TEST_LIMIT = 100
LIMIT_MB = 4096
SHARED = Path(os.environ.get("COUGH_PIPELINE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemorySampler(threading.Thread):
    """Samples the summed and the largest RSS of a process and its descendants until :meth:`stop`."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.peak_tree_mb = self.peak_process_mb = 0.0
        self.peak_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree, pending, pids = _children(), [self.pid], []
            while pending:
                pid = pending.pop()
                pids.append(pid)
                pending.extend(tree.get(pid, []))
            sizes = [_rss_mb(pid) for pid in pids]
            self.peak_tree_mb = max(self.peak_tree_mb, sum(sizes))
            self.peak_process_mb = max(self.peak_process_mb, max(sizes, default=0.0))
            self.peak_processes = max(self.peak_processes, len(pids))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run() -> Path:
    if not (SHARED / "virufy").is_dir() or not (SHARED / "esc50").is_dir():
        raise SystemExit(f"paper_memory needs the shared data (virufy, esc50); not found at {SHARED}")
    scratch = Path(tempfile.mkdtemp(prefix="paper_memory_", dir=os.environ.get("COUGH_PIPELINE_SCRATCH")))
    command = [
        sys.executable,
        "-m",
        "cough_pipeline.separation.experiment",
        "--virufy",
        str(SHARED / "virufy"),
        "--esc50",
        str(SHARED / "esc50"),
        "--out",
        str(scratch),
        "--profile",
        "paper",
        "--epochs",
        str(EPOCHS),
        "--test-limit",
        str(TEST_LIMIT),
    ]
    started = time.perf_counter()
    try:
        process = subprocess.Popen(command)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        returncode = process.wait()
        sampler.stop()
        if returncode:
            raise SystemExit(f"paper-profile experiment failed with exit code {returncode}")
        report = json.loads((scratch / "report.json").read_text())
        disk_gb = sum(f.stat().st_size for f in (scratch / "mixtures").rglob("*") if f.is_file()) / 1e9
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mixtures = sum(report["mixtures_per_split"].values())
    figures = {
        "profile": "paper",
        "epochs": EPOCHS,
        "test_mixtures_evaluated": report["test_mixtures_evaluated"],
        "mixtures_per_split": report["mixtures_per_split"],
        "peak_tree_rss_mb": round(sampler.peak_tree_mb),
        "peak_process_rss_mb": round(sampler.peak_process_mb),
        "peak_processes": sampler.peak_processes,
        "limit_mb": LIMIT_MB,
        "under_limit": sampler.peak_tree_mb < LIMIT_MB,
        "mixtures_on_disk_gb": round(disk_gb, 1),
        "mixture_generation_s": report["mixture_generation_s"],
        "mixtures_per_s": round(mixtures / report["mixture_generation_s"], 1),
        "separator_training_s": report["separator_training_s"],
        "evaluation_s": report["evaluation_s"],
        "total_s": round(time.perf_counter() - started, 1),
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
    }
    return write_result("paper_memory", figures)
