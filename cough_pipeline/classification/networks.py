"""The neural cough classifiers: three lightweight timm CNNs on the log-mel patch, and the Cough2COVID19 ensemble
with its three single-branch models on the time-averaged MFCCs, the spectrogram image and the chroma vector.

:data:`MODELS` names each one with the ``classification_inputs`` arrays it reads and its output:

* ``mobilenetv2``, ``mobilenetv3_small``, ``efficientnet_lite0`` (``logmel``): timm with ``in_chans=1`` and
  ``num_classes=2``, built with ``pretrained=False`` (nothing is ever downloaded); an optional local weights file
  (ImageNet or AudioSet weights the user has) is loaded through timm's ``pretrained_cfg_overlay``. Two logits,
  softmax (``"softmax2"``).
* ``cough2covid19`` (``mfcc``, ``spectrogram``, ``chroma``), ``mfcc_mlp``, ``spectrogram_cnn``, ``chroma_mlp``:
  one logit, sigmoid (``"logit1"``).

:class:`NeuralClassifier` wraps any of them: it takes a batch as ``{kind: tensor}``, and :meth:`~NeuralClassifier.save`
/ :meth:`~NeuralClassifier.load` write its :class:`NetworkConfig` as a JSON card beside the ``state_dict`` (read
back with ``weights_only=True``, never a pickle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn

from cough_pipeline.bounds import Fraction, PositiveInt, check_fields
from cough_pipeline.classification.errors import ClassificationError, read_tagged_json
from cough_pipeline.distillation.cnn14 import Cnn14, load_panns_checkpoint
from cough_pipeline.distillation.frontend import DB_SCALE

#: Project name -> timm model name.
CNN_NAMES = {
    "mobilenetv2": "mobilenetv2_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "efficientnet_lite0": "efficientnet_lite0",
}
#: Array kinds that are ``(rows, columns)`` images; a model sees them with a channel axis, ``(batch, 1, rows,
#: columns)``.
IMAGE_KINDS = ("logmel", "spectrogram")
WEIGHTS_FILE = "classifier.pt"
CARD_FILE = "classifier.json"
CARD_FORMAT = "cough_pipeline.neural_classifier/1"

ModelName = Literal[
    "mobilenetv2",
    "mobilenetv3_small",
    "efficientnet_lite0",
    "cough2covid19",
    "mfcc_mlp",
    "spectrogram_cnn",
    "chroma_mlp",
    "cnn14",
]
#: ``"softmax2"``: softmax over ``classes`` logits (two in the cough classifier stage: negative, positive);
#: ``"logit1"``: one logit of the positive class.
OutputKind = Literal["softmax2", "logit1"]


@dataclass(frozen=True)
class NetworkConfig:
    """Which model, its dropout and the input sizes of the Cough2COVID19 family (the CNNs take any patch size).

    Args:
        name: a key of :data:`ARCHITECTURES` (the classifier stage trains those of :data:`MODELS`).
        dropout: the dense layers' dropout rate.
        classes: the CNNs' output logits (2 in the cough classifier stage; the one-logit family needs 2).
        mels: the mel bins of CNN14's log-mel input (its per-bin batch norm has one channel per bin).
        mfcc_size: length of the ``mfcc`` vector.
        chroma_size: length of the ``chroma`` vector.
        image_shape: ``(rows, columns)`` of the ``spectrogram`` image, each at least 8 (three 2x2 poolings).
    """

    name: ModelName = "mobilenetv3_small"
    dropout: Fraction = 0.3
    classes: PositiveInt = 2
    mels: PositiveInt = 64
    mfcc_size: PositiveInt = 39
    chroma_size: PositiveInt = 12
    image_shape: tuple[int, int] = (128, 40)

    def __post_init__(self):
        check_fields(self)
        object.__setattr__(self, "image_shape", tuple(int(size) for size in self.image_shape))
        if len(self.image_shape) != 2 or min(self.image_shape) < 8:
            raise ValueError(f"NetworkConfig.image_shape must be two sizes >= 8, got {self.image_shape}")
        if self.classes < 2 or (self.classes != 2 and self.name in MODELS and MODELS[self.name].output == "logit1"):
            raise ValueError(f"NetworkConfig.classes must be >= 2 (exactly 2 for {self.name}), got {self.classes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a card of another model)."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ClassificationError(f"unknown network config keys {unknown}")
        return cls(**values)


def _dense(sizes: list[int], dropout: float) -> nn.Sequential:
    """Dense + ReLU + Dropout for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for size_in, size_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(size_in, size_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def _conv_blocks(shape: tuple[int, int]) -> tuple[nn.Sequential, int]:
    """Three blocks of Conv 3x3 (32/64/64, padding 1) + ReLU + MaxPool 2x2 (stride 2) + BatchNorm, then Flatten;
    and the flattened size for a ``(1, *shape)`` image."""
    layers: list[nn.Module] = []
    channels_in, (height, width) = 1, shape
    for channels in (32, 64, 64):
        layers += [
            nn.Conv2d(channels_in, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.BatchNorm2d(channels),
        ]
        channels_in, height, width = channels, height // 2, width // 2
    return nn.Sequential(*layers, nn.Flatten()), channels_in * height * width


class Cough2Covid19(nn.Module):
    """The three-branch ensemble: MFCC (39 -> 512 -> 256), spectrogram image (conv blocks -> 256), chroma
    (12 -> 512 -> 256), concatenated (768) -> 64 -> 64 -> one logit.

    Shape:
        mfcc ``(batch, 39)``, spectrogram ``(batch, 1, 128, 40)``, chroma ``(batch, 12)`` -> ``(batch, 1)``.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        p = config.dropout
        self.mfcc = _dense([config.mfcc_size, 512, 256], p)
        convolutions, flat = _conv_blocks(config.image_shape)
        self.spectrogram = nn.Sequential(convolutions, nn.Linear(flat, 256), nn.ReLU(), nn.Dropout(p))
        self.chroma = nn.Sequential(nn.Linear(config.chroma_size, 512), nn.ReLU(), _dense([512, 256], p))
        self.head = nn.Sequential(_dense([768, 64, 64], p), nn.Linear(64, 1))

    def forward(self, mfcc: torch.Tensor, spectrogram: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.mfcc(mfcc), self.spectrogram(spectrogram), self.chroma(chroma)], dim=1)
        return self.head(joined)


class VectorMlp(nn.Module):
    """A single-branch MLP of the same study (Dense 1024/2048/512/512, ReLU + Dropout) on one vector input.

    Shape:
        ``(batch, size)`` -> ``(batch, 1)``.
    """

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(_dense([size, 1024, 2048, 512, 512], dropout), nn.Linear(512, 1))

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        return self.layers(vector)


class SpectrogramCnn(nn.Module):
    """The single-branch spectrogram CNN: the ensemble's conv blocks -> Dense 256/64/64 -> one logit.

    Shape:
        ``(batch, 1, 128, 40)`` -> ``(batch, 1)``.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        convolutions, flat = _conv_blocks(config.image_shape)
        self.layers = nn.Sequential(convolutions, _dense([flat, 256, 64, 64], config.dropout), nn.Linear(64, 1))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return self.layers(spectrogram)


def _weights_overlay(timm_name: str, path: Path) -> dict:
    """timm's ``pretrained_cfg_overlay`` for a local weights file: the file, and the stem channels and head classes
    the file holds, so timm adapts the stem to one channel only when the file's has three, and keeps a head that
    already has two classes (a head of another size is re-initialised)."""
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for a bad file
        raise ClassificationError(f"weights file {path} is not a readable state_dict ({error})") from error
    default = timm.models.get_pretrained_cfg(timm_name)
    overlay = {"file": str(path)}
    stem, head = state.get(f"{default.first_conv}.weight"), state.get(f"{default.classifier}.weight")
    if stem is not None and stem.ndim == 4:
        overlay["input_size"] = (int(stem.shape[1]), *default.input_size[1:])
    if head is not None:
        overlay["num_classes"] = int(head.shape[0])
    return overlay


def build_cnn(name: str, weights: str | Path | None = None, classes: int = 2) -> nn.Module:
    """A timm CNN for one input channel and ``classes`` classes, never downloading anything.

    Args:
        name: a key of :data:`CNN_NAMES`.
        weights: an optional local weights file (a ``state_dict``, ``.pth`` or ``.safetensors``) of the same
            architecture: a three-channel stem is summed to one channel, a head for another number of classes is
            re-initialised.

    Shape:
        ``(batch, 1, mels, frames)`` -> ``(batch, classes)``.

    Raises:
        ClassificationError: an unknown name, a missing or unreadable file, or weights of another architecture.
    """
    if name not in CNN_NAMES:
        raise ClassificationError(f"unknown CNN {name!r}; choose from {sorted(CNN_NAMES)}")
    timm_name = CNN_NAMES[name]
    if weights is None:
        return timm.create_model(timm_name, pretrained=False, in_chans=1, num_classes=classes)
    path = Path(weights)
    if not path.is_file():
        raise ClassificationError(f"weights file {path} does not exist")
    overlay = _weights_overlay(timm_name, path)
    try:
        return timm.create_model(
            timm_name, pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1, num_classes=classes
        )
    except RuntimeError as error:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise ClassificationError(f"weights file {path} does not fit {timm_name}: {error}") from error


@dataclass(frozen=True)
class ModelSpec:
    """A model of :data:`MODELS`: the array kinds it reads (in its ``forward`` argument order), how it is built
    and what it outputs."""

    inputs: tuple[str, ...]
    build: Callable[[NetworkConfig], nn.Module]
    output: OutputKind


def _cnn(name: str, config: NetworkConfig) -> nn.Module:
    return build_cnn(name, classes=config.classes)


class MelFirstCnn14(nn.Module):
    """:class:`~cough_pipeline.distillation.cnn14.Cnn14` reading the distillation stage's ``(batch, 1, mels,
    frames)`` log-mel patches (scaled decibels) as PANNs does: ``(batch, 1, frames, mels)`` in decibels, so a
    PANNs checkpoint's per-bin batch norm sees the values it was trained on. Shape: -> ``(batch, classes)``."""

    def __init__(self, config: NetworkConfig, weights: str | Path | None = None):
        super().__init__()
        self.cnn14 = Cnn14(classes=config.classes, mels=config.mels)
        if weights is not None:
            path = Path(weights)
            if not path.is_file():
                raise ClassificationError(f"weights file {path} does not exist")
            try:
                load_panns_checkpoint(self.cnn14, path)
            except (ValueError, RuntimeError, OSError) as error:
                raise ClassificationError(str(error)) from error

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.cnn14(logmel.transpose(2, 3) * DB_SCALE)


def _vector_mlp(kind: str, config: NetworkConfig) -> nn.Module:
    return VectorMlp(config.mfcc_size if kind == "mfcc" else config.chroma_size, config.dropout)


MODELS: dict[str, ModelSpec] = {
    **{name: ModelSpec(("logmel",), partial(_cnn, name), "softmax2") for name in CNN_NAMES},
    "cough2covid19": ModelSpec(("mfcc", "spectrogram", "chroma"), Cough2Covid19, "logit1"),
    "mfcc_mlp": ModelSpec(("mfcc",), partial(_vector_mlp, "mfcc"), "logit1"),
    "spectrogram_cnn": ModelSpec(("spectrogram",), SpectrogramCnn, "logit1"),
    "chroma_mlp": ModelSpec(("chroma",), partial(_vector_mlp, "chroma"), "logit1"),
}
MODEL_NAMES = tuple(MODELS)
#: Every architecture :class:`NeuralClassifier` builds: the classifier stage's :data:`MODELS` and CNN14, which only
#: the distillation stage trains (far too slow for the classifier stage on a CPU).
ARCHITECTURES: dict[str, ModelSpec] = {**MODELS, "cnn14": ModelSpec(("logmel",), MelFirstCnn14, "softmax2")}


def as_model_input(kind: str, array: torch.Tensor) -> torch.Tensor:
    """``array`` as a model reads it: an image kind without its channel axis ``(batch, rows, columns)`` gets one;
    anything else is returned as it is. Shape: ``(batch, rows, columns)`` -> ``(batch, 1, rows, columns)``."""
    return array.unsqueeze(1) if kind in IMAGE_KINDS and array.dim() == 3 else array


class NeuralClassifier(nn.Module):
    """One model of :data:`MODELS` that reads a batch as ``{kind: tensor}`` and remembers its config.

    Args:
        config: the model and its sizes.
        weights: a local weights file for a timm CNN (:func:`build_cnn`) or a PANNs checkpoint for ``cnn14``
            (:func:`~cough_pipeline.distillation.cnn14.load_panns_checkpoint`); ``None`` starts from random weights.

    Shape:
        ``batch[kind]``: ``(batch, 1, rows, columns)`` (or ``(batch, rows, columns)``) for ``logmel`` and
        ``spectrogram``, ``(batch, size)`` for ``mfcc`` and ``chroma``; returns logits ``(batch, 2)`` for
        ``"softmax2"`` models, ``(batch, 1)`` for ``"logit1"`` ones.
    """

    def __init__(self, config: NetworkConfig, weights: str | Path | None = None):
        super().__init__()
        self.config = config
        self.spec = ARCHITECTURES[config.name]
        loadable = sorted((*CNN_NAMES, "cnn14"))
        if weights is not None and config.name not in loadable:
            raise ClassificationError(f"{config.name} has no pretrained weights to load; only {loadable}")
        if weights is not None and config.name == "cnn14":
            self.network = MelFirstCnn14(config, weights)
        elif weights is not None:
            self.network = build_cnn(config.name, weights, config.classes)
        else:
            self.network = self.spec.build(config)
        self.metadata: dict = {}

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.spec.inputs

    @property
    def output(self) -> OutputKind:
        return self.spec.output

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [kind for kind in self.inputs if kind not in batch]
        if missing:
            raise ClassificationError(f"{self.config.name} reads {list(self.inputs)}; the batch lacks {missing}")
        return self.network(*(as_model_input(kind, batch[kind]) for kind in self.inputs))

    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write ``classifier.pt`` (the ``state_dict`` only) and ``classifier.json`` (config, inputs, output,
        parameter count, metadata and library versions) into ``folder`` (created).

        Args:
            folder: where the two files go.
            metadata: JSON-serialisable; ``None`` stores :attr:`metadata`.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}
        torch.save(state, folder / WEIGHTS_FILE)
        card = {
            "format": CARD_FORMAT,
            "config": self.config.to_dict(),
            "inputs": list(self.inputs),
            "output": self.output,
            "parameters": self.parameter_count(),
            "metadata": dict(self.metadata if metadata is None else metadata),
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
        }
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> NeuralClassifier:
        """A model :meth:`save` wrote, in eval mode; the weights are read with ``weights_only=True``, so a file
        holding anything but tensors is refused.

        Raises:
            ClassificationError: a missing or foreign card, or weights that do not fit the config.
        """
        folder = Path(folder)
        card = read_tagged_json(folder / CARD_FILE, CARD_FORMAT, "a neural classifier card")
        model = cls(NetworkConfig.from_dict(card["config"]))
        try:
            model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location=map_location, weights_only=True))
        except (OSError, RuntimeError) as error:
            raise ClassificationError(f"{folder / WEIGHTS_FILE}: weights do not load ({error})") from error
        model.metadata = dict(card.get("metadata") or {})
        return model.to(map_location).eval()


def probabilities(logits: torch.Tensor, output: OutputKind) -> torch.Tensor:
    """P(positive) from logits: softmax of two, sigmoid of one. Shape: ``(batch, 2 | 1)`` -> ``(batch,)``."""
    expected = 2 if output == "softmax2" else 1
    if logits.dim() != 2 or logits.shape[1] != expected:
        raise ClassificationError(f"{output} logits must be (batch, {expected}), got {tuple(logits.shape)}")
    return torch.softmax(logits, dim=1)[:, 1] if output == "softmax2" else torch.sigmoid(logits[:, 0])


def positive_probability(model: NeuralClassifier, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """P(positive) of each example of ``batch``, without gradients, in the model's current mode (call
    ``model.eval()`` first for predictions). Shape: ``(batch,)``."""
    with torch.inference_mode():
        return probabilities(model(batch), model.output)
