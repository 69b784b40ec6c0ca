"""``predict_file``: decode -> cough filter -> segmentation -> (separation) -> champion, or a refusal with a reason."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.audio import resample
from cough_pipeline.classification.classical import ClassicalConfig, train_classical
from cough_pipeline.classification.features import clip_features, feature_blocks
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.predict import PredictionRefused, Predictor, classical_scorer, predict_file
from cough_pipeline.classification.preprocess import preprocess
from cough_pipeline.classification.resampling import ResamplingConfig
from cough_pipeline.demo_corpus import synth
from cough_pipeline.segmentation import RmsConfig
from cough_pipeline.segmentation.rms import segment_rms
from cough_pipeline.segmentation.segments import Segment

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


# --- batched scoring, the two threads, and the command's store reader -------------------------------------------


def _fold_models(variant: str = "original", folds: int = 2):
    import torch

    from cough_pipeline.classification.fold_models import FoldModels, VariantModels
    from cough_pipeline.classification.networks import NetworkConfig, NeuralClassifier

    torch.manual_seed(0)
    models = [NeuralClassifier(NetworkConfig(name="mobilenetv3_small")) for _ in range(folds)]
    return VariantModels("mobilenetv3_small", {variant: FoldModels("mobilenetv3_small", variant, [0, 1], models)})


def _classical_models(variant: str = "original"):
    from cough_pipeline.classification.classical import ClassicalModels
    from cough_pipeline.classification.features import feature_columns
    from cough_pipeline.classification.resampling import build_pipeline

    columns = feature_columns()
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((30, len(columns))), np.arange(30) % 2
    models = ClassicalModels(columns={("logistic_regression@all", variant): list(columns)})
    for fold in range(2):
        pipeline = build_pipeline("logistic_regression", ResamplingConfig(strategy="none"))
        models.pipelines[("logistic_regression@all", variant, fold)] = pipeline.fit(features, labels)
    return models


def _clips(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [synth.cough(rng, 22_050, bool(i % 2)) for i in range(count)]


def test_a_batching_scorer_gives_each_clip_the_score_it_gets_alone():
    from cough_pipeline.classification.predict import model_scorer

    clips = _clips()
    neural = _fold_models()
    score = model_scorer(neural, "mobilenetv3_small", "original")
    batched = score.probabilities([score.prepare(clip) for clip in clips])
    np.testing.assert_allclose(batched, [neural["original"].score_clip(clip) for clip in clips], atol=1e-6)
    classical = _classical_models()
    score = model_scorer(classical, "logistic_regression@all", "original")
    one_at_a_time = [
        classical.predict(pd.DataFrame([clip_features(clip)]), "logistic_regression@all", "original")[0]
        for clip in clips
    ]
    np.testing.assert_array_equal(score.probabilities([score.prepare(clip) for clip in clips]), one_at_a_time)


def test_calibration_keeps_a_scorer_batching():
    from cough_pipeline.classification.predict import calibrated, model_scorer

    clips = _clips(2)
    score = model_scorer(_classical_models(), "logistic_regression@all", "original")
    halved = calibrated(score, lambda p: p / 2)
    assert calibrated(score, None) is score and hasattr(halved, "prepare")
    np.testing.assert_allclose(halved.probabilities([halved.prepare(c) for c in clips]), [score(c) / 2 for c in clips])
    assert calibrated(lambda clip: 0.8, lambda p: p / 2)(clips[0]) == 0.4


@pytest.mark.parametrize("variant", ["original", "separated"])
def test_predict_file_matches_the_steps_run_one_after_the_other(tmp_path, variant):
    from cough_pipeline.classification.predict import model_scorer

    stored = _fold_models(variant)
    predictor = _predictor(variant, separate=lambda wave: wave * 0.5)
    predictor = dataclasses.replace(predictor, score=model_scorer(stored, "mobilenetv3_small", variant))
    path = _recording(tmp_path / "a.wav")
    prediction = predict_file(path, predictor)
    samples, rate = sf.read(path, dtype="float32")
    pieces = [samples[int(s.start_s * rate) : int(s.end_s * rate)] for s in segment_rms(samples, rate, RmsConfig())]
    if variant == "separated":
        pieces, rate = [resample(piece, RATE, 44_100) * 0.5 for piece in pieces], 44_100
    whole = np.concatenate(pieces) if variant == "separated" else samples
    expected = [stored[variant].score_clip(preprocess(clip, rate)) for clip in [whole, *pieces]]
    found = [prediction.probability, *prediction.coughs["probability"]]
    np.testing.assert_allclose(found, expected, atol=1e-6)


def test_a_cough_too_short_to_score_gets_a_reason_and_the_others_a_score(tmp_path):
    from cough_pipeline.classification.predict import model_scorer

    def segments(samples, rate):
        return [Segment(0.5, 1.5), Segment(2.0, 2.01)]  # the second is shorter than one frame after resampling

    predictor = dataclasses.replace(
        _predictor(), segment=segments, score=model_scorer(_classical_models(), "logistic_regression@all", "original")
    )
    coughs = predict_file(_recording(tmp_path / "a.wav"), predictor).coughs
    assert np.isfinite(coughs["probability"][0]) and pd.isna(coughs["reason"][0])
    assert np.isnan(coughs["probability"][1]) and coughs["reason"][1] == "too_short"


@pytest.mark.parametrize("reason", [None, "silent"])
def test_the_cough_filters_refusal_comes_before_the_segmenters(tmp_path, reason):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(RATE, np.float32), RATE)
    predictor = dataclasses.replace(_predictor(), cough_filter=FakeFilter(0.0, reason))
    with pytest.raises(PredictionRefused) as refused:
        predict_file(path, predictor)
    assert refused.value.reason == (reason or "not_cough")


def test_prediction_leaves_the_thread_settings_as_it_found_them(tmp_path):
    import torch
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = torch.get_num_threads(), blas()
    predict_file(_recording(tmp_path / "a.wav"), _predictor())
    assert (torch.get_num_threads(), blas()) == before


def test_the_command_reads_every_model_store_format():
    from assets.predict import LOADERS
    from resources.model_store import FORMATS

    assert set(LOADERS) == set(FORMATS)


def test_the_command_starts_without_dagster(tmp_path):
    code = "import sys, assets.predict; sys.exit('dagster' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize("kind", ["neural_separated", "classical_original"])
def test_the_command_predicts_from_a_store_it_reads_without_dagster(tmp_path, monkeypatch, capsys, kind):
    from assets.predict import main
    from cough_pipeline.classification.champion import Champion
    from cough_pipeline.separation.model import CoughSeparator
    from resources.model_store import ModelStore, TrainedModel
    from resources.storage import Storage

    storage = Storage(root=str(tmp_path / "store"), catalog=str(tmp_path / "catalog.duckdb"))
    store, (family, variant) = ModelStore(storage=storage), kind.split("_")
    if family == "neural":
        stored, model, asset = _fold_models(variant), "mobilenetv3_small", "neural"
        store.save("separator", TrainedModel(CoughSeparator()), "run-1")
        storage.write_table("separated_clips", pd.DataFrame({"separator": ["separator"]}))
    else:
        stored, model, asset = _classical_models(variant), "logistic_regression@all", "classical_models"
    store.save(asset, TrainedModel(stored), "run-1")
    store.save("cough_filter_model", TrainedModel(_cough_filter(0.0)), "run-1")
    champion = Champion(model, variant, asset, "run-1", "roc_auc", 0.9, 0.8, 1.0, 0.5, 0.9, 0.9)
    storage.write_table("champion_classifier", pd.DataFrame([dataclasses.asdict(champion)]))
    monkeypatch.setenv("COUGH_PIPELINE_STORAGE", str(storage.root_path))
    assert main([str(_recording(tmp_path / "a.wav"))]) == 0
    out = capsys.readouterr().out
    assert f"model {model} ({variant} audio), version run-1" in out and "per cough" in out


def test_the_command_says_when_there_is_no_champion(tmp_path, monkeypatch, capsys):
    from assets.predict import main

    monkeypatch.setenv("COUGH_PIPELINE_STORAGE", str(tmp_path / "empty"))
    assert main([str(_recording(tmp_path / "a.wav"))]) == 1
    assert "no champion classifier yet" in capsys.readouterr().err


def _cough_filter(threshold: float):
    """A cough filter trained on a few synthetic clips (its verdict does not matter at threshold 0)."""
    from cough_pipeline.cough_filter.features import extract_features
    from cough_pipeline.cough_filter.training import FeatureTable, train_from_features

    rng = np.random.default_rng(1)
    clips = [synth.cough_recording(rng, RATE, 2.0, 1, True)[0] for _ in range(6)]
    clips += [0.3 * np.sin(np.arange(2 * RATE) * rng.uniform(0.05, 0.3)) for _ in range(6)]
    matrix = np.stack([extract_features(clip.astype(np.float32), RATE) for clip in clips])
    labels = np.array([1] * 6 + [0] * 6)
    table = FeatureTable(matrix, labels, np.arange(12), np.arange(12), [])
    classifier, _ = train_from_features(table)
    return dataclasses.replace(classifier, threshold=threshold)


def test_a_clips_feature_vector_is_its_matrices_summarised_one_by_one():
    from cough_pipeline.classification.features import feature_matrices, feature_vector, summarise

    for clip in _clips(2):
        one_by_one = np.concatenate([summarise(m).ravel() for m in feature_matrices(clip).values()])
        np.testing.assert_array_equal(feature_vector(clip), one_by_one)
