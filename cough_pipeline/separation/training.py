"""Training the cough separator: L1 loss on magnitudes, Adam, best checkpoint on validation loss.

:class:`MixtureDataset` reads ``(mixture, cough)`` WAV pairs lazily from a table (columns ``mixture_path`` and
``cough_path``, relative to a root folder), padded or trimmed to ``config.clip_samples``. :func:`train_separator`
trains on two such tables with a :class:`TrainingConfig`; :func:`train_on_datasets` is the same loop for any
datasets yielding ``(mixture, cough)`` tensors (the benchmark uses in-memory ones). ``grad_masks`` trains a
pruned model with fixed masks: after every optimizer step each named parameter is multiplied by its 0/1 mask,
so pruned weights stay exactly zero. A run is reproducible on CPU: the same seed, data and thread count give
identical weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cough_pipeline.bounds import NonNegativeInt, PositiveFloat, PositiveInt, Seed, check_fields
from cough_pipeline.reproducible import reproducible
from cough_pipeline.separation.model import CoughSeparator, SeparatorConfig, resolve_device

#: Epochs of the published training run.
PAPER_EPOCHS = 50
TABLE_COLUMNS = ("mixture_path", "cough_path")
#: ``on_epoch(record)``: called with each epoch's history record as it is made.
EpochCallback = Callable[[dict], None]


class ClipReadError(ValueError):
    """A mixture or cough WAV that is missing, unreadable or at the wrong sample rate."""


def read_clip(path: str | Path, sample_rate: int, samples: int) -> np.ndarray:
    """Mono float32 audio from ``path``: channel mean, zero-padded or trimmed to ``samples``.

    Only the first ``samples`` frames are read. The file must be at ``sample_rate`` (mixtures are generated at the
    model's rate; nothing is resampled here); anything else raises :class:`ClipReadError`.

    Args:
        path: a WAV (or any libsndfile format).
        sample_rate: the rate the file must have.
        samples: the length returned.

    Shape:
        Returns ``(samples,)``.
    """
    try:
        with sf.SoundFile(str(path)) as handle:
            if handle.samplerate != sample_rate:
                raise ClipReadError(f"{path}: {handle.samplerate} Hz, expected {sample_rate} Hz")
            data = handle.read(frames=samples, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise ClipReadError(f"{path}: {error}") from error
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if mono.shape[0] < samples:
        mono = np.pad(mono, (0, samples - mono.shape[0]))
    return np.ascontiguousarray(mono, dtype=np.float32)


class MixtureDataset(Dataset):
    """``(mixture, cough)`` float32 tensors read from disk per item.

    Only the path strings are kept, so the dataset pickles cheaply into DataLoader workers.

    Args:
        table: columns ``mixture_path`` and ``cough_path``, relative to ``root`` (absolute paths are used as
            they are).
        root: the folder the paths are relative to.
        config: the sample rate and clip length (default: the published model's).

    Shape:
        Each item: ``mixture`` and ``cough`` ``(config.clip_samples,)``.
    """

    def __init__(self, table: pd.DataFrame, root: str | Path, config: SeparatorConfig | None = None):
        missing = [column for column in TABLE_COLUMNS if column not in table.columns]
        if missing:
            raise ValueError(f"mixture table lacks columns {missing}; has {list(table.columns)}")
        config = config or SeparatorConfig()
        root = Path(root)
        self.mixture_paths = [str(root / path) for path in table["mixture_path"]]
        self.cough_paths = [str(root / path) for path in table["cough_path"]]
        self.sample_rate = config.sample_rate
        self.samples = config.clip_samples

    def __len__(self) -> int:
        return len(self.mixture_paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        mixture = read_clip(self.mixture_paths[index], self.sample_rate, self.samples)
        cough = read_clip(self.cough_paths[index], self.sample_rate, self.samples)
        return torch.from_numpy(mixture), torch.from_numpy(cough)


@dataclass(frozen=True)
class TrainingConfig:
    """How the separator is trained (the published run: 50 epochs, batch 32, Adam at 1e-3).

    Args:
        epochs: passes over the training mixtures; the epoch with the lowest validation loss is kept.
        batch_size: mixtures per optimizer step (and per validation batch).
        learning_rate: Adam's step size.
        seed: seeds the initialisation and the shuffle order; the same seed, data and intra-op thread count give
            bit-identical weights on CPU.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available (:func:`resolve_device`).
        num_workers: DataLoader worker processes (0 reads the clips in the training process).
        num_threads: torch intra-op threads for the run (restored afterwards); ``None`` leaves them as they are.
            On a CPU shared with other busy processes use 1: the LSTM's per-time-step OpenMP barriers stall
            whenever a partner thread is descheduled (figures in ``benchmarks/results/separation.json``).
    """

    epochs: PositiveInt = PAPER_EPOCHS
    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 1e-3
    seed: Seed = 0
    device: str | None = None
    num_workers: NonNegativeInt = 0
    num_threads: PositiveInt | None = None

    def __post_init__(self):
        if self.device is not None:
            object.__setattr__(self, "device", str(torch.device(self.device)))
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingResult:
    """The outcome of a training run.

    Args:
        model: the best model on validation loss, in eval mode, on the training device.
        history: one record per epoch: ``epoch`` (from 1), ``train_loss``, ``val_loss``, ``seconds`` for the
            whole epoch and ``mixtures_per_s`` of the training pass.
        best_epoch: the epoch whose weights ``model`` holds.
    """

    model: CoughSeparator
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best_val_loss(self) -> float:
        return min(record["val_loss"] for record in self.history) if self.history else float("nan")


def l1_magnitude_loss(estimated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two magnitude spectrograms.

    Shape:
        ``estimated``, ``target``: ``(batch, frames, bins)``; returns a scalar.
    """
    return F.l1_loss(estimated, target)


def train_separator(
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    root: str | Path,
    training: TrainingConfig = TrainingConfig(),
    config: SeparatorConfig | None = None,
    *,
    model: CoughSeparator | None = None,
    grad_masks: Mapping[str, torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """Train on the mixtures of ``train_table``, keep the epoch with the lowest loss on ``val_table``.

    Args:
        train_table, val_table: ``mixture_path`` / ``cough_path`` columns, relative to ``root``.
        root: the folder the paths are relative to.
        training: epochs, batch size, learning rate, seed, device, workers and threads.
        config: the model's shape; defaults to ``model``'s, else the published one.
        model: continue from a copy of this model (the original is left untouched); ``None`` starts fresh.
        grad_masks: fixed pruning masks, see :func:`train_with_masks`.
        on_epoch: gets each history record as it is made.
        checkpoint_dir: the best model so far is saved there (:meth:`CoughSeparator.save`) whenever it improves.

    Returns:
        The best model and the history; see :func:`train_on_datasets`.
    """
    config = config or (model.config if model is not None else SeparatorConfig())
    return train_on_datasets(
        MixtureDataset(train_table, root, config),
        MixtureDataset(val_table, root, config),
        training,
        config,
        model=model,
        grad_masks=grad_masks,
        on_epoch=on_epoch,
        checkpoint_dir=checkpoint_dir,
    )


def train_with_masks(
    model: CoughSeparator,
    grad_masks: Mapping[str, torch.Tensor],
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    root: str | Path,
    training: TrainingConfig = TrainingConfig(),
    on_epoch: EpochCallback | None = None,
) -> TrainingResult:
    """Fine-tune a (pruned) ``model`` with fixed masks: after every optimizer step each masked parameter is
    multiplied by its mask, so pruned weights stay exactly zero.

    Args:
        model: the pruned separator (left untouched; training runs on a copy).
        grad_masks: ``{parameter_name: 0/1 tensor}``, names as in ``model.named_parameters()`` (e.g.
            ``masker.lstm.weight_ih_l0``), each mask shaped like its parameter.
        train_table, val_table, root, training, on_epoch: as :func:`train_separator`.

    Returns:
        The best masked model and the history.
    """
    return train_separator(
        train_table, val_table, root, training, model=model, grad_masks=grad_masks, on_epoch=on_epoch
    )


def train_on_datasets(
    train_data: Dataset,
    val_data: Dataset,
    training: TrainingConfig = TrainingConfig(),
    config: SeparatorConfig | None = None,
    *,
    model: CoughSeparator | None = None,
    grad_masks: Mapping[str, torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """The training loop of :func:`train_separator` for any datasets of ``(mixture, cough)`` pairs.

    Per batch: ``|STFT|`` of mixture and cough (no gradient), mask estimation, L1 between ``mask x |mixture|`` and
    ``|cough|``, one Adam step, then the fixed masks. Validation runs in eval mode (BatchNorm running statistics).
    The model initialisation and the shuffle order come from ``training.seed`` (the caller's global RNG state is
    restored afterwards) and deterministic algorithms are requested while training.

    Args:
        train_data, val_data: datasets of ``(mixture, cough)`` tensors (e.g. :class:`MixtureDataset`).
        training, config, model, grad_masks, on_epoch, checkpoint_dir: as :func:`train_separator`.

    Returns:
        The best model (eval mode, on the training device, ``metadata`` holding its epoch, validation loss and
        seed) and the history.

    Shape:
        Each item of the datasets: ``mixture`` and ``cough`` float32 ``(samples,)``.
    """
    if len(train_data) == 0 or len(val_data) == 0:
        raise ValueError(f"need training and validation mixtures, got {len(train_data)} and {len(val_data)}")
    config = config or (model.config if model is not None else SeparatorConfig())
    if model is not None and model.config != config:
        raise ValueError(f"config {config} differs from the model's {model.config}")
    device = resolve_device(training.device)
    previous_threads = torch.get_num_threads()
    if training.num_threads is not None:
        torch.set_num_threads(training.num_threads)
    try:
        with reproducible(training.seed, device):
            net = copy.deepcopy(model) if model is not None else CoughSeparator(config)
            return _train(net.to(device), train_data, val_data, training, device, grad_masks, on_epoch, checkpoint_dir)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    net: CoughSeparator,
    train_data: Dataset,
    val_data: Dataset,
    training: TrainingConfig,
    device: torch.device,
    grad_masks: Mapping[str, torch.Tensor] | None,
    on_epoch: EpochCallback | None,
    checkpoint_dir: str | Path | None,
) -> TrainingResult:
    """Train ``net`` (already on ``device``) for ``training.epochs``; keep and restore the best epoch's weights."""
    masks = _checked_masks(net, grad_masks, device)
    _apply_masks(masks)
    optimiser = torch.optim.Adam(net.parameters(), lr=training.learning_rate)
    train_loader, val_loader = _loaders(train_data, val_data, training, device)
    history: list[dict] = []
    best_state, best_epoch, best_loss = None, 0, float("inf")
    for epoch in range(1, training.epochs + 1):
        record = _epoch(net, epoch, train_loader, val_loader, optimiser, masks, device)
        history.append(record)
        if record["val_loss"] < best_loss:
            best_loss, best_epoch = record["val_loss"], epoch
            best_state = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
            if checkpoint_dir is not None:
                checkpoint = {key: record[key] for key in ("epoch", "val_loss", "train_loss")}
                net.save(checkpoint_dir, metadata={**checkpoint, "seed": training.seed})
        if on_epoch is not None:
            on_epoch(dict(record))
    if best_state is not None:
        net.load_state_dict(best_state)
    net.metadata = {"epoch": best_epoch, "val_loss": best_loss, "seed": training.seed}
    return TrainingResult(model=net.eval(), history=history, best_epoch=best_epoch)


def _loaders(
    train_data: Dataset, val_data: Dataset, training: TrainingConfig, device: torch.device
) -> tuple[DataLoader, DataLoader]:
    """The shuffled (seeded) training loader and the validation loader."""
    options = {
        "batch_size": training.batch_size,
        "num_workers": training.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": training.num_workers > 0,
    }
    shuffle = torch.Generator().manual_seed(training.seed)
    train_loader = DataLoader(train_data, shuffle=True, generator=shuffle, drop_last=False, **options)
    return train_loader, DataLoader(val_data, shuffle=False, **options)


def _epoch(
    net: CoughSeparator,
    epoch: int,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    masks: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> dict:
    """One training pass and one validation pass; the epoch's history record."""
    started = time.perf_counter()
    train_loss = _train_epoch(net, train_loader, optimiser, masks, device)
    train_seconds = time.perf_counter() - started
    val_loss = evaluate_loss(net, val_loader, device)
    mixtures = len(train_loader.dataset)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": time.perf_counter() - started,
        "mixtures_per_s": mixtures / train_seconds if train_seconds > 0 else float("inf"),
    }


def _train_epoch(
    net: CoughSeparator,
    loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    masks: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> float:
    """One pass over ``loader``; the mean loss per mixture."""
    net.train()
    total, count = 0.0, 0
    for mixture, cough in loader:
        mixture = mixture.to(device, non_blocking=True)
        cough = cough.to(device, non_blocking=True)
        with torch.no_grad():
            magnitudes = net.encoder.magnitude(torch.cat([mixture, cough]))
        mixture_magnitude, target = magnitudes.split(mixture.shape[0])
        mask, _ = net.masker(mixture_magnitude)
        loss = l1_magnitude_loss(mask * mixture_magnitude, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        _apply_masks(masks)
        total += loss.item() * mixture.shape[0]
        count += mixture.shape[0]
    return total / count


def evaluate_loss(net: CoughSeparator, loader: DataLoader, device: torch.device | str | None = None) -> float:
    """Mean L1 magnitude loss per mixture over ``loader`` with ``net`` in eval mode (left in eval mode).

    Args:
        net: the separator.
        loader: batches of ``(mixture, cough)`` waves.
        device: where to evaluate (default: the model's device).

    Returns:
        The mean loss.

    Shape:
        Each batch's waves ``(batch, samples)``.
    """
    device = resolve_device(device) if device is not None else next(net.parameters()).device
    net.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for mixture, cough in loader:
            mixture, cough = mixture.to(device), cough.to(device)
            estimated, _ = net.separate_magnitude(mixture)
            target = net.encoder.magnitude(cough)
            total += l1_magnitude_loss(estimated, target).item() * mixture.shape[0]
            count += mixture.shape[0]
    return total / count


def _checked_masks(
    net: CoughSeparator, grad_masks: Mapping[str, torch.Tensor] | None, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(parameter, mask)`` pairs on ``device``; unknown names or mismatched shapes are errors."""
    if not grad_masks:
        return []
    parameters = dict(net.named_parameters())
    unknown = sorted(set(grad_masks) - set(parameters))
    if unknown:
        raise KeyError(f"grad_masks names no parameters {unknown}; parameters are {sorted(parameters)}")
    pairs = []
    for name, mask in grad_masks.items():
        parameter = parameters[name]
        mask = torch.as_tensor(mask).to(device=device, dtype=parameter.dtype)
        if mask.shape != parameter.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, parameter {tuple(parameter.shape)}")
        pairs.append((parameter, mask))
    return pairs


def _apply_masks(masks: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for parameter, mask in masks:
            parameter.mul_(mask)
