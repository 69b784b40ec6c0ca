"""One neural classifier trained on every configured input variant: what the ``classifiers`` asset computes.

Per variant, :func:`~cough_pipeline.classification.neural.train_neural` trains the five CV fold models and
predicts their validation fold and the holdout; the fold ensemble's holdout rows (fold -1, the mean of the fold
models) are added here, as the classical stage adds them, so every family is evaluated on the same rows. Given the
leave-one-dataset-out splits, :func:`~cough_pipeline.classification.neural.train_neural_lodo` adds the
``lodo:<dataset>`` rows of one model per tested dataset, trained on the others (those models are not kept). The fold
models are kept with the array and preprocessing settings of the inputs they read (the inputs table's
``input_settings`` column), so a new recording is turned into the same arrays at prediction time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import fold_ensemble
from cough_pipeline.classification.fold_models import FoldModels, VariantModels
from cough_pipeline.classification.inputs import InputArraysConfig
from cough_pipeline.classification.neural import NeuralTrainingConfig, train_neural, train_neural_lodo
from cough_pipeline.classification.preprocess import PreprocessConfig
from cough_pipeline.classification.ranking import cv_folds
from cough_pipeline.parallel import ProgressCallback

Variant = Literal["separated", "original"]


@dataclass(frozen=True)
class ClassifierVariants:
    """The input variants each neural classifier is trained on, each separately."""

    variants: tuple[Variant, ...] = ("separated", "original")

    def __post_init__(self):
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be distinct and at least one, got {list(self.variants)}")


#: The inputs table's column holding the settings its arrays were made with (JSON, one value per table).
INPUT_SETTINGS_COLUMN = "input_settings"


def input_settings(inputs: InputArraysConfig, preprocess: PreprocessConfig) -> str:
    """The JSON of the settings a table's arrays were made with (process counts left out: they change nothing)."""
    arrays = {k: v for k, v in dataclasses.asdict(inputs).items() if k != "workers"}
    clips = {k: v for k, v in dataclasses.asdict(preprocess).items() if k != "workers"}
    return json.dumps({"inputs": arrays, "preprocess": clips}, sort_keys=True)


def read_input_settings(table: pd.DataFrame) -> tuple[InputArraysConfig, PreprocessConfig]:
    """The settings of an inputs table (defaults when it has no settings column).

    Raises:
        ClassificationError: rows made with different settings (e.g. partitions materialised with different
            configs), which one model cannot read alike.
    """
    if INPUT_SETTINGS_COLUMN not in table.columns or table.empty:
        return InputArraysConfig(), PreprocessConfig()
    values = table[INPUT_SETTINGS_COLUMN].dropna().unique()
    if len(values) != 1:
        raise ClassificationError(
            f"the inputs were made with {len(values)} different settings; re-materialise classification_inputs "
            "for every dataset with one config"
        )
    settings = json.loads(values[0])
    return InputArraysConfig(**settings["inputs"]), PreprocessConfig(**settings["preprocess"])


@dataclass
class ClassifierRun:
    """``models``: the fold models per variant. ``predictions``: validation rows, the holdout rows of each fold
    model and of the fold ensemble (fold -1), and leave-one-dataset-out rows. ``histories``: per variant, fold and
    epoch the losses, seconds and whether it was the kept epoch. ``lodo_skipped``: variant, test_dataset, reason
    for each dataset the leave-one-dataset-out models could not test."""

    models: VariantModels
    predictions: pd.DataFrame
    histories: pd.DataFrame
    lodo_skipped: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def train_classifier(
    inputs: pd.DataFrame,
    folds: pd.DataFrame,
    name: str,
    variants: tuple[str, ...],
    root: str | Path,
    config: NeuralTrainingConfig | None = None,
    progress: ProgressCallback | None = None,
    lodo: pd.DataFrame | None = None,
) -> ClassifierRun:
    """Train model ``name`` on each of ``variants`` with the folds of ``folds`` (and ``lodo``'s splits).

    Args:
        inputs: the ``classification_inputs`` table (array paths relative to ``root``).
        folds: the fold table (participant-disjoint holdout and CV folds).
        name: a key of :data:`~cough_pipeline.classification.networks.MODELS`.
        variants: input variants to train on, each separately (``original``, ``separated``).
        root: the folder the array paths are relative to.
        config: training settings (defaults when None).
        progress: ``progress(done, total)`` over all variants' epochs.
        lodo: the leave-one-dataset-out splits (``leave_one_dataset_out_folds``); None or empty skips them.

    Raises:
        ClassificationError: no variant, a variant without inputs, or what training raises.
    """
    if not variants:
        raise ClassificationError("choose at least one input variant to train on")
    array_settings, preprocess_settings = read_input_settings(inputs)
    config = config or NeuralTrainingConfig()
    lodo = lodo if lodo is not None and len(lodo) else None
    cv_epochs = len(cv_folds(folds)) * config.epochs
    per_variant = cv_epochs + (lodo["test_dataset"].nunique() * config.epochs if lodo is not None else 0)

    def from_epoch(start: int) -> ProgressCallback:
        def report(done: int, _total: int) -> None:
            if progress is not None:
                progress(start + done, len(variants) * per_variant)

        return report

    trained, predictions, lodo_predictions, histories, skipped = {}, [], [], [], []
    for offset, variant in enumerate(variants):
        result = train_neural(inputs, folds, name, variant, root, config, from_epoch(offset * per_variant))
        trained[variant] = FoldModels(
            name,
            variant,
            [m.fold for m in result.models],
            [m.model for m in result.models],
            array_settings,
            preprocess_settings,
        )
        predictions.append(result.predictions)
        histories.append(result.histories.assign(variant=variant))
        if lodo is not None:
            start = offset * per_variant + cv_epochs
            left_out = train_neural_lodo(inputs, lodo, name, variant, root, config, from_epoch(start))
            lodo_predictions.append(left_out.predictions)
            skipped.append(left_out.skipped.assign(variant=variant))
    table = pd.concat(predictions, ignore_index=True)
    table = pd.concat([table, fold_ensemble(table), *lodo_predictions], ignore_index=True)
    lodo_skipped = pd.concat(skipped, ignore_index=True) if skipped else pd.DataFrame()
    return ClassifierRun(VariantModels(name, trained), table, pd.concat(histories, ignore_index=True), lodo_skipped)
