"""SNIP pruning of the cough separator (Lee et al., ICLR 2019) and a sparse inference path that uses it.

SNIP scores every connection once, before training, by its *connection sensitivity*
``s = |w * dL/dw|`` at the initial weights, keeps the top ``keep_fraction`` and trains the rest with the pruned
weights held at zero (``train_separator(..., grad_masks=masks)``). Here the loss is the training loss (L1 between the
estimated and the true cough magnitude) and the gradient is summed over ``sensitivity_batches`` mini-batches: the
SNIP score of their union, up to a constant factor that does not change the ranking. With several target
parameters, ``scope="global"`` ranks them together (the paper); ``"per_parameter"`` keeps the fraction in each.
Global ranking across layers of different scale can cut a layer entirely (at 1 % over all LSTM and output weights
of a fresh separator, ``weight_ih_l0`` keeps nothing and the output no longer depends on the input);
:func:`snip_masks` warns when a target keeps no weight.

A dense kernel gains nothing from zeros, so :func:`optimize_for_inference` swaps each sparse ``nn.Linear`` for a
:class:`SparseLinear` that multiplies only the surviving connections. The sparse path pays off on batches at very low
density (the 1 % mask layer) and not on a single clip, where writing the ``(frames, 257)`` output and the per-op
overhead dominate; above a few per cent density it is a loss, hence :data:`SPARSE_DENSITY_LIMIT`. The measured
ratios are in ``benchmarks/results/pruning.json`` and the README. Pruned LSTM weights stay dense in the recurrence
kernel (:mod:`.cpu_kernels`), which vectorises each step's 50-wide mat-vec over the gates; a sparse recurrence was not
tried (the default configuration prunes only the mask layer).
"""

from __future__ import annotations

import copy
import json
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from cough_pipeline.bounds import Bounds, PositiveInt, check_fields
from cough_pipeline.separation.model import CoughSeparator
from cough_pipeline.separation.training import (
    EpochCallback,
    MixtureDataset,
    TrainingConfig,
    TrainingResult,
    l1_magnitude_loss,
    train_with_masks,
)

#: File names written next to the separator's own files by :func:`save_pruned`.
MASKS_FILE = "masks.pt"
PRUNING_CARD_FILE = "pruning.json"
PRUNING_CARD_FORMAT = "cough_pipeline.separation.pruning/1"
#: The mask layer's weights: the default target of the published pruning.
DEFAULT_TARGETS = ("masker.output.weight",)
#: Linear layers at or below this weight density get the sparse kernel (see ``benchmarks/pruning_bench.py``).
SPARSE_DENSITY_LIMIT = 0.02

Masks = dict[str, torch.Tensor]
LossFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


#: Where SNIP ranks the weights: over all targets together (the paper) or within each target.
Scope = Literal["global", "per_parameter"]
SCOPES: tuple[str, ...] = typing.get_args(Scope)
#: The share of target weights SNIP keeps: more than none, at most all.
KeepFraction = Annotated[float, Bounds(gt=0.0, le=1.0)]


@dataclass(frozen=True)
class PruningConfig:
    """What SNIP prunes.

    Args:
        keep_fraction: the share of the target weights kept, in (0, 1].
        target_parameters: distinct names from ``named_parameters()``, e.g. ``masker.output.weight``,
            ``masker.lstm.weight_hh_l0``.
        sensitivity_batches: training batches the connection sensitivity is summed over.
        scope: ``global`` ranks all targets together, ``per_parameter`` keeps the fraction in each.
    """

    keep_fraction: KeepFraction = 0.01
    target_parameters: tuple[str, ...] = DEFAULT_TARGETS
    sensitivity_batches: PositiveInt = 8
    scope: Scope = "global"

    def __post_init__(self):
        object.__setattr__(self, "target_parameters", tuple(self.target_parameters))
        check_fields(self)
        if not self.target_parameters or len(set(self.target_parameters)) != len(self.target_parameters):
            raise ValueError(f"target_parameters must be distinct names, got {self.target_parameters}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["target_parameters"] = list(self.target_parameters)
        return values

    @classmethod
    def from_dict(cls, values: Mapping) -> PruningConfig:
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown pruning config keys {unknown}")
        return cls(**values)


#: Where the pruned separator starts: a fresh initialisation (as SNIP does) or the trained dense separator.
StartFrom = Literal["initialization", "trained"]


@dataclass(frozen=True)
class PrunedTrainingConfig(TrainingConfig):
    """SNIP pruning and the training with fixed masks that follows it, as one config.

    Args:
        keep_fraction, target_parameters, sensitivity_batches, scope: the :class:`PruningConfig`.
        start_from: ``initialization`` scores and trains a fresh model seeded with ``seed`` (as SNIP does);
            ``trained`` scores and fine-tunes the dense separator it is given.
        epochs, batch_size, learning_rate, seed, device, num_workers, num_threads: the :class:`TrainingConfig`
            (the batch size also sets the SNIP scoring batches).
    """

    keep_fraction: KeepFraction = 0.01
    target_parameters: tuple[str, ...] = DEFAULT_TARGETS
    sensitivity_batches: PositiveInt = 8
    scope: Scope = "global"
    start_from: StartFrom = "initialization"

    def __post_init__(self):
        object.__setattr__(self, "target_parameters", tuple(self.target_parameters))
        super().__post_init__()
        self.pruning_config()

    def pruning_config(self) -> PruningConfig:
        """The pruning part."""
        return PruningConfig(self.keep_fraction, self.target_parameters, self.sensitivity_batches, self.scope)

    def training_config(self) -> TrainingConfig:
        """The training part."""
        return TrainingConfig(**{f.name: getattr(self, f.name) for f in fields(TrainingConfig)})

    def to_dict(self) -> dict:
        return {**super().to_dict(), "target_parameters": list(self.target_parameters)}


def separator_loss(model: nn.Module, mixture: torch.Tensor, cough: torch.Tensor) -> torch.Tensor:
    """The training loss: L1 between the estimated cough magnitude and ``|STFT(cough)|``.

    Shape:
        ``mixture``, ``cough`` ``(batch, samples)``; returns a scalar.
    """
    estimated, _ = model.separate_magnitude(mixture)
    return l1_magnitude_loss(estimated, model.encoder.magnitude(cough))


def connection_sensitivity(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    target_parameters: Iterable[str],
    max_batches: int,
    loss_fn: LossFunction = separator_loss,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """SNIP scores ``|w * sum_b dL_b/dw|`` for each target.

    The model is scored on a copy in training mode (BatchNorm on batch statistics, as in training), so neither its
    weights nor its running statistics change. Only the targets get gradients.

    Args:
        model: the model to score.
        batches: yields ``(mixture, cough)`` waves; the first ``max_batches`` are used.
        target_parameters: names from ``model.named_parameters()``.
        max_batches: how many batches the gradient is summed over.
        loss_fn: ``loss_fn(model, mixture, cough)`` -> scalar loss.
        device: where to score (default: the model's device).

    Returns:
        ``{name: score}``, float32 on the CPU.

    Shape:
        Each batch's waves ``(batch, samples)``; each score shaped like its parameter.
    """
    device = _model_device(model) if device is None else torch.device(device)
    scorer = copy.deepcopy(model).to(device).train()
    parameters = dict(scorer.named_parameters())
    targets = list(dict.fromkeys(target_parameters))
    _existing_names(targets, parameters)
    target_set = set(targets)
    for name, parameter in parameters.items():
        parameter.requires_grad_(name in target_set)
        parameter.grad = None
    used = 0
    for mixture, cough in batches:
        if used == max_batches:
            break
        loss_fn(scorer, mixture.to(device), cough.to(device)).backward()
        used += 1
    if used == 0:
        raise ValueError("connection_sensitivity needs at least one (mixture, cough) batch")
    scores = {name: _sensitivity(parameters[name]) for name in targets}
    for name, score in scores.items():
        if not torch.isfinite(score).all():
            raise ValueError(f"non-finite connection sensitivity for {name}; check the batches for NaN/inf")
    return scores


def keep_top(scores: Mapping[str, torch.Tensor], keep_fraction: float, scope: str = "global") -> Masks:
    """Boolean masks keeping the ``round(keep_fraction * n)`` (at least one) highest scores.

    Args:
        scores: ``{name: score tensor}``.
        keep_fraction: the share kept.
        scope: ``"global"`` ranks all the tensors together, ``"per_parameter"`` each on its own.

    Returns:
        ``{name: bool mask}``, True = kept, each shaped like its score.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "per_parameter":
        return {name: _top_mask(score.flatten(), keep_fraction).view_as(score) for name, score in scores.items()}
    names = list(scores)
    flat_mask = _top_mask(torch.cat([scores[name].flatten() for name in names]), keep_fraction)
    pieces = flat_mask.split([scores[name].numel() for name in names])
    return {name: piece.view_as(scores[name]) for name, piece in zip(names, pieces, strict=True)}


def snip_masks(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    config: PruningConfig = PruningConfig(),
    loss_fn: LossFunction = separator_loss,
    device: str | torch.device | None = None,
) -> Masks:
    """SNIP masks for ``model`` at its current weights; warns when a target keeps no weight.

    Args:
        model: the model to prune.
        batches: ``(mixture, cough)`` training batches, see :func:`connection_sensitivity`.
        config: targets, fraction, scoring batches and scope.
        loss_fn: the loss the sensitivity is taken of.
        device: where to score (default: the model's device).

    Returns:
        ``{parameter name: bool mask}`` (True = kept, on the CPU), each shaped like its parameter.
    """
    scores = connection_sensitivity(
        model, batches, config.target_parameters, config.sensitivity_batches, loss_fn, device
    )
    masks = keep_top(scores, config.keep_fraction, config.scope)
    emptied = [name for name, mask in masks.items() if not mask.any()]
    if emptied:
        warnings.warn(
            f"SNIP kept no weight of {emptied}: those connections are cut entirely (global ranking "
            "across layers of different scale); consider scope='per_parameter'",
            stacklevel=2,
        )
    return masks


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights of ``model`` in place.

    Args:
        model: the model.
        masks: ``{parameter name: mask}``, False or 0 = pruned, each shaped like its parameter.

    Returns:
        ``model`` itself.
    """
    parameters = dict(model.named_parameters())
    _existing_names(list(masks), parameters)
    with torch.no_grad():
        for name, mask in masks.items():
            parameter = parameters[name]
            if mask.shape != parameter.shape:
                raise ValueError(
                    f"mask for {name} has shape {tuple(mask.shape)}, the parameter {tuple(parameter.shape)}"
                )
            parameter.mul_(mask.to(device=parameter.device, dtype=parameter.dtype))
    return model


def mask_report(masks: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """How much of each parameter the masks keep.

    Returns:
        ``{name: {"kept", "total", "density"}}``.
    """
    return {
        name: {
            "kept": int(mask.count_nonzero()),
            "total": mask.numel(),
            "density": int(mask.count_nonzero()) / mask.numel(),
        }
        for name, mask in masks.items()
    }


def save_pruned(
    model: CoughSeparator,
    masks: Mapping[str, torch.Tensor],
    config: PruningConfig,
    folder: str | Path,
    metadata: dict | None = None,
) -> Path:
    """Save the pruned separator (:meth:`CoughSeparator.save`), its masks (``masks.pt``, a dict of bool tensors
    readable with ``weights_only=True``) and ``pruning.json`` (config and kept counts).

    Refuses a model with a non-zero weight where its mask prunes it (masks not applied, or trained without them).

    Args:
        model: the pruned separator.
        masks: the masks it was trained under.
        config: its pruning config.
        folder: created if needed.
        metadata: stored with the weights (``None``: the model's own ``metadata``).

    Returns:
        The folder.
    """
    _check_masked(model, masks)
    folder = model.save(folder, metadata)
    torch.save({name: mask.detach().to("cpu", torch.bool) for name, mask in masks.items()}, folder / MASKS_FILE)
    card = {"format": PRUNING_CARD_FORMAT, "config": config.to_dict(), "masks": mask_report(masks)}
    (folder / PRUNING_CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return folder


def load_pruned(
    folder: str | Path, map_location: str | torch.device | None = "cpu"
) -> tuple[CoughSeparator, Masks, PruningConfig]:
    """What :func:`save_pruned` wrote.

    Args:
        folder: the folder.
        map_location: the device to load the model onto.

    Returns:
        ``(model, masks, config)``; the model is in eval mode.
    """
    folder = Path(folder)
    card = json.loads((folder / PRUNING_CARD_FILE).read_text())
    if card.get("format") != PRUNING_CARD_FORMAT:
        raise ValueError(f"{folder / PRUNING_CARD_FILE}: not a pruning card (format {card.get('format')!r})")
    model = CoughSeparator.load(folder, map_location=map_location)
    masks = torch.load(folder / MASKS_FILE, map_location="cpu", weights_only=True)
    _check_masked(model, masks)
    return model, masks, PruningConfig.from_dict(card["config"])


@dataclass
class PrunedSeparator:
    """A SNIP-pruned separator with the masks it was trained under and its pruning config: what
    :func:`save_pruned` writes and :func:`load_pruned` reads, as one value (the model store saves it).

    Args:
        model: the masked separator (its ``metadata`` is saved with it).
        masks: ``{parameter name: bool mask}``.
        config: the pruning config.
    """

    model: CoughSeparator
    masks: Masks
    config: PruningConfig

    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """:func:`save_pruned` into ``folder``; returns the folder."""
        return save_pruned(self.model, self.masks, self.config, folder, metadata)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device | None = "cpu") -> PrunedSeparator:
        """:func:`load_pruned` from ``folder``."""
        return cls(*load_pruned(folder, map_location=map_location))

    def for_inference(self) -> nn.Module:
        """The inference path: folded, CPU kernels, sparse layers where the density is low enough."""
        return optimize_for_inference(self.model)


def train_pruned(
    dense: CoughSeparator,
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    root: str | Path,
    config: PrunedTrainingConfig = PrunedTrainingConfig(),
    on_epoch: EpochCallback | None = None,
) -> tuple[PrunedSeparator, TrainingResult]:
    """SNIP-prune a separator and train it with its masks fixed.

    The connection sensitivity is scored on shuffled (seeded) training batches of ``config.batch_size``, at a
    fresh initialisation seeded with ``config.seed`` (``start_from="initialization"``; only ``dense``'s shape is
    used) or at ``dense``'s weights (``"trained"``; ``dense`` itself is left untouched).

    Args:
        dense: the dense separator (its config, and its weights when starting from them).
        train_table, val_table: mixture tables with ``mixture_path`` / ``cough_path`` relative to ``root``.
        root: the folder the paths are relative to.
        config: the pruning and the training settings.
        on_epoch: gets each epoch's history record as it is made.

    Returns:
        The pruned separator (the best epoch's masked model, its masks and pruning config) and the training result.
    """
    if config.start_from == "initialization":
        torch.manual_seed(config.seed)
        start = CoughSeparator(dense.config)
    else:
        start = copy.deepcopy(dense)
    pruning = config.pruning_config()
    batches = DataLoader(
        MixtureDataset(train_table, root, start.config),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    masks = snip_masks(start, batches, pruning, device=config.device)
    result = train_with_masks(
        apply_masks(start, masks), masks, train_table, val_table, root, config.training_config(), on_epoch
    )
    return PrunedSeparator(result.model, masks, pruning), result


class SparseLinear(nn.Module):
    """``nn.Linear`` restricted to its non-zero weights: ``out[..., r] = bias[r] + sum_k values[k] x[..., cols[k]]``
    over the pairs with ``rows[k] == r``.

    The forward gathers the ``nnz`` used input columns, scales them by their weights and ``index_add``-s them onto
    the bias: ``nnz`` multiply-adds per input row instead of ``in_features * out_features``. Inference only: the
    weights are buffers (``values`` float, ``rows``/``cols`` int64: ``index_add_`` with int32 indices takes a much
    slower path on CPU), so they are saved in the ``state_dict`` but not trained.

    Args:
        values: the non-zero weights.
        rows, cols: their output and input indices.
        bias: ``(out_features,)``.
        in_features: input width.

    Shape:
        ``values``, ``rows``, ``cols`` ``(nnz,)``; input ``(..., in_features)``, output ``(..., out_features)``.
    """

    def __init__(
        self, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, bias: torch.Tensor, in_features: int
    ):
        super().__init__()
        if not values.shape == rows.shape == cols.shape or values.dim() != 1:
            raise ValueError("values, rows and cols must be 1-D and equally long")
        self.in_features = in_features
        self.out_features = bias.numel()
        self.register_buffer("values", values.detach().clone())
        self.register_buffer("rows", rows.detach().long())
        self.register_buffer("cols", cols.detach().long())
        self.register_buffer("bias", bias.detach().clone())

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """The sparse equivalent of ``linear`` (its zero weights dropped; a missing bias becomes zeros)."""
        weight = linear.weight.detach()
        rows, cols = weight.nonzero(as_tuple=True)
        bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(weight.shape[0])
        return cls(weight[rows, cols], rows, cols, bias, linear.in_features)

    @property
    def nnz(self) -> int:
        """Stored (non-zero) weights."""
        return self.values.numel()

    def dense_weight(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight with its zeros."""
        weight = self.values.new_zeros(self.out_features, self.in_features)
        weight[self.rows, self.cols] = self.values
        return weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The layer's output, equal to the dense layer's.

        Shape:
            ``features`` ``(..., in_features)``; returns ``(..., out_features)``.
        """
        if features.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {features.shape[-1]}")
        flat = features.reshape(-1, self.in_features)
        products = flat.index_select(1, self.cols).mul_(self.values)  # (rows, nnz)
        out = self.bias.expand(flat.shape[0], self.out_features).clone()
        out.index_add_(1, self.rows, products)
        return out.reshape(*features.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


def optimize_for_inference(pruned_model: nn.Module, max_density: float = SPARSE_DENSITY_LIMIT) -> nn.Module:
    """An eval-only copy of ``pruned_model`` whose sparse ``nn.Linear`` layers are :class:`SparseLinear`.

    A :class:`CoughSeparator` is first folded with :meth:`~CoughSeparator.for_inference` (BatchNorm and dB folded
    into the LSTM, no phase round trip); any other module is deep-copied as it is. ``pruned_model`` is unchanged.

    Args:
        pruned_model: the masked model.
        max_density: linear layers whose weight density is at most this get the sparse kernel.

    Returns:
        The copy; its outputs equal the masked model's within 1e-5.
    """
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density}")
    optimized = (
        pruned_model.for_inference() if isinstance(pruned_model, CoughSeparator) else copy.deepcopy(pruned_model).eval()
    )
    for parent in list(optimized.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear) and _density(child.weight) <= max_density:
                setattr(parent, child_name, SparseLinear.from_dense(child))
    return optimized.eval()


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """The :class:`SparseLinear` submodules of ``model`` by qualified name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, SparseLinear)}


def _sensitivity(parameter: torch.Tensor) -> torch.Tensor:
    """``|w * grad|`` as float32 on CPU; zeros for a parameter the loss does not reach (no gradient)."""
    if parameter.grad is None:
        return torch.zeros(parameter.shape)
    return (parameter.detach() * parameter.grad).abs().float().cpu()


def _top_mask(flat_scores: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Bool ``(n,)`` mask of the top ``max(1, round(keep_fraction * n))`` scores."""
    keep = max(1, round(keep_fraction * flat_scores.numel()))
    mask = torch.zeros(flat_scores.numel(), dtype=torch.bool, device=flat_scores.device)
    mask[torch.topk(flat_scores, keep, sorted=False).indices] = True
    return mask


def _existing_names(names: list[str], parameters: Mapping[str, torch.Tensor]) -> None:
    unknown = sorted(set(names) - set(parameters))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; the model has {sorted(parameters)}")


def _check_masked(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Raise when a weight that its mask prunes is not zero."""
    parameters = dict(model.named_parameters())
    _existing_names(list(masks), parameters)
    for name, mask in masks.items():
        pruned = ~mask.to(device=parameters[name].device, dtype=torch.bool)
        if parameters[name].detach()[pruned].count_nonzero():
            raise ValueError(f"{name} has non-zero weights where its mask prunes them; call apply_masks first")


def _density(weight: torch.Tensor) -> float:
    return int(weight.count_nonzero()) / weight.numel()


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
