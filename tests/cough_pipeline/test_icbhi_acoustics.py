"""ICBHI spectral features, RMS envelopes and plots: known answers on synthetic signals, librosa agreement, the
demo corpus as synthesised, and the real sample in ../shared/data/icbhi."""

from __future__ import annotations

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.icbhi.acoustics import (
    LUNG_LABELS,
    PROBLEM_COLUMNS,
    SILENT_REASON,
    SpectralConfig,
    feature_box_plots_png,
    frame_features,
    load_envelopes,
    median_table,
    pick_envelope_recordings,
    recording_features,
    rms_envelope,
    rms_envelopes_png,
    spectral_analysis,
    spectral_table,
)
from cough_pipeline.icbhi.tables import build_icbhi_tables

PNG = b"\x89PNG\r\n\x1a\n"


def tone(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def noise(seconds: float, sample_rate: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * sample_rate)) * level).astype(np.float32)


def interior(values: np.ndarray, edge: int = 4) -> np.ndarray:
    """Frames away from the zero-padded ends."""
    return values[edge:-edge]


# --- known answers on synthetic signals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample_rate, config",
    [
        (4_000, SpectralConfig()),
        (16_000, SpectralConfig()),  # resampled to 4 kHz
        (16_000, SpectralConfig(analysis_sample_rate=16_000, n_fft=1024, hop_length=256)),
    ],
)
def test_tone_has_its_frequency_as_centroid_and_rolloffs_and_a_narrow_band(sample_rate, config):
    features = frame_features(tone(1_000.0, 3.0, sample_rate), sample_rate, config)
    noise_features = frame_features(noise(3.0, sample_rate), sample_rate, config)
    bin_hz = config.rate_for(sample_rate) / config.n_fft
    np.testing.assert_allclose(interior(features["centroid_hz"]), 1_000.0, atol=2.0)
    for name in ("rolloff85_hz", "rolloff95_hz"):
        assert np.all(np.abs(interior(features[name]) - 1_000.0) <= 2 * bin_hz)
    # a Hann-windowed tone leaks into a few bins only; white noise spreads over the whole band
    assert np.median(features["bandwidth_hz"]) < 3 * bin_hz
    assert np.median(features["bandwidth_hz"]) < 0.05 * np.median(noise_features["bandwidth_hz"])
    assert not features["silent"].any()


def test_white_noise_centroid_is_a_quarter_of_the_analysis_rate():
    native = recording_features(noise(10.0, 16_000), 16_000, SpectralConfig(analysis_sample_rate=None))
    assert native["centroid_hz_mean"] == pytest.approx(16_000 / 4, rel=0.02)  # flat over 0..sr/2: centroid sr/4
    assert native["analysis_sample_rate"] == 16_000
    resampled = recording_features(noise(10.0, 16_000), 16_000, SpectralConfig())
    assert resampled["analysis_sample_rate"] == 4_000
    # soxr's anti-aliasing filter rolls off just below 2 kHz, which pulls the centroid a little under sr/4
    assert 0.9 * 4_000 / 4 < resampled["centroid_hz_mean"] < 4_000 / 4


def test_native_rate_analysis_keeps_the_frame_duration():
    config = SpectralConfig(analysis_sample_rate=0)
    assert config.frame_lengths(4_000) == (256, 64)
    assert config.frame_lengths(44_100) == (2822, 706)  # 64 ms and 16 ms at 44.1 kHz
    features = frame_features(noise(2.0, 44_100), 44_100, config)
    assert features["times_s"][1] == pytest.approx(706 / 44_100)


def test_flux_is_zero_for_a_stationary_tone_and_large_at_an_onset():
    rate = 4_000
    steady = frame_features(tone(500.0, 3.0, rate), rate)
    assert steady["flux"][0] == 0.0
    assert np.max(interior(steady["flux"])) < 1e-6

    quiet = noise(1.0, rate, level=1e-3)
    signal = np.concatenate([quiet, quiet + tone(500.0, 1.0, rate)])
    features = frame_features(signal, rate)
    onset = np.argmax(features["flux"])
    assert features["times_s"][onset] == pytest.approx(1.0, abs=0.05)
    assert features["flux"][onset] > 0.5
    after = features["times_s"] > 1.1
    assert np.median(features["flux"][after]) < 0.05

    # a frame after digital silence has nothing in common with it: flux 1
    gap = np.concatenate([np.zeros(rate, dtype=np.float32), tone(500.0, 1.0, rate)])
    assert np.max(frame_features(gap, rate)["flux"]) == pytest.approx(1.0, abs=1e-9)

    # only new energy counts (half-wave rectified): between non-overlapping frames holding two far-apart tones
    # the normalised spectra barely overlap, so flux is ~1 (an unrectified difference would give ~sqrt(2))
    edge = 128 + 256 * 15  # a frame boundary of centred 256-sample frames with hop 256
    switch = np.concatenate([tone(300.0, 1.0, rate)[:edge], tone(1_500.0, 1.0, rate)[:edge]])
    flux = frame_features(switch, rate, SpectralConfig(hop_length=256))["flux"]
    assert np.argmax(flux) == 16 and flux[16] == pytest.approx(1.0, abs=0.02)


def test_flux_matches_its_definition_on_librosa_magnitudes():
    signal = noise(3.0, 4_000, seed=5) * np.repeat(np.random.default_rng(6).uniform(0.2, 1.0, 30), 400)
    magnitude = np.abs(librosa.stft(signal, n_fft=256, hop_length=64, center=True)).T.astype(np.float64)
    unit = magnitude / np.linalg.norm(magnitude, axis=1, keepdims=True)
    expected = np.concatenate([[0.0], np.linalg.norm(np.maximum(np.diff(unit, axis=0), 0.0), axis=1)])
    np.testing.assert_allclose(frame_features(signal, 4_000)["flux"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("amplitude", [0.1, 0.8])
def test_rms_of_a_sine_is_amplitude_over_root_two(amplitude):
    signal = tone(1_000.0, 2.0, 4_000, amplitude)  # whole periods in every 256-sample frame
    np.testing.assert_allclose(interior(frame_features(signal, 4_000)["rms"]), amplitude / np.sqrt(2), rtol=1e-5)
    times, envelope = rms_envelope(signal, 4_000, frame_s=0.05, hop_s=0.01)
    assert times[1] == pytest.approx(0.01)
    np.testing.assert_allclose(interior(envelope, 10), amplitude / np.sqrt(2), rtol=1e-5)
    assert envelope[0] < envelope[10]  # the first frame is half zero padding


def test_rms_envelope_follows_a_burst():
    rate = 4_000
    signal = np.zeros(3 * rate, dtype=np.float32)
    signal[rate : 2 * rate] = tone(400.0, 1.0, rate, 0.6)
    times, envelope = rms_envelope(signal, rate)
    assert times.shape == envelope.shape
    loud = (times > 1.05) & (times < 1.95)
    assert np.all(envelope[(times < 0.95) | (times > 2.05)] == 0.0)
    np.testing.assert_allclose(envelope[loud], 0.6 / np.sqrt(2), rtol=1e-3)


def test_silent_frames_are_flagged_and_left_out_of_the_summaries():
    rate = 4_000
    signal = np.concatenate([tone(1_000.0, 1.0, rate), np.zeros(2 * rate, dtype=np.float32), tone(1_000.0, 1.0, rate)])
    frames = frame_features(signal, rate)
    assert frames["silent"].sum() > 100
    assert np.all(frames["centroid_hz"][frames["silent"]] == 0.0)  # librosa's convention
    summary = recording_features(signal, rate)
    assert summary["n_silent_frames"] == frames["silent"].sum()
    assert summary["centroid_hz_median"] == pytest.approx(1_000.0, abs=1.0)
    assert summary["centroid_hz_mean"] == pytest.approx(1_000.0, abs=20.0)  # edge frames of each tone spread a bit
    assert summary["rms_median"] == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert summary["duration_s"] == pytest.approx(4.0)

    silent = recording_features(np.zeros(rate, dtype=np.float32), rate)
    assert silent["n_silent_frames"] == silent["n_frames"]
    assert np.isnan(silent["centroid_hz_mean"]) and np.isnan(silent["flux_median"])


@pytest.mark.parametrize(
    "sample_rate, config",
    [
        (4_000, SpectralConfig()),
        (
            16_000,
            SpectralConfig(
                analysis_sample_rate=16_000, n_fft=512, hop_length=128, window="hamming", rolloff_percents=(0.5, 0.85)
            ),
        ),
        (22_050, SpectralConfig(analysis_sample_rate=None)),  # scaled, non-power-of-two n_fft
    ],
)
def test_features_equal_librosa(sample_rate, config):
    signal = noise(4.0, sample_rate, seed=3) + tone(700.0, 4.0, sample_rate, 0.2)
    signal[sample_rate : sample_rate + sample_rate // 2] = 0.0  # silent frames follow librosa's convention too
    ours = frame_features(signal, sample_rate, config)
    n_fft, hop = config.frame_lengths(sample_rate)
    common = {
        "y": signal,
        "sr": sample_rate,
        "n_fft": n_fft,
        "hop_length": hop,
        "window": config.window,
        "center": True,
    }
    expected = {
        "centroid_hz": librosa.feature.spectral_centroid(**common)[0],
        "bandwidth_hz": librosa.feature.spectral_bandwidth(**common)[0],
        "rms": librosa.feature.rms(y=signal, frame_length=n_fft, hop_length=hop, center=True)[0],
    }
    for percent in config.rolloff_percents:
        expected[f"rolloff{round(percent * 100)}_hz"] = librosa.feature.spectral_rolloff(
            **common, roll_percent=percent
        )[0]
    assert ours["silent"].sum() > 0
    for name, values in expected.items():
        assert ours[name].shape == values.shape, name
        np.testing.assert_allclose(ours[name], values, rtol=1e-4, atol=1e-6, err_msg=name)


def test_resampled_recording_matches_the_same_tone_recorded_at_the_analysis_rate():
    config = SpectralConfig()
    high = frame_features(tone(600.0, 5.0, 44_100) + tone(1_300.0, 5.0, 44_100, 0.2), 44_100, config)
    low = frame_features(tone(600.0, 5.0, 4_000) + tone(1_300.0, 5.0, 4_000, 0.2), 4_000, config)
    assert high["centroid_hz"].shape == low["centroid_hz"].shape
    for name, tolerance in (("centroid_hz", 1e-3), ("bandwidth_hz", 1e-2), ("rms", 1e-3)):
        np.testing.assert_allclose(interior(high[name], 10), interior(low[name], 10), rtol=tolerance, err_msg=name)
    np.testing.assert_array_equal(interior(high["rolloff85_hz"], 10), interior(low["rolloff85_hz"], 10))


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="rolloff"):
        SpectralConfig(rolloff_percents=(0.85, 1.2))
    with pytest.raises(ValueError, match="duplicate"):
        SpectralConfig(rolloff_percents=(0.851, 0.849))
    with pytest.raises(ValueError, match="n_fft"):
        SpectralConfig(n_fft=1)
    with pytest.raises(ValueError):
        SpectralConfig(window="no-such-window")
    with pytest.raises(ValueError, match="mono"):
        frame_features(np.zeros((100, 2)), 4_000)
    with pytest.raises(ValueError, match="empty"):
        frame_features(np.zeros(0), 4_000)
    assert SpectralConfig().features == ("centroid_hz", "bandwidth_hz", "rolloff85_hz", "rolloff95_hz", "flux", "rms")


# --- spectral_table and its problems -----------------------------------------------------------------------------


def _recording(stem: str, label: str, audio_path: str | None, present: bool = True) -> dict:
    return {
        "recording_id": f"icbhi:{stem}",
        "stem": stem,
        "lung_label": label,
        "diagnosis": "COPD",
        "device": "Litt3200",
        "audio_path": audio_path,
        "audio_present": present,
    }


def test_spectral_table_reports_every_recording_that_cannot_be_analysed(tmp_path):
    sf.write(tmp_path / "good.wav", tone(800.0, 2.0, 44_100), 44_100, subtype="PCM_16")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a wav file" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(4_000, dtype=np.float32), 4_000)
    recordings = pd.DataFrame(
        [
            _recording("good", "normal", "good.wav"),
            _recording("corrupt", "crackles", "corrupt.wav"),
            _recording("empty", "wheezes", "empty.wav"),
            _recording("gone", "both", "gone.wav"),
            _recording("silent", "normal", "silent.wav"),
            _recording("nopath", "normal", None),
            _recording("no_wav", "normal", None, present=False),  # metadata only: not analysed, not a problem
        ]
    )
    calls = []
    table, problems = spectral_table(recordings, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert list(table["recording_id"]) == ["icbhi:good"]
    row = table.iloc[0]
    assert row["sample_rate"] == 44_100 and row["analysis_sample_rate"] == 4_000
    assert row["duration_s"] == pytest.approx(2.0)
    assert row["centroid_hz_median"] == pytest.approx(800.0, abs=2.0)
    assert list(problems.columns) == list(PROBLEM_COLUMNS)
    reasons = dict(zip(problems["recording_id"], problems["reason"]))
    assert reasons == {
        "icbhi:corrupt": "audio_unreadable",
        "icbhi:empty": "audio_empty",
        "icbhi:gone": "audio_missing",
        "icbhi:silent": SILENT_REASON,
        "icbhi:nopath": "audio_missing",
    }
    assert len(table) + len(problems) == int(recordings["audio_present"].sum())
    assert calls[-1] == (6, 6) and [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_spectral_table_requires_the_contract_columns(tmp_path):
    with pytest.raises(ValueError, match="lung_label"):
        spectral_table(pd.DataFrame({"recording_id": [], "audio_present": [], "audio_path": []}), tmp_path)


@pytest.fixture(scope="module")
def demo_icbhi(demo_corpus):
    root = demo_corpus / "icbhi"
    recordings = build_icbhi_tables(root).recordings
    table, problems = spectral_table(recordings, root)
    return root, recordings, table, problems


def test_demo_corpus_features_differ_as_synthesised(demo_icbhi):
    _, recordings, table, problems = demo_icbhi
    assert problems.empty
    wavs = len(list((demo_icbhi[0] / "ICBHI_final_database").glob("*.wav")))
    assert len(table) == int(recordings["audio_present"].sum()) == wavs > 0
    assert set(table["analysis_sample_rate"]) == {4_000}
    assert set(table["sample_rate"]) == {4_000, 44_100}
    summaries = list(SpectralConfig().summary_columns)
    assert np.isfinite(table[summaries].to_numpy()).all()
    labels = table["lung_label"]
    # wheezes are sustained tones: the spectrum changes shape less from frame to frame than breath noise alone
    wheezy = table["flux_mean"][labels.isin(["wheezes", "both"])]
    not_wheezy = table["flux_mean"][labels.isin(["normal", "crackles"])]
    assert len(wheezy) and len(not_wheezy) and wheezy.median() < 0.95 * not_wheezy.median()
    # crackles are clicks 10-14x the breath RMS; each recording is peak-normalised to -6 dBFS, so with crackles the
    # breath (the median frame) sits lower under the same peak
    crackly = table["rms_median"][labels.isin(["crackles", "both"])]
    not_crackly = table["rms_median"][labels.isin(["normal", "wheezes"])]
    assert len(crackly) and len(not_crackly) and crackly.median() < 0.7 * not_crackly.median()
    # the breath noise is 100-1000 Hz: centroids and 85 % roll-offs sit inside it whatever the device rate
    assert table["centroid_hz_mean"].between(300, 1_000).all()
    assert table["rolloff85_hz_median"].between(500, 1_500).all()


def test_worker_pool_gives_the_same_table_in_input_order(demo_icbhi):
    root, recordings, table, _ = demo_icbhi
    calls = []
    pooled, pooled_problems = spectral_table(recordings, root, workers=2, progress=lambda d, t: calls.append(d))
    pd.testing.assert_frame_equal(pooled, table)
    assert pooled_problems.empty
    assert calls == list(range(1, len(recordings) + 1))


def test_spectral_analysis_bundles_features_medians_and_envelopes(demo_icbhi):
    root, recordings, table, _ = demo_icbhi
    analysis = spectral_analysis(recordings, root)
    pd.testing.assert_frame_equal(analysis.features, table)
    assert analysis.summaries == tuple(f"{name}_mean" for name in SpectralConfig().features)
    pd.testing.assert_frame_equal(analysis.medians, median_table(table, features=analysis.summaries))
    assert analysis.recordings_with_audio == len(table) and analysis.problems.empty
    assert set(analysis.envelopes) | set(analysis.missing_envelopes) == set(LUNG_LABELS)


def test_spectral_analysis_without_audio_has_empty_tables_and_every_pattern_missing(demo_icbhi):
    root, recordings, _, _ = demo_icbhi
    silent = recordings.assign(audio_present=False, audio_path=None)
    analysis = spectral_analysis(silent, root)
    assert analysis.features.empty and analysis.problems.empty and analysis.recordings_with_audio == 0
    assert analysis.medians["lung_label"].tolist() == list(LUNG_LABELS) and (analysis.medians["n"] == 0).all()
    assert analysis.envelopes == {} and analysis.missing_envelopes == tuple(LUNG_LABELS)


def test_median_table_has_every_pattern_with_its_count():
    table = pd.DataFrame(
        {
            "lung_label": ["normal", "normal", "normal", "crackles", "wheezes", "wheezes"],
            "centroid_hz_mean": [100.0, 300.0, 200.0, 50.0, 10.0, 20.0],
            "flux_mean": [0.1, 0.2, np.nan, 0.4, 0.5, 0.7],
        }
    )
    medians = median_table(table)
    assert list(medians["lung_label"]) == list(LUNG_LABELS)
    assert list(medians["n"]) == [3, 1, 2, 0]
    assert list(medians["centroid_hz_mean"][:3]) == [200.0, 50.0, 15.0]
    assert medians["flux_mean"][0] == pytest.approx(0.15)  # NaN skipped
    assert np.isnan(medians["centroid_hz_mean"][3])
    by_device = median_table(
        table.assign(device=["b", "a", "a", "b", "a", "b"]), by="device", features=["centroid_hz_mean"]
    )
    assert list(by_device["device"]) == ["a", "b"] and list(by_device["n"]) == [3, 3]


def test_envelope_picks_are_deterministic_and_report_missing_patterns():
    recordings = pd.DataFrame(
        [
            _recording("b", "normal", "b.wav"),
            _recording("a", "normal", "a.wav"),
            _recording("c", "crackles", None, present=False),
            _recording("d", "wheezes", "d.wav"),
        ]
    )
    picks = pick_envelope_recordings(recordings)
    assert list(picks["lung_label"]) == list(LUNG_LABELS)
    assert list(picks["status"]) == ["picked", "no_audio", "picked", "no_recordings"]
    assert picks["recording_id"][0] == "icbhi:a"
    assert pd.isna(picks["recording_id"][1]) and picks["n_recordings"][1] == 1
    shuffled = pick_envelope_recordings(recordings.sample(frac=1.0, random_state=1))
    pd.testing.assert_frame_equal(shuffled, picks)


def test_demo_envelopes_and_plots(demo_icbhi):
    root, recordings, table, _ = demo_icbhi
    picks = pick_envelope_recordings(recordings)
    assert list(picks["status"]) == ["picked"] * 4
    envelopes, problems = load_envelopes(picks, root)
    assert problems.empty and list(envelopes) == list(LUNG_LABELS)
    for label, (times, rms, recording_id) in envelopes.items():
        assert times.shape == rms.shape and np.all(rms >= 0) and rms.max() > 0
        assert recordings.set_index("recording_id").loc[recording_id, "lung_label"] == label
    assert rms_envelopes_png(envelopes).startswith(PNG)
    partial = {label: envelopes[label] for label in ("normal", "wheezes")}
    assert rms_envelopes_png(partial, missing=["both", "crackles"]).startswith(PNG)
    assert feature_box_plots_png(table).startswith(PNG)
    without_both = table[table["lung_label"] != "both"]  # an empty group is drawn with n=0
    assert feature_box_plots_png(without_both, ["flux_mean", "rms_median"]).startswith(PNG)
    assert feature_box_plots_png(recordings, ["duration_s"]).startswith(PNG)
    assert feature_box_plots_png(table, ["centroid_hz_mean"], by="device").startswith(PNG)
    with pytest.raises(ValueError, match="no_such"):
        feature_box_plots_png(table, ["no_such"])


def test_real_icbhi_recordings_all_yield_finite_features(shared_data):
    root = shared_data / "icbhi"
    recordings = build_icbhi_tables(root).recordings
    table, problems = spectral_table(recordings, root)
    assert problems.empty
    assert len(table) == 10 == int(recordings["audio_present"].sum())
    assert np.isfinite(table[list(SpectralConfig().summary_columns)].to_numpy()).all()
    assert set(table["sample_rate"]) == {4_000, 44_100} and set(table["analysis_sample_rate"]) == {4_000}
    assert (table["centroid_hz_mean"] > 0).all() and (table["centroid_hz_mean"] < 2_000).all()
    assert (table["rolloff85_hz_mean"] <= table["rolloff95_hz_mean"]).all()
    picks = pick_envelope_recordings(recordings)
    # none of the 10 real WAVs is labelled "both": reported, not silently absent
    assert picks.set_index("lung_label").loc["both", "status"] == "no_audio"
    envelopes, envelope_problems = load_envelopes(picks, root)
    assert envelope_problems.empty and set(envelopes) == {"normal", "crackles", "wheezes"}
    missing = list(picks.loc[picks["status"] != "picked", "lung_label"])
    assert rms_envelopes_png(envelopes, missing=missing).startswith(PNG)
