"""Generation training: the 16 kHz and low-rate teachers, and students distilled from them, per outer fold.

Per outer fold (:meth:`~cough_pipeline.distillation.data.PairedClips.split`: the next fold validates, the rest
train) and low rate, the strategies are:

* ``full_rate``: the model trained on 16 kHz patches (the CSSD teacher), scored on 16 kHz patches;
* ``raw``: the same model scored on low-rate patches;
* ``fine_tuned``: trained on low-rate patches with cross-entropy;
* ``basd`` (Born-Again): a student on the low-rate patches, taught by the frozen ``fine_tuned`` model reading
  the same patches;
* ``cssd`` (cross-sampling-rate): a student on the low-rate patches, taught by the frozen ``full_rate`` model
  reading the 16 kHz patches of the same clips;
* with ``generations=3``, ``basd_g3`` and ``cssd_g3``: a further student taught by the second generation (both
  low-rate models, reading the low-rate patches).

Every model of a fold starts from the same initial weights (built under the same seed, ``seed + fold``) and
trains through the classifier stage's loop (:func:`~cough_pipeline.classification.neural.fit_model`): Adam,
the epoch with the best validation-fold score kept (:meth:`GenerationTrainer._criterion`), early stopping.
Students minimise :func:`~cough_pipeline.distillation.loss.distillation_loss` against the teacher's logits computed
without gradients; the teacher is in eval mode with ``requires_grad`` off, so neither its weights nor its batch-norm
statistics move.

α and T are chosen by grid search on the first outer fold only: each pair trains that fold's student, scored on
its validation fold (never on a test fold), and the best pair is then used on every fold (the first fold's student
of that pair is kept, not retrained). The folds after the first are scored on clips the choice saw as training or
validation data; a grid of one pair removes the choice altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import product

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, roc_auc_score

from cough_pipeline.bounds import PositiveInt, check_fields
from cough_pipeline.classification.networks import ARCHITECTURES, NetworkConfig, NeuralClassifier
from cough_pipeline.classification.neural import (
    NeuralTrainingConfig,
    Objective,
    available_cores,
    fit_model,
    logits_of,
)
from cough_pipeline.distillation.data import TEACHER_INPUT, PairedClips
from cough_pipeline.distillation.loss import distillation_loss

TEACHER_STRATEGIES = ("full_rate", "fine_tuned")
STUDENT_STRATEGIES = ("basd", "cssd")
THIRD_GENERATION = {"basd_g3": "basd", "cssd_g3": "cssd"}
#: Report order.
STRATEGIES = ("full_rate", "raw", "fine_tuned", "fine_tuned_direct", "basd", "cssd", *THIRD_GENERATION)
SCORE_COLUMNS = ("task", "model", "rate", "strategy", "fold", "metric", "value")
#: Trainings with fewer training examples x epochs than this run in this process: a worker's start (several
#: seconds of imports) would outweigh what two workers save (the demo's 30 clips x 2 epochs).
MIN_WORKER_PASSES = 2_000


class DistillationError(RuntimeError):
    """A distillation run that cannot go on: unknown models or strategies, a missing teacher."""


def default_training() -> NeuralTrainingConfig:
    """Adam at 1e-3, batches of 64, no SpecAugment (a masked student patch would no longer pair with the teacher's
    view of the clip), patience 10: trained from scratch on a few hundred clips, a model's validation accuracy
    often stays at chance for the first five epochs before it climbs."""
    return NeuralTrainingConfig(batch_size=64, learning_rate=1e-3, epochs=20, patience=10, spec_augment=False)


@dataclass(frozen=True)
class DistillationConfig:
    """What the distillation stage trains.

    Args:
        model: the architecture of every teacher and student (:data:`ARCHITECTURES`: ``mobilenetv2``,
            ``mobilenetv3_small``, ``cnn14``, ...).
        alphas, temperatures: the grid of the loss weights α (cross-entropy share) and T.
        generations: 2 (teacher -> student) or 3 (a further student taught by each student).
        max_folds: outer folds run, from the first (0: all); the demo runs fewer.
        training: the loop's settings (:func:`default_training`); its seed plus the fold seeds each fold; its
            ``weights`` (a timm weights file, or a PANNs checkpoint for ``cnn14``) start every model of the stage.
    """

    model: str = "mobilenetv3_small"
    alphas: tuple[float, ...] = (0.3, 0.7)
    temperatures: tuple[float, ...] = (2.0, 4.0)
    generations: PositiveInt = 2
    max_folds: int = 0
    training: NeuralTrainingConfig = field(default_factory=default_training)

    def __post_init__(self):
        check_fields(self)
        if self.model not in ARCHITECTURES or ARCHITECTURES[self.model].inputs != ("logmel",):
            names = sorted(n for n, spec in ARCHITECTURES.items() if spec.inputs == ("logmel",))
            raise DistillationError(f"unknown distillation model {self.model!r}; choose from {names}")
        if self.generations not in (2, 3):
            raise DistillationError(f"generations must be 2 or 3, got {self.generations}")
        if not self.alphas or not self.temperatures:
            raise DistillationError("the grid needs at least one alpha and one temperature")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas) or any(t <= 0 for t in self.temperatures):
            raise DistillationError(
                f"alphas must be in [0, 1] and temperatures > 0: {self.alphas}, {self.temperatures}"
            )
        if self.max_folds < 0:
            raise DistillationError(f"max_folds must be >= 0, got {self.max_folds}")

    def folds(self, data: PairedClips) -> list[int]:
        return data.folds[: self.max_folds] if self.max_folds else data.folds


def distillation_objective(
    teacher: NeuralClassifier, teacher_input: str, alpha: float, temperature: float
) -> Objective:
    """The student's objective against ``teacher`` (frozen here: eval mode, no gradients), which reads the batch's
    ``teacher_input`` patches (``logmel``: the student's own; :data:`TEACHER_INPUT`: the 16 kHz view)."""
    teacher.eval().requires_grad_(False)

    def objective(student: NeuralClassifier, arrays: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher({"logmel": arrays[teacher_input]})
        loss = distillation_loss(student(arrays), labels.long(), teacher_logits, alpha, temperature)
        return loss * len(labels)

    return objective


@dataclass
class FoldModels:
    """The models of one task, rate and outer fold, by strategy, and their per-epoch history rows."""

    fold: int
    models: dict[str, NeuralClassifier] = field(default_factory=dict)
    histories: list[dict] = field(default_factory=list)


class GenerationTrainer:
    """Trains one task's generations at one low ``rate``; the 16 kHz teachers can be shared between rates. ``log``
    gets a line per trained model."""

    def __init__(
        self, data: PairedClips, rate: int, config: DistillationConfig, log: Callable[[str], None] | None = None
    ):
        self.data, self.rate, self.config, self.log = data, rate, config, log

    def _training(self, fold: int) -> NeuralTrainingConfig:
        return replace(self.config.training, seed=self.config.training.seed + fold)

    def _criterion(self, logits: torch.Tensor, labels: torch.Tensor, loss: float) -> float:
        """The kept epoch is the one with the best validation score (ESC-50 macro accuracy, cough macro F1),
        ties going to the lower cross-entropy: on a few hundred clips of 50 classes the validation cross-entropy
        rises within an epoch or two (confident mistakes) while the accuracy still climbs for many more."""
        task = str(self.data.clips["task"].iloc[0])
        return -headline(task, labels.numpy().astype(np.int64), logits.numpy()) + 1e-4 * loss

    def _network(self) -> NetworkConfig:
        return NetworkConfig(
            name=self.config.model,
            classes=len(self.data.classes),
            mels=self.data.log_mels[self.data.sample_rate].shape[2],
        )

    def train(
        self,
        fold: int,
        strategy: str,
        student_rate: int,
        teacher: NeuralClassifier | None = None,
        teacher_rate: int | None = None,
        alpha: float = 1.0,
        temperature: float = 1.0,
    ) -> tuple[NeuralClassifier, list[dict]]:
        """One model of ``fold`` on ``student_rate`` patches, distilled from ``teacher`` (reading ``teacher_rate``
        patches) when given; its per-epoch history rows."""
        split = self.data.split(fold)
        if teacher is None:
            arrays, objective = self.data.arrays(student_rate), None
        elif teacher_rate == student_rate:  # Born-Again: the teacher reads the student's own patches
            arrays = self.data.arrays(student_rate)
            objective = distillation_objective(teacher, "logmel", alpha, temperature)
        else:  # cross-rate: the teacher reads its rate's view of the same clips, the student never sees it
            arrays = self.data.arrays(student_rate, teacher_rate)
            objective = distillation_objective(teacher, TEACHER_INPUT, alpha, temperature)
        network = self._network()
        if teacher is not None:
            teacher.to(self._training(fold).resolved_device())  # beside the student; back to the CPU afterwards
        try:
            model, best_epoch, history = self._fit(fold, network, arrays, split, objective)
        finally:
            if teacher is not None:
                teacher.cpu()
        return self._record(model, best_epoch, history, fold, strategy, student_rate, teacher, alpha, temperature)

    def _fit(self, fold: int, network: NetworkConfig, arrays, split: dict, objective: Objective | None):
        return fit_model(
            lambda: NeuralClassifier(network, weights=self.config.training.weights),
            arrays.subset(split["train"]),
            arrays.subset(split["validation"]),
            self._training(fold),
            None,
            objective,
            self._criterion,
        )

    def _record(self, model, best_epoch, history, fold, strategy, student_rate, teacher, alpha, temperature):
        """Label ``model`` with how it was trained; its history rows."""
        model.metadata = {
            "fold": fold,
            "strategy": strategy,
            "rate": int(student_rate),
            "best_epoch": best_epoch,
            "alpha": alpha if teacher is not None else None,
            "temperature": temperature if teacher is not None else None,
            "seed": self._training(fold).seed,
        }
        rows = [
            {"fold": fold, "strategy": strategy, **record, "best": record["epoch"] == best_epoch} for record in history
        ]
        return model, rows

    def _workers(self, jobs: int) -> tuple[int, int]:
        """``(workers, threads each)`` for ``jobs`` independent trainings: ``training.fold_workers`` when set;
        otherwise, on a CPU with several cores, one one-thread worker per thread of ``training.num_threads`` (two
        one-thread workers train MobileNetV3-Small faster than one two-thread loop: small kernels spend less time
        in OpenMP synchronisation) when a training makes at least :data:`MIN_WORKER_PASSES` example passes; else
        one, in this process."""
        training = self.config.training
        if training.fold_workers:
            return max(1, min(training.fold_workers, jobs)), training.num_threads
        cores = available_cores()
        passes = int(self.data.split(self.data.folds[0])["train"].sum()) * training.epochs
        if jobs < 2 or cores < 2 or passes < MIN_WORKER_PASSES or training.resolved_device().type != "cpu":
            return 1, training.num_threads
        workers = min(cores, jobs, training.num_threads)
        return (workers, max(1, training.num_threads // workers)) if workers > 1 else (1, training.num_threads)

    def _run(self, jobs: list[tuple]) -> list[tuple[NeuralClassifier, list[dict]]]:
        """:meth:`train` of every job (its arguments), in order: here, or in spawned worker processes
        (:meth:`_workers`), which read this process's patches through shared memory rather than copies. A worker
        trains the model one thread would here, up to the order of float sums (oneDNN kernels may sum in another
        order on shared-memory tensors)."""
        workers, threads = self._workers(len(jobs))
        if workers == 1:
            results = [self.train(*job) for job in jobs]
        else:
            training = replace(self.config.training, num_threads=threads, fold_workers=1)
            worker = GenerationTrainer(self.data, self.rate, replace(self.config, training=training))
            context = torch.multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                results = list(pool.map(_train_job, [(worker, job) for job in jobs]))
        if self.log is not None:
            task = self.data.clips["task"].iloc[0] if len(self.data.clips) else ""
            for model, rows in results:
                seconds = sum(row["seconds"] for row in rows)
                meta = model.metadata
                self.log(
                    f"{task} fold {meta['fold']} {meta['strategy']} at {meta['rate']} Hz: "
                    f"epoch {meta['best_epoch']} of {len(rows)} kept, {seconds:.0f}s"
                )
        return results

    def teachers(self, full_rate: dict[int, NeuralClassifier] | None = None) -> dict[int, FoldModels]:
        """Per fold: ``full_rate`` (trained on 16 kHz, or taken from ``full_rate`` when given) and ``fine_tuned``."""
        out = {fold: FoldModels(fold) for fold in self.config.folds(self.data)}
        jobs = []
        for fold in out:
            if full_rate is not None and fold in full_rate:
                out[fold].models["full_rate"] = full_rate[fold]
            else:
                jobs.append((fold, "full_rate", self.data.sample_rate))
            jobs.append((fold, "fine_tuned", self.rate))
        for model, rows in self._run(jobs):
            out[model.metadata["fold"]].models[model.metadata["strategy"]] = model
            out[model.metadata["fold"]].histories += rows
        return out

    def _teacher_of(self, strategy: str, fold_models: FoldModels) -> tuple[NeuralClassifier, int]:
        if strategy == "basd":
            return fold_models.models["fine_tuned"], self.rate
        if strategy == "cssd":
            return fold_models.models["full_rate"], self.data.sample_rate
        return fold_models.models[THIRD_GENERATION[strategy]], self.rate

    def choose_loss_weights(self, strategy: str, first: FoldModels) -> tuple[tuple[float, float], pd.DataFrame]:
        """Grid search of (α, T) for ``strategy`` on the first fold's validation clips; the chosen pair and the
        grid's scores. The chosen pair's student is kept in ``first``."""
        teacher, teacher_rate = self._teacher_of(strategy, first)
        split = self.data.split(first.fold)
        pairs = list(product(self.config.alphas, self.config.temperatures))
        results = self._run([(first.fold, strategy, self.rate, teacher, teacher_rate, *pair) for pair in pairs])
        labels = self.data.clips["label"].to_numpy()[split["validation"]]
        rows, best = [], None
        for (alpha, temperature), (model, history) in zip(pairs, results):
            logits = predict_logits(model, self.data.arrays(self.rate).subset(split["validation"]))
            score = headline(self.data.clips["task"].iloc[0], labels, logits)
            rows.append({"strategy": strategy, "alpha": alpha, "temperature": temperature, "validation_score": score})
            if best is None or score > best[0]:
                best = (score, (alpha, temperature), model, history)
        _, pair, model, history = best
        first.models[strategy] = model
        first.histories += history
        return pair, pd.DataFrame(rows)

    def students(self, teachers: dict[int, FoldModels]) -> tuple[dict[str, tuple[float, float]], pd.DataFrame]:
        """Trains every student strategy into ``teachers``' fold models; the chosen (α, T) per strategy and the
        grid scores."""
        strategies = [*STUDENT_STRATEGIES, *(THIRD_GENERATION if self.config.generations == 3 else ())]
        folds = sorted(teachers)
        chosen, grids = {}, []
        for strategy in strategies:
            pair, grid = self.choose_loss_weights(strategy, teachers[folds[0]])
            chosen[strategy] = pair
            grids.append(grid)
            jobs = [
                (fold, strategy, self.rate, *self._teacher_of(strategy, teachers[fold]), *pair) for fold in folds[1:]
            ]
            for model, rows in self._run(jobs):
                teachers[model.metadata["fold"]].models[strategy] = model
                teachers[model.metadata["fold"]].histories += rows
        return chosen, pd.concat(grids, ignore_index=True)


def _train_job(job: tuple) -> tuple[NeuralClassifier, list[dict]]:
    """A worker's task: ``trainer.train(*arguments)``."""
    trainer, arguments = job
    return trainer.train(*arguments)


def predict_logits(model: NeuralClassifier, data, batch_size: int = 64) -> np.ndarray:
    """Logits ``(rows, classes)`` of ``model`` (eval mode, no gradients) over an ``InputArrays``."""
    if len(data) == 0:
        return np.zeros((0, model.config.classes), dtype=np.float32)
    return logits_of(model, data, batch_size)[0].numpy()


def metrics(task: str, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """ESC-50: ``macro_accuracy`` (the mean of the per-class accuracies over the classes in ``labels``); coughs:
    ``macro_f1`` of the arg-max and ``roc_auc`` of the positive class's softmax (NaN when the fold holds one
    class)."""
    predicted = logits.argmax(axis=1)
    if task == "esc50":
        recalls = [(predicted[labels == k] == k).mean() for k in np.unique(labels)]
        return {"macro_accuracy": float(np.mean(recalls))}
    probability = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1].numpy()
    auc = float(roc_auc_score(labels, probability)) if len(np.unique(labels)) == 2 else float("nan")
    return {"macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)), "roc_auc": auc}


def headline(task: str, labels: np.ndarray, logits: np.ndarray) -> float:
    """The task's first metric (ESC-50 macro accuracy, cough macro F1): what the grid search maximises."""
    return next(iter(metrics(task, labels, logits).values()))


def per_class_accuracy(labels: np.ndarray, logits: np.ndarray, classes: list[str]) -> dict[str, float]:
    predicted = logits.argmax(axis=1)
    return {name: float((predicted[labels == k] == k).mean()) for k, name in enumerate(classes) if (labels == k).any()}


def score_fold(
    data: PairedClips, rate: int, fold_models: FoldModels, model_name: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test scores (:data:`SCORE_COLUMNS`) and per-class accuracies of every strategy of one fold.

    ``full_rate`` reads 16 kHz patches; ``raw`` is the same model on low-rate patches; ``fine_tuned_direct`` is the
    ``fine_tuned`` model on patches computed at the low rate without up-sampling; the others read low-rate patches.
    """
    task = str(data.clips["task"].iloc[0])
    test = data.split(fold_models.fold)["test"]
    labels = data.clips["label"].to_numpy()[test]
    inputs: dict[str, tuple[str, Callable]] = {
        "full_rate": ("full_rate", lambda: data.arrays(data.sample_rate)),
        "raw": ("full_rate", lambda: data.arrays(rate)),
        "fine_tuned_direct": ("fine_tuned", lambda: data.arrays(rate, direct=True)),
    }
    scores, classes = [], []
    for strategy in STRATEGIES:
        source, arrays = inputs.get(strategy, (strategy, lambda: data.arrays(rate)))
        if source not in fold_models.models:
            continue
        logits = predict_logits(fold_models.models[source], arrays().subset(test))
        shown_rate = data.sample_rate if strategy == "full_rate" else rate
        for metric, value in metrics(task, labels, logits).items():
            scores.append((task, model_name, shown_rate, strategy, fold_models.fold, metric, value))
        for name, accuracy in per_class_accuracy(labels, logits, data.classes).items():
            classes.append((task, model_name, shown_rate, strategy, fold_models.fold, name, accuracy))
    per_class = pd.DataFrame(classes, columns=["task", "model", "rate", "strategy", "fold", "class_name", "accuracy"])
    return pd.DataFrame(scores, columns=list(SCORE_COLUMNS)), per_class


def score_all(data: PairedClips, rate: int, folds: dict[int, FoldModels], model_name: str):
    """:func:`score_fold` of every fold's models: the test scores and the per-class accuracies, concatenated."""
    parts = [score_fold(data, rate, fold_models, model_name) for fold_models in folds.values()]
    return pd.concat([p[0] for p in parts], ignore_index=True), pd.concat([p[1] for p in parts], ignore_index=True)
