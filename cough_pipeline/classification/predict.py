"""From one recording to a COVID-19 probability: decode -> cough filter -> segmentation -> separation -> champion.

:func:`predict_file` runs the same steps the pipeline's training data went through, with models the caller loads
(the command-line entry point loads them from the model store):

1. decode any format the manifest reads (mono, native rate); a file that cannot be decoded is refused with the
   decoder's reason (``audio_unreadable``, ``audio_empty``, ...);
2. the cough filter on the whole recording: below its threshold the file is refused as ``not_cough`` (or with
   the filter's own reason, e.g. ``silent``);
3. segmentation into single coughs (``no_cough_segments`` when none is found);
4. for a champion trained on the ``separated`` variant, each cough passes through the separator (at its rate)
   and the separated coughs are joined in order, as ``classification_recordings`` joins them; for the ``original``
   variant the whole recording is scored, as in training;
5. the champion's score of the preprocessed clip (22,050 Hz, trimmed, peak-normalised), its decision at the
   champion's threshold, and a score per cough (a cough too short to score has no probability and a reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import AudioDecodeError, load_mono, resample
from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.classification.features import FeatureConfig, clip_features
from cough_pipeline.classification.fold_models import VariantModels
from cough_pipeline.classification.preprocess import PreprocessConfig, preprocess
from cough_pipeline.segmentation.segments import Segment

#: ``score(clip)`` -> P(positive) for a preprocessed clip at the preprocessing rate.
Scorer = Callable[[np.ndarray], float]


class PredictionRefused(ClassificationError):
    """A recording the predictor cannot score; ``reason`` is machine-readable, ``detail`` for people."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Predictor:
    """The models of one prediction: the cough filter (``classify(samples, rate)`` -> a decision with
    ``probability``, ``is_cough``, ``reason``), a segmenter (``segment(samples, rate)`` -> segments), the
    separator (``separate(wave)`` at ``separator_rate``; used for the ``separated`` variant) and the champion's
    scorer, threshold, name and model-store version."""

    cough_filter: object
    segment: Callable[[np.ndarray, int], list[Segment]]
    score: Scorer
    threshold: float
    variant: str
    model: str
    version: str
    separate: Callable[[np.ndarray], np.ndarray] | None = None
    separator_rate: int = 44_100
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass(frozen=True)
class Prediction:
    """``probability`` of COVID-19, ``positive`` at ``threshold``, the model that said so, the cough filter's
    probability, and ``coughs``: start_s, end_s, probability, reason (one row per cough)."""

    path: str
    probability: float
    positive: bool
    threshold: float
    model: str
    variant: str
    version: str
    cough_probability: float
    coughs: pd.DataFrame


def _decoded(path: Path) -> tuple[np.ndarray, int]:
    try:
        return load_mono(path)
    except AudioDecodeError as error:
        raise PredictionRefused(error.reason.value, error.detail) from None
    except (OSError, ValueError) as error:
        raise PredictionRefused("audio_unreadable", f"{type(error).__name__}: {error}") from None


def _coughs(samples: np.ndarray, rate: int, predictor: Predictor) -> tuple[list[Segment], list[np.ndarray], int]:
    """The recording's segments and the audio of each cough as the champion's variant sees it, and its rate."""
    segments = predictor.segment(samples, rate)
    if not segments:
        raise PredictionRefused("no_cough_segments", "the segmenter found no cough in the recording")
    pieces = [samples[int(s.start_s * rate) : max(int(s.end_s * rate), int(s.start_s * rate) + 1)] for s in segments]
    if predictor.variant != "separated":
        return segments, pieces, rate
    if predictor.separate is None:
        raise ClassificationError("the champion reads separated coughs but no separator was given")
    separated = [predictor.separate(resample(piece, rate, predictor.separator_rate)) for piece in pieces]
    return segments, separated, predictor.separator_rate


def _score(clip: np.ndarray, rate: int, predictor: Predictor) -> tuple[float, str | None]:
    try:
        return float(predictor.score(preprocess(clip, rate, predictor.preprocess))), None
    except InputRejected as rejected:
        return float("nan"), rejected.reason


def predict_file(path: str | Path, predictor: Predictor) -> Prediction:
    """Score one recording end to end (see the module docstring).

    Raises:
        PredictionRefused: the file cannot be decoded, is not a cough, has no cough segment, or its clip cannot
            be scored (silent or too short after trimming).
    """
    samples, rate = _decoded(Path(path))
    filter_rate = getattr(predictor.cough_filter, "input_sample_rate", None) or rate  # the rate it was trained at
    decision = predictor.cough_filter.classify(resample(samples, rate, filter_rate), filter_rate)
    if not decision.is_cough:
        reason = decision.reason or "not_cough"
        raise PredictionRefused(reason, f"cough probability {decision.probability:.3f} is below the cough filter's")
    segments, coughs, cough_rate = _coughs(samples, rate, predictor)
    whole = (np.concatenate(coughs), cough_rate) if predictor.variant == "separated" else (samples, rate)
    probability, reason = _score(*whole, predictor)
    if reason is not None:
        raise PredictionRefused(reason, "the recording cannot be scored after preprocessing")
    per_cough = [_score(cough, cough_rate, predictor) for cough in coughs]
    table = pd.DataFrame(
        {
            "start_s": [s.start_s for s in segments],
            "end_s": [s.end_s for s in segments],
            "probability": [p for p, _ in per_cough],
            "reason": [r for _, r in per_cough],
        }
    )
    return Prediction(
        path=str(path),
        probability=probability,
        positive=probability >= predictor.threshold,
        threshold=predictor.threshold,
        model=predictor.model,
        variant=predictor.variant,
        version=predictor.version,
        cough_probability=float(decision.probability),
        coughs=table,
    )


def classical_scorer(models, model: str, variant: str, feature_config=None) -> Scorer:
    """The scorer of a stored classical model: the 15 x 7 features of the clip, then the mean of the fold models'
    probabilities (the fold ensemble the holdout scored).

    Args:
        models: a :class:`~cough_pipeline.classification.classical.ClassicalModels`.
        model, variant: which of its models (e.g. ``"svm@all"``, ``"separated"``).
        feature_config: the :class:`~cough_pipeline.classification.features.FeatureConfig` the models were
            trained on (default settings when None).
    """
    config = feature_config or FeatureConfig()

    def score(clip: np.ndarray) -> float:
        return float(models.predict(pd.DataFrame([clip_features(clip, config)]), model, variant)[0])

    return score


def model_scorer(stored, model: str, variant: str) -> Scorer:
    """The scorer of a stored champion: the neural fold models of ``variant`` (:class:`VariantModels`) or the
    classical model ``model`` of ``variant`` (:class:`ClassicalModels`), each as its fold ensemble."""
    if isinstance(stored, VariantModels):
        return stored[variant].score_clip
    return classical_scorer(stored, model, variant)
