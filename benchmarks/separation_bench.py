"""Cough separator on 5-second 44.1 kHz clips: batched inference, single-clip latency, training, streaming.

Each inference figure is one step of the optimisation ladder, so the JSON says what every step bought:

1. ``plain``: :class:`CoughSeparator` forward under ``torch.no_grad`` (torch.stft, complex abs/angle/polar,
   torch.istft), with glibc's default allocator;
2. ``+ inference_mode``;
3. ``+ retain_freed_memory``: glibc keeps freed blocks instead of unmapping them (no page faults per tensor);
4. ``+ folded``: :class:`InferenceSeparator` forward (BatchNorm and dB folded into the LSTM input weights, no
   complex abs/angle/polar, frames-first STFT, block overlap-add) with torch's ops and LSTM (``cpu_kernels=False``), in
   the calling thread with 2 intra-op threads;
5. ``+ cpu_kernels``: the same with the log power and the LSTM recurrence in the numba kernels of
   :mod:`cough_pipeline.separation.cpu_kernels` (the default);
6. ``+ workers``: :meth:`InferenceSeparator.separate`, batches on two single-threaded worker threads, over several
   batch sizes (the best is the headline).

Latency is for one clip: plain, folded with torch's ops and folded with the kernels, at 2 and 1 intra-op threads.
Training is one epoch of :func:`train_on_datasets` on
synthetic in-memory mixtures (batch 32), with the default allocator and with retained memory.
Streaming is :class:`StreamingSeparator` over one clip in chunks of 128,
441, 1024 and 4410 samples; RTF = processing seconds / audio seconds.

The machine may be shared: every timing is repeated and both the best and the median are kept, and the load average
before and after is recorded. The clips are seeded noise bursts over hum; speed does not depend on the weights
(inference uses a seeded untrained model with dB-like BatchNorm statistics).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from benchmarks.common import stopwatch, write_result
from cough_pipeline.allocator import release_freed_memory, retain_freed_memory
from cough_pipeline.separation.model import CoughSeparator, InferenceSeparator, SeparatorConfig
from cough_pipeline.separation.streaming import StreamingSeparator
from cough_pipeline.separation.training import TrainingConfig, train_on_datasets

THREADS = 2
CLIP_SECONDS = 5.0
RATE = 44_100
THROUGHPUT_CLIPS = 32
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
LATENCY_REPEATS = 50
TRAIN_MIXTURES = 64
STREAM_CHUNKS = (128, 441, 1024, 4410)


def synthetic_clips(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mixtures, coughs)``, each float32 ``(count, 220500)``: decaying noise bursts plus hum and noise."""
    rng = np.random.default_rng(seed)
    samples = int(CLIP_SECONDS * RATE)
    t = np.arange(samples) / RATE
    coughs = np.zeros((count, samples), np.float32)
    mixtures = np.zeros((count, samples), np.float32)
    for index in range(count):
        for onset in rng.uniform(0.2, CLIP_SECONDS - 0.6, size=rng.integers(1, 4)):
            start = int(onset * RATE)
            decay = np.exp(-t[: samples - start] / rng.uniform(0.05, 0.2))
            coughs[index, start:] += 0.4 * rng.standard_normal(samples - start) * decay
        hum = 0.1 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        mixtures[index] = coughs[index] + hum + 0.02 * rng.standard_normal(samples)
    return torch.from_numpy(mixtures), torch.from_numpy(coughs)


def realistic_untrained() -> CoughSeparator:
    """A seeded untrained separator in eval mode whose BatchNorm statistics look like dB spectra (speed does not
    depend on the weights; this keeps the LSTM out of saturation so the equality checks mean something)."""
    model = CoughSeparator()
    with torch.no_grad():
        model.masker.norm.running_mean.fill_(-60.0)
        model.masker.norm.running_var.fill_(400.0)
    return model.eval()


def timed(function, repeats: int, budget_s: float = 8.0) -> dict:
    """Best and median seconds of up to ``repeats`` calls after one warm-up call, stopping early once ``budget_s``
    is spent (an OpenMP path on a loaded machine can take seconds per call)."""
    function()
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < repeats and (not seconds or time.perf_counter() - started < budget_s):
        with stopwatch() as elapsed:
            function()
        seconds.append(elapsed())
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "runs": len(seconds)}


def throughput(function, clips: int, repeats: int = 3) -> dict:
    times = timed(function, repeats)
    return {"clips_per_s": round(clips / times["best_s"], 1), "clips_per_s_median": round(clips / times["median_s"], 1)}


def latency(function, repeats: int = LATENCY_REPEATS) -> dict:
    times = timed(function, repeats)
    return {"ms": round(1000 * times["best_s"], 2), "ms_median": round(1000 * times["median_s"], 2)}


def time_training(seed: int) -> dict:
    """Two epochs on in-memory mixtures: default allocator, then retained memory, at 2 and at 1 intra-op threads."""
    mixtures, coughs = synthetic_clips(TRAIN_MIXTURES + 8, seed)
    train = TensorDataset(mixtures[:TRAIN_MIXTURES], coughs[:TRAIN_MIXTURES])
    val = TensorDataset(mixtures[TRAIN_MIXTURES:], coughs[TRAIN_MIXTURES:])
    figures: dict = {"mixtures": TRAIN_MIXTURES, "batch_size": 32, "epochs": 2}
    runs = (
        ("default_allocator_2_threads", release_freed_memory, THREADS),
        ("retain_freed_memory_2_threads", retain_freed_memory, THREADS),
        ("retain_freed_memory_1_thread", retain_freed_memory, 1),
    )
    for label, allocator, threads in runs:
        allocator()
        training = TrainingConfig(epochs=2, batch_size=32, seed=seed, device="cpu", num_threads=threads)
        result = train_on_datasets(train, val, training, SeparatorConfig())
        figures[label] = {
            "mixtures_per_s": round(max(r["mixtures_per_s"] for r in result.history), 1),
            "per_epoch_mixtures_per_s": [round(r["mixtures_per_s"], 1) for r in result.history],
            "val_loss": [round(r["val_loss"], 5) for r in result.history],
        }
    best = max(figures[label]["mixtures_per_s"] for label, _, _ in runs)
    figures["mixtures_per_s"] = best
    figures["epoch_minutes_at_paper_size_12000"] = round(12_000 / best / 60, 1)
    return figures


def time_inference(model: CoughSeparator, clips: torch.Tensor) -> dict:
    fast = model.for_inference()
    fused = model.for_inference(cpu_kernels=False)
    batch = clips[:8]
    figures: dict = {"clips": int(clips.shape[0])}
    with torch.inference_mode():
        reference = model(clips)
        figures["max_abs_diff_folded_vs_plain"] = float((fused(clips) - reference).abs().max())
        figures["max_abs_diff_kernel_vs_plain"] = float((fast(clips) - reference).abs().max())
        figures["max_abs_diff_workers_vs_plain"] = float((fast.separate(clips) - reference).abs().max())

    ladder = {}
    release_freed_memory()
    with torch.no_grad():
        ladder["1_plain_no_grad_batch8"] = throughput(lambda: model(batch), 8)
    with torch.inference_mode():
        ladder["2_inference_mode_batch8"] = throughput(lambda: model(batch), 8)
        retain_freed_memory()
        ladder["3_retain_freed_memory_batch8"] = throughput(lambda: model(batch), 8)
        ladder["4_folded_batch8"] = throughput(lambda: fused(batch), 8)
        ladder["5_cpu_kernels_batch8"] = throughput(lambda: fast(batch), 8)
        ladder["6_workers"] = {
            f"batch_{size}": throughput(lambda size=size: fast.separate(clips, size), len(clips))
            for size in BATCH_SIZES
        }
    figures["ladder"] = ladder
    best_size, best = max(ladder["6_workers"].items(), key=lambda item: item[1]["clips_per_s"])
    figures["best"] = {"batch": best_size, **best, "target_clips_per_s": 150}

    one = clips[:1]
    single = {}
    with torch.inference_mode():
        for threads in (THREADS, 1):
            torch.set_num_threads(threads)
            suffix = f"{threads}_thread{'s' if threads > 1 else ''}"
            single[f"plain_{suffix}"] = latency(lambda: model(one))
            single[f"folded_torch_ops_{suffix}"] = latency(lambda: fused(one))
            single[f"folded_{suffix}"] = latency(lambda: fast(one))
        torch.set_num_threads(THREADS)
    figures["single_clip_latency"] = single
    best_name, best_latency = min(single.items(), key=lambda item: item[1]["ms"])
    figures["best_latency"] = {"path": best_name, **best_latency, "target_ms": 10}
    return figures


def time_streaming(model: CoughSeparator | InferenceSeparator, clip: torch.Tensor) -> dict:
    """RTF per chunk size: the default (one intra-op thread during each call) and with the caller's 2 or 1."""
    samples = clip.numpy()
    with torch.inference_mode():
        offline = model(clip.unsqueeze(0))[0].numpy()
    figures: dict = {
        "latency_samples": model.config.n_fft - 1,
        "latency_ms": round(1000 * (model.config.n_fft - 1) / model.config.sample_rate, 2),
    }

    def run_stream(streamer: StreamingSeparator, chunk: int) -> np.ndarray:
        streamer.reset()
        pieces = [streamer.process(samples[start : start + chunk]) for start in range(0, len(samples), chunk)]
        pieces.append(streamer.flush())
        return np.concatenate(pieces)

    for label, single_threaded, threads in (
        ("default_single_threaded", True, THREADS),
        ("caller_2_threads", False, THREADS),
        ("caller_1_thread", False, 1),
    ):
        torch.set_num_threads(threads)
        streamer = StreamingSeparator(model, single_threaded=single_threaded)
        for chunk in STREAM_CHUNKS:
            delayed = run_stream(streamer, chunk)
            times = timed(lambda streamer=streamer, chunk=chunk: run_stream(streamer, chunk), 3)
            figures[f"{label}_chunk_{chunk}"] = {
                "rtf": round(times["best_s"] / CLIP_SECONDS, 4),
                "rtf_median": round(times["median_s"] / CLIP_SECONDS, 4),
                "us_per_chunk": round(1e6 * times["best_s"] / -(-len(samples) // chunk), 1),
                "max_abs_diff_vs_offline": float(np.abs(delayed[streamer.latency_samples :] - offline).max()),
            }
    torch.set_num_threads(THREADS)
    return figures


def run() -> Path:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    try:
        started = time.perf_counter()
        torch.manual_seed(0)
        model = realistic_untrained()
        clips, _ = synthetic_clips(THROUGHPUT_CLIPS, seed=1)
        figures = {
            "threads": THREADS,
            "clip_seconds": CLIP_SECONDS,
            "sample_rate": RATE,
            "parameters": model.parameter_count(),
            "inference": time_inference(model, clips),
            "training": time_training(seed=0),
            "streaming": time_streaming(model, clips[0]),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "bench_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        torch.set_num_threads(previous_threads)
    return write_result("separation", figures)


if __name__ == "__main__":
    import json

    path = run()
    print(path)
    print(json.dumps(json.loads(path.read_text())["figures"], indent=2))
