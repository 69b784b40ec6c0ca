"""Size, arithmetic and speed of the neural classifiers: one table row per model and device.

* ``parameters``: every parameter element, each shared tensor once (``sum(p.numel() for p in
  model.parameters())``); ``trainable_parameters`` those with ``requires_grad``.
* ``size_mb``: parameters and buffers stored as float32 (4 bytes per element of a floating tensor; other buffers,
  e.g. BatchNorm's int64 batch counter, at their own size), each shared tensor once, in MB of 10**6 bytes.
* ``flops`` / ``macs`` per clip: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward of a batch of
  one (the first item of each example input), on CPU in eval mode. It counts only matrix products, convolutions
  (and attention), at 2 FLOPs per multiply-accumulate, so ``macs = flops / 2`` exactly. Bias adds, activations,
  normalisation, pooling and other elementwise work are not counted (for these networks they are a few percent of
  the products); neither is the work before the network (feature extraction).
* ``latency_ms``: the median over ``latency_runs`` forwards of one clip; ``throughput_clips_per_s``: ``batch_size``
  over the median of ``throughput_runs`` forwards of a batch of ``batch_size`` copies of that clip. Both under
  ``torch.inference_mode`` in eval mode after warm-up runs, CUDA synchronised around each run
  (:func:`cough_pipeline.separation.complexity.time_call`). CPU figures depend on ``threads`` (recorded) and on
  other load on the machine; CUDA rows appear only where a GPU is available.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.separation.complexity import time_call

MEGA = 1e6
COMPLEXITY_COLUMNS = (
    "model",
    "device",
    "parameters",
    "trainable_parameters",
    "size_mb",
    "flops",
    "macs",
    "latency_ms",
    "throughput_clips_per_s",
    "batch_size",
    "threads",
)


def parameter_count(model: nn.Module) -> tuple[int, int]:
    """``(all, trainable)`` parameter elements, each shared tensor once."""
    parameters = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def float32_size_mb(model: nn.Module) -> float:
    """MB (10**6 bytes) of parameters and buffers with every floating tensor as float32, each shared tensor once."""
    seen: set[int] = set()
    size = 0
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
    return size / MEGA


def flop_count(model: nn.Module, example_inputs: tuple) -> int:
    """FLOPs :class:`FlopCounterMode` counts for one forward of ``model`` on ``example_inputs`` as given (see the
    module docstring for what it counts)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*example_inputs)
    return int(counter.get_total_flops())


def model_complexity(
    model: nn.Module,
    example_inputs: tuple,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    latency_runs: int = 20,
    throughput_runs: int = 5,
    threads: int | None = None,
) -> dict:
    """One :data:`COMPLEXITY_COLUMNS` row (without ``model``) for ``model`` on ``device``.

    Args:
        model: any module; it is copied (to CPU for counting, to ``device`` for timing) and left untouched.
        example_inputs: the forward's positional arguments, each a tensor or a mapping of tensors (e.g. the
            ``{kind: tensor}`` batch of a ``NeuralClassifier``), batch first; only the first item of each is used.
        device: where the timings run.
        batch_size: the throughput batch.
        latency_runs, throughput_runs: timed forwards (after warm-up) whose median is taken.
        threads: CPU intra-op threads during the timings (``None``: as set); the previous setting is restored.

    Raises:
        ClassificationError: no example input, a non-tensor, or an input without a batch item.
    """
    single = _first_items(example_inputs)
    if int(batch_size) < 1:
        raise ClassificationError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    parameters, trainable = parameter_count(model)
    counted = copy.deepcopy(model).cpu().eval()
    flops = flop_count(counted, _map_tensors(single, lambda t: t.cpu()))
    timed = copy.deepcopy(model).to(device).eval()
    one = _map_tensors(single, lambda t: t.to(device))
    batch = _map_tensors(one, lambda t: t.repeat(int(batch_size), *([1] * (t.ndim - 1))))
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        used_threads = torch.get_num_threads()
        latency = statistics.median(time_call(lambda: timed(*one), int(latency_runs), device))
        batch_seconds = statistics.median(time_call(lambda: timed(*batch), int(throughput_runs), device))
    finally:
        torch.set_num_threads(previous)
    return {
        "device": device.type,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "size_mb": float32_size_mb(model),
        "flops": flops,
        "macs": flops / 2,
        "latency_ms": 1e3 * latency,
        "throughput_clips_per_s": int(batch_size) / batch_seconds,
        "batch_size": int(batch_size),
        "threads": used_threads,
    }


def complexity_table(
    models: Mapping[str, tuple[nn.Module, tuple]],
    devices: Sequence[str | torch.device] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """:func:`model_complexity` per model and device, as :data:`COMPLEXITY_COLUMNS`.

    Args:
        models: name -> ``(module, example_inputs)``.
        devices: default CPU, plus CUDA when available.
        kwargs: passed on to :func:`model_complexity` (batch_size, latency_runs, throughput_runs, threads).
    """
    if devices is None:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rows = [
        {"model": name, **model_complexity(module, inputs, device, **kwargs)}
        for name, (module, inputs) in models.items()
        for device in devices
    ]
    return pd.DataFrame(rows, columns=list(COMPLEXITY_COLUMNS))


def _first_items(example_inputs) -> tuple:
    """The first batch item of each input (a tensor or a mapping of tensors), keeping the batch dimension."""
    if isinstance(example_inputs, (torch.Tensor, Mapping)):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs)
    tensors = [t for x in inputs for t in (x.values() if isinstance(x, Mapping) else (x,))]
    if not inputs or not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ClassificationError("example_inputs must be a non-empty tuple of tensors (or mappings of tensors)")
    if any(t.ndim == 0 or t.shape[0] < 1 for t in tensors):
        raise ClassificationError("every example input needs a batch dimension with at least one item")
    return _map_tensors(inputs, lambda t: t[:1])


def _map_tensors(inputs: tuple, function) -> tuple:
    """``inputs`` with ``function`` applied to every tensor, inside mappings too."""
    return tuple(
        {key: function(value) for key, value in x.items()} if isinstance(x, Mapping) else function(x) for x in inputs
    )
