"""Seeded, deterministic torch training: one context for every model the pipeline trains."""

from __future__ import annotations

import torch


class reproducible:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Seed torch (restoring the caller's random state on exit), request deterministic algorithms and, when
    ``threads`` is given, set the intra-op thread count meanwhile.

    Deterministic mode would also fill every new tensor with NaN to expose reads of uninitialised memory; on a CPU
    that costs a fifth of a CNN training step and changes no result, so it stays off.
    """

    def __init__(self, seed: int, device: torch.device, threads: int | None = None):
        self.seed, self.threads = seed, threads
        self._fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def __enter__(self):
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        self._saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.get_num_threads(),
        )
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        deterministic, warn_only, fill, cudnn_deterministic, benchmark, threads = self._saved
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, benchmark
        torch.set_num_threads(threads)
        return self._fork.__exit__(*exc)
