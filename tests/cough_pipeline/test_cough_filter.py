"""The cough filter: COUGHVID-compatible features, the classifier's decisions and files, and training."""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import xgboost as xgb

from cough_pipeline.cough_filter import (
    FEATURE_NAMES,
    CoughClassifier,
    CoughModelError,
    LabelledClip,
    TrainingSettings,
    UnusableSignalError,
    clipping_fraction,
    esc50_clips,
    extract_features,
    preprocess,
    train_cough_classifier,
)
from cough_pipeline.cough_filter.features import MIN_PREPROCESSED_SAMPLES, NOMINAL_SAMPLE_RATE
from cough_pipeline.cough_filter.model import FeatureScaler
from cough_pipeline.cough_filter.training import FeatureTable, cross_validation_splits, train_from_features

NAME_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
PROBABILITY_TOLERANCE = 1e-3


def cough_like(sample_rate: int, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Two decaying noise bursts over faint noise, float64 ``(frames,)``."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    clip = 0.01 * rng.standard_normal(frames)
    for onset in (0.2, 0.8):
        start = int(onset * sample_rate)
        clip[start:] += 0.5 * rng.standard_normal(frames - start) * np.exp(-t[: frames - start] / 0.08)
    return clip


def tone(frequency: float, sample_rate: int, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * sample_rate)) / sample_rate)


def synthetic_table(seed: int = 0, n_groups: int = 20, per_group: int = 5) -> FeatureTable:
    """Random features whose label depends on two columns; every group holds clips of one label."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = (groups % 2).astype(np.int64)
    matrix = rng.standard_normal((n, len(FEATURE_NAMES)))
    matrix[:, 3] += 1.5 * labels
    matrix[:, 40] -= 1.0 * labels
    return FeatureTable(
        matrix=matrix, labels=labels, groups=groups.astype(str).astype(object), clip_index=np.arange(n), rejected=[]
    )


@pytest.fixture(scope="module")
def small_model() -> CoughClassifier:
    """A model trained in well under a second on synthetic features (no shared data needed)."""
    classifier, _ = train_from_features(synthetic_table(), seed=0, settings=TrainingSettings(n_estimators=20))
    return classifier


@pytest.fixture(scope="module")
def coughvid_folder(shared_data):
    folder = shared_data / "coughvid_model"
    if not (folder / "cough_classifier.json").is_file():
        pytest.skip(f"the converted COUGHVID model is not at {folder}")
    return folder


# --- features -------------------------------------------------------------------------------------------------


def test_feature_names_are_the_68_of_the_coughvid_scaler(coughvid_folder):
    scaler = json.loads((coughvid_folder / "cough_classification_scaler.json").read_text())
    assert FEATURE_NAMES == tuple(scaler["feature_names"])
    assert len(FEATURE_NAMES) == 68 == len(set(FEATURE_NAMES))


@pytest.mark.parametrize("sample_rate", [48_000, 44_100, 24_000, 16_000])
def test_feature_vector_has_68_finite_values_in_order(sample_rate):
    features = extract_features(cough_like(sample_rate), sample_rate)
    assert features.shape == (68,) and features.dtype == np.float64
    assert np.isfinite(features).all()
    assert features[NAME_INDEX["Cough_Length"]] == pytest.approx(
        np.ceil(1.5 * sample_rate / int(sample_rate / NOMINAL_SAMPLE_RATE)) / NOMINAL_SAMPLE_RATE
    )
    assert all(float(count).is_integer() for count in features[:19])  # envelope peak counts
    assert 0 <= features[NAME_INDEX["Dominant_Freq"]] <= 0.5  # cycles per sample


def test_preprocess_decimates_by_the_integer_factor_and_reports_12k():
    for sample_rate, factor in [(48_000, 4), (44_100, 3), (16_000, 1)]:
        signal, nominal_rate = preprocess(cough_like(sample_rate), sample_rate)
        assert nominal_rate == NOMINAL_SAMPLE_RATE
        assert signal.dtype == np.float32 and signal.shape == (-(-int(1.5 * sample_rate) // factor),)


def test_pure_tone_centroid_is_the_tone_in_hz_at_48k_and_scaled_by_the_nominal_rate_at_16k():
    at_48k = extract_features(tone(1000.0, 48_000), 48_000)
    assert at_48k[NAME_INDEX["Spectral_Centroid"]] == pytest.approx(1000.0, rel=0.05)
    assert at_48k[NAME_INDEX["Dominant_Freq"]] == pytest.approx(1000.0 / NOMINAL_SAMPLE_RATE, abs=1 / 256)
    # 16 kHz is not decimated but still called 12 kHz: frequencies read 12/16 of the truth (COUGHVID's quirk).
    at_16k = extract_features(tone(1000.0, 16_000), 16_000)
    assert at_16k[NAME_INDEX["Spectral_Centroid"]] == pytest.approx(750.0, rel=0.05)


def test_integer_pcm_and_float_give_the_same_features():
    clip = cough_like(48_000)
    pcm = np.round(clip / np.abs(clip).max() * 20_000).astype(np.int16)
    assert np.allclose(extract_features(pcm, 48_000), extract_features(pcm / 32768.0, 48_000), rtol=1e-5)


def test_stereo_is_averaged_like_the_reference():
    left, right = cough_like(48_000, seed=1), cough_like(48_000, seed=2)
    stereo = np.stack([left, right], axis=1)
    assert np.array_equal(extract_features(stereo, 48_000), extract_features((left + right) / 2, 48_000))


@pytest.mark.parametrize("bad_rate", [0, -16_000, 16_000.5, True])
def test_a_malformed_sample_rate_is_a_value_error(bad_rate):
    with pytest.raises(ValueError, match="sample_rate"):
        extract_features(cough_like(16_000), bad_rate)


def test_a_three_dimensional_array_or_unsigned_pcm_is_a_value_error():
    with pytest.raises(ValueError, match="frames"):
        extract_features(np.zeros((100, 2, 2)), 48_000)
    with pytest.raises(ValueError, match="unsigned"):
        extract_features(np.full(48_000, 128, dtype=np.uint8), 48_000)


# --- decisions --------------------------------------------------------------------------------------------------


def test_silent_clip_gets_probability_zero_with_reason_and_no_warning(small_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for silent in (np.zeros(48_000), np.full(48_000, 0.25), np.full(48_000, 1e-6) * np.sin(np.arange(48_000))):
            decision = small_model.classify(silent, 48_000)
            assert (decision.probability, decision.is_cough, decision.reason) == (0.0, False, "silent")
        assert small_model.probability(np.zeros(48_000), 48_000) == 0.0


def test_silent_wav_file_gets_reason_silent(small_model, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(32_000), 16_000, subtype="PCM_16")
    assert small_model.classify_file(tmp_path / "silence.wav").reason == "silent"


def test_clip_shorter_than_one_frame_is_too_short(small_model):
    factor = 4  # 48 kHz
    longest_too_short = (MIN_PREPROCESSED_SAMPLES - 1) * factor
    assert small_model.classify(cough_like(48_000)[:longest_too_short], 48_000).reason == "too_short"
    assert small_model.classify(cough_like(48_000)[: longest_too_short + 1], 48_000).reason is None
    assert small_model.classify(np.zeros(0), 48_000).reason == "too_short"


def test_non_finite_samples_are_rejected_as_non_finite(small_model):
    for value in (np.nan, np.inf):
        clip = cough_like(48_000)
        clip[1000] = value
        decision = small_model.classify(clip, 48_000)
        assert (decision.probability, decision.reason) == (0.0, "non_finite")
    with pytest.raises(UnusableSignalError) as error:
        extract_features(np.full(48_000, np.nan), 48_000)
    assert error.value.reason.value == "non_finite"


def test_rates_at_or_below_12k_are_rejected(small_model):
    assert small_model.classify(cough_like(8_000), 8_000).reason == "sample_rate_too_low"
    assert small_model.classify(cough_like(12_000), 12_000).reason == "sample_rate_too_low"


def test_clipping_is_measured_but_does_not_reject(small_model):
    clipped = np.clip(tone(440.0, 48_000, seconds=1.0, amplitude=2.0), -1.0, 1.0)
    expected = np.mean(np.abs(clipped) >= 0.999)
    decision = small_model.classify(clipped, 48_000)
    assert decision.reason is None and 0.0 <= decision.probability <= 1.0
    assert decision.clipping_fraction == pytest.approx(expected) and 0.6 < expected < 0.7
    assert clipping_fraction(np.array([32767, -32768, 0, 100], dtype=np.int16)) == 0.5
    assert small_model.classify(0.5 * tone(440.0, 48_000), 48_000).clipping_fraction == 0.0


def test_threshold_turns_the_probability_into_is_cough(small_model):
    clip = cough_like(48_000)
    probability = small_model.probability(clip, 48_000)
    assert replace(small_model, threshold=probability).classify(clip, 48_000).is_cough
    assert not replace(small_model, threshold=min(1.0, probability + 1e-6)).classify(clip, 48_000).is_cough


def test_probabilities_validate_the_feature_matrix(small_model):
    with pytest.raises(ValueError, match=r"\(n, 68\)"):
        small_model.probabilities(np.zeros((2, 67)))
    with pytest.raises(ValueError, match="NaN"):
        small_model.probabilities(np.full((1, 68), np.nan))


# --- reference probabilities of the pretrained COUGHVID model ---------------------------------------------------


@pytest.mark.shared_data
def test_coughvid_model_reproduces_every_reference_probability(coughvid_folder):
    classifier = CoughClassifier.from_coughvid_folder(coughvid_folder)
    with (coughvid_folder / "reference_probabilities.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 19
    differences = {}
    for row in rows:
        path = coughvid_folder / row["file"]
        if not path.is_file():
            pytest.skip(f"reference clip {row['file']} is absent")
        decision = classifier.classify_file(path)
        assert decision.reason is None
        differences[row["file"]] = abs(decision.probability - float(row["cough_probability"]))
    worst = max(differences, key=differences.get)
    assert differences[worst] < PROBABILITY_TOLERANCE, f"{worst}: {differences[worst]:.2e}; all: {differences}"


@pytest.mark.shared_data
def test_coughvid_cough_sample_is_a_cough_and_not_cough_is_not(coughvid_folder):
    classifier = CoughClassifier.from_pretrained(coughvid_folder)
    recordings = coughvid_folder / "sample_recordings"
    assert classifier.classify_file(recordings / "cough.wav").is_cough
    assert not classifier.classify_file(recordings / "not_cough.wav").is_cough


# --- files ------------------------------------------------------------------------------------------------------


def test_save_and_from_folder_round_trip_gives_identical_probabilities(small_model, tmp_path):
    folder = small_model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["booster.json", "model_card.json", "scaler.json"]
    card = json.loads((folder / "model_card.json").read_text())
    assert card["feature_names"] == list(FEATURE_NAMES) and card["threshold"] == small_model.threshold
    assert card["training"]["cross_validation"]["mean_roc_auc"] is not None
    loaded = CoughClassifier.from_folder(folder)
    matrix = synthetic_table(seed=5).matrix
    assert np.array_equal(loaded.probabilities(matrix), small_model.probabilities(matrix))
    assert loaded.probability(cough_like(48_000), 48_000) == small_model.probability(cough_like(48_000), 48_000)
    assert CoughClassifier.from_pretrained(folder).training == small_model.training


@pytest.mark.shared_data
def test_coughvid_model_survives_save_and_reload(coughvid_folder, tmp_path):
    original = CoughClassifier.from_coughvid_folder(coughvid_folder)
    reloaded = CoughClassifier.from_folder(original.save(tmp_path / "coughvid"))
    saved_scaler = json.loads((tmp_path / "coughvid" / "scaler.json").read_text())
    shared_scaler = json.loads((coughvid_folder / "cough_classification_scaler.json").read_text())
    assert {key: saved_scaler[key] for key in ("feature_names", "mean", "var", "scale", "n_samples_seen")} == {
        key: shared_scaler[key] for key in ("feature_names", "mean", "var", "scale", "n_samples_seen")
    }
    matrix = original.scaler.mean + original.scaler.scale * np.random.default_rng(0).standard_normal((50, 68))
    assert np.array_equal(original.probabilities(matrix), reloaded.probabilities(matrix))


def _write_scaler(path, n_features: int = 68, names=None) -> None:
    names = list(names or FEATURE_NAMES[:n_features])
    path.write_text(
        json.dumps(
            {
                "feature_names": names,
                "mean": [0.0] * len(names),
                "var": [1.0] * len(names),
                "scale": [1.0] * len(names),
                "n_samples_seen": 1,
            }
        )
    )


def test_load_errors_name_the_problem(small_model, tmp_path):
    folder = small_model.save(tmp_path / "model")
    booster, scaler = folder / "booster.json", folder / "scaler.json"
    with pytest.raises(CoughModelError, match="no such file"):
        CoughClassifier.load(tmp_path / "absent.json", scaler)
    with pytest.raises(CoughModelError, match="no such file"):
        CoughClassifier.load(booster, tmp_path / "absent.json")

    _write_scaler(tmp_path / "short.json", n_features=67)
    with pytest.raises(CoughModelError, match="has 67 features, the cough filter needs 68"):
        CoughClassifier.load(booster, tmp_path / "short.json")

    renamed = list(FEATURE_NAMES)
    renamed[20] = "RMS"
    _write_scaler(tmp_path / "renamed.json", names=renamed)
    with pytest.raises(CoughModelError, match="'RMS' != 'RMS_Power'"):
        CoughClassifier.load(booster, tmp_path / "renamed.json")

    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(CoughModelError, match="not valid JSON"):
        CoughClassifier.load(tmp_path / "garbage.json", scaler)

    five_features = xgb.train(
        {"objective": "binary:logistic"},
        xgb.DMatrix(np.random.default_rng(0).standard_normal((20, 5)), label=np.arange(20) % 2),
        num_boost_round=2,
    )
    five_features.save_model(str(tmp_path / "five.json"))
    with pytest.raises(CoughModelError, match="5 features, the cough filter needs 68"):
        CoughClassifier.load(tmp_path / "five.json", scaler)

    with pytest.raises(CoughModelError, match="model_card.json"):
        CoughClassifier.from_folder(tmp_path)
    with pytest.raises(CoughModelError, match="neither"):
        CoughClassifier.from_pretrained(tmp_path)


def test_threshold_outside_zero_one_is_refused(small_model):
    with pytest.raises(CoughModelError, match="threshold"):
        CoughClassifier(booster=small_model.booster, scaler=small_model.scaler, threshold=1.5)


def test_scaler_matches_sklearn_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    matrix = synthetic_table().matrix
    matrix[:, 7] = 3.0  # a constant column gets scale 1
    ours, theirs = FeatureScaler.fit(matrix), StandardScaler().fit(matrix)
    assert np.allclose(ours.mean, theirs.mean_) and np.allclose(ours.scale, theirs.scale_)
    assert np.allclose(ours.transform(matrix), theirs.transform(matrix))


# --- training ---------------------------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(tmp_path):
    settings = TrainingSettings(n_estimators=30)
    first, first_report = train_from_features(synthetic_table(), seed=7, settings=settings)
    second, second_report = train_from_features(synthetic_table(), seed=7, settings=settings)
    assert first.booster.save_raw("json") == second.booster.save_raw("json")
    assert first_report == second_report
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    for name in ("booster.json", "scaler.json", "model_card.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cross_validation_folds_never_share_a_group():
    table = synthetic_table(n_groups=23, per_group=3)
    splits = cross_validation_splits(table.labels, table.groups, n_splits=5, seed=1)
    assert len(splits) == 5
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested) == list(range(len(table.labels)))  # each row is tested exactly once
    for train, test in splits:
        assert not set(table.groups[train]) & set(table.groups[test])
    _, report = train_from_features(table, seed=1, settings=TrainingSettings(n_estimators=10))
    fold_groups = [set(fold["test_groups"]) for fold in report["cross_validation"]["folds"]]
    assert sum(len(groups) for groups in fold_groups) == len(set().union(*fold_groups)) == 23


def test_cross_validation_needs_both_classes_and_enough_groups():
    with pytest.raises(ValueError, match="both cough"):
        cross_validation_splits(np.zeros(10, dtype=int), np.arange(10), n_splits=2, seed=0)
    with pytest.raises(ValueError, match="needs at least 5"):
        cross_validation_splits(np.arange(8) % 2, np.arange(8) % 4, n_splits=5, seed=0)


def test_training_from_a_table_of_raw_clips_reports_rejected_ones():
    rows = [
        {"source": cough_like(24_000, seconds=1.0, seed=i), "label": 1, "group": f"p{i}", "sample_rate": 24_000}
        for i in range(6)
    ]
    rows += [
        {"source": tone(100.0 * (i + 2), 24_000, seconds=1.0), "label": 0, "group": f"q{i}", "sample_rate": 24_000}
        for i in range(6)
    ]
    rows.append({"source": np.zeros(24_000), "label": 0, "group": "silent", "sample_rate": 24_000})
    classifier, report = train_cough_classifier(
        pd.DataFrame(rows), seed=0, settings=TrainingSettings(n_estimators=10, n_splits=3)
    )
    assert report["rejected"] == [{"clip": 12, "reason": "silent"}]
    assert (report["n_clips"], report["n_used"], report["n_positive"]) == (13, 12, 6)
    assert classifier.classify(cough_like(24_000, seed=99), 24_000).reason is None


def test_labelled_clip_validates_its_label_and_rate():
    with pytest.raises(ValueError, match="label"):
        LabelledClip(source=np.zeros(10), label=2, group="a", sample_rate=16_000)
    with pytest.raises(ValueError, match="sample_rate"):
        LabelledClip(source=np.zeros(10), label=1, group="a")


@pytest.fixture(scope="module")
def esc50_root(shared_data):
    root = shared_data / "esc50"
    if not (root / "meta" / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 is not at {root}")
    return root


@pytest.mark.shared_data
def test_esc50_clips_label_coughing_as_positive(esc50_root):
    clips = esc50_clips(esc50_root)
    assert len(clips) == len(list((esc50_root / "audio").glob("*.wav")))
    positives = [clip for clip in clips if clip.label == 1]
    assert positives and all(clip.source.name.endswith("-24.wav") for clip in positives)
    assert all(clip.group.startswith("src_file:") for clip in clips)
    assert {clip.group for clip in esc50_clips(esc50_root, group_by="fold")} <= {f"fold:{k}" for k in range(1, 6)}
    with pytest.raises(ValueError, match="group_by"):
        esc50_clips(esc50_root, group_by="take")


@pytest.mark.shared_data
def test_training_on_esc50_separates_coughs_with_group_disjoint_cv(esc50_root):
    classifier, report = train_cough_classifier(esc50_clips(esc50_root), seed=0)
    cv = report["cross_validation"]
    assert report["rejected"] == []
    assert cv["mean_roc_auc"] > 0.8, cv
    fold_groups = [set(fold["test_groups"]) for fold in cv["folds"]]
    assert sum(len(groups) for groups in fold_groups) == len(set().union(*fold_groups)) == report["n_groups"]
    assert classifier.training is report
