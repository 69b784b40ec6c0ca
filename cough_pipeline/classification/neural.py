"""Training the neural classifiers per cross-validation fold on the arrays of ``classification_inputs``.

For each CV fold ``k`` a model of :data:`~cough_pipeline.classification.networks.MODELS` is trained with Adam on
the other CV folds and scored on fold ``k`` after every epoch; the weights of the epoch with the lowest
validation loss are kept, and training stops after ``patience`` epochs without a lower one. The kept model
predicts fold ``k`` (``split = "validation"``) and the holdout (``split = "holdout"``) in the predictions schema
of :mod:`cough_pipeline.classification.evaluation`; the holdout never influences training or the choice of epoch,
and averaging the fold models' holdout probabilities (the fold ensemble) is left to evaluation.

Two-logit models (the CNNs) use cross-entropy, one-logit models (the Cough2COVID19 family) binary cross-entropy
on the logit. SpecAugment-style masking (per example one frequency band and one time span, each up to a share of
the image, set to the example's mean: 0 for the standardised log-mel patch) applies to the image inputs of
training batches only, never to validation or prediction inputs. The seed fixes the initial weights, dropout,
the batch order and the masks: on CPU the same seed, data and thread count give identical predictions.

Speed (:class:`NeuralTrainingConfig`): the CNNs train with weights and images in ``channels_last`` memory format,
whose oneDNN convolution and batch-norm kernels are faster on a CPU than the default layout (only the order of
float sums changes); freed memory stays in the process's heap while a model trains
(:func:`~cough_pipeline.allocator.freed_memory_retained`), so the activations of each step reuse pages instead of
page-faulting fresh ones; ``fold_workers`` > 1 trains several folds at once in spawned processes, each with
``num_threads`` threads, sharing the loaded arrays. The fold models' predictions then come from
:class:`~cough_pipeline.classification.inference.InferenceModel` (ONNX Runtime on a CPU when installed).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing
import torch.nn.functional as F
from torch.utils.data import Dataset

from cough_pipeline.allocator import freed_memory_retained
from cough_pipeline.bounds import Fraction, NonNegativeInt, PositiveFloat, PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import ClassificationError, FoldError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS
from cough_pipeline.classification.folds import early_stopping_rows
from cough_pipeline.classification.inference import Backend, InferenceModel
from cough_pipeline.classification.networks import (
    CNN_NAMES,
    IMAGE_KINDS,
    MODELS,
    NetworkConfig,
    NeuralClassifier,
    as_model_input,
)
from cough_pipeline.classification.ranking import cv_folds, with_folds
from cough_pipeline.parallel import ProgressCallback, notify
from cough_pipeline.reproducible import reproducible

#: A training objective: ``objective(model, arrays, labels)`` -> the loss summed over the batch, given the batch's
#: arrays and labels on the training device (the model picks its own inputs from ``arrays``; an objective may read
#: others, such as a teacher's). The default is :func:`_loss_sum` on the model's logits.
Objective = Callable[["NeuralClassifier", dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
#: How the kept epoch is chosen: ``criterion(logits, labels, loss)`` -> a value to minimise, given the validation
#: rows' logits and labels (:func:`logits_of`) and their mean loss. The default is that loss.
Criterion = Callable[[torch.Tensor, torch.Tensor, float], float]


@dataclass(frozen=True)
class NeuralTrainingConfig:
    """How each fold model is trained.

    Args:
        batch_size: examples per Adam step (and per validation/prediction batch).
        learning_rate: Adam's step size.
        epochs: the most passes over the training rows.
        patience: stop after this many epochs without a lower validation loss.
        spec_augment: mask training images (``logmel``, ``spectrogram``).
        max_frequency_mask: the widest frequency band masked, as a share of the image's rows.
        max_time_mask: the widest time span masked, as a share of the image's columns (0.15: 0.6 s of both the
            4 s log-mel patch and the 40-column spectrogram).
        dropout: the dense layers' dropout rate (Cough2COVID19 family; the CNNs keep timm's).
        weights: a local weights file the CNNs start from (:func:`~cough_pipeline.classification.networks.build_cnn`);
            ``None`` starts from random weights.
        seed: seeds initial weights, dropout, batch order and masks.
        device: ``"cpu"``, ``"cuda"``, ...; ``""`` picks CUDA when available.
        num_threads: torch intra-op threads while training (restored afterwards), per fold worker.
        channels_last: train the CNNs with weights and images in ``channels_last`` memory format (faster oneDNN
            kernels on a CPU; the same training up to the order of float sums).
        retain_freed_memory: keep freed memory in the heap while a model trains (glibc; no effect elsewhere),
            returning it to the system afterwards; the same training, without a page fault per activation.
        fold_workers: folds of :func:`train_neural` trained at once, each in a spawned process with
            ``num_threads`` threads (the arrays are shared, not copied); progress then advances when a fold ends.
            1 trains them one after the other in this process; 0 chooses (:func:`plan_fold_workers`): as many
            workers as CPU cores and ``memory_budget_gb`` allow, ``num_threads`` shared out between them, when
            each fold is long enough to repay a worker's start. On two cores, two one-thread workers avoid the
            OpenMP synchronisation of small kernels; a fold gives the same model as it does alone with one thread.
        memory_budget_gb: with ``fold_workers=0``, the memory the fold workers' estimated peaks may add up to
            (:func:`training_memory_bytes`; the process holding the arrays counted too).
    """

    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 1e-3
    epochs: PositiveInt = 30
    patience: PositiveInt = 5
    spec_augment: bool = True
    max_frequency_mask: Fraction = 0.15
    max_time_mask: Fraction = 0.15
    dropout: Fraction = 0.3
    weights: str | None = None
    seed: Seed = 0
    device: str = ""
    num_threads: PositiveInt = 2
    channels_last: bool = True
    retain_freed_memory: bool = True
    fold_workers: NonNegativeInt = 0
    memory_budget_gb: PositiveFloat = 4.0

    def __post_init__(self):
        check_fields(self)
        if self.device:
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"NeuralTrainingConfig.device {self.device!r} is not a torch device") from error

    def resolved_device(self) -> torch.device:
        """``device``, or CUDA when available and ``device`` is empty, else the CPU."""
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class InputArrays(Dataset):
    """The arrays of some ``classification_inputs`` rows, loaded into memory once, with their labels.

    :meth:`subset` gives views that share the loaded tensors, so the fold sets of one table cost no copies.

    Args:
        rows: ``<kind>_path`` columns (relative to ``root``) for every kind in ``kinds``; a ``label`` column
            (0/1) when the rows train or are scored against labels.
        root: the folder the paths are relative to.
        kinds: the array kinds to load (a model's ``inputs``).

    Shape:
        An item ``(arrays, label)``: ``arrays[kind]`` is ``(1, rows, columns)`` for image kinds, ``(size,)``
        for vectors; ``label`` a float scalar. Indexing with a list or tensor of positions gives the batch.

    Raises:
        ClassificationError: a missing column, an unreadable or missing file, arrays of one kind with different
            shapes, or non-finite values.
    """

    def __init__(self, rows: pd.DataFrame, root: str | Path, kinds: tuple[str, ...]):
        missing = [f"{kind}_path" for kind in kinds if f"{kind}_path" not in rows.columns]
        if missing:
            raise ClassificationError(f"the inputs table lacks {missing}")
        root = Path(root)
        self.kinds = tuple(kinds)
        self.tensors = {kind: _stack(rows[f"{kind}_path"], root, kind) for kind in kinds}
        labels = rows["label"].to_numpy(np.float32) if "label" in rows.columns else np.zeros(len(rows), np.float32)
        self.labels = torch.from_numpy(labels)
        self.index = torch.arange(len(rows))

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], labels: torch.Tensor) -> InputArrays:
        """Arrays already in memory (``tensors[kind]``: ``(rows, ...)``, images with or without their channel axis)
        with their 0/1 ``labels``; no files are read."""
        data = cls.__new__(cls)
        data.kinds = tuple(tensors)
        data.tensors = {kind: as_model_input(kind, tensor.float()) for kind, tensor in tensors.items()}
        data.labels = torch.as_tensor(labels, dtype=torch.float32)
        data.index = torch.arange(len(data.labels))
        return data

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        chosen = self.index[position]
        return {kind: tensor[chosen] for kind, tensor in self.tensors.items()}, self.labels[chosen]

    def subset(self, positions) -> InputArrays:
        """The rows at ``positions`` (a boolean mask or positions), sharing this object's tensors."""
        view = copy.copy(self)
        view.index = self.index[torch.as_tensor(np.array(positions))]
        return view

    def shape(self, kind: str) -> tuple[int, ...]:
        """The shape of one example's ``kind`` array (without the channel axis of an image)."""
        shape = tuple(self.tensors[kind].shape[1:])
        return shape[1:] if kind in IMAGE_KINDS else shape


def _stack(paths: pd.Series, root: Path, kind: str) -> torch.Tensor:
    """One float32 tensor of every row's ``kind`` array; images get their channel axis."""
    arrays = []
    for path in paths:
        try:
            arrays.append(np.load(root / str(path), allow_pickle=False))
        except (OSError, ValueError) as error:
            raise ClassificationError(f"{kind} array {root / str(path)} is unreadable ({error})") from error
    shapes = sorted({array.shape for array in arrays})
    if len(shapes) > 1:
        raise ClassificationError(f"{kind} arrays have different shapes {shapes[:3]}")
    stacked = np.stack(arrays).astype(np.float32) if arrays else np.zeros((0,), np.float32)
    if not np.isfinite(stacked).all():
        raise ClassificationError(f"{kind} arrays hold NaN or infinite values")
    tensor = torch.from_numpy(stacked)
    return tensor.unsqueeze(1) if kind in IMAGE_KINDS and tensor.dim() == 3 else tensor


def spec_augment(
    images: torch.Tensor, generator: torch.Generator, max_frequency: float, max_time: float
) -> torch.Tensor:
    """A copy of ``images`` with, per example, one frequency band of up to ``max_frequency`` of its rows and one
    time span of up to ``max_time`` of its columns (widths and starts uniform) set to the example's mean.

    Shape:
        ``(batch, 1, rows, columns)`` -> the same.
    """
    batch, _, rows, columns = images.shape
    mean = images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
    masked = torch.zeros(images.shape, dtype=torch.bool)
    axes = ((max_frequency, rows, (batch, 1, rows, 1)), (max_time, columns, (batch, 1, 1, columns)))
    for share, length, view in axes:
        widest = int(share * length + 1e-9)  # float round-off: 0.29 * 100 is 28.999...
        width = torch.randint(0, widest + 1, (batch,), generator=generator)
        start = (torch.rand(batch, generator=generator) * (length - width + 1)).long()
        position = torch.arange(length)
        band = (position >= start[:, None]) & (position < (start + width)[:, None])
        masked |= band.view(view)
    return torch.where(masked.to(images.device), mean, images)


@dataclass
class FoldModel:
    """The kept model of one fold.

    Args:
        fold: the CV fold it was validated on (and did not train on).
        model: the weights of ``best_epoch``, in eval mode, on the CPU.
        best_epoch: the epoch (from 1) with the lowest validation loss.
        history: one record per epoch run: ``epoch``, ``train_loss``, ``val_loss``, ``seconds``.
    """

    fold: int
    model: NeuralClassifier
    best_epoch: int
    history: list[dict] = field(default_factory=list)

    @property
    def best_val_loss(self) -> float:
        return self.history[self.best_epoch - 1]["val_loss"]


@dataclass
class NeuralResult:
    """``predictions``: the predictions table (validation and holdout rows of every fold model). ``models``: the
    fold models in fold order. ``histories``: ``fold, epoch, train_loss, val_loss, seconds, best`` per epoch."""

    predictions: pd.DataFrame
    models: list[FoldModel]
    histories: pd.DataFrame

    def save(self, folder: str | Path) -> list[Path]:
        """Each fold model in ``folder/fold<k>`` (:meth:`NeuralClassifier.save`, metadata: fold, best epoch and
        validation loss); returns the folders."""
        folders = []
        for fold_model in self.models:
            metadata = {**fold_model.model.metadata, "best_val_loss": fold_model.best_val_loss}
            folders.append(fold_model.model.save(Path(folder) / f"fold{fold_model.fold}", metadata))
        return folders


def network_config(name: str, data: InputArrays, dropout: float = 0.3) -> NetworkConfig:
    """The :class:`NetworkConfig` of model ``name`` for the array shapes of ``data``."""
    sizes: dict = {}
    if "mfcc" in data.kinds:
        sizes["mfcc_size"] = data.shape("mfcc")[0]
    if "chroma" in data.kinds:
        sizes["chroma_size"] = data.shape("chroma")[0]
    if "spectrogram" in data.kinds:
        sizes["image_shape"] = data.shape("spectrogram")
    return NetworkConfig(name=name, dropout=dropout, **sizes)


def _spec(name: str):
    if name not in MODELS:
        raise ClassificationError(f"unknown neural model {name!r}; choose from {list(MODELS)}")
    return MODELS[name]


def _batches(data: InputArrays, batch_size: int, generator: torch.Generator | None = None):
    """Batches of ``data``: shuffled by ``generator`` when given (a lone last example is then left out, since
    BatchNorm cannot train on one example of a 1x1 map), else in order."""
    if generator is None:
        order = torch.arange(len(data))
    else:
        order = torch.randperm(len(data), generator=generator)
        if len(order) > 1 and len(order) % batch_size == 1:
            order = order[:-1]
    for start in range(0, len(order), batch_size):
        yield data[order[start : start + batch_size]]


def _loss_sum(logits: torch.Tensor, labels: torch.Tensor, output: str) -> torch.Tensor:
    """Summed cross-entropy (two logits) or binary cross-entropy on the logit (one)."""
    if output == "softmax2":
        return F.cross_entropy(logits, labels.long(), reduction="sum")
    return F.binary_cross_entropy_with_logits(logits[:, 0], labels, reduction="sum")


def _on(arrays: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """The arrays on ``device``; images in ``channels_last`` memory format when the model's weights are."""
    moved = {kind: array.to(device, non_blocking=True) for kind, array in arrays.items()}
    if channels_last:
        moved = {k: a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for k, a in moved.items()}
    return moved


def _trains_channels_last(name: str, config: NeuralTrainingConfig) -> bool:
    """Whether model ``name`` trains in ``channels_last`` format (the CNNs, when ``config`` asks for it)."""
    return config.channels_last and name in CNN_NAMES


class _SelfPaddingDepthwiseConv(torch.nn.Conv2d):
    """A depthwise convolution that zero-pads its input itself when its kernel is larger than the input.

    oneDNN's weight gradient for such a layer (a 5x5 kernel over the 4x6 maps at the end of MobileNetV3-Small and
    EfficientNet-Lite0 on a 128x173 patch) is 4-6x slower than the same gradient of the padded input with no
    padding; the values are the same (zero padding either way, only the order of float sums may change).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.kernel_size
        if x.shape[-2] >= height and x.shape[-1] >= width:
            return super().forward(x)
        pad_height, pad_width = self.padding
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        x = F.pad(x, (pad_width, pad_width, pad_height, pad_height))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@contextmanager
def _self_padding_depthwise(model: torch.nn.Module, enabled: bool = True):
    """While training on a CPU, the model's zero-padded depthwise convolutions pad their input themselves
    (:class:`_SelfPaddingDepthwiseConv`); the model is the same afterwards (weights and module types)."""
    swapped = []
    if enabled:
        for module in model.modules():
            if (
                type(module) is torch.nn.Conv2d
                and module.groups == module.in_channels > 1
                and module.padding_mode == "zeros"
                and isinstance(module.padding, tuple)
                and any(module.padding)
            ):
                module.__class__ = _SelfPaddingDepthwiseConv
                swapped.append(module)
    try:
        yield model
    finally:
        for module in swapped:
            module.__class__ = torch.nn.Conv2d


def _train_epoch(
    model: NeuralClassifier,
    data: InputArrays,
    optimiser: torch.optim.Optimizer,
    config: NeuralTrainingConfig,
    device: torch.device,
    generator: torch.Generator,
    objective: Objective | None = None,
) -> float:
    """One shuffled pass with masked training images; the mean ``objective`` loss per example."""
    model.train()
    channels_last = _trains_channels_last(model.config.name, config)
    total, count = 0.0, 0
    for arrays, labels in _batches(data, config.batch_size, generator):
        if config.spec_augment:
            arrays = {
                kind: spec_augment(array, generator, config.max_frequency_mask, config.max_time_mask)
                if kind in IMAGE_KINDS
                else array
                for kind, array in arrays.items()
            }
        arrays, labels = _on(arrays, device, channels_last), labels.to(device)
        if objective is None:
            loss = _loss_sum(model(arrays), labels, model.output)
        else:
            loss = objective(model, arrays, labels)
        optimiser.zero_grad(set_to_none=True)
        (loss / len(labels)).backward()
        optimiser.step()
        total, count = total + float(loss.detach()), count + len(labels)
    return total / max(count, 1)


def logits_of(
    model: NeuralClassifier,
    data: InputArrays,
    batch_size: int = 64,
    device: torch.device | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and labels of every row of ``data``, in order, on the CPU: ``model`` in eval mode without
    gradients or augmentation, on ``device`` (default: where the model is); ``channels_last``: give the images in
    that memory format (a model trained in it). Shape: ``(rows, outputs)`` float32 and ``(rows,)``."""
    device = device if device is not None else next(model.parameters()).device
    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for arrays, batch_labels in _batches(data, batch_size):
            logits.append(model(_on(arrays, device, channels_last)).float().cpu())
            labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def evaluate_loss(
    model: NeuralClassifier,
    data: InputArrays,
    batch_size: int = 64,
    device: torch.device | None = None,
    channels_last: bool = False,
) -> float:
    """Mean loss per example of ``model`` over ``data`` (:func:`logits_of`)."""
    logits, labels = logits_of(model, data, batch_size, device, channels_last)
    return float(_loss_sum(logits, labels, model.output)) / len(labels)


def predict(
    model: NeuralClassifier,
    data: InputArrays,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    backend: Backend = "auto",
) -> np.ndarray:
    """P(positive) of every row of ``data`` in eval mode, never augmented, on ``device`` (default: where the
    model is), by an :class:`~cough_pipeline.classification.inference.InferenceModel` of ``backend`` (``"auto"``:
    ONNX Runtime on a CPU when installed; ``"eager"``: the model itself). The model is left as it is.
    Shape: ``(len(data),)``."""
    predictor = InferenceModel.from_classifier(model, backend=backend, device=device)
    return _predict_with(predictor, data, batch_size)


def _predict_with(predictor: InferenceModel, data: InputArrays, batch_size: int) -> np.ndarray:
    parts = [np.zeros(0)] + [predictor(arrays).numpy() for arrays, _ in _batches(data, batch_size)]
    return np.concatenate(parts).astype(np.float64)


def _fit(
    model: NeuralClassifier,
    train: InputArrays,
    validation: InputArrays,
    config: NeuralTrainingConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    objective: Objective | None = None,
    criterion: Criterion | None = None,
) -> tuple[list[dict], int, dict[str, torch.Tensor]]:
    """Train ``model`` (on ``device``) epoch by epoch; the history, the best epoch and its weights (on the CPU)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)  # batch order and masks
    channels_last = _trains_channels_last(model.config.name, config)
    history: list[dict] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(model, train, optimiser, config, device, generator, objective)
        # one pass over the validation rows serves both the loss and the criterion
        logits, labels = logits_of(model, validation, config.batch_size, device, channels_last)
        val_loss = float(_loss_sum(logits, labels, model.output)) / len(labels)
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        if criterion is not None:
            record["val_criterion"] = criterion(logits, labels, val_loss)
        chosen = record.get("val_criterion", val_loss)
        history.append({**record, "seconds": time.perf_counter() - started})
        if chosen < best_loss:
            best_loss, best_epoch = chosen, epoch
            best_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
        notify(progress, epoch, config.epochs)
        if epoch - best_epoch >= config.patience:
            break
    if best_state is None:
        raise ClassificationError(f"{model.config.name}: no epoch gave a finite validation loss (training diverged)")
    return history, best_epoch, best_state


def fit_model(
    build: Callable[[], NeuralClassifier],
    train: InputArrays,
    validation: InputArrays,
    config: NeuralTrainingConfig = NeuralTrainingConfig(),
    progress: ProgressCallback | None = None,
    objective: Objective | None = None,
    criterion: Criterion | None = None,
) -> tuple[NeuralClassifier, int, list[dict]]:
    """The training loop every neural model of the pipeline goes through: build the model with ``build()`` under
    ``config.seed`` (the same seed gives the same initial weights), train it with Adam on ``train`` minimising
    ``objective`` (default: the model's own cross-entropy), keep the epoch with the lowest ``criterion`` on
    ``validation`` (default: its cross-entropy), stop after ``config.patience`` epochs without a lower one.

    Returns:
        The kept model (eval mode, CPU, contiguous weights), its epoch (from 1) and the per-epoch history.

    Raises:
        ClassificationError: training that never gives a finite validation loss.
    """
    device = config.resolved_device()
    with reproducible(config.seed, device, config.num_threads), freed_memory_retained(config.retain_freed_memory):
        model = build().to(device)
        if _trains_channels_last(model.config.name, config):
            model = model.to(memory_format=torch.channels_last)
        with _self_padding_depthwise(model, enabled=device.type == "cpu"):
            history, best_epoch, best_state = _fit(
                model, train, validation, config, device, progress, objective, criterion
            )
    model.load_state_dict(best_state)
    model.zero_grad(set_to_none=True)  # the last step's gradients: memory the kept model has no use for
    return model.cpu().to(memory_format=torch.contiguous_format).eval(), best_epoch, history


def fit_fold(
    name: str,
    train: InputArrays,
    validation: InputArrays,
    config: NeuralTrainingConfig = NeuralTrainingConfig(),
    progress: ProgressCallback | None = None,
    fold: int = 0,
) -> FoldModel:
    """Train model ``name`` on ``train`` and keep the epoch with the lowest loss on ``validation``.

    Args:
        name: a key of :data:`~cough_pipeline.classification.networks.MODELS`; its sizes come from the arrays.
        train, validation: the fold's arrays and labels (:class:`InputArrays`).
        config: optimiser, epochs, early stopping, augmentation, seed, device and threads.
        progress: ``progress(epoch, config.epochs)`` after each epoch.
        fold: the fold number recorded with the model.

    Returns:
        The best epoch's model (eval mode, CPU; ``metadata``: fold, best epoch, seed) and the history.

    Raises:
        ClassificationError: an unknown model, no training or validation rows, training rows of one class, or
            training that never gives a finite validation loss.
    """
    _spec(name)
    if len(train) == 0 or len(validation) == 0:
        raise ClassificationError(f"need training and validation rows, got {len(train)} and {len(validation)}")
    classes = sorted(set(train.labels[train.index].tolist()))
    if classes != [0.0, 1.0]:
        raise ClassificationError(f"the training rows of fold {fold} hold the labels {classes}, need 0 and 1")
    weights = config.weights if name in CNN_NAMES else None
    model, best_epoch, history = fit_model(
        lambda: NeuralClassifier(network_config(name, train, config.dropout), weights=weights),
        train,
        validation,
        config,
        progress,
    )
    model.metadata = {"fold": int(fold), "best_epoch": best_epoch, "seed": config.seed}
    return FoldModel(int(fold), model, best_epoch, history)


def train_fold(
    name: str,
    train_rows: pd.DataFrame,
    validation_rows: pd.DataFrame,
    root: str | Path,
    config: NeuralTrainingConfig = NeuralTrainingConfig(),
    progress: ProgressCallback | None = None,
) -> FoldModel:
    """:func:`fit_fold` on the arrays of two row sets of ``classification_inputs`` (``<kind>_path`` relative to
    ``root``, ``label`` 0/1); the fold number is the validation rows' ``fold`` when they have one."""
    kinds = _spec(name).inputs
    folds = validation_rows["fold"].unique() if "fold" in validation_rows.columns else []
    fold = int(folds[0]) if len(folds) == 1 else 0
    for what, rows in (("training", train_rows), ("validation", validation_rows)):
        if "label" not in rows.columns or not rows["label"].isin([0, 1]).all():
            raise ClassificationError(f"the {what} rows need a 0/1 label column")
    data = InputArrays(train_rows, root, kinds), InputArrays(validation_rows, root, kinds)
    return fit_fold(name, *data, config=config, progress=progress, fold=fold)


def _prediction_rows(
    rows: pd.DataFrame, name: str, variant: str, split: str, fold: int, probability: np.ndarray
) -> pd.DataFrame:
    out = rows[["recording_id", "participant_id", "dataset"]].copy()
    out["model"], out["variant"], out["split"], out["fold"] = name, variant, split, int(fold)
    out["probability"] = probability
    out["label"] = rows["label"].to_numpy(int)
    return out[list(PREDICTION_COLUMNS)]


def train_neural(
    inputs: pd.DataFrame,
    folds: pd.DataFrame,
    name: str,
    variant: str,
    root: str | Path,
    config: NeuralTrainingConfig = NeuralTrainingConfig(),
    progress: ProgressCallback | None = None,
) -> NeuralResult:
    """Every CV fold model of ``name`` on ``variant``'s arrays, and its validation and holdout predictions.

    Fold model ``k`` trains on the cv rows of the other folds, stops early on fold ``k``, then predicts fold ``k``
    and every holdout row. The arrays are loaded once for all folds.

    Args:
        inputs: the ``classification_inputs`` table (``variant``, ``recording_id``, ``<kind>_path`` relative to
            ``root``); rows of ``variant`` are used.
        folds: the fold table (its ``label`` is the target; ``split``, ``fold``).
        name: a key of :data:`~cough_pipeline.classification.networks.MODELS`.
        variant: ``"original"`` or ``"separated"``.
        root: the folder the array paths are relative to.
        config: training settings (:class:`NeuralTrainingConfig`).
        progress: ``progress(done, total)`` after each epoch, ``total`` = folds x ``config.epochs`` (a fold that
            stops early jumps to its end).

    Returns:
        Predictions (``model`` = ``name``), the fold models and their histories.
    """
    spec = _spec(name)
    rows = inputs[inputs["variant"] == variant] if "variant" in inputs.columns else inputs
    if rows.empty:
        raise ClassificationError(f"no {variant} inputs to train {name} on")
    frame = with_folds(rows, folds, [f"{kind}_path" for kind in spec.inputs])
    numbers = cv_folds(frame)
    data = InputArrays(frame, root, spec.inputs)
    cv = (frame["split"] == "cv").to_numpy()
    validations = {k: cv & (frame["fold"] == k).to_numpy() for k in numbers}
    jobs = [(name, data.subset(cv & ~validations[k]), data.subset(validations[k]), config, k) for k in numbers]
    predictions, models, histories = [], [], []
    for k, fold_model in zip(numbers, _fit_folds(jobs, config, progress)):
        fold_model.model.metadata["variant"] = variant
        models.append(fold_model)
        histories += [{"fold": k, **r, "best": r["epoch"] == fold_model.best_epoch} for r in fold_model.history]
        predictor = InferenceModel.from_classifier(fold_model.model, device=config.resolved_device())
        for split, mask in (("validation", validations[k]), ("holdout", ~cv)):
            if mask.any():
                probability = _predict_with(predictor, data.subset(mask), config.batch_size)
                predictions.append(_prediction_rows(frame[mask], name, variant, split, k, probability))
    return NeuralResult(pd.concat(predictions, ignore_index=True), models, pd.DataFrame(histories))


@dataclass
class LodoResult:
    """``predictions``: each tested dataset's rows scored by the model trained on the other datasets (``split`` =
    ``lodo:<dataset>``, ``fold`` = -1, as the classical stage writes them). ``skipped``: test_dataset, reason."""

    predictions: pd.DataFrame
    skipped: pd.DataFrame


def train_neural_lodo(
    inputs: pd.DataFrame,
    lodo: pd.DataFrame,
    name: str,
    variant: str,
    root: str | Path,
    config: NeuralTrainingConfig = NeuralTrainingConfig(),
    progress: ProgressCallback | None = None,
) -> LodoResult:
    """Leave one dataset out: per tested dataset, model ``name`` trained on ``variant``'s arrays of the other
    datasets and scored on that one.

    Training stops early on a participant-grouped, label-stratified fifth of the training side
    (:func:`~cough_pipeline.classification.folds.early_stopping_rows`, seeded by ``config.seed``), never on the
    tested dataset. The models only score: they are not kept.

    Args:
        inputs: the ``classification_inputs`` table (``variant``, ``recording_id``, ``<kind>_path``).
        lodo: the ``leave_one_dataset_out_folds`` table (test_dataset, recording_id, dataset, participant_id,
            group_id, label, role).
        name, variant, root, config: as for :func:`train_neural`.
        progress: ``progress(done, total)`` after each epoch, ``total`` = tested datasets x ``config.epochs``.

    Returns:
        The predictions and the datasets that could not be tested here, with the reason: ``no_inputs`` (none of
        its recordings, or no training recording, has ``variant`` inputs), ``one_class`` (a side holds one class),
        ``no_stopping_split`` (the training side's participants cannot be split keeping both classes on both sides).
    """
    spec = _spec(name)
    columns = [f"{kind}_path" for kind in spec.inputs]
    rows = inputs[inputs["variant"] == variant] if "variant" in inputs.columns else inputs
    frame = lodo.merge(rows[["recording_id", *columns]].drop_duplicates("recording_id"), on="recording_id")
    recordings = frame.drop_duplicates("recording_id").reset_index(drop=True)
    position = pd.Series(np.arange(len(recordings)), index=recordings["recording_id"])
    data = InputArrays(recordings, root, spec.inputs) if len(recordings) else None
    jobs, tested, skipped = [], [], []
    for dataset in sorted(lodo["test_dataset"].unique()):
        part = frame[frame["test_dataset"] == dataset]
        train, test = part[part["role"] == "train"], part[part["role"] == "test"]
        if train.empty or test.empty:
            skipped.append({"test_dataset": dataset, "reason": "no_inputs"})
            continue
        if train["label"].nunique() < 2 or test["label"].nunique() < 2:
            skipped.append({"test_dataset": dataset, "reason": "one_class"})
            continue
        try:
            stop = early_stopping_rows(train, seed=config.seed)
        except FoldError:
            skipped.append({"test_dataset": dataset, "reason": "no_stopping_split"})
            continue
        at = position[train["recording_id"]].to_numpy()
        jobs.append((name, data.subset(at[~stop]), data.subset(at[stop]), config, FOLD_ENSEMBLE))
        tested.append((dataset, test))
    predictions = []
    for (dataset, test), fold_model in zip(tested, _fit_folds(jobs, config, progress)):
        predictor = InferenceModel.from_classifier(fold_model.model, device=config.resolved_device())
        probability = _predict_with(
            predictor, data.subset(position[test["recording_id"]].to_numpy()), config.batch_size
        )
        predictions.append(_prediction_rows(test, name, variant, f"lodo:{dataset}", FOLD_ENSEMBLE, probability))
    table = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return LodoResult(table, pd.DataFrame(skipped, columns=["test_dataset", "reason"]))


def _fit_fold_job(job: tuple) -> FoldModel:
    """:func:`fit_fold` of one ``(name, train, validation, config, fold)`` job (a fold worker's task)."""
    name, train, validation, config, fold = job
    return fit_fold(name, train, validation, config, None, fold)


#: A fold worker's private memory before it trains: the heap of the interpreter, torch, timm and ONNX Runtime once
#: imported (about 500 MB on Linux; their code, another 370 MB, is shared with this process).
WORKER_BASE_BYTES = 512 << 20
#: Fewer Adam steps per fold than this train in this process: a worker's start (a few seconds of imports) and its
#: base memory would cost more than two folds at once save.
MIN_STEPS_FOR_WORKERS = 200


def training_memory_bytes(name: str, data: InputArrays, config: NeuralTrainingConfig) -> int:
    """The memory training model ``name`` on ``data`` adds at ``config.batch_size``, estimated from one forward
    pass without gradients: the outputs of every leaf module, which the backward pass keeps in about that size
    (1.2x for the gradients it computes from them; scaled up to a full batch), and the weights, gradients and
    Adam's two moments."""
    rows = min(len(data), config.batch_size)
    arrays, _ = data[torch.arange(rows)]
    outputs = [0]

    def count(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            outputs[0] += output.numel() * output.element_size()

    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        model = NeuralClassifier(network_config(name, data, config.dropout)).train()
        hooks = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
        with torch.no_grad():
            model(arrays)
        for hook in hooks:
            hook.remove()
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(1.2 * outputs[0] * config.batch_size / max(rows, 1) + 4 * parameters)


def _resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_fold_workers(jobs: list[tuple], config: NeuralTrainingConfig) -> tuple[int, int]:
    """``(workers, threads per worker)`` for training ``jobs`` (``(name, train, validation, config, fold)``).

    ``config.fold_workers`` > 0 is taken as given (with ``config.num_threads`` each). Otherwise on a CPU: one
    worker per core, at most one per fold and per thread of ``config.num_threads``, no more than fit
    ``config.memory_budget_gb`` with this process's resident memory (each worker :data:`WORKER_BASE_BYTES` plus
    :func:`training_memory_bytes`), and one when a fold trains fewer
    than :data:`MIN_STEPS_FOR_WORKERS` steps or on a GPU; the threads are shared out between the workers.
    """
    if config.fold_workers:
        return min(config.fold_workers, max(len(jobs), 1)), config.num_threads
    if not jobs or config.resolved_device().type != "cpu":
        return 1, config.num_threads
    name, train = jobs[0][0], jobs[0][1]
    steps = -(-len(train) // config.batch_size) * config.epochs
    cores = available_cores()
    if steps < MIN_STEPS_FOR_WORKERS or cores < 2 or len(jobs) < 2:
        return 1, config.num_threads
    room = config.memory_budget_gb * 2**30 - _resident_bytes()
    worker = WORKER_BASE_BYTES + training_memory_bytes(name, train, config)
    workers = int(min(cores, len(jobs), config.num_threads, room // worker))
    if workers < 2:
        return 1, config.num_threads
    return workers, max(1, config.num_threads // workers)


def _fit_folds(jobs: list[tuple], config: NeuralTrainingConfig, progress: ProgressCallback | None):
    """The fold models of ``jobs`` in order: one after the other here (``progress`` after every epoch), or
    several at a time in spawned processes (:func:`plan_fold_workers`; ``progress`` as each fold ends)."""
    total = len(jobs) * config.epochs
    workers, threads = plan_fold_workers(jobs, config)
    if workers == 1:
        for position, job in enumerate(jobs):
            offset = position * config.epochs
            fold_progress = None if progress is None else (lambda done, _, o=offset: progress(o + done, total))
            name, train, validation, _, fold = job
            yield fit_fold(name, train, validation, config, fold_progress, fold)
            notify(progress, offset + config.epochs, total)
        return
    jobs = [
        (name, train, validation, replace(job_config, num_threads=threads), fold)
        for name, train, validation, job_config, fold in jobs
    ]
    # Tensors sent to the workers go through shared memory (torch's reductions for multiprocessing), so the
    # workers read the arrays loaded here instead of copies.
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for position, fold_model in enumerate(pool.map(_fit_fold_job, jobs)):
            notify(progress, (position + 1) * config.epochs, total)
            yield fold_model
