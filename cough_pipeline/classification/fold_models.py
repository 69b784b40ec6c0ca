"""The cross-validation fold models of one neural classifier and variant, stored and scored together.

``classifiers`` trains one model per CV fold; the holdout is scored by the fold ensemble (the mean of the fold
models' probabilities), and so is a new recording. :class:`FoldModels` keeps the fold models with what they read:
the model name, the input variant, the :class:`~cough_pipeline.classification.inputs.InputArraysConfig` their
arrays were made with and the clip preprocessing before them, so a clip becomes the same arrays at prediction time.

On disk (:meth:`FoldModels.save`): ``fold_models.json`` (format, model, variant, input config, folds) and one
``fold<k>/`` folder per fold model (:meth:`NeuralClassifier.save`: a JSON card and a ``weights_only`` state dict).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cough_pipeline.classification.errors import ClassificationError, read_tagged_json
from cough_pipeline.classification.inference import InferenceModel
from cough_pipeline.classification.inputs import InputArraysConfig, input_arrays
from cough_pipeline.classification.networks import NeuralClassifier
from cough_pipeline.classification.preprocess import PreprocessConfig

INDEX_FILE = "fold_models.json"
INDEX_FORMAT = "cough_pipeline.fold_models/1"


@dataclass
class FoldModels:
    """Fold models of one ``model`` on one ``variant``, in fold order, in eval mode on the CPU.

    Args:
        model: the model name (a key of :data:`~cough_pipeline.classification.networks.MODELS`).
        variant: the input variant they were trained on (``original`` or ``separated``).
        folds: the CV fold each model was validated on.
        models: one :class:`NeuralClassifier` per fold.
        inputs: the array settings their inputs were made with.
        preprocess: the clip preprocessing before those arrays (a new recording is preprocessed the same way).
    """

    model: str
    variant: str
    folds: list[int]
    models: list[NeuralClassifier]
    inputs: InputArraysConfig = field(default_factory=InputArraysConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    #: The fold ensemble as one fast predictor (:class:`InferenceModel`), built on the first call of
    #: :meth:`probability` from the weights then; never saved.
    _predictor: InferenceModel | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.models or len(self.models) != len(self.folds):
            raise ClassificationError(f"{self.model}: {len(self.models)} fold models for folds {self.folds}")
        names = {m.config.name for m in self.models}
        if names != {self.model}:
            raise ClassificationError(f"fold models of {self.model} hold {sorted(names)}")
        for m in self.models:
            m.eval()

    def __getstate__(self) -> dict:
        """Copies and pickles leave the cached predictor out (an ONNX Runtime session; rebuilt on first use)."""
        return {**self.__dict__, "_predictor": None}

    @property
    def reads(self) -> tuple[str, ...]:
        """The array kinds the models read."""
        return self.models[0].inputs

    def probability(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> np.ndarray:
        """The fold ensemble's P(positive) of each example: the mean of the fold models' probabilities.

        Shape:
            ``batch[kind]``: ``(batch, rows, columns)`` or ``(batch, 1, rows, columns)`` for image kinds,
            ``(batch, size)`` for vectors; returns ``(batch,)`` float64.
        """
        if self._predictor is None:
            self._predictor = InferenceModel.from_classifiers(self.models, batch)
        return self._predictor(batch).numpy().astype(np.float64)

    def score_clip(self, clip: np.ndarray) -> float:
        """P(positive) of one preprocessed clip (at ``inputs.sample_rate``) by the fold ensemble.

        Raises:
            InputRejected: the clip cannot give the arrays (too short, silent, ...).
        """
        arrays = input_arrays(clip, self.inputs)
        return float(self.probability({kind: arrays[kind][None] for kind in self.reads})[0])

    def save(self, folder: str | Path) -> Path:
        """Write the index and one folder per fold model into ``folder`` (created); returns ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for fold, m in zip(self.folds, self.models, strict=True):
            m.save(folder / f"fold{fold}")
        index = {
            "format": INDEX_FORMAT,
            "model": self.model,
            "variant": self.variant,
            "folds": [int(f) for f in self.folds],
            "inputs": dataclasses.asdict(self.inputs),
            "preprocess": dataclasses.asdict(self.preprocess),
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FoldModels:
        """Fold models :meth:`save` wrote.

        Raises:
            ClassificationError: a missing or foreign index, or a fold model that does not load.
        """
        folder = Path(folder)
        index = read_tagged_json(folder / INDEX_FILE, INDEX_FORMAT, "the fold models of a neural classifier")
        folds = [int(f) for f in index["folds"]]
        models = [NeuralClassifier.load(folder / f"fold{fold}") for fold in folds]
        inputs, preprocess = InputArraysConfig(**index["inputs"]), PreprocessConfig(**index["preprocess"])
        return cls(index["model"], index["variant"], folds, models, inputs, preprocess)


@dataclass
class VariantModels:
    """The fold models of one neural model for every variant it was trained on (``variant`` -> FoldModels)."""

    model: str
    variants: dict[str, FoldModels]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for variant, models in self.variants.items():
            models.save(folder / variant)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> VariantModels:
        folder = Path(folder)
        variants = {
            index.parent.name: FoldModels.load(index.parent) for index in sorted(folder.glob(f"*/{INDEX_FILE}"))
        }
        if not variants:
            raise ClassificationError(f"{folder}: no fold models")
        names = {models.model for models in variants.values()}
        if len(names) != 1:
            raise ClassificationError(f"{folder}: fold models of several models {sorted(names)}")
        return cls(names.pop(), variants)

    def __getitem__(self, variant: str) -> FoldModels:
        if variant not in self.variants:
            raise ClassificationError(f"{self.model} was not trained on {variant!r}; it has {sorted(self.variants)}")
        return self.variants[variant]
