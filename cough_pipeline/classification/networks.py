"""The neural cough classifiers: three lightweight timm CNNs on the log-mel patch, and the Cough2COVID19 ensemble
with its three single-branch models on the time-averaged MFCCs, the spectrogram image and the chroma vector.

Every model maps the arrays of ``classification_inputs`` to logits:

* CNNs (``mobilenetv2``, ``mobilenetv3_small``, ``efficientnet_lite0``): timm with ``in_chans=1`` and
  ``num_classes=2``, built with ``pretrained=False`` (nothing is downloaded). An optional local weights file
  (ImageNet or AudioSet weights the user has) is loaded through timm's ``pretrained_cfg_overlay``; two logits,
  softmax.
* ``cough2covid19``, ``mfcc_mlp``, ``spectrogram_cnn``, ``chroma_mlp``: one logit, sigmoid.

:func:`build` makes any of them from a :class:`NetworkConfig`; :func:`save` / :func:`load` write the config as
JSON beside the ``state_dict`` (read back with ``weights_only=True``, never a pickle).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn

from cough_pipeline.bounds import Fraction, check_fields
from cough_pipeline.classification.errors import ClassificationError

#: Project name -> timm model name.
CNN_NAMES = {
    "mobilenetv2": "mobilenetv2_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "efficientnet_lite0": "efficientnet_lite0",
}
#: Project name -> the ``classification_inputs`` arrays it reads, in argument order.
INPUTS = {
    **{name: ("logmel",) for name in CNN_NAMES},
    "cough2covid19": ("mfcc", "spectrogram", "chroma"),
    "mfcc_mlp": ("mfcc",),
    "spectrogram_cnn": ("spectrogram",),
    "chroma_mlp": ("chroma",),
}
MODEL_NAMES = tuple(INPUTS)
CONFIG_FILE = "network.json"
WEIGHTS_FILE = "weights.pt"

ModelName = Literal[
    "mobilenetv2",
    "mobilenetv3_small",
    "efficientnet_lite0",
    "cough2covid19",
    "mfcc_mlp",
    "spectrogram_cnn",
    "chroma_mlp",
]


@dataclass(frozen=True)
class NetworkConfig:
    """``name``: one of :data:`MODEL_NAMES`; ``dropout``: the dense layers' dropout rate; ``mfcc_size``,
    ``chroma_size`` and ``image_shape``: the input sizes of the ensemble's branches."""

    name: ModelName = "mobilenetv3_small"
    dropout: Fraction = 0.3
    mfcc_size: int = 39
    chroma_size: int = 12
    image_shape: tuple[int, int] = (128, 40)

    def __post_init__(self):
        check_fields(self)

    @property
    def outputs(self) -> int:
        """2 logits (softmax) for the CNNs, 1 logit (sigmoid) for the Cough2COVID19 family."""
        return 2 if self.name in CNN_NAMES else 1


def _dense(sizes: list[int], dropout: float) -> nn.Sequential:
    """Dense + ReLU + Dropout for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for size_in, size_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(size_in, size_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def _conv_blocks(shape: tuple[int, int]) -> tuple[nn.Sequential, int]:
    """Three blocks of Conv 3x3 (32/64/64) + ReLU + MaxPool 2x2 (stride 2) + BatchNorm, then Flatten; and the
    flattened size for a ``(1, *shape)`` image."""
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
    """A single-branch MLP of the same study (Dense 1024/2048/512/512) on one vector input.

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


def build_cnn(name: str, weights: str | Path | None = None) -> nn.Module:
    """A timm CNN for one input channel and two classes, never downloading anything.

    Args:
        name: a key of :data:`CNN_NAMES`.
        weights: an optional local weights file (a ``state_dict`` timm adapts to one channel; a classifier head
            for another number of classes is re-initialised).

    Shape:
        ``(batch, 1, mels, frames)`` -> ``(batch, 2)``.
    """
    if name not in CNN_NAMES:
        raise ClassificationError(f"unknown CNN {name!r}; choose from {sorted(CNN_NAMES)}")
    if weights is None:
        return timm.create_model(CNN_NAMES[name], pretrained=False, in_chans=1, num_classes=2)
    path = Path(weights)
    if not path.is_file():
        raise ClassificationError(f"weights file {path} does not exist")
    overlay = {"file": str(path)}
    return timm.create_model(
        CNN_NAMES[name], pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1, num_classes=2
    )


def build(config: NetworkConfig, weights: str | Path | None = None) -> nn.Module:
    """The model ``config.name`` names (``weights``: a local file, CNNs only)."""
    if config.name in CNN_NAMES:
        return build_cnn(config.name, weights)
    if weights is not None:
        raise ClassificationError(f"{config.name} has no pretrained weights to load")
    if config.name == "cough2covid19":
        return Cough2Covid19(config)
    if config.name == "spectrogram_cnn":
        return SpectrogramCnn(config)
    return VectorMlp(config.mfcc_size if config.name == "mfcc_mlp" else config.chroma_size, config.dropout)


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(positive) from two logits (softmax) or one (sigmoid). Shape: ``(batch, 1 | 2)`` -> ``(batch,)``."""
    if logits.shape[1] == 2:
        return torch.softmax(logits, dim=1)[:, 1]
    return torch.sigmoid(logits[:, 0])


def save(model: nn.Module, config: NetworkConfig, folder: Path) -> Path:
    """Write ``network.json`` (the config) and ``weights.pt`` (the ``state_dict``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    return folder


def load(folder: Path) -> tuple[nn.Module, NetworkConfig]:
    """The model and config :func:`save` wrote (weights read with ``weights_only=True``), in eval mode."""
    raw = json.loads((folder / CONFIG_FILE).read_text())
    config = NetworkConfig(**{**raw, "image_shape": tuple(raw["image_shape"])})
    model = build(config)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), config
