"""``make predict FILE=path.wav``: one recording's COVID-19 probability from the champion classifier.

Loads what the pipeline stored (the ``champion_classifier`` row, the champion's model version, the cough filter,
the separator the separated clips used) and runs :func:`cough_pipeline.classification.predict.predict_file`.
Prints the probability, the decision at the champion's threshold, the model version and a score per cough.
A file that cannot be decoded, is not a cough or has no cough segment is refused with its reason and exit
status 2; a pipeline that has no champion yet says which command makes one (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assets.classification import current_champion
from assets.resources import build_resources
from cough_pipeline.classification.champion import Champion
from cough_pipeline.classification.predict import (
    Prediction,
    PredictionRefused,
    Predictor,
    model_scorer,
    predict_file,
)
from cough_pipeline.cough_filter import CoughClassifier
from cough_pipeline.segmentation import RmsConfig
from cough_pipeline.segmentation.rms import segment_rms
from cough_pipeline.separation.evaluation import model_separator
from cough_pipeline.separation.pruning import PrunedSeparator
from resources.environment import check_settings
from resources.model_store import ModelStore, ModelStoreError
from resources.storage import Storage


def segment(samples, rate: int) -> list:
    """The segmentation method whose coughs the classification stage separated (``separated_clips``' default)."""
    return segment_rms(samples, rate, RmsConfig())


def _separator(store: ModelStore, storage: Storage):
    """The separator ``separated_clips`` used (its ``separator`` column), ready for inference, and its rate."""
    used = storage.read_table("separated_clips")["separator"].iloc[0]
    separator = store.load(str(used)).model
    dense = separator.model if isinstance(separator, PrunedSeparator) else separator
    return model_separator(separator.for_inference()), int(dense.config.sample_rate)


def load_predictor(resources: dict, cough_model_dir: Path | None = None) -> Predictor:
    """The champion and the models around it, as the store holds them now."""
    storage, store = resources["storage"], resources["model_store"]
    champion: Champion | None = current_champion(storage)
    if champion is None:
        raise LookupError("no champion classifier yet: run `make demo` (or materialise champion_classifier)")
    models = store.load(champion.asset, champion.version).model
    if cough_model_dir is not None:
        cough_filter = CoughClassifier.from_pretrained(cough_model_dir)
    else:
        cough_filter = store.load("cough_filter_model").model
    separate, rate = _separator(store, storage) if champion.variant == "separated" else (None, 44_100)
    return Predictor(
        cough_filter=cough_filter,
        segment=segment,
        score=model_scorer(models, champion.model, champion.variant),
        threshold=float(champion.threshold),
        variant=champion.variant,
        model=champion.model,
        version=champion.version,
        separate=separate,
        separator_rate=rate,
    )


def report(prediction: Prediction) -> str:
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
        predictor = load_predictor(build_resources(), arguments.cough_model_dir)
    except (LookupError, ModelStoreError, FileNotFoundError) as error:
        print(f"cannot predict: {error}", file=sys.stderr)
        return 1
    try:
        prediction = predict_file(arguments.file, predictor)
    except PredictionRefused as refused:
        print(f"{arguments.file}: refused ({refused.reason}): {refused.detail}", file=sys.stderr)
        return 2
    print(report(prediction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
