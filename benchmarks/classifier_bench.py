"""Neural CNN classifiers: the fast inference and training paths against plain PyTorch, measured side by side.

For each CNN (``mobilenetv2``, ``mobilenetv3_small``, ``efficientnet_lite0``, random weights with batch-norm
statistics drawn as trained ones would be) on log-mel patches of :data:`SHAPE`, with :data:`THREADS` torch threads:

* ``single_clip``: P(positive) of one clip. ``plain``: timm eager forward (``eval()``, ``torch.no_grad()``, NCHW
  float32, batch 1) and the softmax; ``fast``: :class:`~cough_pipeline.classification.inference.InferenceModel`
  (``backend`` says which it chose), the log-mel array in, the probability out; ``torch_fallback``: the same with
  the pure-torch backend (what runs without ONNX Runtime). ``ratio`` = fast / plain time (target <= 0.6).
* ``batch``: clips per second at :data:`BATCH`; ``speedup`` = fast / plain (target >= 1.5).
  ``max_abs_difference``: largest |fast - plain| probability over the batch.
* ``training``: clips per second of Adam steps at batch 32. ``plain``: ``model.train()``, a ``DataLoader`` over a
  ``TensorDataset``, cross-entropy, NCHW; ``fast``: the library's training epoch
  (:func:`~cough_pipeline.classification.neural._train_epoch`: channels_last, SpecAugment included, freed memory
  retained, depthwise convolutions padding their input when their kernel exceeds it) in this process;
  ``fold_workers_2``: two spawned processes with one thread each running it at the same time (the ``fold_workers=2,
  num_threads=1`` setting): both workers' clips over the slower worker's training time, per round (each worker's
  validation pass follows and is timed apart). ``validation``: clips per second of the per-epoch validation pass (eval
  mode, batch 32), plain NCHW vs the library's channels_last
  :func:`~cough_pipeline.classification.neural.evaluate_loss`. ``page_faults_per_step``: minor page faults of the
  plain and the fast training steps. The fast loop keeps freed memory in the heap, as ``fit_fold`` does for a whole
  fold; since the plain loop runs with glibc's usual thresholds in between, each fast block first runs one untimed
  step that regrows the heap (a fold's first step).
* ``projection``: hours to train the three CNNs x 5 folds x :data:`EPOCHS` epochs on :data:`TRAIN_CLIPS` training
  and :data:`VALIDATION_CLIPS` validation clips per fold, from the rates above (no early stopping; two fold workers
  run the five folds in three rounds; ``library_choice``: the sum over the way of training the library's default
  picks per model); ``peak_rss_mb``: peak resident memory of a spawned process holding the
  arrays of :data:`ALL_CLIPS` clips and training one fold model for an epoch (``fit_fold``, VmHWM);
  ``peak_rss_mb_fold_workers_2``: the same with two one-thread fold workers sharing the arrays (an upper bound, see
  :func:`peak_rss_mb`). ``library_choice``: the workers and threads :func:`plan_fold_workers` picks for five folds
  of :data:`TRAIN_CLIPS` clips on this machine, and the measured speedup of that way of training.

Every comparison alternates plain and fast calls in the same process, :data:`ROUNDS` rounds (order shuffled per
round); figures are medians. ``cpu`` records the load and CPU pressure: the machine is shared, and when other
processes hold the cores, OpenMP's spin-waiting makes PyTorch's two-thread eager mode several times slower than on
an idle machine (ONNX Runtime here runs without spinning, a single-threaded process does not synchronise).
"""

from __future__ import annotations

import os
import queue
import random
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.multiprocessing import get_context
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import write_result
from cough_pipeline.allocator import freed_memory_retained
from cough_pipeline.classification.inference import InferenceModel
from cough_pipeline.classification.networks import CNN_NAMES, NetworkConfig, NeuralClassifier
from cough_pipeline.classification.neural import (
    InputArrays,
    NeuralTrainingConfig,
    _fit_folds,
    _self_padding_depthwise,
    _train_epoch,
    evaluate_loss,
    fit_fold,
    plan_fold_workers,
)
from cough_pipeline.reproducible import reproducible

SHAPE = (128, 173)
THREADS = 2
BATCH = 64
TRAIN_BATCH = 32
ROUNDS = {"single_clip": 30, "batch": 6, "training": 4}
STEPS_PER_ROUND = 2
TRAIN_CLIPS, VALIDATION_CLIPS, ALL_CLIPS, FOLDS, EPOCHS = 2880, 720, 3600, 5, 30


def trained_like(name: str, seed: int = 0) -> NeuralClassifier:
    """A CNN in eval mode with random weights, batch-norm statistics away from their initial 0/1, and a head
    scaled so that its logits on random patches have unit spread (probabilities away from 0 and 1, where a
    difference would show)."""
    torch.manual_seed(seed)
    model = NeuralClassifier(NetworkConfig(name=name))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.8, 1.25)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.2, 0.2)
        model.eval()
        head = model.network.get_classifier()
        logits = model.network(torch.randn(16, 1, *SHAPE, generator=torch.Generator().manual_seed(seed)))
        spread = float((logits[:, 1] - logits[:, 0]).pow(2).mean().sqrt())
        head.weight /= spread
        head.bias.zero_()
    return model


class Seconds(float):
    """A task's own measurement of its time (it excludes the task's untimed preparation)."""


def interleaved(tasks: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each task, alternating them (shuffled order) for ``rounds`` rounds after one warm-up; a
    task that returns :class:`Seconds` reports its own time (:meth:`FastLoop.steps`)."""
    for task in tasks.values():
        task()
    times = {name: [] for name in tasks}
    for _ in range(rounds):
        for name in random.sample(list(tasks), len(tasks)):
            started = time.perf_counter()
            reported = tasks[name]()
            times[name].append(reported if isinstance(reported, Seconds) else time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def inference_figures(name: str) -> dict:
    """Single-clip latency and batched throughput: plain eager against the fast path and its torch fallback."""
    model = trained_like(name)
    clips = np.random.default_rng(0).standard_normal((BATCH, *SHAPE)).astype(np.float32)
    fast = InferenceModel.from_classifier(model, {"logmel": clips[:1]})
    fallback = InferenceModel.from_classifier(model, {"logmel": clips[:1]}, backend="torch")

    def plain(batch: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model.network(torch.from_numpy(batch)[:, None]), dim=1)[:, 1]

    figures = {"backend": fast.backend}
    for label, batch, rounds in (("single_clip", clips[:1], ROUNDS["single_clip"]), ("batch", clips, ROUNDS["batch"])):
        tasks = {
            "plain": lambda b=batch: plain(b),
            "fast": lambda b=batch: fast({"logmel": b}),
            "torch_fallback": lambda b=batch: fallback({"logmel": b}),
        }
        seconds = interleaved(tasks, rounds)
        if label == "single_clip":
            figures[label] = {f"{k}_ms": round(v * 1e3, 2) for k, v in seconds.items()}
            figures[label] |= {"ratio": round(seconds["fast"] / seconds["plain"], 3)}
            figures[label] |= {"torch_fallback_ratio": round(seconds["torch_fallback"] / seconds["plain"], 3)}
        else:
            figures[label] = {"size": len(batch)} | {
                f"{k}_clips_per_s": round(len(batch) / v, 1) for k, v in seconds.items()
            }
            figures[label] |= {"speedup": round(seconds["plain"] / seconds["fast"], 2)}
            figures[label] |= {"torch_fallback_speedup": round(seconds["plain"] / seconds["torch_fallback"], 2)}
    expected = plain(clips)
    figures["max_abs_difference"] = float((fast({"logmel": clips}) - expected).abs().max())
    figures["torch_fallback_max_abs_difference"] = float((fallback({"logmel": clips}) - expected).abs().max())
    return figures


def synthetic_arrays(count: int, seed: int = 0) -> InputArrays:
    """``count`` random log-mel patches with alternating labels, in memory."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((count, *SHAPE), generator=generator)
    return InputArrays.from_tensors({"logmel": images}, torch.arange(count) % 2)


class PlainLoop:
    """The plain training loop: ``DataLoader`` over a ``TensorDataset``, NCHW, Adam, cross-entropy."""

    def __init__(self, name: str, data: InputArrays):
        torch.manual_seed(0)
        self.model = NeuralClassifier(NetworkConfig(name=name)).network.train()
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        dataset = TensorDataset(data.tensors["logmel"], data.labels.long())
        self.loader = DataLoader(dataset, batch_size=TRAIN_BATCH, shuffle=True, generator=torch.Generator())
        self.batches = iter(())

    def steps(self, count: int) -> None:
        for _ in range(count):
            images, labels = next(self.batches, (None, None))
            if images is None:
                self.batches = iter(self.loader)
                images, labels = next(self.batches)
            loss = F.cross_entropy(self.model(images), labels)
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()

    def validate(self, images: torch.Tensor) -> None:
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(images), TRAIN_BATCH):
                self.model(images[start : start + TRAIN_BATCH])
        self.model.train()


class FastLoop:
    """The library's training epoch over ``count`` batches at a time, and its validation pass."""

    def __init__(self, name: str, data: InputArrays, config: NeuralTrainingConfig):
        torch.manual_seed(0)
        self.model = NeuralClassifier(NetworkConfig(name=name)).to(memory_format=torch.channels_last)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.data, self.config, self.generator = data, config, torch.Generator().manual_seed(0)
        self.faults: list[int] = []  # minor page faults of each timed block

    def steps(self, count: int) -> Seconds:
        """Seconds of ``count`` training steps, timed after one untimed step in the same allocator block.

        ``fit_fold`` retains freed memory for a whole training, so the heap grows to its working size once per
        fold; here the block ends after each call (the plain loop runs with glibc's usual thresholds in between), so the
        untimed step regrows it, as the first step of a fold does."""
        rows = self.data.subset(torch.randperm(len(self.data), generator=self.generator)[: (count + 1) * TRAIN_BATCH])
        warm, timed = rows.subset(np.arange(TRAIN_BATCH)), rows.subset(np.arange(TRAIN_BATCH, len(rows)))
        with reproducible(0, torch.device("cpu")), freed_memory_retained(self.config.retain_freed_memory):
            self._epoch(warm)  # as fit_fold trains: deterministic algorithms, freed memory retained
            faults, started = _minor_faults(), time.perf_counter()
            self._epoch(timed)
            seconds = Seconds(time.perf_counter() - started)
            self.faults.append(_minor_faults() - faults)
            return seconds

    def _epoch(self, rows: InputArrays) -> None:
        with _self_padding_depthwise(self.model):  # as fit_fold trains on a CPU
            _train_epoch(self.model, rows, self.optimiser, self.config, torch.device("cpu"), self.generator)

    def validate(self, rows: InputArrays) -> None:
        evaluate_loss(self.model, rows, TRAIN_BATCH, torch.device("cpu"), channels_last=True)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _worker(name: str, commands, results, barrier) -> None:
    """A fold worker's stand-in: one thread, the fast loop, timing each command between two barriers."""
    torch.set_num_threads(1)
    data = synthetic_arrays(4 * TRAIN_BATCH, seed=1)
    loop = FastLoop(name, data, NeuralTrainingConfig(num_threads=1))
    validation = data.subset(np.arange(2 * TRAIN_BATCH))
    loop.steps(1)
    while (count := commands.get()) is not None:
        barrier.wait()
        trained = loop.steps(count)
        started = time.perf_counter()
        loop.validate(validation)
        results.put((trained, time.perf_counter() - started))
        barrier.wait()


class FoldWorkers:
    """Two spawned one-thread processes running the fast loop at once."""

    def __init__(self, name: str, workers: int = 2):
        context = get_context("spawn")
        self.commands, self.results = context.Queue(), context.Queue()
        self.barrier = barrier = context.Barrier(workers)  # kept: its semaphore must outlive the start-up
        self.processes = [
            context.Process(target=_worker, args=(name, self.commands, self.results, barrier), daemon=True)
            for _ in range(workers)
        ]
        for process in self.processes:
            process.start()
        self.last: list[tuple[float, float]] = []

    def steps(self, count: int) -> None:
        for _ in self.processes:
            self.commands.put(count)
        self.last = [_result(self.results, self.processes) for _ in self.processes]

    def close(self) -> None:
        for _ in self.processes:
            self.commands.put(None)
        for process in self.processes:
            process.join(timeout=60)


def _result(results, processes) -> object:
    """The next result of ``processes``; an error when one of them has died instead of waiting forever."""
    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty:
            dead = [p.exitcode for p in processes if not p.is_alive()]
            if dead:
                raise RuntimeError(f"a benchmark process exited with {dead}") from None


def training_figures(name: str) -> dict:
    """Training and validation clips per second: plain, fast in this process, and two one-thread fold workers."""
    data = synthetic_arrays(8 * TRAIN_BATCH)
    validation = data.subset(np.arange(2 * TRAIN_BATCH))
    plain, fast = PlainLoop(name, data), FastLoop(name, data, NeuralTrainingConfig(num_threads=THREADS))
    workers = FoldWorkers(name)
    worker_times: list[list[tuple[float, float]]] = []

    def parallel() -> None:
        workers.steps(STEPS_PER_ROUND)
        worker_times.append(workers.last)

    plain_faults: list[int] = []

    def plain_steps() -> None:
        before = _minor_faults()
        plain.steps(STEPS_PER_ROUND)
        plain_faults.append(_minor_faults() - before)

    try:
        seconds = interleaved(
            {
                "plain": plain_steps,
                "fast": lambda: fast.steps(STEPS_PER_ROUND),
                "fold_workers_2": parallel,
            },
            ROUNDS["training"],
        )
        checked = interleaved(
            {
                "plain": lambda: plain.validate(validation.tensors["logmel"][:64]),
                "fast": lambda: fast.validate(validation),
            },
            ROUNDS["training"],
        )
    finally:
        workers.close()
    clips = STEPS_PER_ROUND * TRAIN_BATCH
    # both workers train at once: a round takes as long as the slower one (their validation is timed apart)
    per_worker = statistics.median(max(t for t, _ in times) for times in worker_times[1:])
    worker_validation = statistics.median(v for times in worker_times[1:] for _, v in times)
    rates = {
        "plain": clips / seconds["plain"],
        "fast": clips / seconds["fast"],
        "fold_workers_2": 2 * clips / per_worker,
    }
    validation_rates = {
        "plain": 64 / checked["plain"],
        "fast": 64 / checked["fast"],
        "per_worker": 64 / worker_validation,
    }
    return {
        "training_clips_per_s": {k: round(v, 2) for k, v in rates.items()},
        "speedup_fast": round(rates["fast"] / rates["plain"], 2),
        "speedup_fold_workers_2": round(rates["fold_workers_2"] / rates["plain"], 2),
        "per_worker_training_clips_per_s": round(clips / per_worker, 2),
        "page_faults_per_step": {
            label: round(statistics.median(faults) / STEPS_PER_ROUND)
            for label, faults in (("plain", plain_faults), ("fast", fast.faults))
        },
        "validation_clips_per_s": {k: round(v, 2) for k, v in validation_rates.items()},
    }


def projection_hours(training: dict) -> dict:
    """Hours for :data:`FOLDS` folds x :data:`EPOCHS` epochs of one CNN, per way of training."""
    train, check = training["training_clips_per_s"], training["validation_clips_per_s"]
    epoch = {
        "plain": TRAIN_CLIPS / train["plain"] + VALIDATION_CLIPS / check["plain"],
        "fast": TRAIN_CLIPS / train["fast"] + VALIDATION_CLIPS / check["fast"],
        "fold_workers_2": TRAIN_CLIPS / training["per_worker_training_clips_per_s"]
        + VALIDATION_CLIPS / check["per_worker"],
    }
    fold_rounds = {"plain": FOLDS, "fast": FOLDS, "fold_workers_2": -(-FOLDS // 2)}
    return {k: epoch[k] * EPOCHS * fold_rounds[k] / 3600 for k in epoch}


def _peak_rss(name: str, results) -> None:
    torch.set_num_threads(THREADS)
    data = synthetic_arrays(ALL_CLIPS)
    config = NeuralTrainingConfig(epochs=1, patience=1, num_threads=THREADS)
    fit_fold(
        name, data.subset(np.arange(4 * TRAIN_BATCH)), data.subset(np.arange(4 * TRAIN_BATCH, ALL_CLIPS)[:256]), config
    )
    results.put(_high_water_mb())


def _high_water_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss of a spawned process also counts the memory of the
    process it was forked from before its exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_fold_workers(name: str, results) -> None:
    torch.set_num_threads(THREADS)
    data = synthetic_arrays(ALL_CLIPS)
    config = NeuralTrainingConfig(epochs=1, patience=1, fold_workers=2, num_threads=1)
    train = data.subset(np.arange(4 * TRAIN_BATCH))
    validation = data.subset(np.arange(4 * TRAIN_BATCH, ALL_CLIPS)[:256])
    list(_fit_folds([(name, train, validation, config, fold) for fold in range(2)], config, None))
    # the workers have ended: their largest peak, counted twice, bounds the two (shared pages counted in each)
    results.put(_high_water_mb() + 2 * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def peak_rss_mb(name: str, fold_workers: bool = False) -> float:
    """Peak resident memory (MB) of a spawned process holding :data:`ALL_CLIPS` clips and training one epoch;
    ``fold_workers``: two folds at once in two one-thread workers, the process's peak plus twice the larger
    worker's (an upper bound: the shared arrays and library code count in each)."""
    context = get_context("spawn")
    results = context.Queue()
    target = _peak_rss_fold_workers if fold_workers else _peak_rss
    process = context.Process(target=target, args=(name, results))
    process.start()
    value = _result(results, [process])
    process.join()
    return round(value, 1)


def library_choice(name: str, training: dict) -> dict:
    """What the library's default (``fold_workers=0``) chooses for 5 folds of :data:`TRAIN_CLIPS` clips here, and
    the measured speedup of that way of training."""
    torch.set_num_threads(THREADS)
    config = NeuralTrainingConfig(epochs=EPOCHS, num_threads=THREADS)
    train = synthetic_arrays(ALL_CLIPS).subset(np.arange(TRAIN_CLIPS))
    workers, threads = plan_fold_workers([(name, train, train, config, fold) for fold in range(FOLDS)], config)
    key = "speedup_fold_workers_2" if workers == 2 and threads == 1 else "speedup_fast"
    return {"workers": workers, "threads": threads, "speedup": training[key] if workers <= 2 else None}


def cpu_state() -> dict:
    """Load average and CPU pressure (share of time some task waited for a CPU), when the kernel reports it."""
    state = {"load_1min": round(os.getloadavg()[0], 2)}
    pressure = Path("/proc/pressure/cpu")
    if pressure.exists():
        state["pressure_some_avg60"] = float(pressure.read_text().split()[2].split("=")[1])
    return state


def run() -> Path:
    torch.set_num_threads(THREADS)
    figures: dict = {"threads": THREADS, "cpu_before": cpu_state(), "models": {}}
    # inference first, while the process's allocator is as a plain program's (training changes its thresholds)
    inference = {name: inference_figures(name) for name in CNN_NAMES}
    for name in CNN_NAMES:
        training = training_figures(name)
        figures["models"][name] = {"inference": inference[name], "training": training}
        figures["models"][name]["projection_hours"] = {k: round(v, 2) for k, v in projection_hours(training).items()}
        figures["models"][name]["peak_rss_mb"] = peak_rss_mb(name)
        figures["models"][name]["peak_rss_mb_fold_workers_2"] = peak_rss_mb(name, fold_workers=True)
        figures["models"][name]["library_choice"] = library_choice(name, training)
    totals = {
        k: sum(m["projection_hours"][k] for m in figures["models"].values())
        for k in ("plain", "fast", "fold_workers_2")
    }
    totals["library_choice"] = sum(
        m["projection_hours"]["fold_workers_2" if m["library_choice"]["workers"] > 1 else "fast"]
        for m in figures["models"].values()
    )
    figures["projection_hours_all_cnns"] = {k: round(v, 2) for k, v in totals.items()}
    figures["cpu_after"] = cpu_state()
    return write_result("classifier", figures)


if __name__ == "__main__":
    print(run())
