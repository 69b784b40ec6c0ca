"""The model store: every model asset's value, saved as a new version per materialisation, never as a pickle.

Layout under the storage root::

    models/<asset>/<version>/card.json     what the version is (below)
    models/<asset>/<version>/model/        the model's own files in its native format
    models/<asset>/LATEST                  the version downstream assets load

A partitioned model asset stores each partition as a model of its own, ``models/<asset>/<partition>/...``.

A version is the id of the run that materialised it. Its ``model/`` folder holds what the model class writes
itself: a torch ``state_dict`` (read back with ``weights_only=True``) and its JSON config, or an XGBoost booster in
xgboost's native JSON with its scaler. ``card.json`` records the asset, version and run id, the format, when it
was written, the code version, the config it was trained with, a fingerprint of its training data and its
metrics. A version is written into a hidden staging folder and renamed into place complete, then ``LATEST`` is
moved to it (atomic replace), so a killed run leaves the previous version current. Earlier versions stay loadable
by id: ``ModelStore.load(asset, version)``.

Assets return a :class:`TrainedModel` through :class:`ModelIOManager`, and downstream assets receive the loaded
:class:`TrainedModel` as an input (its ``card.version`` says which one they got).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, MetadataValue, OutputContext

import cough_pipeline
from cough_pipeline.classification.classical import ClassicalModels
from cough_pipeline.classification.fold_models import VariantModels
from cough_pipeline.cough_filter import CoughClassifier
from cough_pipeline.distillation.models import DistilledModels
from cough_pipeline.separation.model import CoughSeparator
from cough_pipeline.separation.pruning import PrunedSeparator
from resources.storage import Storage, asset_name, partition_values

CARD_FILE = "card.json"
MODEL_FOLDER = "model"
LATEST = "LATEST"
CARD_FORMAT = "cough_pipeline.model_card/1"

M = TypeVar("M")


class ModelStoreError(RuntimeError):
    """A model version that does not exist, cannot be read, or a model type the store has no format for."""


@dataclass(frozen=True)
class ModelFormat:
    """How one model class is written to and read from a folder, in its native (non-pickle) files."""

    name: str
    model_type: type
    save: Callable[[Any, Path], Any]
    load: Callable[[Path], Any]


#: The formats the store knows, by name; :func:`register_format` adds one.
FORMATS: dict[str, ModelFormat] = {}


def register_format(name: str, model_type: type, save: Callable, load: Callable) -> ModelFormat:
    """Teach the store a model class: ``save(model, folder)`` writes it, ``load(folder)`` reads it back."""
    if name in FORMATS and FORMATS[name].model_type is not model_type:
        raise ModelStoreError(f"model format {name!r} is already registered for {FORMATS[name].model_type}")
    FORMATS[name] = ModelFormat(name, model_type, save, load)
    return FORMATS[name]


def format_of(model: Any) -> ModelFormat:
    """The registered format of ``model``'s class (exact class first, then subclasses)."""
    for fmt in FORMATS.values():
        if type(model) is fmt.model_type:
            return fmt
    for fmt in FORMATS.values():
        if isinstance(model, fmt.model_type):
            return fmt
    raise ModelStoreError(
        f"no model format for {type(model).__name__}; known: {sorted(f.model_type.__name__ for f in FORMATS.values())}"
    )


register_format("xgboost_cough_classifier", CoughClassifier, lambda m, f: m.save(f), CoughClassifier.from_folder)
register_format("torch_cough_separator", CoughSeparator, lambda m, f: m.save(f), CoughSeparator.load)
register_format("torch_pruned_separator", PrunedSeparator, lambda m, f: m.save(f), PrunedSeparator.load)
register_format("skops_classical_models", ClassicalModels, lambda m, f: m.save(f), ClassicalModels.load)
register_format("torch_neural_classifiers", VariantModels, lambda m, f: m.save(f), VariantModels.load)
register_format("torch_distilled_models", DistilledModels, lambda m, f: m.save(f), DistilledModels.load)


def fingerprint(frame: pd.DataFrame) -> dict:
    """A content fingerprint of a training table: rows, columns and a SHA-256 over the row hashes and names.

    The same rows in the same order with the same columns give the same hash, whatever the index.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return {"rows": len(frame), "columns": len(frame.columns), "sha256": digest.hexdigest()}


@functools.cache
def code_version() -> str:
    """The package version, plus the git commit (``+dirty`` with uncommitted changes) when run from a checkout."""
    try:
        version = importlib.metadata.version("cough_pipeline")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(cough_pipeline.__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{commit}{'.dirty' if dirty else ''}" if commit else version


def _utc_now() -> str:
    """UTC time to the nanosecond, sortable as text."""
    now = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z"


def _json_ready(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples turned into plain JSON values."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@dataclass(frozen=True)
class ModelCard:
    """What one stored model version is; written as ``card.json`` beside the model's files."""

    asset: str
    version: str
    run_id: str
    model_format: str
    created_at: str
    code_version: str
    config: dict = field(default_factory=dict)
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": CARD_FORMAT, **dataclasses.asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelStoreError(f"{path}: unreadable model card ({error})") from error
        if values.pop("format", None) != CARD_FORMAT:
            raise ModelStoreError(f"{path}: not a model card of this pipeline (format {CARD_FORMAT!r})")
        return cls(**values)


@dataclass
class TrainedModel(Generic[M]):
    """A model asset's value: the model and what its card records.

    An asset builds it with ``config`` (the settings it trained with), ``training_data`` (e.g.
    :func:`fingerprint` of its input table) and ``metrics``; the store fills in ``card`` when it saves or loads it.
    """

    model: M
    config: dict = field(default_factory=dict)
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    card: ModelCard | None = None

    @property
    def version(self) -> str | None:
        return self.card.version if self.card else None


class ModelStore(ConfigurableResource):
    """Saves and loads versioned models under ``<storage root>/models/<asset>/``."""

    storage: Storage

    def asset_folder(self, asset: str) -> Path:
        return self.storage.root_path / "models" / asset

    def version_folder(self, asset: str, version: str | None = None) -> Path:
        """The folder of ``version`` (default: the latest) of ``asset``; a clear error when it does not exist."""
        version = version or self.latest_version(asset)
        folder = self.asset_folder(asset) / version
        if not (folder / CARD_FILE).is_file():
            known = ", ".join(self.versions(asset)) or "none"
            raise ModelStoreError(f"{asset} has no version {version!r} (stored versions: {known})")
        return folder

    def model_folder(self, asset: str, version: str | None = None) -> Path:
        """Where the model's own files of ``version`` (default: the latest) lie."""
        return self.version_folder(asset, version) / MODEL_FOLDER

    def latest_version(self, asset: str) -> str:
        try:
            return (self.asset_folder(asset) / LATEST).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ModelStoreError(f"no stored version of {asset}: materialise {asset} first") from None

    def versions(self, asset: str) -> list[str]:
        """Every complete version of ``asset``, oldest first."""
        folder = self.asset_folder(asset)
        if not folder.is_dir():
            return []
        cards = [ModelCard.read(card) for card in folder.glob(f"*/{CARD_FILE}") if not card.parent.name.startswith(".")]
        return [card.version for card in sorted(cards, key=lambda c: (c.created_at, c.version))]

    def card(self, asset: str, version: str | None = None) -> ModelCard:
        return ModelCard.read(self.version_folder(asset, version) / CARD_FILE)

    def save(self, asset: str, trained: TrainedModel, run_id: str) -> ModelCard:
        """Write ``trained`` as version ``run_id`` of ``asset`` and make it the latest; returns its card.

        A version written again by the same run (a retried step) is replaced.
        """
        fmt = format_of(trained.model)
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ModelStoreError(f"a model version needs a plain run id, got {run_id!r}")
        card = ModelCard(
            asset=asset,
            version=run_id,
            run_id=run_id,
            model_format=fmt.name,
            created_at=_utc_now(),
            code_version=code_version(),
            config=_json_ready(trained.config),
            training_data=_json_ready(trained.training_data),
            metrics=_json_ready(trained.metrics),
        )
        parent = self.asset_folder(asset)
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".staging-{run_id}-{uuid.uuid4().hex[:8]}"
        try:
            fmt.save(trained.model, staging / MODEL_FOLDER)
            (staging / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
            final = parent / run_id
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        pointer = parent / f".{LATEST}.{os.getpid()}.tmp"
        pointer.write_text(run_id + "\n", encoding="utf-8")
        pointer.replace(parent / LATEST)
        trained.card = card
        return card

    def load(self, asset: str, version: str | None = None) -> TrainedModel:
        """Version ``version`` (default: the latest) of ``asset``, read in its native format."""
        folder = self.version_folder(asset, version)
        card = ModelCard.read(folder / CARD_FILE)
        if card.model_format not in FORMATS:
            raise ModelStoreError(f"{folder}: unknown model format {card.model_format!r}")
        model = FORMATS[card.model_format].load(folder / MODEL_FOLDER)
        return TrainedModel(model, dict(card.config), dict(card.training_data), dict(card.metrics), card)


def card_metadata(card: ModelCard, folder: Path) -> dict:
    """What the UI shows of a stored version."""
    return {
        "model_version": MetadataValue.text(card.version),
        "model_format": card.model_format,
        "model_path": MetadataValue.path(str(folder)),
        "code_version": card.code_version,
        "training_data": MetadataValue.json(card.training_data),
    }


def stored_name(asset: str, partition: str | None = None) -> str:
    """The store's name of a model asset, or of one partition of it (``classifiers/mobilenetv2``): each partition
    is a model of its own, with its own versions and latest version."""
    if partition is None:
        return asset
    if not partition or "/" in partition or partition.startswith("."):
        raise ModelStoreError(f"a model partition needs a plain name, got {partition!r}")
    return f"{asset}/{partition}"


class ModelIOManager(ConfigurableIOManager):
    """Stores a model asset's :class:`TrainedModel` value as a new version; loads the latest for downstream."""

    store: ModelStore

    def handle_output(self, context: OutputContext, obj: TrainedModel | dict[str, TrainedModel]) -> None:
        """Save one model version, or, for a run over a range of partitions, one per partition of a dict."""
        values = partition_values(context, obj)
        metadata = {}
        for partition, trained in values.items():
            asset = stored_name(asset_name(context), partition)
            if not isinstance(trained, TrainedModel):
                raise TypeError(f"{asset}: a model asset returns a TrainedModel, got {type(trained).__name__}")
            card = self.store.save(asset, trained, context.run_id)
            found = card_metadata(card, self.store.version_folder(asset, card.version))
            metadata.update(found if len(values) == 1 else {f"{partition}/{k}": v for k, v in found.items()})
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> TrainedModel:
        upstream = context.upstream_output
        asset = asset_name(upstream if upstream is not None else context)
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            if len(keys) != 1:
                raise ModelStoreError(f"{asset}: load one partition's model at a time, not {len(keys)}")
            asset = stored_name(asset, keys[0])
        trained = self.store.load(asset)
        context.log.info(f"loaded {asset} version {trained.version}")
        return trained
