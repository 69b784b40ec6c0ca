"""CNN14, the 14-layer audio CNN of the pretrained audio neural networks (PANNs), on log-mel input.

The architecture as published: a batch norm over the mel bins, six blocks of two 3×3 convolutions (no bias, batch
norm, ReLU) with 64, 128, 256, 512, 1024 and 2048 channels, each followed by 2×2 average pooling (1×1 after the
last) and dropout 0.2, then the mean over frequency, max + mean over time, dropout 0.5, a 2048-unit ReLU layer,
dropout 0.5 and the classifier. With 527 classes it has the published 80,753,615 parameters. The waveform front
end of PANNs is left out: the pipeline computes its log-mel (64 mels) itself, so teachers and students of every
architecture read the same input. Far too slow to train on two CPU cores; it runs in the paper profile or from a
user-supplied checkpoint.

Shapes: input ``(batch, 1, frames, mels)`` → logits ``(batch, classes)``.

:func:`load_panns_checkpoint` reads a checkpoint of the PANNs release (``{"model": state_dict}`` with
``conv_block<k>`` / ``fc_audioset`` names and the waveform front end's tensors) into this module.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (64, 128, 256, 512, 1024, 2048)


class ConvBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and ReLU, then average pooling: (B, C_in, T, F) → (B, C_out, T/p, F/p)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x


class Cnn14(nn.Module):
    """CNN14 over log-mel patches; ``forward`` gives logits (no sigmoid or softmax)."""

    def __init__(self, classes: int, mels: int = 64, dropout: float = 0.5, block_dropout: float = 0.2):
        super().__init__()
        self.config = {"classes": classes, "mels": mels, "dropout": dropout, "block_dropout": block_dropout}
        self.bn0 = nn.BatchNorm2d(mels)
        inputs = (1, *CHANNELS[:-1])
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, pool=1 if c_out == CHANNELS[-1] else 2) for c_in, c_out in zip(inputs, CHANNELS)
        )
        self.fc1 = nn.Linear(CHANNELS[-1], CHANNELS[-1])
        self.classifier = nn.Linear(CHANNELS[-1], classes)
        self.dropout, self.block_dropout = dropout, block_dropout

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, F) log-mel → (B, 2048)."""
        if x.shape[-1] != self.config["mels"]:
            raise ValueError(f"Cnn14 expects {self.config['mels']} mel bins, got input of shape {tuple(x.shape)}")
        # batch norm per mel bin: the mel axis becomes the channel axis for it
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x), self.block_dropout, self.training)
        x = x.mean(dim=3)  # over frequency: (B, 2048, T')
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, self.dropout, self.training)
        return F.dropout(F.relu(self.fc1(x)), self.dropout, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedding(x))


def panns_key(name: str) -> str | None:
    """This module's name for a PANNs CNN14 state-dict key (``None``: the waveform front end, not used here)."""
    if name.startswith(("spectrogram_extractor.", "logmel_extractor.")):
        return None
    name = re.sub(r"^conv_block(\d)\.", lambda m: f"blocks.{int(m.group(1)) - 1}.", name)
    return name.replace("fc_audioset.", "classifier.")


def load_panns_checkpoint(model: Cnn14, path: str | Path) -> list[str]:
    """Load a PANNs CNN14 checkpoint into ``model`` (tensors only: ``weights_only=True``).

    The classifier is kept as initialised when the checkpoint's class count differs (AudioSet's 527 against the
    task's); every other tensor must match. Returns the names left as initialised.

    Raises:
        ValueError: a file that is not a CNN14 state dict (missing or mis-shaped tensors).
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    renamed = {panns_key(k): v for k, v in state.items() if panns_key(k) is not None}
    own = model.state_dict()
    kept = [k for k in ("classifier.weight", "classifier.bias") if k in renamed and renamed[k].shape != own[k].shape]
    for key in kept:
        del renamed[key]
    missing = sorted(set(own) - set(renamed) - set(kept))
    unexpected = sorted(set(renamed) - set(own))
    shapes = sorted(k for k in renamed if k in own and renamed[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit CNN14 ({model.config['mels']} mels): missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, mis-shaped {shapes[:3]}"
        )
    model.load_state_dict(renamed, strict=False)
    return kept
