"""Classical COVID-19 classifiers: one pipeline per classifier x feature set x cross-validation fold.

Each fold model is fitted on the other cross-validation folds (resampled inside its pipeline, so on training rows
only), predicts its own validation fold, and predicts the holdout; averaging the fold models' holdout
probabilities (the fold ensemble) is left to evaluation. The fitted pipelines are stored with ``skops`` (no
pickles): loading vets every type a file names against an allow-list before anything is built from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import imblearn
import numpy as np
import pandas as pd
import sklearn
import skops
import skops.io as sio
from imblearn.pipeline import Pipeline

from cough_pipeline.bounds import PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import ClassificationError, read_tagged_json
from cough_pipeline.classification.evaluation import PREDICTION_COLUMNS
from cough_pipeline.classification.ranking import check_finite, cv_folds, positive_probability, with_folds
from cough_pipeline.classification.resampling import (
    ESTIMATORS,
    EstimatorName,
    LedgerSampler,
    ResamplingConfig,
    TrackedSMOTE,
    build_pipeline,
    resampling_leakage,
    resampling_summary,
)
from cough_pipeline.parallel import ProgressCallback, notify

INDEX_FILE = "classical_models.json"
INDEX_FORMAT = "cough_pipeline.classical_models/1"
#: Top-level packages whose classes a stored pipeline may name (functions are never trusted).
TRUSTED_PACKAGES = ("sklearn", "imblearn", "numpy", "scipy")
#: This package's own classes a stored pipeline may name.
OWN_TYPES = frozenset(f"{cls.__module__}.{cls.__qualname__}" for cls in (TrackedSMOTE, LedgerSampler))


class UntrustedModelFile(ClassificationError):
    """A stored model file that names a type outside the allow-list, or an index that is not this format."""


@dataclass(frozen=True)
class ClassicalConfig:
    """The classical models trained per feature set.

    ``classifiers``: estimators (:data:`~cough_pipeline.classification.resampling.ESTIMATORS`). ``top_k``: how many
    ranked features make the reduced set (:func:`column_sets`). ``seed``: seeds every pipeline (it replaces
    ``resampling.seed``, so one number reproduces the stage).
    """

    classifiers: tuple[EstimatorName, ...] = ESTIMATORS
    top_k: PositiveInt = 5
    resampling: ResamplingConfig = field(default_factory=ResamplingConfig)
    seed: Seed = 0

    def __post_init__(self):
        check_fields(self)
        if not self.classifiers or len(set(self.classifiers)) != len(self.classifiers):
            raise ValueError(f"ClassicalConfig.classifiers must be distinct and not empty, got {self.classifiers!r}")

    def pipeline_config(self) -> ResamplingConfig:
        return dataclasses.replace(self.resampling, seed=self.seed)


def column_sets(blocks: dict[str, list[str]], ranked_features: list[str], top_k: int) -> dict[str, list[str]]:
    """``{"all": every block's columns, "top<k>": the columns of the first top_k ranked features}``."""
    unknown = [f for f in ranked_features[:top_k] if f not in blocks]
    if unknown:
        raise ClassificationError(f"ranked features without a column block: {unknown}")
    return {
        "all": [column for feature in blocks for column in blocks[feature]],
        f"top{top_k}": [column for feature in ranked_features[:top_k] for column in blocks[feature]],
    }


@dataclass
class ClassicalModels:
    """Every fitted pipeline keyed by ``(model, variant, fold)``, the columns each ``(model, variant)`` reads, and
    the config they were trained with."""

    pipelines: dict[tuple[str, str, int], Pipeline] = field(default_factory=dict)
    columns: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def folds(self, model: str, variant: str) -> list[int]:
        """The fold models of ``(model, variant)``."""
        numbers = sorted(k for m, v, k in self.pipelines if (m, v) == (model, variant))
        if not numbers:
            known = sorted({(m, v) for m, v, _ in self.pipelines})
            raise ClassificationError(f"no model {model!r} for variant {variant!r}; known: {known}")
        return numbers

    def predict(self, features: pd.DataFrame, model: str, variant: str, fold: int | None = None) -> np.ndarray:
        """P(positive) of each row of ``features`` from fold model ``fold`` (``None``: mean over fold models).

        Shape: ``(len(features),)``.
        """
        numbers = self.folds(model, variant)
        if fold is not None and fold not in numbers:
            raise ClassificationError(f"{model} ({variant}) has folds {numbers}, not {fold}")
        columns = self.columns[(model, variant)]
        missing = [c for c in columns if c not in features.columns]
        if missing:
            raise ClassificationError(f"{model} reads {len(missing)} columns missing here, e.g. {missing[:5]}")
        check_finite(features, columns, f"features for {model}")
        X = features[columns].to_numpy(np.float64)
        chosen = numbers if fold is None else [fold]
        return np.mean([positive_probability(self.pipelines[(model, variant, k)], X) for k in chosen], axis=0)

    @classmethod
    def combine(cls, *parts: ClassicalModels) -> ClassicalModels:
        """One object holding the pipelines of several (e.g. one per variant); a key in two of them is an error."""
        combined = cls(config=dict(parts[0].config) if parts else {})
        for part in parts:
            clash = set(part.pipelines) & set(combined.pipelines)
            if clash:
                raise ClassificationError(f"models trained twice: {sorted(clash)[:3]}")
            combined.pipelines.update(part.pipelines)
            combined.columns.update(part.columns)
        return combined

    def save(self, folder: Path) -> Path:
        """Write each pipeline as a ``.skops`` file and :data:`INDEX_FILE` (keys, columns, config, versions)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for number, (model, variant, fold) in enumerate(sorted(self.pipelines)):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{number:04d}_{model}_{variant}_fold{fold}") + ".skops"
            sio.dump(self.pipelines[(model, variant, fold)], folder / name, compression=zipfile.ZIP_DEFLATED)
            entries.append({"model": model, "variant": variant, "fold": int(fold), "file": name})
        index = {
            "format": INDEX_FORMAT,
            "pipelines": entries,
            "columns": [{"model": m, "variant": v, "columns": list(c)} for (m, v), c in sorted(self.columns.items())],
            "config": self.config,
            "versions": {"sklearn": sklearn.__version__, "imblearn": imblearn.__version__, "skops": skops.__version__},
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, default=str) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path, only: tuple[str, str] | None = None) -> ClassicalModels:
        """Read a folder :meth:`save` wrote, trusting only the vetted types each file names; with ``only`` =
        ``(model, variant)``, just that model's fold pipelines (what scoring with it needs).

        Raises:
            UntrustedModelFile: an index of another format, a file outside the folder, or a type outside the
                allow-list (:data:`TRUSTED_PACKAGES` classes and :data:`OWN_TYPES`).
            ClassificationError: a missing or unreadable file.
        """
        folder = Path(folder)
        index = read_tagged_json(folder / INDEX_FILE, INDEX_FORMAT, "a classical models index", UntrustedModelFile)
        models = cls(config=index.get("config", {}))
        try:
            for entry in index["columns"]:
                models.columns[(entry["model"], entry["variant"])] = list(entry["columns"])
            entries = [(e["model"], e["variant"], int(e["fold"]), e["file"]) for e in index["pipelines"]]
            entries = [entry for entry in entries if only is None or entry[:2] == tuple(only)]
            for model, variant, fold, name in entries:
                n_columns = len(models.columns[(model, variant)])
                models.pipelines[(model, variant, fold)] = _load_pipeline(folder, name, n_columns)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ClassificationError):
                raise
            raise ClassificationError(f"{folder / INDEX_FILE}: malformed index ({error!r})") from error
        return models


def _load_pipeline(folder: Path, name: str, n_columns: int) -> Pipeline:
    """One vetted ``.skops`` pipeline of ``folder`` that reads ``n_columns`` features."""
    if Path(name).name != name or name.startswith("."):
        raise UntrustedModelFile(f"model file {name!r} is not a plain file name inside {folder}")
    path = folder / name
    if not path.is_file():
        raise ClassificationError(f"{path}: model file missing")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as error:
        raise ClassificationError(f"{path}: not a readable skops file ({error!r})") from error
    refused = [name for name in untrusted if not trusted_type(name)]
    if refused:
        raise UntrustedModelFile(f"{path}: refused to load types outside the allow-list: {refused}")
    pipeline = sio.load(path, trusted=untrusted)
    if not isinstance(pipeline, Pipeline) or getattr(pipeline, "n_features_in_", None) != n_columns:
        raise ClassificationError(f"{path}: not a fitted pipeline over {n_columns} columns")
    return pipeline


def trusted_type(name: str) -> bool:
    """Whether a type a skops file names may be built: one of :data:`OWN_TYPES`, or a class (never a function)
    of a :data:`TRUSTED_PACKAGES` package."""
    if name in OWN_TYPES:
        return True
    if name.split(".")[0] not in TRUSTED_PACKAGES:
        return False
    module, _, attribute = name.rpartition(".")
    try:
        return inspect.isclass(getattr(importlib.import_module(module), attribute))
    except (ImportError, AttributeError, ValueError):
        return False


@dataclass
class ClassicalResult:
    """``predictions``: the predictions table (validation and holdout rows of every fold model). ``models``: the
    fitted pipelines. ``resampling``: per fold model: strategy, k_neighbors_used, rows_seen, synthetic_rows, note,
    and the validation and holdout rows its sampler saw (``leaked_validation_rows``/``leaked_holdout_rows``: 0)."""

    predictions: pd.DataFrame
    models: ClassicalModels
    resampling: pd.DataFrame


def _prediction_rows(rows: pd.DataFrame, model: str, variant: str, split: str, fold: int, probability) -> pd.DataFrame:
    out = rows[["recording_id", "participant_id", "dataset"]].copy()
    out["model"], out["variant"], out["split"], out["fold"] = model, variant, split, int(fold)
    out["probability"] = np.asarray(probability, dtype=np.float64)
    out["label"] = rows["label"].to_numpy(int)
    return out


def _fit_fold(
    frame: pd.DataFrame, columns: list[str], classifier: str, k: int, model: str, variant: str, config: ClassicalConfig
):
    """Fit fold model ``k`` on the other cv folds and predict fold ``k`` and the holdout.

    Returns:
        The fitted pipeline, its prediction rows and its resampling note (with the held-out rows its sampler saw).
    """
    cv = frame["split"] == "cv"
    train = frame[cv & (frame["fold"] != k)]
    pipeline = build_pipeline(classifier, config.pipeline_config())
    pipeline.fit(train[columns].to_numpy(np.float64), train["label"].to_numpy(int))
    predictions, note = [], {"model": model, "variant": variant, "fold": k, **resampling_summary(pipeline)}
    for split, rows in (("validation", frame[cv & (frame["fold"] == k)]), ("holdout", frame[~cv])):
        X = rows[columns].to_numpy(np.float64)
        predictions.append(_prediction_rows(rows, model, variant, split, k, positive_probability(pipeline, X)))
        note[f"leaked_{split}_rows"] = resampling_leakage(pipeline, X)
    return pipeline, predictions, note


def train_classical(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    columns_by_set: dict[str, list[str]],
    variant: str,
    config: ClassicalConfig,
    progress: ProgressCallback | None = None,
) -> ClassicalResult:
    """Fit every classifier x feature set x fold model and predict its validation fold and the holdout.

    Args:
        features: the feature table; rows of ``variant`` are used (all rows when it has no ``variant`` column).
        folds: the fold table; cv rows train and validate, holdout rows are only predicted.
        columns_by_set: feature set name -> its columns, e.g. :func:`column_sets`.
        variant: the audio variant (``"original"`` or ``"separated"``) these features were computed from.
        config: classifiers and resampling.
        progress: ``progress(done, total)`` after each fit.

    Returns:
        Predictions (model ``"<classifier>@<set>"``), the fitted models and what resampling did per fold model.
    """
    rows = features[features["variant"] == variant] if "variant" in features.columns else features
    if rows.empty or not columns_by_set or any(not c for c in columns_by_set.values()):
        raise ClassificationError(
            f"nothing to train: {len(rows)} feature rows of variant {variant!r}, sets {list(columns_by_set)}"
        )
    used = list(dict.fromkeys(c for columns in columns_by_set.values() for c in columns))
    frame = with_folds(rows, folds, used)
    check_finite(frame, used, f"{variant} features")
    numbers = cv_folds(frame)
    models = ClassicalModels(config=_json_config(config, columns_by_set))
    predictions, notes = [], []
    total = len(config.classifiers) * len(columns_by_set) * len(numbers)
    for classifier in config.classifiers:
        for set_name, columns in columns_by_set.items():
            model = f"{classifier}@{set_name}"
            models.columns[(model, variant)] = list(columns)
            for k in numbers:
                pipeline, rows_k, note = _fit_fold(frame, list(columns), classifier, k, model, variant, config)
                models.pipelines[(model, variant, k)] = pipeline
                predictions.extend(rows_k)
                notes.append(note)
                notify(progress, len(notes), total)
    table = pd.concat(predictions, ignore_index=True)[list(PREDICTION_COLUMNS)]
    return ClassicalResult(table, models, pd.DataFrame(notes))


def _json_config(config: ClassicalConfig, columns_by_set: dict[str, list[str]]) -> dict:
    return {**dataclasses.asdict(config), "feature_sets": {name: len(c) for name, c in columns_by_set.items()}}
