"""``predict_file``: decode -> cough filter -> segmentation -> (separation) -> champion, or a refusal with a reason."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.classification.classical import ClassicalConfig, train_classical
from cough_pipeline.classification.features import clip_features, feature_blocks
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.predict import PredictionRefused, Predictor, classical_scorer, predict_file
from cough_pipeline.classification.resampling import ResamplingConfig
from cough_pipeline.demo_corpus import synth
from cough_pipeline.segmentation import RmsConfig
from cough_pipeline.segmentation.rms import segment_rms

RATE = 16_000


@dataclass(frozen=True)
class Decision:
    probability: float
    is_cough: bool
    reason: str | None = None


class FakeFilter:
    """The cough filter's interface with a fixed verdict."""

    def __init__(self, probability: float, reason: str | None = None):
        self.decision = Decision(probability, probability >= 0.8, reason)

    def classify(self, samples, sample_rate):
        return self.decision


def _recording(path, n_coughs: int = 3):
    samples, _ = synth.cough_recording(np.random.default_rng(0), RATE, 4.0, n_coughs, covid_positive=True)
    sf.write(str(path), samples, RATE)
    return path


def _predictor(variant: str = "original", probability: float = 0.95, **kwargs) -> Predictor:
    return Predictor(
        cough_filter=FakeFilter(probability),
        segment=lambda samples, rate: segment_rms(samples, rate, RmsConfig()),
        score=lambda clip: float(np.clip(np.abs(clip).mean() * 10, 0, 1)),
        threshold=0.5,
        variant=variant,
        model="svm@all",
        version="run-1",
        **kwargs,
    )


def test_a_cough_recording_gets_a_probability_a_decision_and_per_cough_scores(tmp_path):
    prediction = predict_file(_recording(tmp_path / "a.wav"), _predictor())
    assert 0 <= prediction.probability <= 1 and prediction.positive == (prediction.probability >= 0.5)
    assert (prediction.model, prediction.version, prediction.cough_probability) == ("svm@all", "run-1", 0.95)
    assert len(prediction.coughs) >= 2 and (prediction.coughs["end_s"] > prediction.coughs["start_s"]).all()


def test_the_separated_variant_scores_the_separated_coughs(tmp_path):
    seen = []

    def separate(wave):
        seen.append(len(wave))
        return wave * 0.5

    prediction = predict_file(_recording(tmp_path / "a.wav"), _predictor("separated", separate=separate))
    assert len(seen) == len(prediction.coughs) >= 2


@pytest.mark.parametrize(
    "write, predictor, reason",
    [
        (lambda p: p.write_bytes(b"RIFF not really a wave file"), _predictor(), "audio_unreadable"),
        (lambda p: _recording(p), _predictor(probability=0.1), "not_cough"),
        (lambda p: sf.write(str(p), np.zeros(RATE, np.float32), RATE), _predictor(), "no_cough_segments"),
    ],
)
def test_bad_recordings_are_refused_with_a_reason(tmp_path, write, predictor, reason):
    path = tmp_path / "bad.wav"
    write(path)
    with pytest.raises(PredictionRefused) as refused:
        predict_file(path, predictor)
    assert refused.value.reason == reason


def test_a_stored_classical_model_scores_a_new_clip_through_its_features():
    rng = np.random.default_rng(3)
    clips = [(synth.cough(rng, 22_050, positive), positive) for positive in [True, False] * 12]
    features = pd.DataFrame([clip_features(clip) for clip, _ in clips]).assign(
        recording_id=[f"r{i}" for i in range(len(clips))],
        participant_id=[f"p{i}" for i in range(len(clips))],
        dataset="demo",
        covid_label=["positive" if positive else "negative" for _, positive in clips],
        variant="original",
        content_hash=None,
    )
    folds = assign_folds(features, FoldConfig(n_folds=3, seed=0))
    config = ClassicalConfig(classifiers=("logistic_regression",), resampling=ResamplingConfig(strategy="none"))
    blocks = feature_blocks(features.columns)
    trained = train_classical(features, folds, {"all": [c for b in blocks.values() for c in b]}, "original", config)
    score = classical_scorer(trained.models, "logistic_regression@all", "original")
    positive, negative = synth.cough(rng, 22_050, True), synth.cough(rng, 22_050, False)
    assert score(positive) > 0.5 > score(negative)
