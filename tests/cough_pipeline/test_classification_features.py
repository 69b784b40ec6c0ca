"""Classification preprocessing, the 15 x 7 cough feature table and the neural-network input arrays."""

from __future__ import annotations

import json
import pickle
from functools import partial
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.classification.features import (
    FEATURE_DOMAINS,
    STATISTICS,
    VARIANTS,
    FeatureConfig,
    _cqt_plan,
    _row_features,
    clip_features,
    feature_blocks,
    feature_catalog,
    feature_columns,
    feature_dims,
    feature_matrices,
    feature_table,
)
from cough_pipeline.classification.inputs import (
    KINDS,
    InputArraysConfig,
    _area_matrix,
    input_arrays,
    input_stem,
    input_table,
    loudest_window,
    write_input_arrays,
)
from cough_pipeline.classification.preprocess import (
    QUARANTINE_COLUMNS,
    PreprocessConfig,
    load_and_preprocess,
    preprocess,
)
from cough_pipeline.demo_corpus import synth

SR = 22_050
# librosa's own reference calls warn about short low-octave CQT frames (the library code silences this)
pytestmark = pytest.mark.filterwarnings("ignore:n_fft=.* is too large for input signal:UserWarning")


def cough_clip(seed: int, positive: bool = True, seconds: float = 1.6) -> np.ndarray:
    """A synthetic one-cough recording (burst, voiced tail, room tone), float32 at 22.05 kHz, peak 1."""
    samples, _ = synth.cough_recording(np.random.default_rng(seed), SR, seconds, 1, positive)
    return (samples / np.abs(samples).max()).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return str(path)


def reference_matrices(y: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Each feature from librosa's own function called on the waveform (no shared transforms)."""
    sr, n_fft, hop = config.sample_rate, config.n_fft, config.hop_length
    frame = {"n_fft": n_fft, "hop_length": hop}
    cqt = {"sr": sr, "hop_length": hop, "bins_per_octave": config.cqt_bins_per_octave, "n_octaves": config.cqt_octaves}
    cqt["fmin"] = config.cqt_fmin
    default_cqt = (hop, config.cqt_fmin, config.cqt_octaves) == (512, FeatureConfig().cqt_fmin, 7)
    power = np.abs(librosa.stft(y, **frame)) ** 2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    edges = np.geomspace(config.spectrogram_fmin, sr / 2, config.spectrogram_bands + 1)
    bands = []
    for band in range(config.spectrogram_bands):
        low = 0.0 if band == 0 else edges[band]
        inside = (freqs >= low) & ((freqs < edges[band + 1]) | (band == config.spectrogram_bands - 1))
        bands.append(power[inside].mean(axis=0))
    chroma_cqt = librosa.feature.chroma_cqt(y=y, **cqt)
    return {
        "rms": librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop),
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop),
        "spectral_centroid": librosa.feature.spectral_centroid(y=y, sr=sr, **frame),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr, **frame),
        "spectral_contrast": librosa.feature.spectral_contrast(y=y, sr=sr, **frame),
        "spectral_flatness": librosa.feature.spectral_flatness(y=y, **frame),
        "spectral_flux": librosa.onset.onset_strength(y=y, sr=sr, **frame)[np.newaxis],
        "spectral_rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr, **frame, roll_percent=0.85),
        "mfcc": librosa.feature.mfcc(y=y, sr=sr, n_mfcc=config.n_mfcc, **frame),
        "mfc": librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=config.n_mels, **frame)),
        "spectrogram": librosa.power_to_db(np.array(bands)),
        "chroma_stft": librosa.feature.chroma_stft(y=y, sr=sr, **frame),
        "chroma_cqt": chroma_cqt,
        "chroma_cens": librosa.feature.chroma_cens(y=y, **cqt),
        # tonnetz(y=...) builds its chroma with chroma_cqt's defaults (hop 512, C1, 7 octaves): given otherwise
        "tonnetz": librosa.feature.tonnetz(y=y, sr=sr, chroma=None if default_cqt else chroma_cqt),
    }


def reference_statistics(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    return np.stack(
        [
            m.min(axis=1),
            m.max(axis=1),
            m.mean(axis=1),
            np.median(m, axis=1),
            m.var(axis=1),
            np.percentile(m, 25, axis=1),
            np.percentile(m, 75, axis=1),
        ],
        axis=1,
    )


def assert_blocks_match_librosa(y: np.ndarray, config: FeatureConfig) -> None:
    """Every block within 1e-4 relative, plus 1e-6 of the block's largest value for entries near zero."""
    features = clip_features(y, config)
    for name, reference in reference_matrices(y, config).items():
        expected = reference_statistics(reference)
        got = np.array([[features[f"{name}_{dim}_{stat}"] for stat in STATISTICS] for dim in range(expected.shape[0])])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * scale, err_msg=name)


# --- preprocessing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        (np.r_[np.zeros(5000), np.nan, np.ones(5000)], "non_finite_samples"),
        (np.r_[np.zeros(5000), np.inf, np.zeros(5000)], "non_finite_samples"),
        (np.zeros(22_050), "silent"),
        (np.full(22_050, 1e-5), "silent"),
        (0.5 * np.sin(np.arange(220) / 3.0), "too_short"),  # 10 ms
        (np.zeros(0), "too_short"),
    ],
    ids=["nan", "inf", "zeros", "below_floor", "10ms", "empty"],
)
def test_preprocess_rejects_bad_clips_with_a_reason(samples, reason):
    with pytest.raises(InputRejected) as caught:
        preprocess(samples, SR)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_preprocess_rejection_names_samples_and_frame_length():
    with pytest.raises(InputRejected, match=r"220 samples .* need 2048"):
        preprocess(0.5 * np.sin(np.arange(220) / 3.0), SR)
    with pytest.raises(InputRejected, match="need 3072"):  # two frames of 2048, hop 512
        preprocess(0.5 * np.sin(np.arange(2500) / 3.0), SR, PreprocessConfig(min_frames=3))


def test_preprocess_trims_resamples_and_peak_normalises():
    cough = synth.cough(np.random.default_rng(3), 44_100, covid_positive=False) * 0.25
    padded = np.r_[np.zeros(44_100), cough, np.zeros(44_100)]
    clip = preprocess(padded, 44_100)
    assert clip.dtype == np.float32
    assert np.abs(clip).max() == pytest.approx(1.0)
    # the second of silence either side is gone (trimming keeps at most a frame or two around the cough)
    assert cough.size / 2 <= clip.size <= cough.size / 2 + 4 * 2048
    with pytest.raises(ClassificationError):
        preprocess(np.zeros((100, 2)), SR)


def test_load_and_preprocess_reports_decoder_reasons(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 100)
    with pytest.raises(InputRejected) as caught:
        load_and_preprocess(garbage)
    assert caught.value.reason == "audio_unreadable"
    with pytest.raises(InputRejected) as caught:
        load_and_preprocess(tmp_path / "absent.wav")
    assert caught.value.reason == "audio_missing"
    stereo = np.stack([cough_clip(1), cough_clip(1)], axis=1) * 0.5
    clip = load_and_preprocess(write(tmp_path / "stereo.flac", stereo, 16_000))
    assert clip.ndim == 1 and np.abs(clip).max() == pytest.approx(1.0)


# --- feature definitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "positive"), [(0, True), (1, False), (2, True)])
def test_every_block_equals_librosa_called_independently(seed, positive):
    assert_blocks_match_librosa(cough_clip(seed, positive), FeatureConfig())


def test_blocks_match_librosa_with_other_frames():
    """n_fft 1024 / hop 256: the CQT's tuning is then estimated from the waveform, as librosa does."""
    config = FeatureConfig(n_fft=1024, hop_length=256, spectrogram_fmin=100.0)
    assert_blocks_match_librosa(cough_clip(4, True, seconds=1.2), config)


def test_blocks_match_librosa_when_the_cqt_decimates_first():
    """From C3 over 3 octaves librosa decimates the signal by 4 before the first octave (its early downsampling)."""
    config = FeatureConfig(cqt_fmin=float(librosa.note_to_hz("C3")), cqt_octaves=3)
    assert _cqt_plan(config, 0.0).early_factor == 4
    assert_blocks_match_librosa(cough_clip(6, False, seconds=1.2), config)


def test_clip_shorter_than_the_lowest_cqt_filter_still_has_finite_features():
    y = (np.random.default_rng(5).standard_normal(2048) * 0.3).astype(np.float32)
    values = np.array(list(clip_features(y).values()))
    assert values.size == len(feature_columns()) and np.isfinite(values).all()
    assert {matrix.shape[1] for matrix in feature_matrices(y).values()} == {1 + 2048 // 512}


def test_tone_lands_where_expected():
    t = np.arange(SR) / SR
    features = clip_features(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32))
    assert features["spectral_centroid_0_median"] == pytest.approx(1000.0, rel=0.01)
    chroma = [features[f"chroma_cqt_{pitch}_median"] for pitch in range(12)]
    assert int(np.argmax(chroma)) == 11  # 1 kHz is B5 plus 21 cents: pitch class B
    assert features["zcr_0_median"] == pytest.approx(2 * 1000.0 / SR, rel=0.01)


@pytest.mark.parametrize(
    ("samples", "reason"),
    [(np.r_[np.ones(3000), np.nan], "non_finite_samples"), (np.zeros(4096), "silent"), (np.ones(220), "too_short")],
    ids=["nan", "silent", "10ms"],
)
def test_clip_features_rejects_what_would_give_nan(samples, reason):
    with pytest.raises(InputRejected) as caught:
        clip_features(samples)
    assert caught.value.reason == reason


def test_columns_blocks_and_catalog_agree():
    config = FeatureConfig()
    columns = feature_columns(config)
    dims = feature_dims(config)
    assert len(columns) == len(set(columns)) == 7 * sum(dims.values()) == 868
    assert columns[:7] == [f"rms_0_{stat}" for stat in STATISTICS]
    assert columns[-1] == "tonnetz_5_q3"
    blocks = feature_blocks(["dataset", "duration_s", *columns])
    assert list(blocks) == list(FEATURE_DOMAINS)
    assert [c for block in blocks.values() for c in block] == columns
    assert len(blocks["mfc"]) == 7 * 32 and not any(c.startswith("mfcc") for c in blocks["mfc"])
    assert feature_blocks(["mfcc_3_mean", "mfc_3_mean", "mfcc_x_mean", "rms_0_std"]) == {
        "mfcc": ["mfcc_3_mean"],
        "mfc": ["mfc_3_mean"],
    }
    catalog = feature_catalog(config)
    assert catalog["feature"].tolist() == list(FEATURE_DOMAINS)
    assert catalog["n_columns"].sum() == len(columns)
    assert ",".join(catalog["columns"]).split(",") == columns
    assert set(catalog["domain"]) == {"time", "spectral", "cepstral", "tonal"}
    parameters = json.loads(catalog.set_index("feature").loc["spectrogram", "parameters"])
    assert len(parameters["band_edges_hz"]) == 17 and parameters["band_edges_hz"][-1] == SR / 2


@pytest.mark.parametrize(
    "settings",
    [
        {"n_mfcc": 40, "mfcc_n_mels": 32},
        {"contrast_bands": 7},  # 200 Hz x 2^6 = 12.8 kHz > Nyquist
        {"spectrogram_bands": 64},  # low bands narrower than an STFT bin
        {"cqt_bins_per_octave": 30},
        {"cqt_octaves": 9},  # top filter above Nyquist
        {"workers": 0},
        {"rolloff_percent": 1.0},
    ],
)
def test_feature_config_refuses_unusable_settings(settings):
    with pytest.raises(ValueError):
        FeatureConfig(**settings)


# --- feature table --------------------------------------------------------------------------------------------


def recordings_table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Rows of (recording_id, variant, audio_path)."""
    return pd.DataFrame(
        [
            {
                "dataset": "demo",
                "recording_id": recording_id,
                "participant_id": f"p_{recording_id}",
                "covid_label": "positive" if index % 2 else "negative",
                "variant": variant,
                "audio_path": path,
            }
            for index, (recording_id, variant, path) in enumerate(rows)
        ]
    )


@pytest.fixture
def mixed_recordings(tmp_path) -> pd.DataFrame:
    good_a = write(tmp_path / "a.wav", cough_clip(10, True), 44_100)
    good_b = write(tmp_path / "b.flac", cough_clip(11, False), 16_000)
    rows = [
        ("demo:a", "original", good_a),
        ("demo:a", "separated", good_b),
        ("demo:b", "original", good_b),
        ("demo:silent", "original", write(tmp_path / "silent.wav", np.zeros(SR))),
        ("demo:short", "original", write(tmp_path / "short.wav", 0.5 * np.sin(np.arange(220) / 3.0))),
        ("demo:nan", "original", write(tmp_path / "nan.wav", np.r_[np.zeros(99), np.nan], subtype="FLOAT")),
        ("demo:missing", "original", str(tmp_path / "absent.wav")),
        ("demo:a", "original", good_a),  # repeated recording + variant
        ("demo:c", "denoised", good_a),  # unknown variant
        ("demo:d", "original", "relative/d.wav"),
    ]
    return recordings_table(rows)


EXPECTED_REASONS = {
    "demo:silent": "silent",
    "demo:short": "too_short",
    "demo:nan": "audio_unreadable",
    "demo:missing": "audio_missing",
    "demo:a": "duplicate_recording",
    "demo:c": "invalid_variant",
    "demo:d": "audio_path_not_absolute",
}


def test_feature_table_accounts_for_every_row(mixed_recordings):
    calls = []
    result = feature_table(mixed_recordings, progress=lambda done, total: calls.append((done, total)))
    features, quarantine = result.features, result.quarantine
    assert len(features) + len(quarantine) == len(mixed_recordings)
    assert features[["recording_id", "variant"]].values.tolist() == [
        ["demo:a", "original"],
        ["demo:a", "separated"],
        ["demo:b", "original"],
    ]
    assert dict(zip(quarantine["recording_id"], quarantine["reason"])) == EXPECTED_REASONS
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)
    columns = feature_columns()
    expected_head = ["dataset", "recording_id", "participant_id", "covid_label", "variant", "duration_s"]
    assert list(features.columns) == [*expected_head, *columns]
    assert not features[columns].isna().any().any() and np.isfinite(features[columns].to_numpy()).all()
    assert (features["duration_s"] > 0.1).all() and (features["duration_s"] < 1.6).all()
    assert calls[-1] == (7, 7)  # the seven rows that passed screening were processed
    assert set(features["variant"]) <= set(VARIANTS)


def test_feature_table_row_equals_clip_features_of_the_preprocessed_clip(tmp_path):
    path = write(tmp_path / "x.wav", cough_clip(12, True), 48_000)
    features = feature_table(recordings_table([("demo:x", "original", path)])).features
    expected = clip_features(load_and_preprocess(path))
    np.testing.assert_array_equal(features.loc[0, list(expected)].to_numpy(dtype=float), list(expected.values()))


def test_feature_table_worker_survives_pickling(tmp_path):
    """What a spawned worker receives (the pool itself is process_map's, and the benchmark runs two workers)."""
    recordings = recordings_table([("demo:p", "original", write(tmp_path / "p.wav", cough_clip(21, False)))])
    worker = partial(_row_features, config=FeatureConfig(workers=2), preprocess_config=PreprocessConfig())
    duration, vector = pickle.loads(pickle.dumps(worker))(recordings.iloc[0].to_dict())
    table = feature_table(recordings).features
    np.testing.assert_array_equal(vector, table[feature_columns()].iloc[0].to_numpy(dtype=float))
    assert duration == table.loc[0, "duration_s"]


def test_feature_table_refuses_mismatched_rates_and_missing_columns(mixed_recordings):
    with pytest.raises(ClassificationError, match="16000 Hz"):
        feature_table(mixed_recordings, preprocess_config=PreprocessConfig(sample_rate=16_000))
    with pytest.raises(ClassificationError, match="variant"):
        feature_table(mixed_recordings.drop(columns="variant"))
    empty = feature_table(mixed_recordings.iloc[:0])
    assert empty.features.empty and empty.quarantine.empty
    assert len(empty.features.columns) == 6 + len(feature_columns())


def test_real_virufy_coughs_give_finite_rows(shared_data):
    paths = sorted((shared_data / "virufy").rglob("*.wav"))[:2] + sorted((shared_data / "virufy").rglob("*.mp3"))[:1]
    if not paths:
        pytest.skip("no virufy audio in the shared data")
    recordings = recordings_table([(f"virufy:{p.stem}", "original", str(p.resolve())) for p in paths])
    result = feature_table(recordings)
    assert len(result.features) + len(result.quarantine) == len(paths)
    assert len(result.features) >= 1, result.quarantine.to_dict("records")
    assert np.isfinite(result.features[feature_columns()].to_numpy()).all()


# --- neural-network inputs ------------------------------------------------------------------------------------


def test_input_arrays_shapes_and_definitions():
    clip = cough_clip(30, True, seconds=2.0)
    arrays = input_arrays(clip)
    assert {kind: array.shape for kind, array in arrays.items()} == InputArraysConfig().shapes()
    assert InputArraysConfig().shapes()["logmel"] == (128, 173)
    assert all(array.dtype == np.float32 for array in arrays.values())
    assert arrays["logmel"].mean() == pytest.approx(0.0, abs=1e-5)
    assert arrays["logmel"].std() == pytest.approx(1.0, abs=1e-4)
    assert arrays["spectrogram"].min() == 0.0 and arrays["spectrogram"].max() == pytest.approx(1.0)
    mfcc = librosa.feature.mfcc(y=clip, sr=SR, n_mfcc=39).mean(axis=1)
    np.testing.assert_allclose(arrays["mfcc"], mfcc, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(arrays["chroma"], librosa.feature.chroma_stft(y=clip, sr=SR).mean(axis=1), rtol=1e-5)
    # the clip is shorter than 4 s: zero-padded at the end, so the last frames sit at the -80 dB floor
    assert np.allclose(arrays["logmel"][:, -5:], arrays["logmel"].min())


def test_loudest_window_picks_the_burst_and_pads_short_clips():
    signal = np.zeros(50_000, dtype=np.float32)
    signal[31_000:32_000] = 1.0
    window = loudest_window(signal, 10_000)
    assert window.size == 10_000 and window.sum() == 1000.0
    np.testing.assert_array_equal(loudest_window(signal, 10_000), signal[22_000:32_000])  # earliest full-energy window
    padded = loudest_window(np.ones(3, dtype=np.float32), 5)
    np.testing.assert_array_equal(padded, [1, 1, 1, 0, 0])


def test_area_resize_averages_the_frames_each_column_covers():
    weights = _area_matrix(6, 3)
    np.testing.assert_allclose(np.arange(6.0) @ weights, [0.5, 2.5, 4.5])
    np.testing.assert_allclose(np.ones(173) @ _area_matrix(173, 40), np.ones(40))
    np.testing.assert_allclose(np.arange(3.0) @ _area_matrix(3, 2), [(0 + 0.5 * 1) / 1.5, (0.5 * 1 + 2) / 1.5])


def test_write_input_arrays_round_trips_and_refuses_unsafe_names(tmp_path):
    arrays = {"mfcc": np.arange(39, dtype=np.float32), "chroma": np.ones(12, dtype=np.float32)}
    paths = write_input_arrays(arrays, tmp_path / "out", "rec-abc")
    assert paths == {kind: str(tmp_path / "out" / f"rec-abc.{kind}.npy") for kind in arrays}
    for kind, path in paths.items():
        np.testing.assert_array_equal(np.load(path), arrays[kind])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rec-abc.chroma.npy", "rec-abc.mfcc.npy"]
    with pytest.raises(ClassificationError):
        write_input_arrays(arrays, tmp_path, "../escape")
    with pytest.raises(ClassificationError):
        write_input_arrays({"a/b": np.ones(1)}, tmp_path, "stem")


def test_input_table_writes_one_file_per_kind_and_accounts_for_every_row(tmp_path, mixed_recordings):
    root = tmp_path / "store"
    table, quarantine = input_table(mixed_recordings, root / "inputs", relative_to=root)
    assert len(table) + len(quarantine) == len(mixed_recordings)
    assert dict(zip(quarantine["recording_id"], quarantine["reason"])) == EXPECTED_REASONS
    assert list(table.columns) == [
        "dataset",
        "recording_id",
        "participant_id",
        "covid_label",
        "variant",
        *[f"{kind}_path" for kind in KINDS],
    ]
    assert len(list((root / "inputs").glob("*.npy"))) == 4 * len(table)  # the variants of demo:a do not collide
    first = table.iloc[0]
    assert first["logmel_path"] == f"inputs/{input_stem('demo:a', 'original')}.logmel.npy"
    expected = input_arrays(load_and_preprocess(mixed_recordings.loc[0, "audio_path"]))
    for kind in KINDS:
        np.testing.assert_array_equal(np.load(root / first[f"{kind}_path"]), expected[kind])
    with pytest.raises(ClassificationError, match="not inside"):
        input_table(mixed_recordings, tmp_path / "elsewhere", relative_to=root)
