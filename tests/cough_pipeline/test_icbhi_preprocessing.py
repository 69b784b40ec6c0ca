"""ICBHI preprocessing: windows with loop padding, augmentation, class balancing, log-mel / MFCC features."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.audio import load_mono
from cough_pipeline.icbhi.preprocessing import (
    AUDIO_ABSENT,
    PLAN_COLUMNS,
    AugmentConfig,
    AugmentError,
    BalancingError,
    BalancingWarning,
    FeatureConfig,
    FeatureError,
    WindowConfig,
    WindowError,
    augment,
    augment_with_seed,
    balance_per_length,
    balance_plan,
    class_counts,
    expected_window_count,
    feature_arrays,
    feature_arrays_by_length,
    log_mel,
    log_mel_and_mfcc,
    loop_pad,
    make_windows,
    mfcc,
    render_plan,
    slice_windows,
)

SR = 16_000


def tone(
    seconds: float, frequency: float = 440.0, sample_rate: int = SR, amplitude: float = 0.5, phase: float = np.pi / 4
) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.float32)


def longest_zero_run(samples: np.ndarray, floor: float = 1e-6) -> int:
    """Longest run of consecutive samples with |x| <= floor."""
    quiet = np.concatenate([[0], (np.abs(samples) <= floor).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(quiet))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def peak_frequency(samples: np.ndarray, sample_rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[np.argmax(spectrum)])


def recordings_frame(entries: list[dict]) -> pd.DataFrame:
    """A minimal ICBHI recordings table (the contract's columns that windowing reads)."""
    rows = []
    for entry in entries:
        stem = entry["stem"]
        rows.append(
            {
                "recording_id": f"icbhi:{stem}",
                "stem": stem,
                "patient_id": stem.split("_")[0],
                "lung_label": entry.get("lung_label", "normal"),
                "diagnosis": entry.get("diagnosis", "COPD"),
                "official_split": entry.get("official_split", "train"),
                "audio_path": entry.get("audio_path"),
                "audio_present": entry.get("audio_present", True),
            }
        )
    return pd.DataFrame(rows)


# --- windows ---------------------------------------------------------------------------------------------------


def test_loop_pad_tiles_a_tone_and_never_inserts_silence():
    two_seconds = tone(2.0)
    padded = loop_pad(two_seconds, 6 * SR)
    assert padded.shape == (6 * SR,)
    np.testing.assert_array_equal(padded, np.tile(two_seconds, 3))
    assert longest_zero_run(padded) <= 1  # a sine crosses zero; silence would be a run
    # The check can fail: silence padding would leave a 4-second run of zeros.
    assert longest_zero_run(np.pad(two_seconds, (0, 4 * SR))) == 4 * SR
    # A non-integer number of repeats continues from the start: 2.5 s into 6 s.
    part = tone(2.5, 330.0)
    np.testing.assert_array_equal(loop_pad(part, 6 * SR), np.concatenate([part, part, part[:SR]]))
    np.testing.assert_array_equal(loop_pad(part, SR), part[:SR])


def test_loop_pad_rejects_empty_and_multichannel_input():
    with pytest.raises(WindowError, match="empty"):
        loop_pad(np.zeros(0, dtype=np.float32), 10)
    with pytest.raises(WindowError, match="1-D"):
        loop_pad(np.zeros((10, 2)), 20)


def test_25_second_recording_gives_four_6_second_windows_and_the_tail_rule():
    samples = np.random.default_rng(0).standard_normal(25 * SR).astype(np.float32)
    windows = slice_windows(samples, SR, 6.0, WindowConfig())
    assert len(windows) == 4  # the 1 s tail is below half a window: dropped
    for index, window in enumerate(windows):
        expected = (6.0 * index, 6.0 * index + 6, False, 1.0)
        assert (window.start_s, window.end_s, window.loop_padded, window.repeats) == expected
        np.testing.assert_array_equal(window.samples, samples[index * 6 * SR : (index + 1) * 6 * SR])
    kept_tail = slice_windows(samples, SR, 6.0, WindowConfig(min_tail_fraction=0.1))
    assert len(kept_tail) == 5
    tail = kept_tail[-1]
    assert (tail.start_s, tail.end_s, tail.loop_padded, tail.repeats) == (24.0, 25.0, True, 6.0)
    np.testing.assert_array_equal(tail.samples, np.tile(samples[24 * SR :], 6))
    # A tail of exactly half a window is kept (27 s -> 4 full + 3 s tail).
    longer = np.random.default_rng(1).standard_normal(27 * SR).astype(np.float32)
    assert [w.loop_padded for w in slice_windows(longer, SR, 6.0, WindowConfig())] == [False] * 4 + [True]


def test_20_second_window_of_a_15_second_recording_is_loop_padded():
    samples = tone(15.0, 250.0)
    (window,) = slice_windows(samples, SR, 20.0, WindowConfig(min_tail_fraction=1.0))
    assert window.loop_padded and window.samples.shape == (20 * SR,)
    assert (window.start_s, window.end_s) == (0.0, 15.0)
    assert window.repeats == pytest.approx(4 / 3)
    np.testing.assert_array_equal(window.samples, np.resize(samples, 20 * SR))
    assert longest_zero_run(window.samples) <= 1


def test_overlapping_hops_and_expected_window_count_agree():
    samples = np.ones(25 * SR, dtype=np.float32)
    windows = slice_windows(samples, SR, 6.0, WindowConfig(hop_fraction=0.5))
    assert [w.start_s for w in windows] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0]
    assert [w.loop_padded for w in windows] == [False] * 7 + [True]
    for config in (
        WindowConfig(),
        WindowConfig(hop_fraction=0.5),
        WindowConfig(min_tail_fraction=0.0),
        WindowConfig(hop_fraction=0.3, min_tail_fraction=0.9),
    ):
        for duration in (0.5, 5.99, 6.0, 8.9, 9.0, 12.0, 25.0, 31.7):
            for window_s in (6.0, 20.0):
                n = int(round(duration * SR))
                got = len(slice_windows(np.ones(n, dtype=np.float32), SR, window_s, config))
                assert got == expected_window_count(duration, window_s, config), (config, duration, window_s)


def test_window_config_is_validated():
    for bad in (
        {"hop_fraction": 0.0},
        {"hop_fraction": 1.5},
        {"min_tail_fraction": -0.1},
        {"window_seconds": ()},
        {"window_seconds": (6.0, 6.0)},
        {"wav_subtype": "MP3"},
        {"sample_rate": 0},
    ):
        with pytest.raises(WindowError):
            WindowConfig(**bad)


@pytest.mark.parametrize("source_rate", [4_000, 44_100])
def test_make_windows_resamples_to_16k(tmp_path, source_rate):
    root = tmp_path / "icbhi"
    root.mkdir()
    sf.write(root / "a.wav", tone(7.5, 1_000.0, source_rate), source_rate, subtype="PCM_16")
    recordings = recordings_frame([{"stem": "101_1b1_Al_sc_Litt3200", "audio_path": "a.wav"}])
    config = WindowConfig(wav_subtype="FLOAT")
    windows, problems = make_windows(recordings, root, config, tmp_path / "windows")
    assert problems.empty
    assert windows["window_seconds"].tolist() == [6.0, 20.0]  # the 1.5 s tail is below half of 6 s: dropped
    assert set(windows["source_sample_rate"]) == {source_rate} and set(windows["sample_rate"]) == {SR}
    resampled, _ = load_mono(root / "a.wav", SR)
    for row in windows.itertuples():
        samples, file_rate = sf.read(tmp_path / "windows" / row.audio_path, dtype="float32")
        assert file_rate == SR and samples.shape == (int(row.window_seconds * SR),)
        assert peak_frequency(samples) == pytest.approx(1_000.0, abs=1.0)
        start = int(round(row.source_start_s * SR))
        end = int(round(row.source_end_s * SR))
        np.testing.assert_array_equal(samples, loop_pad(resampled[start:end], samples.size))


def test_make_windows_counts_tails_and_ids(tmp_path):
    root = tmp_path / "icbhi"
    root.mkdir()
    sf.write(root / "long.wav", tone(32.0, 300.0, 4_000), 4_000)
    sf.write(root / "short.wav", tone(4.0, 300.0, 44_100), 44_100)
    recordings = recordings_frame(
        [
            {"stem": "101_1b1_Al_sc_Litt3200", "audio_path": "long.wav"},
            {
                "stem": "102_1b1_Al_sc_Meditron",
                "audio_path": "short.wav",
                "official_split": "test",
                "lung_label": "both",
            },
        ]
    )
    calls = []
    windows, problems = make_windows(
        recordings,
        root,
        WindowConfig(),
        tmp_path / "out",
        workers=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert problems.empty and calls[-1] == (2, 2)
    assert windows["window_id"].tolist() == [
        "101_1b1_Al_sc_Litt3200:6s:000",
        "101_1b1_Al_sc_Litt3200:6s:001",
        "101_1b1_Al_sc_Litt3200:6s:002",
        "101_1b1_Al_sc_Litt3200:6s:003",
        "101_1b1_Al_sc_Litt3200:6s:004",
        "101_1b1_Al_sc_Litt3200:20s:000",
        "101_1b1_Al_sc_Litt3200:20s:001",
        "102_1b1_Al_sc_Meditron:6s:000",
        "102_1b1_Al_sc_Meditron:20s:000",
    ]
    # 32 s: five 6 s windows (the 2 s tail is dropped), one 20 s window and a loop-padded 12 s tail;
    # the 4 s recording is loop-padded to one window of each length.
    assert windows["loop_padded"].tolist() == [False] * 6 + [True] * 3
    assert windows["repeats"].tolist()[5:] == [1.0, pytest.approx(20 / 12), 1.5, 5.0]
    assert windows.loc[windows["window_id"].str.startswith("102"), "official_split"].eq("test").all()
    assert windows["window_id"].is_unique
    for path in windows["audio_path"]:
        assert (tmp_path / "out" / path).is_file() and not Path(path).is_absolute()


def test_decode_failures_and_absent_audio_become_problem_rows(tmp_path):
    root = tmp_path / "icbhi"
    root.mkdir()
    sf.write(root / "good.wav", tone(7.0), SR)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    (root / "empty.wav").write_bytes(b"")
    recordings = recordings_frame(
        [
            {"stem": "101_1b1_Al_sc_Meditron", "audio_path": "good.wav"},
            {"stem": "102_1b1_Al_sc_Meditron", "audio_path": "corrupt.wav"},
            {"stem": "103_1b1_Al_sc_Meditron", "audio_path": "empty.wav"},
            {"stem": "104_1b1_Al_sc_Meditron", "audio_path": "gone.wav"},
            {"stem": "105_1b1_Al_sc_Meditron", "audio_path": None, "audio_present": False},
        ]
    )
    windows, problems = make_windows(recordings, root, WindowConfig(window_seconds=(6.0,)), tmp_path / "out")
    assert set(windows["recording_id"]) == {"icbhi:101_1b1_Al_sc_Meditron"}
    reasons = dict(zip(problems["recording_id"], problems["reason"]))
    assert reasons == {
        "icbhi:102_1b1_Al_sc_Meditron": "audio_unreadable",
        "icbhi:103_1b1_Al_sc_Meditron": "audio_empty",
        "icbhi:104_1b1_Al_sc_Meditron": "audio_missing",
        "icbhi:105_1b1_Al_sc_Meditron": AUDIO_ABSENT,
    }
    assert problems["detail"].notna().all()
    # Every recording is accounted for: windowed or a problem.
    assert set(windows["recording_id"]) | set(problems["recording_id"]) == set(recordings["recording_id"])


def test_make_windows_rerun_removes_stale_windows(tmp_path):
    root = tmp_path / "icbhi"
    root.mkdir()
    sf.write(root / "a.wav", tone(13.0), SR)
    recordings = recordings_frame([{"stem": "101_1b1_Al_sc_Meditron", "audio_path": "a.wav"}])
    out = tmp_path / "out"
    first, _ = make_windows(recordings, root, WindowConfig(window_seconds=(6.0,), min_tail_fraction=0.1), out)
    second, _ = make_windows(recordings, root, WindowConfig(window_seconds=(6.0,)), out)
    assert len(first) == 3 and len(second) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == sorted(second["audio_path"])


def test_make_windows_requires_the_contract_columns(tmp_path):
    with pytest.raises(WindowError, match="audio_present"):
        make_windows(pd.DataFrame({"recording_id": ["x"]}), tmp_path, None, tmp_path / "out")


def demo_recordings(icbhi_root: Path) -> pd.DataFrame:
    """The recordings table of the demo ICBHI corpus (tables.py when present, else built from the files)."""
    try:
        from cough_pipeline.icbhi.tables import build_icbhi_tables
    except ImportError:
        build_icbhi_tables = None
    if build_icbhi_tables is not None:
        return build_icbhi_tables(icbhi_root).recordings
    folder = icbhi_root / "ICBHI_final_database"
    splits = dict(line.split() for line in (icbhi_root / "ICBHI_challenge_train_test.txt").read_text().splitlines())
    return recordings_frame(
        [
            {"stem": p.stem, "audio_path": p.relative_to(icbhi_root).as_posix(), "official_split": splits[p.stem]}
            for p in sorted(folder.glob("*.wav"))
        ]
    )


def test_demo_corpus_has_windows_for_every_recording_with_audio(demo_corpus, tmp_path):
    icbhi = demo_corpus / "icbhi"
    recordings = demo_recordings(icbhi)
    with_audio = recordings[recordings["audio_present"].astype(bool)]
    assert len(with_audio) == len(list((icbhi / "ICBHI_final_database").glob("*.wav")))
    config = WindowConfig()
    windows, problems = make_windows(recordings, icbhi, config, tmp_path / "windows", workers=2)
    assert problems.empty
    for row in with_audio.itertuples():
        duration = sf.info(icbhi / row.audio_path).duration
        for window_s in config.window_seconds:
            mine = windows[(windows["recording_id"] == row.recording_id) & (windows["window_seconds"] == window_s)]
            assert len(mine) == expected_window_count(duration, window_s, config) >= 1
    sample = windows.iloc[::7]
    for row in sample.itertuples():
        info = sf.info(tmp_path / "windows" / row.audio_path)
        assert info.samplerate == SR and info.frames == int(row.window_seconds * SR)
    assert set(windows["lung_label"]) <= {"normal", "crackles", "wheezes", "both"}


@pytest.mark.shared_data
def test_real_icbhi_sample_windows_every_wav_and_reports_the_rest(shared_data, tmp_path):
    tables = pytest.importorskip("cough_pipeline.icbhi.tables")
    icbhi = shared_data / "icbhi"
    recordings = tables.build_icbhi_tables(icbhi).recordings
    windows, problems = make_windows(recordings, icbhi, WindowConfig(), tmp_path / "windows", workers=2)
    with_audio = recordings[recordings["audio_present"].astype(bool)]
    assert len(with_audio) == 10 and set(windows["recording_id"]) == set(with_audio["recording_id"])
    assert len(problems) == len(recordings) - 10 and set(problems["reason"]) == {AUDIO_ABSENT}
    # 104_1b1_Al_sc_Litt3200 lasts 15.856 s: its 20 s window is the whole recording loop-padded.
    (short,) = windows[windows["window_id"] == "104_1b1_Al_sc_Litt3200:20s:000"].itertuples()
    assert short.loop_padded and short.source_end_s == pytest.approx(15.856)
    samples, rate = sf.read(tmp_path / "windows" / short.audio_path, dtype="float32")
    assert rate == SR and samples.size == 20 * SR and longest_zero_run(samples) < 5


# --- augmentation ----------------------------------------------------------------------------------------------

ALL_ON = AugmentConfig(
    pitch_probability=1, shift_probability=1, noise_probability=1, gain_probability=1, pitch_method="resample"
)
ALL_OFF = AugmentConfig(pitch_probability=0, shift_probability=0, noise_probability=0, gain_probability=0)


def test_augment_is_deterministic_per_seed_and_keeps_length_and_dtype():
    x = tone(6.0, 700.0) + 0.01 * np.random.default_rng(0).standard_normal(6 * SR).astype(np.float32)
    first, params = augment(x, SR, np.random.default_rng(5), ALL_ON)
    again, params_again = augment(x, SR, np.random.default_rng(5), ALL_ON)
    other, _ = augment(x, SR, np.random.default_rng(6), ALL_ON)
    np.testing.assert_array_equal(first, again)
    assert params == params_again and params["applied"] == ["pitch_shift", "time_shift", "noise", "gain"]
    assert not np.array_equal(first, other)
    assert first.dtype == np.float32 and first.shape == x.shape and np.isfinite(first).all()
    json.dumps(params)  # JSON-serialisable
    seeded, seeded_params = augment_with_seed(x, SR, 5, ALL_ON)
    np.testing.assert_array_equal(seeded, first)
    assert seeded_params == {"seed": 5, **params}


def test_probability_zero_is_identity_and_one_always_applies():
    x = tone(6.0)
    for seed in range(5):
        out, params = augment(x, SR, np.random.default_rng(seed), ALL_OFF)
        np.testing.assert_array_equal(out, x)
        assert params == {"applied": []}
        _, params = augment(x, SR, np.random.default_rng(seed), ALL_ON)
        assert len(params["applied"]) == 4
    # About half the windows get each transform at probability 0.5.
    applied = [
        augment(x[:SR], SR, np.random.default_rng(seed), AugmentConfig(pitch_method="resample"))[1]["applied"]
        for seed in range(200)
    ]
    for transform in ("pitch_shift", "time_shift", "noise", "gain"):
        assert 60 < sum(transform in a for a in applied) < 140


def test_switching_one_transform_does_not_change_the_others_values():
    x = tone(2.0)
    _, everything = augment(x, SR, np.random.default_rng(3), ALL_ON)
    _, shift_only = augment(x, SR, np.random.default_rng(3), AugmentConfig.only("time_shift"))
    assert shift_only["applied"] == ["time_shift"]
    assert shift_only["time_shift_samples"] == everything["time_shift_samples"]


def test_time_shift_is_a_circular_roll():
    x = np.random.default_rng(0).standard_normal(6 * SR).astype(np.float32)
    config = AugmentConfig.only("time_shift", max_shift_fraction=0.25)
    shifts = set()
    for seed in range(10):
        out, params = augment(x, SR, np.random.default_rng(seed), config)
        np.testing.assert_array_equal(out, np.roll(x, params["time_shift_samples"]))
        assert abs(params["time_shift_samples"]) <= 0.25 * x.size
        assert params["time_shift_s"] == params["time_shift_samples"] / SR
        shifts.add(params["time_shift_samples"])
    assert len(shifts) == 10


def test_noise_is_added_at_the_requested_snr():
    x = tone(6.0, 500.0, amplitude=0.3)
    for seed in range(5):
        out, params = augment(x, SR, np.random.default_rng(seed), AugmentConfig.only("noise"))
        noise = out.astype(np.float64) - x
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))
        assert 20.0 <= params["noise_snr_db"] <= 40.0
        assert snr == pytest.approx(params["noise_snr_db"], abs=0.05)
    silent, params = augment(np.zeros(SR, dtype=np.float32), SR, np.random.default_rng(0), AugmentConfig.only("noise"))
    assert not silent.any() and params["noise_rms"] == 0.0


def test_gain_scales_by_the_drawn_decibels_and_never_clips():
    quiet = tone(6.0, amplitude=0.1)
    for seed in range(5):
        out, params = augment(quiet, SR, np.random.default_rng(seed), AugmentConfig.only("gain"))
        assert -6.0 <= params["gain_db"] <= 6.0 and params["gain_db"] == params["gain_db_drawn"]
        ratio = np.max(np.abs(out)) / np.max(np.abs(quiet))
        assert 20 * np.log10(ratio) == pytest.approx(params["gain_db"], abs=1e-3)
    loud = tone(6.0, amplitude=0.9)
    out, params = augment(loud, SR, np.random.default_rng(0), AugmentConfig.only("gain", gain_db=(6.0, 6.0)))
    assert params["gain_db_drawn"] == 6.0
    assert params["gain_db"] == pytest.approx(20 * np.log10(1 / 0.9), abs=1e-3)
    assert np.max(np.abs(out)) <= 1.0
    np.testing.assert_allclose(out, loud * (1 / np.max(np.abs(loud))), atol=1e-6)  # scaled, not clipped


@pytest.mark.parametrize("method", ["librosa", "resample"])
@pytest.mark.parametrize("semitones", [2.0, -2.0])
def test_pitch_shift_moves_a_tone_by_the_semitones(method, semitones):
    x = tone(6.0, 1_000.0)
    config = AugmentConfig.only("pitch_shift", pitch_semitones=(semitones, semitones), pitch_method=method)
    out, params = augment(x, SR, np.random.default_rng(0), config)
    assert out.shape == x.shape and params["pitch_shift_semitones"] == semitones
    assert peak_frequency(out) == pytest.approx(1_000.0 * 2 ** (semitones / 12), abs=2.0)
    assert longest_zero_run(out) < 5
    assert params["pitch_shift_tempo_factor"] == (pytest.approx(2 ** (semitones / 12)) if method == "resample" else 1.0)


def test_config_bounds_and_choices_raise_each_modules_error():
    with pytest.raises(AugmentError, match="pitch_method must be one of"):
        AugmentConfig(pitch_method="rubberband")
    with pytest.raises(AugmentError, match="max_shift_fraction must be < 1"):
        AugmentConfig(max_shift_fraction=1.0)
    with pytest.raises(WindowError, match="hop_fraction must be > 0"):
        WindowConfig(hop_fraction=0.0)
    with pytest.raises(FeatureError, match="dtype must be one of"):
        FeatureConfig(dtype="float64")
    with pytest.raises(FeatureError, match="top_db"):
        FeatureConfig(top_db=-1.0)


def test_augment_validates_config_and_input():
    with pytest.raises(AugmentError):
        AugmentConfig(noise_probability=1.5)
    with pytest.raises(AugmentError):
        AugmentConfig(gain_db=(6.0, -6.0))
    with pytest.raises(AugmentError):
        AugmentConfig(pitch_method="rubberband")
    with pytest.raises(AugmentError):
        AugmentConfig.only("reverb")
    with pytest.raises(AugmentError):
        augment(np.zeros(0, dtype=np.float32), SR, np.random.default_rng(0))
    with pytest.raises(AugmentError, match="NaN"):
        augment(np.array([0.0, np.nan], dtype=np.float32), SR, np.random.default_rng(0))


# --- balancing -------------------------------------------------------------------------------------------------


def imbalanced_windows() -> pd.DataFrame:
    """Train: normal 10, crackles 4, wheezes 2, both 0. Test: normal 3, wheezes 1, both 2. One validation row and
    one row without split."""
    rows = []
    for split, sizes in (
        ("train", {"normal": 10, "crackles": 4, "wheezes": 2}),
        ("test", {"normal": 3, "wheezes": 1, "both": 2}),
        ("validation", {"crackles": 1}),
        (None, {"normal": 1}),
    ):
        for label, size in sizes.items():
            rows += [
                {"window_id": f"{split}-{label}-{i}", "lung_label": label, "official_split": split} for i in range(size)
            ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def plan_of(windows: pd.DataFrame, strategy: str, seed: int = 0) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BalancingWarning)
        return balance_plan(windows, strategy, seed)


def train_counts(plan: pd.DataFrame) -> dict[str, int]:
    return plan[plan["split"] == "train"]["label"].value_counts().to_dict()


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("original", {"normal": 10, "crackles": 4, "wheezes": 2}),
        ("undersample", {"normal": 2, "crackles": 2, "wheezes": 2}),
        ("oversample", {"normal": 10, "crackles": 10, "wheezes": 10}),
        ("hybrid_anchor", {"normal": 5, "crackles": 5, "wheezes": 5}),  # round((10 + 4 + 2) / 3) = 5
    ],
)
def test_balancing_counts_per_strategy(strategy, expected):
    windows = imbalanced_windows()
    with pytest.warns(BalancingWarning, match="both"):
        plan = balance_plan(windows, strategy, seed=0)
    assert list(plan.columns) == PLAN_COLUMNS
    assert train_counts(plan) == expected
    train = plan[plan["split"] == "train"]
    originals = {
        label: int((windows[windows["official_split"] == "train"]["lung_label"] == label).sum()) for label in expected
    }
    for label, size in expected.items():
        rows = train[train["label"] == label]
        assert int(rows["augmented"].sum()) == max(0, size - originals[label])
        assert (rows["augmented"] == (rows["copy_index"] > 0)).all()
        assert rows.loc[rows["augmented"], "augment_seed"].notna().all()
        assert rows.loc[~rows["augmented"], "augment_seed"].isna().all()
        assert set(rows["window_id"]) <= set(
            windows.loc[(windows["official_split"] == "train") & (windows["lung_label"] == label), "window_id"]
        )
    assert not plan.duplicated(["window_id", "copy_index"]).any()
    assert plan.attrs["empty_train_classes"] == ["both"]


def test_oversampled_copies_spread_evenly_over_a_class():
    plan = plan_of(imbalanced_windows(), "oversample")
    wheezes = plan[(plan["split"] == "train") & (plan["label"] == "wheezes")]
    assert wheezes.groupby("window_id").size().tolist() == [5, 5]  # 2 originals + 8 copies: 4 each
    crackles = plan[(plan["split"] == "train") & (plan["label"] == "crackles")]
    assert sorted(crackles.groupby("window_id").size()) == [2, 2, 3, 3]  # 4 originals + 6 copies
    assert sorted(crackles["copy_index"].unique()) == [0, 1, 2]


def test_hybrid_anchor_rounds_half_up_and_mixes_under_and_oversampling():
    windows = pd.DataFrame(
        {
            "window_id": [f"w{i}" for i in range(15)],
            "lung_label": ["normal"] * 10 + ["crackles"] * 5,
            "official_split": "train",
        }
    )
    plan = balance_plan(windows, "hybrid_anchor", seed=1)
    assert train_counts(plan) == {"normal": 8, "crackles": 8}  # mean 7.5 -> 8
    assert plan.loc[plan["label"] == "normal", "augmented"].sum() == 0
    assert plan.loc[plan["label"] == "crackles", "augmented"].sum() == 3


def test_only_the_training_split_is_balanced():
    windows = imbalanced_windows()
    others = windows[windows["official_split"] != "train"]
    passthrough = {}
    for strategy in ("original", "undersample", "oversample", "hybrid_anchor"):
        plan = plan_of(windows, strategy)
        rest = plan[plan["split"] != "train"].drop(columns=["strategy"]).reset_index(drop=True)
        passthrough[strategy] = rest
        assert not plan.loc[plan["split"] == "test", "augmented"].any()
        assert (rest["copy_index"] == 0).all() and rest["augment_seed"].isna().all()
        # Every non-training window appears exactly once, in table order.
        assert rest["window_id"].tolist() == others["window_id"].tolist()
    for strategy, rest in passthrough.items():
        pd.testing.assert_frame_equal(rest, passthrough["original"], obj=strategy)


def test_balance_plan_is_deterministic_per_seed():
    windows = imbalanced_windows()
    pd.testing.assert_frame_equal(plan_of(windows, "hybrid_anchor", 7), plan_of(windows, "hybrid_anchor", 7))
    chosen = {tuple(plan_of(windows, "undersample", seed)["window_id"]) for seed in range(5)}
    assert len(chosen) > 1
    # The same augmented copy gets the same seed under every strategy.
    over, hybrid = plan_of(windows, "oversample", 7), plan_of(windows, "hybrid_anchor", 7)
    shared = over.merge(hybrid, on=["window_id", "copy_index"], suffixes=("_o", "_h"))
    shared = shared[shared["augmented_o"]]
    assert len(shared) > 0 and (shared["augment_seed_o"] == shared["augment_seed_h"]).all()
    assert over.loc[over["augmented"], "augment_seed"].is_unique


def test_class_counts_before_and_after_with_the_empty_class_flagged():
    counts = class_counts(plan_of(imbalanced_windows(), "hybrid_anchor"))
    train = counts[counts["split"] == "train"].set_index("label")
    assert train["before"].to_dict() == {"normal": 10, "crackles": 4, "wheezes": 2, "both": 0}
    assert train["after"].to_dict() == {"normal": 5, "crackles": 5, "wheezes": 5, "both": 0}
    assert train["augmented"].to_dict() == {"normal": 0, "crackles": 1, "wheezes": 3, "both": 0}
    warnings_by_label = train["warning"].fillna("").to_dict()
    assert warnings_by_label == {"normal": "", "crackles": "", "wheezes": "", "both": "empty_in_train"}
    test = counts[counts["split"] == "test"].set_index("label")
    assert test["before"].to_dict() == test["after"].to_dict() == {"normal": 3, "crackles": 0, "wheezes": 1, "both": 2}


def test_balance_per_length_balances_each_length_on_its_own():
    six = imbalanced_windows().assign(window_seconds=6.0)
    twenty = six[six["lung_label"] != "crackles"].assign(window_seconds=20.0)
    twenty["window_id"] = twenty["window_id"] + ":20"
    windows = pd.concat([twenty, six], ignore_index=True)
    with pytest.warns(BalancingWarning) as caught:
        plan, counts = balance_per_length(windows, "oversample", 0, classes=["normal", "crackles", "wheezes", "both"])
    assert [str(warning.message).split(":")[0] for warning in caught] == ["6 s windows", "20 s windows"]
    lengths = plan["window_id"].str.endswith(":20").map({True: 20.0, False: 6.0})
    assert lengths.tolist() == sorted(lengths)  # 6 s plan first, then 20 s
    for length, table in ((6.0, six), (20.0, twenty)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BalancingWarning)
            alone = balance_plan(table, "oversample", 0, classes=["normal", "crackles", "wheezes", "both"])
        pd.testing.assert_frame_equal(plan[lengths == length].reset_index(drop=True), alone)
    train = counts[counts["split"] == "train"].set_index(["window_seconds", "label"])["before"]
    assert train[(6.0, "crackles")] == 4 and train[(20.0, "crackles")] == 0


def test_balance_plan_rejects_bad_requests():
    windows = imbalanced_windows()
    with pytest.raises(BalancingError, match="strategy"):
        balance_plan(windows, "smote", 0)
    with pytest.raises(BalancingError, match="unique"):
        balance_plan(pd.concat([windows, windows.head(1)]), "original", 0)
    with pytest.raises(BalancingError, match="nothing to balance"):
        balance_plan(windows[windows["official_split"] != "train"], "original", 0)
    unlabelled = windows.copy()
    unlabelled.loc[unlabelled["official_split"] == "train", "lung_label"] = None
    with pytest.raises(BalancingError, match="no lung_label"):
        balance_plan(unlabelled, "original", 0)
    with pytest.raises(BalancingError, match="not in classes"):
        balance_plan(windows, "original", 0, classes=["normal"])


def test_render_plan_writes_seeded_augmented_copies(tmp_path):
    window_dir = tmp_path / "windows"
    rows = []
    for i, (label, split) in enumerate([("normal", "train")] * 3 + [("crackles", "train"), ("normal", "test")]):
        path = f"6s/w{i}.wav"
        (window_dir / "6s").mkdir(parents=True, exist_ok=True)
        sf.write(window_dir / path, tone(6.0, 300.0 + 100 * i, amplitude=0.2), SR, subtype="FLOAT")
        rows.append(
            {
                "window_id": f"w{i}:6s:000",
                "recording_id": f"icbhi:w{i}",
                "lung_label": label,
                "official_split": split,
                "window_seconds": 6.0,
                "audio_path": path,
            }
        )
    windows = pd.DataFrame(rows)
    plan = balance_plan(windows, "oversample", seed=0)
    config = AugmentConfig(pitch_method="resample")
    out_dir = tmp_path / "augmented"
    rendered = render_plan(
        plan, windows, window_dir, out_dir, config, relative_to=tmp_path, workers=2, wav_subtype="FLOAT"
    )
    assert rendered[PLAN_COLUMNS].equals(plan) and len(list(out_dir.glob("*.wav"))) == 2
    for row in rendered.itertuples():
        samples, rate = sf.read(tmp_path / row.audio_path, dtype="float32")
        source, _ = sf.read(
            window_dir / windows.set_index("window_id").loc[row.window_id, "audio_path"], dtype="float32"
        )
        if row.augmented:
            expected, params = augment_with_seed(source, rate, row.augment_seed, config)
            np.testing.assert_array_equal(samples, expected)
            assert json.loads(row.augmentation) == json.loads(json.dumps(params))
            assert row.audio_path.startswith("augmented/")
        else:
            np.testing.assert_array_equal(samples, source)
            assert pd.isna(row.augmentation) and row.audio_path.startswith("windows/")
    assert not rendered.loc[rendered["split"] == "test", "augmented"].any()
    again = render_plan(plan, windows, window_dir, out_dir, config, relative_to=tmp_path, wav_subtype="FLOAT")
    pd.testing.assert_frame_equal(again, rendered)


# --- features --------------------------------------------------------------------------------------------------


def test_log_mel_and_mfcc_shapes():
    assert log_mel(tone(6.0)).shape == (128, 188)
    assert log_mel(tone(20.0)).shape == (128, 626)
    assert mfcc(tone(6.0)).shape == (20, 188)
    features, coefficients = log_mel_and_mfcc(tone(6.0))
    assert features.dtype == coefficients.dtype == np.float32


def test_a_1khz_tone_peaks_in_the_1khz_mel_band():
    features = log_mel(tone(6.0, 1_000.0))
    centres = librosa.mel_frequencies(n_mels=128 + 2, fmin=0.0, fmax=8_000.0)[1:-1]
    band = int(np.argmax(features.mean(axis=1)))
    assert abs(band - int(np.argmin(np.abs(centres - 1_000.0)))) <= 1
    assert centres[band] == pytest.approx(1_000.0, rel=0.05)
    assert int(np.argmax(log_mel(tone(6.0, 3_000.0)).mean(axis=1))) > band + 20


def test_features_equal_librosa_for_the_same_parameters():
    y = (tone(6.0, 700.0) + 0.05 * np.random.default_rng(0).standard_normal(6 * SR)).astype(np.float32)
    params = {"sr": SR, "n_fft": 1024, "hop_length": 512, "n_mels": 128, "fmax": 8_000.0}
    reference_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, **params), ref=1.0)
    reference_mfcc = librosa.feature.mfcc(y=y, n_mfcc=20, **params)
    features, coefficients = log_mel_and_mfcc(y)
    np.testing.assert_allclose(features, reference_mel, atol=1e-3)
    np.testing.assert_allclose(coefficients, reference_mfcc, atol=1e-2, rtol=1e-4)


def test_log_mel_keeps_absolute_level():
    y = tone(6.0, 700.0)
    loud, quiet = log_mel(y, top_db=None), log_mel(0.5 * y, top_db=None)
    band = int(np.argmax(loud.mean(axis=1)))
    assert float(np.mean(loud[band] - quiet[band])) == pytest.approx(20 * np.log10(2), abs=0.01)


def write_windows(folder: Path, specs: list[tuple[str, float, float, str]]) -> pd.DataFrame:
    """WAV windows (id, seconds, tone frequency, label) and their table."""
    rows = []
    for window_id, seconds, frequency, label in specs:
        path = f"{window_id}.wav"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / path, tone(seconds, frequency, amplitude=0.2), SR, subtype="FLOAT")
        rows.append(
            {"window_id": window_id, "window_seconds": seconds, "label": label, "split": "train", "audio_path": path}
        )
    return pd.DataFrame(rows)


def test_feature_arrays_follow_table_order_and_summarise_mfcc(tmp_path):
    table = write_windows(
        tmp_path, [("a", 6.0, 300.0, "normal"), ("b", 6.0, 1_000.0, "crackles"), ("c", 6.0, 2_500.0, "wheezes")]
    )
    array, summary = feature_arrays(table, tmp_path, workers=2)
    assert array.shape == (3, 128, 188) and array.dtype == np.float32
    for index, row in table.iterrows():
        samples, _ = sf.read(tmp_path / row.audio_path, dtype="float32")
        expected_mel, expected_mfcc = log_mel_and_mfcc(samples)
        np.testing.assert_array_equal(array[index], expected_mel)
        means = summary.loc[index, [f"mfcc_mean_{k:02d}" for k in range(1, 21)]].to_numpy(dtype=float)
        stds = summary.loc[index, [f"mfcc_std_{k:02d}" for k in range(1, 21)]].to_numpy(dtype=float)
        np.testing.assert_allclose(means, expected_mfcc.mean(axis=1), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(stds, expected_mfcc.std(axis=1), rtol=1e-5, atol=1e-4)
    assert summary[["window_id", "label", "split", "array_index"]].values.tolist() == [
        ["a", "normal", "train", 0],
        ["b", "crackles", "train", 1],
        ["c", "wheezes", "train", 2],
    ]
    reversed_array, reversed_summary = feature_arrays(table.iloc[::-1], tmp_path)
    np.testing.assert_array_equal(reversed_array, array[::-1])
    assert reversed_summary["window_id"].tolist() == ["c", "b", "a"]
    duckdb = pytest.importorskip("duckdb")
    by_label = duckdb.sql("select label, mfcc_mean_01 from summary order by label").fetchall()
    assert [label for label, _ in by_label] == ["crackles", "normal", "wheezes"]


def test_feature_arrays_on_disk_in_float16_and_per_length(tmp_path):
    table = write_windows(
        tmp_path / "w", [("a", 6.0, 300.0, "normal"), ("b", 20.0, 1_000.0, "both"), ("c", 6.0, 900.0, "both")]
    )
    with pytest.raises(FeatureError, match="one window length"):
        feature_arrays(table, tmp_path / "w")
    results = feature_arrays_by_length(table, tmp_path / "w", FeatureConfig(dtype="float16"), out_dir=tmp_path / "npy")
    assert sorted(results) == [6.0, 20.0]
    six, six_summary = results[6.0]
    assert six.shape == (2, 128, 188) and six.dtype == np.float16 and six_summary["window_id"].tolist() == ["a", "c"]
    assert results[20.0][0].shape == (1, 128, 626)
    on_disk = np.load(tmp_path / "npy" / "logmel_6s.npy")
    np.testing.assert_array_equal(on_disk, np.asarray(six))
    samples, _ = sf.read(tmp_path / "w" / "a.wav", dtype="float32")
    np.testing.assert_allclose(on_disk[0].astype(np.float32), log_mel(samples), atol=0.07)


def test_feature_arrays_by_length_reports_progress_over_every_window(tmp_path):
    table = write_windows(
        tmp_path, [("a", 6.0, 300.0, "normal"), ("b", 20.0, 900.0, "both"), ("c", 6.0, 500.0, "both")]
    )
    calls = []
    feature_arrays_by_length(table, tmp_path, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_feature_arrays_rejects_a_window_of_another_rate_or_length(tmp_path):
    table = write_windows(tmp_path, [("a", 6.0, 300.0, "normal")])
    sf.write(tmp_path / "b.wav", tone(6.0, 300.0, 8_000), 8_000)
    bad = pd.concat([table, table.assign(window_id="b", audio_path="b.wav")], ignore_index=True)
    with pytest.raises(FeatureError, match="8000 Hz"):
        feature_arrays(bad, tmp_path)
    with pytest.raises(FeatureError):
        FeatureConfig(fmax=9_000.0)
