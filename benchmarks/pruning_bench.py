"""SNIP-pruned separator: how much the sparse inference path saves, at the layer and for the whole model.

A separator with random (seeded) weights is pruned by SNIP to 1 % of its mask layer (``masker.output.weight``,
Linear 50 -> 257) on synthetic 5-second (mixture, cough) batches; timing does not depend on the weights' values.
Figures, all on this machine's CPU with PyTorch's default thread count and glibc told to keep freed memory
(:func:`~cough_pipeline.allocator.retain_freed_memory`, as the inference jobs do):

* ``layer``: the mask layer alone, dense (zeros multiplied) vs :class:`SparseLinear`, on the LSTM output of one
  clip and of a batch of 32 clips, at the SNIP density and over a sweep of random-mask densities (which sets
  :data:`~cough_pipeline.separation.pruning.SPARSE_DENSITY_LIMIT`);
* ``whole_model``: one clip and a batch of 32 through the masked reference model, the folded dense model
  (:meth:`CoughSeparator.for_inference`) and the folded sparse model (:func:`optimize_for_inference`); the
  sparsity's own gain is folded sparse vs folded dense;
* ``complexity``: :func:`complexity_table` for the dense and pruned models, and where the FLOPs go.

Timings of the compared variants are interleaved run by run, so that load from other processes hits them alike,
and reported as the best (least disturbed) and the median run, with speed-ups on both; the 1-minute load average
before and after is recorded. The complexity table's latencies are medians.
"""

from __future__ import annotations

import copy
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import stopwatch, write_result
from cough_pipeline.allocator import retain_freed_memory
from cough_pipeline.separation.complexity import complexity_table, cost_breakdown
from cough_pipeline.separation.model import CoughSeparator, SeparatorConfig
from cough_pipeline.separation.pruning import (
    PruningConfig,
    SparseLinear,
    apply_masks,
    mask_report,
    optimize_for_inference,
    snip_masks,
)

CLIP_SECONDS = 5.0
BATCH_SIZE = 32
SNIP_BATCHES = 4
SNIP_BATCH_SIZE = 8
SWEEP_DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1)
LAYER_RUNS = {"single_clip": 100, "batch": 10}
MODEL_RUNS = {"single_clip": 20, "batch": 5}
WARMUP_RUNS = 2


def synthetic_pairs(
    batches: int, batch_size: int, samples: int, sample_rate: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(mixture, cough)`` float32 ``(batch_size, samples)`` batches: a decaying noise burst per clip in noise."""
    generator = torch.Generator().manual_seed(seed)
    time_axis = torch.arange(samples) / sample_rate
    pairs = []
    for _ in range(batches):
        onsets = torch.rand(batch_size, 1, generator=generator) * (CLIP_SECONDS - 0.5)
        since_onset = (time_axis - onsets).clamp_min(0)
        envelope = torch.where(time_axis >= onsets, torch.exp(-since_onset / 0.08), torch.zeros(()))
        cough = 0.5 * envelope * torch.randn(batch_size, samples, generator=generator)
        noise = 0.05 * torch.randn(batch_size, samples, generator=generator)
        pairs.append((cough + noise, cough))
    return pairs


def interleaved_ms(calls: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Milliseconds of each call over ``runs`` rounds (after warm-up); every round runs each call once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            for _ in range(WARMUP_RUNS):
                call()
        for _ in range(runs):
            for name, call in calls.items():
                with stopwatch() as elapsed:
                    call()
                times[name].append(1e3 * elapsed())
    return times


def timing_figures(times: dict[str, list[float]], baseline: str, candidates: tuple[str, ...]) -> dict:
    """Best and median milliseconds per call, and each candidate's speed-up over ``baseline`` on both."""
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    figures = {name: {"best_ms": round(best[name], 3), "median_ms": round(median[name], 3)} for name in times}
    for name in candidates:
        figures[name]["speed_up_best"] = round(best[baseline] / best[name], 2)
        figures[name]["speed_up_median"] = round(median[baseline] / median[name], 2)
    return figures


def randomly_pruned(layer: nn.Linear, density: float, seed: int) -> nn.Linear:
    """A copy of ``layer`` keeping ``round(density * n)`` weights at random positions."""
    generator = torch.Generator().manual_seed(seed)
    pruned = copy.deepcopy(layer)
    keep = torch.randperm(pruned.weight.numel(), generator=generator)[: round(density * pruned.weight.numel())]
    mask = torch.zeros(pruned.weight.numel(), dtype=torch.bool)
    mask[keep] = True
    with torch.no_grad():
        pruned.weight.mul_(mask.view_as(pruned.weight))
    return pruned


def time_layer(dense: nn.Linear, hidden: dict[str, torch.Tensor]) -> dict:
    """Dense vs sparse milliseconds on each input ``(batch, frames, in_features)``, with the sparse speed-up."""
    sparse = SparseLinear.from_dense(dense)
    figures = {"nnz": sparse.nnz, "density": round(sparse.nnz / dense.weight.numel(), 4)}
    for case, features in hidden.items():
        times = interleaved_ms(
            {"dense": lambda x=features: dense(x), "sparse": lambda x=features: sparse(x)}, LAYER_RUNS[case]
        )
        figures[case] = timing_figures(times, "dense", ("sparse",))
    return figures


def time_whole_model(models: dict[str, nn.Module], waves: dict[str, torch.Tensor]) -> dict:
    """Milliseconds per forward of each model on one clip and on a batch; speed-ups over the masked reference.

    The sparsity's own gain is ``folded_sparse`` over ``folded_dense`` (both folded the same way).
    """
    figures = {}
    for case, wave in waves.items():
        times = interleaved_ms(
            {name: (lambda m=model, x=wave: m(x)) for name, model in models.items()}, MODEL_RUNS[case]
        )
        figures[case] = {
            "clips": wave.shape[0],
            **timing_figures(times, "reference", ("folded_dense", "folded_sparse")),
            "sparse_vs_folded_dense": timing_figures(times, "folded_dense", ("folded_sparse",))["folded_sparse"],
        }
    return figures


def costs(dense: CoughSeparator, models: dict[str, nn.Module], config: SeparatorConfig, seed: int):
    """The complexity table of the dense and pruned separators and the FLOPs of each stage of the folded ones."""
    table = complexity_table(
        {
            "dense": dense,
            "dense folded": dense.for_inference(),
            "pruned 1% (dense kernels)": models["reference"],
            "pruned 1% folded + sparse": models["folded_sparse"],
        },
        clip_seconds=CLIP_SECONDS,
        sample_rate=config.sample_rate,
        batch_size=BATCH_SIZE,
        latency_runs=MODEL_RUNS["single_clip"],
        throughput_runs=MODEL_RUNS["batch"],
        seed=seed,
    )
    folded = {"dense folded": models["folded_dense"], "pruned folded + sparse": models["folded_sparse"]}
    breakdown = {
        name: cost_breakdown(model, CLIP_SECONDS, config.sample_rate).round(4).to_dict(orient="index")
        for name, model in folded.items()
    }
    return table, breakdown


def run(seed: int = 0) -> Path:
    """Prune, time and tabulate as described in the module docstring; write ``results/pruning.json``."""
    retain_freed_memory()
    load_before = os.getloadavg()[0]
    config = SeparatorConfig()
    samples = config.clip_samples
    torch.manual_seed(seed)
    dense = CoughSeparator(config).eval()
    pruning = PruningConfig(sensitivity_batches=SNIP_BATCHES)
    pairs = synthetic_pairs(SNIP_BATCHES, SNIP_BATCH_SIZE, samples, config.sample_rate, seed)
    with stopwatch() as snip_time:
        masks = snip_masks(dense, pairs, pruning)
    pruned = apply_masks(copy.deepcopy(dense), masks)
    folded_sparse = optimize_for_inference(pruned)
    models = {"reference": pruned, "folded_dense": pruned.for_inference(), "folded_sparse": folded_sparse}

    waves = {"single_clip": pairs[0][0][:1], "batch": torch.cat([mixture for mixture, _ in pairs])[:BATCH_SIZE]}
    with torch.inference_mode():
        max_difference = float((folded_sparse(waves["batch"]) - pruned(waves["batch"])).abs().max())
        hidden, _ = pruned.masker.lstm(torch.randn(BATCH_SIZE, config.n_frames(samples), config.n_bins))
    hidden_inputs = {"single_clip": hidden[:1].contiguous(), "batch": hidden.contiguous()}
    snip_layer = time_layer(pruned.masker.output, hidden_inputs)
    sweep = {
        str(density): time_layer(randomly_pruned(dense.masker.output, density, seed), hidden_inputs)
        for density in SWEEP_DENSITIES
    }
    whole_model = time_whole_model(models, waves)

    table, breakdown = costs(dense, models, config, seed)
    return write_result(
        "pruning",
        {
            "clip_seconds": CLIP_SECONDS,
            "batch_size": BATCH_SIZE,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "snip": {
                "config": pruning.to_dict(),
                "masks": mask_report(masks),
                "batches": SNIP_BATCHES,
                "clips_per_batch": SNIP_BATCH_SIZE,
                "seconds": round(snip_time(), 2),
            },
            "max_abs_difference_sparse_vs_masked_reference": max_difference,
            "layer": {"snip_mask": snip_layer, "random_mask_density_sweep": sweep},
            "whole_model": whole_model,
            "complexity": table.round(4).to_dict(orient="records"),
            "flops_by_stage": breakdown,
        },
    )


if __name__ == "__main__":
    print(run())
