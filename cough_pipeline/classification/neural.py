"""Training the neural classifiers per CV fold on the arrays of ``classification_inputs``.

For each CV fold ``k`` the model is trained on the other CV folds with Adam, evaluated on fold ``k`` after every
epoch, and the weights of the epoch with the lowest validation loss are kept (training stops after ``patience``
epochs without improvement). The kept model predicts fold ``k`` (``split = validation``) and the holdout
(``split = holdout``), in the predictions schema of :mod:`cough_pipeline.classification.evaluation`; the holdout
never influences training or the choice of epoch. Two-logit models (the CNNs) use cross-entropy, one-logit models
(the Cough2COVID19 family) binary cross-entropy on the logit. SpecAugment-style masking (one frequency band and
one time span per example, set to 0, the standardised patch's mean) applies to training batches of image inputs
only. Seeds fix the initial weights, the batch order and the masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cough_pipeline.bounds import NonNegativeInt, PositiveFloat, PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import PREDICTION_COLUMNS
from cough_pipeline.classification.networks import INPUTS, NetworkConfig, build, positive_probability
from cough_pipeline.parallel import ProgressCallback, notify

#: Array kinds with a (mels, frames) image: they get a channel axis and SpecAugment.
IMAGES = ("logmel", "spectrogram")


@dataclass(frozen=True)
class NeuralTrainingConfig:
    """Adam at ``learning_rate``, ``batch_size``, at most ``epochs`` with early stopping after ``patience`` epochs
    without a lower validation loss; SpecAugment masks up to ``max_frequency_mask`` bins and ``max_time_mask``
    frames of training images when ``spec_augment``; torch uses ``num_threads`` intra-op threads."""

    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 1e-3
    epochs: PositiveInt = 30
    patience: PositiveInt = 5
    spec_augment: bool = True
    max_frequency_mask: NonNegativeInt = 16
    max_time_mask: NonNegativeInt = 20
    seed: Seed = 0
    num_threads: PositiveInt = 2

    def __post_init__(self):
        check_fields(self)


@dataclass
class FoldModel:
    """The kept model of one fold, the epoch it came from and the loss history (train, validation per epoch)."""

    fold: int
    model: nn.Module
    best_epoch: int
    history: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class NeuralResult:
    predictions: pd.DataFrame
    models: list[FoldModel]


def load_arrays(rows: pd.DataFrame, root: Path, kinds: tuple[str, ...]) -> list[torch.Tensor]:
    """The ``.npy`` arrays of each kind for ``rows`` (``<kind>_path`` relative to ``root``), stacked.

    Shape:
        ``(rows, 1, mels, frames)`` for images, ``(rows, size)`` for vectors.
    """
    tensors = []
    for kind in kinds:
        stacked = np.stack([np.load(root / path) for path in rows[f"{kind}_path"]]).astype(np.float32)
        tensor = torch.from_numpy(stacked)
        tensors.append(tensor.unsqueeze(1) if kind in IMAGES else tensor)
    return tensors


def spec_augment(images: torch.Tensor, generator: torch.Generator, max_frequency: int, max_time: int) -> torch.Tensor:
    """A copy of ``images`` with one random frequency band and one time span per example set to 0.

    Shape:
        ``(batch, 1, mels, frames)`` -> the same.
    """
    out = images.clone()
    batch, _, mels, frames = out.shape
    for index in range(batch):
        for size, limit, axis in ((max_frequency, mels, 2), (max_time, frames, 3)):
            width = int(torch.randint(0, min(size, limit) + 1, (1,), generator=generator))
            start = int(torch.randint(0, limit - width + 1, (1,), generator=generator))
            out[index].narrow(axis - 1, start, width).zero_()
    return out


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 2:
        return nn.functional.cross_entropy(logits, labels.long())
    return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())


def _batches(inputs: list[torch.Tensor], labels: torch.Tensor, size: int, order: torch.Tensor | None = None):
    order = torch.arange(len(labels)) if order is None else order
    for start in range(0, len(order), size):
        chosen = order[start : start + size]
        yield [tensor[chosen] for tensor in inputs], labels[chosen]


def evaluate_loss(model: nn.Module, inputs: list[torch.Tensor], labels: torch.Tensor, batch_size: int) -> float:
    """Mean loss of ``model`` over all rows (eval mode, no augmentation)."""
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for batch, y in _batches(inputs, labels, batch_size):
            total += float(_loss(model(*batch), y)) * len(y)
    return total / len(labels)


def predict(model: nn.Module, inputs: list[torch.Tensor], batch_size: int = 64) -> np.ndarray:
    """P(positive) per row. Shape: ``(rows,)``."""
    model.eval()
    with torch.inference_mode():
        parts = [
            positive_probability(model(*batch))
            for batch, _ in _batches(inputs, torch.zeros(len(inputs[0])), batch_size)
        ]
    return torch.cat(parts).numpy().astype(np.float64)


def _augmented(batch: list[torch.Tensor], kinds: tuple[str, ...], config: NeuralTrainingConfig, generator):
    if not config.spec_augment:
        return batch
    return [
        spec_augment(tensor, generator, config.max_frequency_mask, config.max_time_mask) if kind in IMAGES else tensor
        for tensor, kind in zip(batch, kinds)
    ]


def train_fold(
    network: NetworkConfig,
    train: tuple[list[torch.Tensor], torch.Tensor],
    validation: tuple[list[torch.Tensor], torch.Tensor],
    config: NeuralTrainingConfig,
    fold: int = 0,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FoldModel:
    """Train one fold model and keep the epoch with the lowest validation loss (see the module docstring)."""
    torch.manual_seed(config.seed + fold)
    generator = torch.Generator().manual_seed(config.seed + fold)
    model = build(network)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    kinds = INPUTS[network.name]
    best, best_loss, best_epoch, history = copy.deepcopy(model.state_dict()), float("inf"), 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        order = torch.randperm(len(train[1]), generator=generator)
        for batch, y in _batches(*train, config.batch_size, order):
            optimiser.zero_grad()
            loss = _loss(model(*_augmented(batch, kinds, config, generator)), y)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(y)
        validation_loss = evaluate_loss(model, *validation, config.batch_size)
        history.append((total / len(train[1]), validation_loss))
        if on_epoch is not None:
            on_epoch(epoch, *history[-1])
        if validation_loss < best_loss:
            best, best_loss, best_epoch = copy.deepcopy(model.state_dict()), validation_loss, epoch
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best)
    return FoldModel(fold, model.eval(), best_epoch, history)


def _rows(frame: pd.DataFrame, name: str, variant: str, split: str, fold: int, probability) -> pd.DataFrame:
    out = frame[["recording_id", "participant_id", "dataset", "label"]].assign(
        model=name, variant=variant, split=split, fold=fold, probability=probability
    )
    return out[list(PREDICTION_COLUMNS)]


def _subset(arrays: list[torch.Tensor], labels: torch.Tensor, mask: torch.Tensor):
    return [array[mask] for array in arrays], labels[mask]


def train_neural(
    inputs: pd.DataFrame,
    folds: pd.DataFrame,
    network: NetworkConfig,
    variant: str,
    root: Path,
    config: NeuralTrainingConfig,
    progress: ProgressCallback | None = None,
) -> NeuralResult:
    """Every CV fold model of ``network`` on ``variant``'s arrays, and its validation and holdout predictions.

    Args:
        inputs: the ``classification_inputs`` table (``<kind>_path`` relative to ``root``).
        folds: the fold table (``label``, ``split``, ``fold`` per recording).
        progress: ``progress(done, total)`` after each fold.
    """
    torch.set_num_threads(config.num_threads)
    rows = inputs[inputs["variant"] == variant].drop(columns=["dataset", "participant_id"], errors="ignore")
    frame = folds.merge(rows, on="recording_id")
    if frame.empty:
        raise ClassificationError(f"no {variant} inputs for the recordings of the fold table")
    kinds = INPUTS[network.name]
    arrays = load_arrays(frame, root, kinds)
    labels = torch.as_tensor(frame["label"].to_numpy(np.int64))
    numbers = sorted(int(k) for k in frame.loc[frame["split"] == "cv", "fold"].unique())
    holdout = torch.as_tensor((frame["split"] == "holdout").to_numpy())
    predictions, models = [], []
    for done, k in enumerate(numbers, start=1):
        is_val = torch.as_tensor(((frame["split"] == "cv") & (frame["fold"] == k)).to_numpy())
        is_train = torch.as_tensor(((frame["split"] == "cv") & (frame["fold"] != k)).to_numpy())
        train, validation = _subset(arrays, labels, is_train), _subset(arrays, labels, is_val)
        fold_model = train_fold(network, train, validation, config, fold=k)
        models.append(fold_model)
        for split, mask in (("validation", is_val), ("holdout", holdout)):
            if mask.any():
                probability = predict(fold_model.model, _subset(arrays, labels, mask)[0])
                predictions.append(_rows(frame[mask.numpy()], network.name, variant, split, k, probability))
        notify(progress, done, len(numbers))
    return NeuralResult(pd.concat(predictions, ignore_index=True), models)
