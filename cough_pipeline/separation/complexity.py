"""Size, arithmetic and speed of separation models: one table row per model and device.

Operation counts are analytic, per clip of ``samples`` samples, with ``F = 1 + samples // hop`` frames, ``B``
frequency bins, ``N = n_fft`` and LSTM width ``H``:

* **MACs** are the multiply-accumulates of the matrix products only: each LSTM layer ``4 H (I + H)`` per frame
  (``I`` its input width), the mask layer ``out x in`` per frame, or its ``nnz`` for a :class:`SparseLinear`.
  Zeros in a dense layer (a pruned but not optimised model) are still multiplied and still counted.
* **FLOPs** are ``2 x MACs`` plus every other arithmetic operation, one FLOP each, transcendental functions
  (log, sqrt, atan2, sin/cos, sigmoid, tanh) included, though they cost 10-20 times a multiply:

  ==================  ==============================================================================
  stft                per frame: ``N`` window multiplies + a real FFT of ``2.5 N log2 N`` (the FFTW
                      benchFFT convention: half of the complex ``5 N log2 N``)
  spectral features   reference: ``|X|`` 4, phase 1, dB 3 (clamp, log, scale), eval BatchNorm 2 per bin;
                      folded (:class:`InferenceSeparator`): power 3, clamp + log 2 per bin
  lstm                ``2 x MACs`` + per frame and layer ``21 H`` (two bias adds and the ih + hh sum 12 H,
                      5 H activations, 4 H cell and hidden updates)
  mask layer          ``2 x MACs`` + ``out`` bias adds per frame (dense); ``2 x nnz`` (sparse)
  masking             sigmoid 1 per bin; reference: magnitude x mask 1 + polar 4 per bin; folded: complex
                      spectrum x mask 2 per bin
  istft               per frame: inverse real FFT ``2.5 N log2 N`` + ``N`` window multiplies + ``N`` overlap
                      adds; per output sample 1 normalisation; the reference (``torch.istft``) also rebuilds the
                      window envelope each call (``2 N`` per frame), the folded model caches it
  ==================  ==============================================================================

PyTorch's ``FlopCounterMode`` sees the mask layer's ``addmm`` but not the fused LSTM kernel or the numba kernels,
so it can check that row and no other (the tests do). Sizes are in MB of 10**6 bytes: ``dense_size_mb`` is the float32
``state_dict`` with every weight dense, ``stored_size_mb`` what the model's ``state_dict`` holds as it is (for a
:class:`SparseLinear`, float32 values plus two int64 indices per non-zero weight).

Timings: ``latency_ms`` is the median over ``latency_runs`` single-clip calls, ``throughput_clips_per_s`` the
batch size over the median of ``throughput_runs`` calls on one ``(batch_size, samples)`` batch, both under
``torch.inference_mode`` after warm-up runs, with CUDA synchronised around each run. Every model is timed through
its forward (for the folded model: one batch on the process's intra-op threads, not the worker-thread paths
``separate`` / ``separate_one``), so the rows compare the arithmetic, not the scheduling. On CPU the figures
depend on the thread count (``threads``), on the allocator (see
:func:`~cough_pipeline.allocator.retain_freed_memory`) and on other load on the machine.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from cough_pipeline.separation.model import CoughSeparator, InferenceSeparator, SeparatorConfig
from cough_pipeline.separation.pruning import SparseLinear, sparse_layers

MEGA = 1e6
STAGES = ("stft", "spectral features", "lstm", "mask layer", "masking", "istft")
LSTM_ELEMENTWISE_PER_UNIT = 21
WARMUP_RUNS = 2


@dataclass(frozen=True)
class StageCost:
    """Multiply-accumulates and FLOPs of one stage for one clip."""

    stage: str
    macs: float
    flops: float


def stage_costs(model: nn.Module, samples: int) -> list[StageCost]:
    """Per-stage MACs and FLOPs of ``model`` (a :class:`CoughSeparator` or :class:`InferenceSeparator`, possibly
    with :class:`SparseLinear` layers) on one ``samples``-long clip, in :data:`STAGES` order."""
    config, output, folded = _separator_parts(model)
    frames, bins, n_fft = config.n_frames(samples), config.n_bins, config.n_fft
    fft = 2.5 * n_fft * math.log2(n_fft)
    layers = lstm_layer_shapes(model)
    lstm_macs = frames * sum(4 * hidden * (inputs + hidden) for inputs, hidden in layers)
    lstm_elementwise = frames * sum(LSTM_ELEMENTWISE_PER_UNIT * hidden for _, hidden in layers)
    if isinstance(output, SparseLinear):
        mask_macs, mask_extra = frames * output.nnz, 0
    else:
        mask_macs, mask_extra = frames * output.in_features * output.out_features, frames * output.out_features
    envelope = 0 if folded else 2 * n_fft
    return [
        StageCost("stft", 0, frames * (n_fft + fft)),
        StageCost("spectral features", 0, frames * bins * (5 if folded else 10)),
        StageCost("lstm", lstm_macs, 2 * lstm_macs + lstm_elementwise),
        StageCost("mask layer", mask_macs, 2 * mask_macs + mask_extra),
        StageCost("masking", 0, frames * bins * (3 if folded else 6)),
        StageCost("istft", 0, frames * (fft + 2 * n_fft + envelope) + samples),
    ]


def lstm_layer_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """``(input width, hidden width)`` of every LSTM layer run per frame, over all ``nn.LSTM`` modules of
    ``model`` in order (one multi-layer LSTM in the reference model, one single-layer LSTM per layer in the
    folded one; the CPU kernel's scaled copies of those weights are not modules and not counted again)."""
    return [
        (lstm.input_size if layer == 0 else lstm.hidden_size, lstm.hidden_size)
        for lstm in model.modules()
        if isinstance(lstm, nn.LSTM)
        for layer in range(lstm.num_layers)
    ]


def cost_breakdown(model: nn.Module, clip_seconds: float = 5.0, sample_rate: int = 44_100) -> pd.DataFrame:
    """:func:`stage_costs` as a table (index ``stage``; ``macs_millions``, ``flops_millions``, ``flops_share``)."""
    costs = stage_costs(model, _clip_samples(clip_seconds, sample_rate))
    table = pd.DataFrame(
        {"macs_millions": [c.macs / MEGA for c in costs], "flops_millions": [c.flops / MEGA for c in costs]},
        index=pd.Index([c.stage for c in costs], name="stage"),
    )
    table["flops_share"] = table["flops_millions"] / table["flops_millions"].sum()
    return table


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(total, non-zero)`` weights, each shared tensor once; a :class:`SparseLinear` counts as its dense
    ``out x in`` weight plus bias."""
    total = nonzero = 0
    for parameter in model.parameters():
        total += parameter.numel()
        nonzero += int(parameter.count_nonzero())
    for module in sparse_layers(model).values():
        total += module.out_features * module.in_features + module.out_features
        nonzero += int(module.values.count_nonzero()) + int(module.bias.count_nonzero())
    return total, nonzero


def state_sizes_mb(model: nn.Module) -> tuple[float, float]:
    """``(dense, stored)`` ``state_dict`` sizes in MB, each shared tensor once (as ``torch.save`` writes it): with
    every :class:`SparseLinear` as a dense float32 weight plus bias, and as the tensors are actually held."""
    sparse = sparse_layers(model)
    stored = dense = 0
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        stored += tensor.numel() * tensor.element_size()
        if name.rpartition(".")[0] not in sparse:
            dense += tensor.numel() * tensor.element_size()
    for module in sparse.values():
        dense += 4 * (module.out_features * module.in_features + module.out_features)
    return dense / MEGA, stored / MEGA


def complexity_table(
    models: Mapping[str, nn.Module],
    clip_seconds: float = 5.0,
    sample_rate: int = 44_100,
    devices: Sequence[str | torch.device] | None = None,
    batch_size: int = 32,
    latency_runs: int = 20,
    throughput_runs: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (model, device): ``parameters``, ``nonzero_parameters``, ``dense_size_mb``, ``stored_size_mb``,
    ``macs_millions``, ``flops_millions`` (per clip, see the module docstring), ``latency_ms`` (one clip),
    ``throughput_clips_per_s`` (batches of ``batch_size``), ``batch_size``, ``threads``.

    ``devices`` defaults to CPU plus CUDA when available. The models are copied to each device, not moved.
    """
    if devices is None:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    samples = _clip_samples(clip_seconds, sample_rate)
    generator = torch.Generator().manual_seed(seed)
    batch = 0.1 * torch.randn(batch_size, samples, generator=generator)
    rows = []
    for name, model in models.items():
        static = _static_columns(model, samples)
        for device in map(torch.device, devices):
            timed = copy.deepcopy(model).to(device).eval()
            on_device = batch.to(device)
            rows.append(
                {
                    "model": name,
                    "device": device.type,
                    **static,
                    "latency_ms": 1e3 * _median_seconds(timed, on_device[:1], latency_runs),
                    "throughput_clips_per_s": batch_size / _median_seconds(timed, on_device, throughput_runs),
                    "batch_size": batch_size,
                    "threads": torch.get_num_threads(),
                }
            )
    return pd.DataFrame(rows)


def time_call(call: Callable[[], object], runs: int, device: torch.device) -> list[float]:
    """Seconds taken by each of ``runs`` calls of ``call`` after :data:`WARMUP_RUNS` untimed ones, synchronising
    CUDA around each call when ``device`` is a GPU."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(WARMUP_RUNS):
            call()
        seconds = []
        for _ in range(runs):
            synchronise()
            started = time.perf_counter()
            call()
            synchronise()
            seconds.append(time.perf_counter() - started)
    return seconds


def _median_seconds(model: nn.Module, waves: torch.Tensor, runs: int) -> float:
    return statistics.median(time_call(lambda: model(waves), runs, waves.device))


def _static_columns(model: nn.Module, samples: int) -> dict:
    total, nonzero = parameter_counts(model)
    dense_mb, stored_mb = state_sizes_mb(model)
    costs = stage_costs(model, samples)
    return {
        "parameters": total,
        "nonzero_parameters": nonzero,
        "dense_size_mb": dense_mb,
        "stored_size_mb": stored_mb,
        "macs_millions": sum(c.macs for c in costs) / MEGA,
        "flops_millions": sum(c.flops for c in costs) / MEGA,
    }


def _separator_parts(model: nn.Module) -> tuple[SeparatorConfig, nn.Module, bool]:
    """``(config, mask layer, folded)`` of a reference or folded separator."""
    if isinstance(model, CoughSeparator):
        return model.config, model.masker.output, False
    if isinstance(model, InferenceSeparator):
        return model.config, model.output, True
    raise TypeError(
        f"cannot count the operations of a {type(model).__name__}; expected a CoughSeparator or an InferenceSeparator"
    )


def _clip_samples(clip_seconds: float, sample_rate: int) -> int:
    samples = round(clip_seconds * sample_rate)
    if samples < 1:
        raise ValueError(f"a clip of {clip_seconds} s at {sample_rate} Hz has no samples")
    return samples
