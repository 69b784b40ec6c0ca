"""``make predict FILE=path.wav``: one recording's COVID-19 probability from the champion classifier.

Loads what the pipeline stored (the ``champion_classifier`` row, the champion's model version, the cough filter,
the separator the separated clips used) and runs :func:`cough_pipeline.classification.predict.predict_file`.
Prints the probability, the decision at the champion's threshold, the model version and a score per cough.
A file that cannot be decoded, is not a cough or has no cough segment is refused with its reason and exit
status 2; a pipeline that has no champion yet says which command makes one (exit status 1).

The command reads the stored files directly (the parquet table, the model store's folders) and imports only the
libraries the champion needs, never Dagster or the asset definitions: it starts in a few seconds instead of a
quarter of a minute. The layout it reads is the one ``resources.storage`` and ``resources.model_store`` write.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from resources.environment import STORAGE, check_settings, dagster_home

#: The table ``champion_classifier`` materialises (one row), under ``<storage root>/tables/``.
CHAMPION_TABLE = "champion_classifier"
#: A model store version folder's card, its model folder, and the file naming an asset's latest version.
CARD_FILE, MODEL_FOLDER, LATEST = "card.json", "model", "LATEST"
CARD_FORMAT = "cough_pipeline.model_card/1"


class StoredModelMissing(LookupError):
    """A table or model version the command needs is not in the store (or not readable)."""


def _cough_classifier(folder: Path, wanted=None):
    from cough_pipeline.cough_filter.model import CoughClassifier

    return CoughClassifier.from_folder(folder)


def _pretrained_cough_classifier(folder: Path):
    """A pretrained cough filter folder given on the command line (a saved model or the COUGHVID files)."""
    from cough_pipeline.cough_filter.model import CoughClassifier

    return CoughClassifier.from_pretrained(folder)


def _separator_model(folder: Path, wanted=None):
    from cough_pipeline.separation.model import CoughSeparator

    return CoughSeparator.load(folder)


def _pruned_separator(folder: Path, wanted=None):
    from cough_pipeline.separation.pruning import PrunedSeparator

    return PrunedSeparator.load(folder)


def _classical_models(folder: Path, wanted: tuple[str, str] | None = None):
    """All the stored classical models, or only the fold pipelines of ``wanted`` = ``(model, variant)``."""
    from cough_pipeline.classification.classical import ClassicalModels

    return ClassicalModels.load(folder, only=wanted)


def _neural_models(folder: Path, wanted: tuple[str, str] | None = None):
    """The fold models of every variant, or only those of ``wanted``'s variant (one ``<variant>/`` folder)."""
    from cough_pipeline.classification.fold_models import FoldModels, VariantModels

    if wanted is None:
        return VariantModels.load(folder)
    models = FoldModels.load(folder / wanted[1])
    return VariantModels(models.model, {wanted[1]: models})


def _distilled_models(folder: Path, wanted=None):
    """The distillation stage's teachers or students (every task, fold and strategy)."""
    from cough_pipeline.distillation.models import DistilledModels

    return DistilledModels.load(folder)


#: How each model-store format (``card.json``'s ``model_format``, as ``resources.model_store`` registers them) is
#: read: ``load(folder, wanted)``, ``wanted`` = ``(model, variant)`` to read only what scoring with that model needs
#: (a classical models folder holds every classifier, feature set and variant). Each imports its libraries on use.
LOADERS: dict[str, Callable[[Path, tuple[str, str] | None], object]] = {
    "xgboost_cough_classifier": _cough_classifier,
    "torch_cough_separator": _separator_model,
    "torch_pruned_separator": _pruned_separator,
    "skops_classical_models": _classical_models,
    "torch_neural_classifiers": _neural_models,
    "torch_distilled_models": _distilled_models,
}


def storage_root(environ=os.environ) -> Path:
    """Where the tables and models are: ``$COUGH_PIPELINE_STORAGE``, else ``$DAGSTER_HOME/data``."""
    return Path(environ.get(STORAGE) or dagster_home(environ) / "data")


def _first_parquet(root: Path, table: str, columns: list[str] | None = None):
    """The first partition file of ``table`` (the whole table when unpartitioned), or None when never written."""
    import pandas as pd

    paths = sorted((root / "tables" / table).glob("*.parquet"))
    return pd.read_parquet(paths[0], columns=columns) if paths else None


def current_champion(root: Path):
    """The :class:`~cough_pipeline.classification.champion.Champion` of the ``champion_classifier`` row, or None
    before the first materialisation (columns other than the champion's fields are ignored)."""
    from cough_pipeline.classification.champion import Champion

    table = _first_parquet(root, CHAMPION_TABLE)
    if table is None or table.empty:
        return None
    known = {f.name for f in dataclasses.fields(Champion)}
    # Through JSON: plain Python values (parquet gives numpy scalars), as the asset reads it.
    return Champion.from_json(table.iloc[0][[c for c in table.columns if c in known]].to_json())


def load_stored(root: Path, asset: str, version: str | None = None, wanted: tuple[str, str] | None = None) -> object:
    """The model of ``version`` (default: the latest) of ``asset`` in the model store under ``root`` (only the part
    ``wanted`` needs, see :data:`LOADERS`)."""
    folder = root / "models" / asset
    if version is None:
        try:
            version = (folder / LATEST).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise StoredModelMissing(f"no stored version of {asset}: materialise {asset} first") from None
    try:
        card = json.loads((folder / version / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise StoredModelMissing(f"{asset} has no readable version {version!r} ({error})") from None
    if card.get("format") != CARD_FORMAT or card.get("model_format") not in LOADERS:
        raise StoredModelMissing(f"{folder / version}: not a model this command reads ({card.get('model_format')})")
    return LOADERS[card["model_format"]](folder / version / MODEL_FOLDER, wanted)


def segment(samples, rate: int) -> list:
    """The segmentation method whose coughs the classification stage separated (``separated_clips``' default)."""
    from cough_pipeline.segmentation import RmsConfig
    from cough_pipeline.segmentation.rms import segment_rms

    return segment_rms(samples, rate, RmsConfig())


def _separator(root: Path):
    """The separator ``separated_clips`` used (its ``separator`` column), ready for inference, and its rate."""
    from cough_pipeline.separation.evaluation import model_separator

    used = _first_parquet(root, "separated_clips", ["separator"])
    if used is None or used.empty:
        raise StoredModelMissing("table 'separated_clips' has no materialised data; materialise it first")
    separator = load_stored(root, str(used["separator"].iloc[0]))
    dense = getattr(separator, "model", separator)  # a pruned separator wraps the dense model
    return model_separator(separator.for_inference()), int(dense.config.sample_rate)


def load_predictor(root: Path, cough_model_dir: Path | None = None):
    """The champion and the models around it, as the store under ``root`` holds them now."""
    from cough_pipeline.classification.predict import Predictor, calibrated, model_scorer
    from cough_pipeline.classification.preprocess import PreprocessConfig

    champion = current_champion(root)
    if champion is None:
        raise LookupError("no champion classifier yet: run `make demo` (or materialise champion_classifier)")
    models = load_stored(root, champion.asset, champion.version, (champion.model, champion.variant))
    if cough_model_dir is not None:
        cough_filter = _pretrained_cough_classifier(cough_model_dir)
    else:
        cough_filter = load_stored(root, "cough_filter_model")
    separate, rate = _separator(root) if champion.variant == "separated" else (None, 44_100)
    neural = hasattr(models, "variants")  # VariantModels: the fold models keep their clip preprocessing
    calibrate = champion.calibrate if getattr(champion, "calibrator", None) is not None else None
    return Predictor(
        cough_filter=cough_filter,
        segment=segment,
        score=calibrated(model_scorer(models, champion.model, champion.variant), calibrate),
        threshold=float(champion.threshold),
        variant=champion.variant,
        model=champion.model,
        version=champion.version,
        separate=separate,
        separator_rate=rate,
        preprocess=models[champion.variant].preprocess if neural else PreprocessConfig(),
    )


def report(prediction) -> str:
    decision = "POSITIVE" if prediction.positive else "negative"
    coughs = prediction.coughs.round(3).to_string(index=False)
    return "\n".join(
        [
            f"{prediction.path}",
            f"  COVID-19 probability {prediction.probability:.3f} -> {decision} (threshold {prediction.threshold:.3f})",
            f"  model {prediction.model} ({prediction.variant} audio), version {prediction.version}",
            f"  cough filter probability {prediction.cough_probability:.3f}; per cough:",
            "    " + coughs.replace("\n", "\n    "),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="an audio file in any format the manifest decodes")
    parser.add_argument("--cough-model-dir", type=Path, help="a pretrained cough filter folder (default: the stored)")
    arguments = parser.parse_args(argv)
    check_settings()
    try:
        predictor = load_predictor(storage_root(), arguments.cough_model_dir)
    except (LookupError, FileNotFoundError) as error:
        print(f"cannot predict: {error}", file=sys.stderr)
        return 1
    from cough_pipeline.classification.predict import PredictionRefused, predict_file

    try:
        prediction = predict_file(arguments.file, predictor)
    except PredictionRefused as refused:
        print(f"{arguments.file}: refused ({refused.reason}): {refused.detail}", file=sys.stderr)
        return 2
    print(report(prediction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
