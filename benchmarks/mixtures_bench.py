"""Cough-in-noise mixture generation rate (mixtures/s) with scaper, and the memory it needs.

Sources are the demo corpus's Virufy mp3 cough segments and CCS wavs (converted once to 44.1 kHz mono wav) over the
demo noise bank's train split. Figures:

* ``serial``: :data:`COUNT` mixtures in this process (one core), for the per-core cost;
* ``parallel``: the same :data:`COUNT` mixtures with :data:`WORKERS` spawned worker processes, end to end (pool
  start included) and in steady state (minus a ``count=0`` call's pool start and cache check);
* the projected time for the paper profile's 14,500 mixtures (three splits: three pool starts plus the mixtures
  at the steady rate) against the 15-minute target (>= 16.1 mixtures/s);
* peak RSS of this process (``RUSAGE_SELF``) and of the largest finished child (``RUSAGE_CHILDREN``). A child's
  ``ru_maxrss`` counts the parent pages it shares between fork and exec, so it never reads below the parent's RSS
  at that moment; the pool workers' own peak (``VmHWM`` of each live worker, sampled from ``/proc`` every 0.1 s)
  is reported as well;
* where one core's time goes (cProfile of a serial run): sox (pitch shift, time stretch, rate/channel check),
  LUFS loudness, wav writing, JAMS writing;
* CPU seconds per mixture in the workers (``RUSAGE_CHILDREN`` user + system, minus the pool start measured by a
  ``count=0`` call) and the rate two otherwise idle cores would give at that cost: wall-clock figures on a shared
  machine fall with its load, CPU time per mixture hardly does;
* the 1-minute load average before and after, because other work on the machine slows every figure.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import resource
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from benchmarks.common import stopwatch, write_result
from cough_pipeline.demo_corpus import generate_demo_corpus
from cough_pipeline.mixtures import PROFILES, generate_mixtures, load_noise_bank, split_noise_bank

COUNT = 200
WORKERS = 2
PROFILED_COUNT = 50
TARGET_S = 15 * 60
#: (figure name, function name as cProfile reports it, file it lives in): the costs worth telling apart.
COST_CENTRES = (
    ("sox_pitch_stretch_resample", "build_flow_effects", "effects.py"),
    ("lufs_loudness", "integrated_loudness", "meter.py"),
    ("wav_writing", "write", "soundfile.py"),
    ("jams_writing", "save", "jams/core.py"),
)


def demo_sources(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(coughs, train noise) from a freshly generated demo corpus under ``root``."""
    generate_demo_corpus(root, datasets=("virufy", "ccs"))
    paths = sorted((root / "virufy" / "clinical" / "segmented").glob("*/*.mp3")) + sorted(
        (root / "ccs" / "dist" / "wav").glob("*.wav")
    )
    coughs = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "recording_id": [p.stem for p in paths],
            "participant_id": [p.stem for p in paths],
        }
    )
    bank = split_noise_bank(load_noise_bank(root / "noise"), seed=0)
    return coughs, bank[bank["split"] == "train"]


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MB (``ru_maxrss`` is in KiB on Linux)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def _child_peaks_kib(parent: int) -> list[int]:
    """``VmHWM`` (KiB) of each live child process of ``parent``, read from ``/proc``."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == parent and "VmHWM" in fields:
            peaks.append(int(fields["VmHWM"].split()[0]))
    return peaks


@contextmanager
def sampled_child_peak_mb(interval_s: float = 0.1):
    """``with sampled_child_peak_mb() as peak: ...`` then ``peak()``: the largest worker ``VmHWM`` seen, in MB."""
    highest, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            highest[0] = max([highest[0], *_child_peaks_kib(os.getpid())])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: round(highest[0] / 1024, 1)
    finally:
        stop.set()
        sampler.join()


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (``RUSAGE_SELF``) or of its finished children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cost_shares(profile: cProfile.Profile) -> dict[str, float]:
    """Share of the profiled wall time spent inside each of :data:`COST_CENTRES` (cumulative time)."""
    stats = pstats.Stats(profile).stats
    total = max(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == "generate_mixtures")
    shares = {}
    for figure, function, filename in COST_CENTRES:
        seconds = sum(
            cumulative
            for (path, _, name), (_, _, _, cumulative, _) in stats.items()
            if name == function and path.endswith(filename)
        )
        shares[figure] = round(seconds / total, 3)
    return shares


def measure(folder: Path) -> dict:
    """Generate the demo mixtures cold, warm, over the pool and serially (then once under the profiler), in
    ``folder``; the raw timings, CPU times, memory and disk use."""
    coughs, noise = demo_sources(folder / "corpus")
    children_before_mb = peak_rss_mb(resource.RUSAGE_CHILDREN)
    out_dir, cache = folder / "mixtures", folder / "cache"

    def generate(count: int, workers: int):
        return generate_mixtures(
            coughs, noise, count=count, split="train", out_dir=out_dir, seed=0, workers=workers, cache_dir=cache
        )

    with stopwatch() as cold_start:
        generate(0, WORKERS)
    workers_cpu_before = cpu_s(resource.RUSAGE_CHILDREN)
    with stopwatch() as warm_start:
        generate(0, WORKERS)
    workers_start_cpu = cpu_s(resource.RUSAGE_CHILDREN) - workers_cpu_before
    with stopwatch() as parallel, sampled_child_peak_mb() as worker_peak_mb:
        result = generate(COUNT, WORKERS)
    workers_cpu = cpu_s(resource.RUSAGE_CHILDREN) - workers_cpu_before - 2 * workers_start_cpu
    serial_cpu_before = cpu_s(resource.RUSAGE_SELF)
    with stopwatch() as serial:
        generate(COUNT, 1)
    serial_cpu = cpu_s(resource.RUSAGE_SELF) - serial_cpu_before
    profile = cProfile.Profile()
    profile.enable()
    generate(PROFILED_COUNT, 1)
    profile.disable()
    written = [f for f in (out_dir / "train").rglob("*") if f.is_file()]
    mixture_files = [f for f in written if f.parent.name in ("mixture", "cough", "noise", "jams")]
    return {
        "coughs": len(coughs),
        "noise": len(noise),
        "result": result,
        "cold_start": cold_start(),
        "warm_start": warm_start(),
        "parallel": parallel(),
        "serial": serial(),
        "workers_cpu": workers_cpu,
        "serial_cpu": serial_cpu,
        "profile": profile,
        "bytes_per_mixture": sum(f.stat().st_size for f in mixture_files) / PROFILED_COUNT,
        "children_before_mb": children_before_mb,
        "worker_peak_mb": worker_peak_mb(),
    }


def run() -> Path:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        m = measure(Path(folder))
    result, warm_start, parallel, serial = m["result"], m["warm_start"], m["parallel"], m["serial"]
    bytes_per_mixture = m["bytes_per_mixture"]
    steady_rate = COUNT / (parallel - warm_start)
    cpu_per_mixture = m["workers_cpu"] / COUNT
    cpu_bound_rate = WORKERS / cpu_per_mixture
    paper_total = sum(PROFILES["paper"].count(split) for split in ("train", "validation", "test"))
    projected_s = 3 * warm_start + paper_total / steady_rate
    figures = {
        "mixtures": COUNT,
        "workers": WORKERS,
        "cough_files": m["coughs"],
        "noise_files": m["noise"],
        "rejected_coughs": len(result.rejected),
        "pitch_shifted_fraction": round(float(result.events["pitch_shift_applied"].mean()), 3),
        "time_stretched_fraction": round(float(result.events["time_stretch_applied"].mean()), 3),
        "serial_s": round(serial, 2),
        "serial_mixtures_per_s": round(COUNT / serial, 2),
        "parallel_end_to_end_s": round(parallel, 2),
        "parallel_end_to_end_mixtures_per_s": round(COUNT / parallel, 2),
        "pool_start_and_cache_check_s": round(warm_start, 2),
        "first_call_with_source_conversion_s": round(m["cold_start"], 2),
        "parallel_steady_mixtures_per_s": round(steady_rate, 2),
        "worker_cpu_s_per_mixture": round(cpu_per_mixture, 4),
        "serial_cpu_s_per_mixture": round(m["serial_cpu"] / COUNT, 4),
        "cpu_bound_mixtures_per_s_on_2_idle_cores": round(cpu_bound_rate, 2),
        "paper_profile_projected_min_on_2_idle_cores": round((3 * warm_start + paper_total / cpu_bound_rate) / 60, 1),
        "paper_profile_mixtures": paper_total,
        "paper_profile_projected_s": round(projected_s),
        "paper_profile_projected_min": round(projected_s / 60, 1),
        "target_s": TARGET_S,
        "target_mixtures_per_s": round(paper_total / TARGET_S, 1),
        "meets_target_as_measured": bool(projected_s <= TARGET_S),
        "meets_target_on_2_idle_cores": bool(3 * warm_start + paper_total / cpu_bound_rate <= TARGET_S),
        "disk_mb_per_mixture": round(bytes_per_mixture / 2**20, 2),
        "paper_profile_disk_gb": round(bytes_per_mixture * paper_total / 2**30, 1),
        "peak_rss_parent_mb": peak_rss_mb(resource.RUSAGE_SELF),
        "peak_rss_largest_child_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "peak_rss_children_before_generation_mb": m["children_before_mb"],
        "peak_rss_pool_worker_mb": m["worker_peak_mb"],
        "serial_time_shares": cost_shares(m["profile"]),
        # Other work on this machine slows every figure; a 1-minute load above the core count means contention.
        "load_average_1min_before_and_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    return write_result("mixtures", figures)
