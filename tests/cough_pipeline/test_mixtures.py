"""Noise bank, its split, and scaper mixtures built from the demo corpus (coughs: Virufy mp3 segments and CCS wavs;
noise: the demo noise bank). The ESC-50 test reads ../shared/data in place and skips when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import jams
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError
from cough_pipeline.demo_corpus import synth
from cough_pipeline.mixtures import (
    PROFILES,
    MixtureError,
    MixtureProfile,
    MixtureSpec,
    esc50_noise_bank,
    generate_mixtures,
    held_out_noise,
    load_noise_bank,
    mixture_table,
    plan_mixture,
    split_noise_bank,
)
from cough_pipeline.mixtures.generate import COUGH_TOO_LONG, OWNER_MARKER
from cough_pipeline.mixtures.noise_bank import split_counts
from cough_pipeline.mixtures.sources import prepare_source
from cough_pipeline.parallel import throttled

SPEC = MixtureSpec()
COUNT = 10


# ---------------------------------------------------------------- noise bank


def test_demo_noise_bank_is_read_from_its_csv(demo_corpus):
    bank = load_noise_bank(demo_corpus / "noise")
    assert len(bank) == 9
    assert bank["category"].value_counts().to_dict() == {"babble": 3, "classroom": 3, "hum": 3}
    assert bank["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    assert (bank["sample_rate"] == 44_100).all() and (bank["duration_s"] == 5.0).all()
    assert bank["source"].str.contains("synth").all() and bank["source"].str.contains("seed=").all()


def test_a_plain_folder_takes_categories_from_subfolders(tmp_path):
    for category, rate in (("fan", 44_100), ("traffic", 16_000)):
        (tmp_path / "bank" / category).mkdir(parents=True)
        sf.write(tmp_path / "bank" / category / "a.wav", np.zeros(rate * 6), rate)
    (tmp_path / "bank" / "fan" / "notes.txt").write_text("not audio")
    bank = load_noise_bank(tmp_path / "bank")
    assert bank[["category", "sample_rate", "duration_s"]].values.tolist() == [
        ["fan", 44_100, 6.0],
        ["traffic", 16_000, 6.0],
    ]


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MixtureError, match="not found"):
        load_noise_bank(tmp_path / "nowhere")
    (tmp_path / "empty" / "fan").mkdir(parents=True)
    with pytest.raises(MixtureError, match="no noise audio"):
        load_noise_bank(tmp_path / "empty")


def write_esc50(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A tiny ESC-50 layout: ``rows`` of (filename, category, src_file); every listed clip but the last exists."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for number, (filename, category, source) in enumerate(rows):
        lines.append(f"{filename},1,{number},{category},False,{source},{filename[-8]}")
        if number < len(rows) - 1:
            sf.write(root / "audio" / filename, np.zeros(44_100 * 5), 44_100)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def test_esc50_bank_skips_coughs_and_absent_clips_and_groups_takes(tmp_path):
    root = write_esc50(
        tmp_path / "esc50",
        [
            ("1-100-A-1.wav", "rain", "100"),
            ("1-100-B-1.wav", "rain", "100"),
            ("1-200-A-2.wav", "coughing", "200"),
            ("1-300-A-3.wav", "rain", "300"),
        ],
    )
    bank = esc50_noise_bank(root)
    assert [Path(p).name for p in bank["path"]] == ["1-100-A-1.wav", "1-100-B-1.wav"]
    assert bank["group"].nunique() == 1
    split = split_noise_bank(bank, seed=0)
    assert split["split"].nunique() == 1


def test_esc50_snapshot_from_shared_data(shared_data):
    bank = esc50_noise_bank(shared_data / "esc50")
    assert len(bank) == 96 and "coughing" not in set(bank["category"])
    split = split_noise_bank(bank, seed=0)
    assert split.groupby("group")["split"].nunique().eq(1).all()
    groups_per_category = split.groupby("category")["group"].nunique()
    splits_per_category = split.groupby("category")["split"].nunique()
    assert splits_per_category[groups_per_category >= 3].eq(3).all()


# ---------------------------------------------------------------- noise split


def test_split_is_disjoint_by_file_stratified_and_seeded(demo_corpus):
    bank = load_noise_bank(demo_corpus / "noise")
    split = split_noise_bank(bank, seed=5)
    assert split["path"].is_unique and split["split"].notna().all()
    assert (split.groupby(["split", "category"]).size() == 1).all()
    assert split.groupby("split")["category"].nunique().to_dict() == {"test": 3, "train": 3, "validation": 3}
    assert split.equals(split_noise_bank(bank, seed=5))
    assert any(not split["split"].equals(split_noise_bank(bank, seed=s)["split"]) for s in range(6, 10))


def test_held_out_noise_is_the_test_split(demo_corpus):
    split = split_noise_bank(load_noise_bank(demo_corpus / "noise"), seed=0)
    held_out = held_out_noise(split)
    assert set(held_out["split"]) == {"test"}
    assert not set(held_out["path"]) & set(split[split["split"] == "train"]["path"])
    with pytest.raises(MixtureError, match="split_noise_bank"):
        held_out_noise(split.drop(columns="split"))


@pytest.mark.parametrize(
    ("n_groups", "expected"),
    [
        (1, {"train": 1, "test": 0, "validation": 0}),
        (2, {"train": 1, "test": 1, "validation": 0}),
        (3, {"train": 1, "test": 1, "validation": 1}),
        (8, {"train": 6, "test": 1, "validation": 1}),
        (20, {"train": 14, "test": 3, "validation": 3}),
    ],
)
def test_split_counts_serve_train_then_test_first(n_groups, expected):
    assert split_counts(n_groups, {"train": 0.7, "test": 0.15, "validation": 0.15}) == expected


@pytest.mark.parametrize("fractions", [{"train": 0.7, "test": 0.2}, {"train": 1.2, "test": -0.2}, {}])
def test_split_rejects_fractions_that_do_not_sum_to_one(demo_corpus, fractions):
    with pytest.raises(MixtureError, match="fractions"):
        split_noise_bank(load_noise_bank(demo_corpus / "noise"), fractions=fractions)


# ---------------------------------------------------------------- settings


def test_profiles_hold_the_published_sizes():
    assert PROFILES["paper"] == MixtureProfile(train=12_000, validation=1_500, test=1_000)
    assert PROFILES["demo"].count("validation") == 12
    with pytest.raises(MixtureError, match="non-negative"):
        MixtureProfile(train=-1, validation=1, test=1)
    with pytest.raises(MixtureError, match="unknown split"):
        PROFILES["demo"].count("dev")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"snr_db": (5.0, -5.0)}, "snr_db"),
        ({"time_stretch_factor": (0.0, 1.1)}, "time_stretch_factor"),
        ({"pitch_shift_probability": 1.5}, "pitch_shift_probability"),
        ({"events_per_mixture": (0, 2)}, "events_per_mixture"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"ref_db": (-10.0, 3.0)}, "ref_db"),
        ({"label": "../cough"}, "label"),
    ],
)
def test_invalid_spec_values_are_rejected(settings, message):
    with pytest.raises(MixtureError, match=message):
        MixtureSpec(**settings)


def test_plans_depend_on_seed_split_and_index_only():
    plan = plan_mixture("train", 3, 7, "train-00003", [1.0, 2.0], [5.0, 6.0], SPEC)
    assert plan == plan_mixture("train", 3, 7, "train-00003", [1.0, 2.0], [5.0, 6.0], SPEC)
    assert plan != plan_mixture("validation", 3, 7, "train-00003", [1.0, 2.0], [5.0, 6.0], SPEC)
    assert plan != plan_mixture("train", 3, 8, "train-00003", [1.0, 2.0], [5.0, 6.0], SPEC)


# ---------------------------------------------------------------- generation from the demo corpus


def hummed_cough(rng: np.random.Generator, rate: int = 44_100) -> np.ndarray:
    """A synthetic cough over a 100 Hz hum at -40 dBFS, so neither edge is digital silence."""
    cough = synth.cough(rng, rate, covid_positive=True)
    return cough + 0.01 * np.cos(2 * np.pi * 100 * np.arange(len(cough)) / rate)


@pytest.fixture(scope="module")
def sources(demo_corpus, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(coughs, train noise): Virufy mp3 segments, CCS wavs, one 44.1 kHz wav used in place, one cough too long
    to fit and one unreadable file, over the demo bank's train split."""
    extra = tmp_path_factory.mktemp("extra_coughs")
    rng = np.random.default_rng(0)
    sf.write(extra / "native.wav", hummed_cough(rng), 44_100)
    sf.write(extra / "long.wav", 0.1 * rng.standard_normal(16_000 * 6), 16_000)
    (extra / "broken.mp3").write_bytes(b"<html>502 Bad Gateway</html>")
    paths = (
        sorted((demo_corpus / "virufy" / "clinical" / "segmented").glob("*/*.mp3"))[:6]
        + sorted((demo_corpus / "ccs" / "dist" / "wav").glob("train_00[1-3].wav"))
        + [extra / "native.wav", extra / "long.wav", extra / "broken.mp3"]
    )
    coughs = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "recording_id": [f"demo:{p.stem}" for p in paths],
            "participant_id": [f"demo:{p.stem[:12]}" for p in paths],
            "dataset": "demo",
        }
    )
    bank = split_noise_bank(load_noise_bank(demo_corpus / "noise"), seed=0)
    return coughs, bank[bank["split"] == "train"]


@pytest.fixture(scope="module")
def serial(sources, tmp_path_factory):
    """COUNT train mixtures generated in this process; returns (result, out_dir)."""
    out_dir = tmp_path_factory.mktemp("serial")
    return generate_mixtures(*sources, count=COUNT, split="train", out_dir=out_dir, seed=3, workers=1), out_dir


@pytest.fixture(scope="module")
def parallel(sources, serial, tmp_path_factory):
    """The same mixtures from two worker processes, with a cache folder of its own."""
    out_dir = tmp_path_factory.mktemp("parallel")
    return generate_mixtures(
        *sources,
        count=COUNT,
        split="train",
        out_dir=out_dir,
        seed=3,
        workers=2,
        cache_dir=tmp_path_factory.mktemp("cache"),
    ), out_dir


def test_every_mixture_has_its_four_files_at_5_s_44k_mono(serial):
    result, out_dir = serial
    assert len(result.mixtures) == COUNT and result.mixtures["mixture_id"].is_unique
    for row in result.mixtures.to_dict("records"):
        for column in ("mixture_path", "cough_path", "noise_path"):
            info = sf.info(out_dir / row[column])
            assert (info.samplerate, info.channels, info.frames) == (44_100, 1, 220_500)
        sandbox = jams.load(str(out_dir / row["jams_path"]), validate=False).annotations[0].sandbox
        assert sandbox["cough_pipeline"]["mixture_id"] == row["mixture_id"]


def test_mixture_table_summarises_each_mixtures_events(serial):
    result, _ = serial
    table = mixture_table(result.mixtures, result.events)
    assert table["mixture_id"].tolist() == result.mixtures["mixture_id"].tolist()
    first = result.events.groupby("mixture_id").first()
    assert (table.set_index("mixture_id")["snr_db"] == first["snr_db"]).all()
    ids = result.events.groupby("mixture_id")["recording_id"].agg(";".join)
    assert (table.set_index("mixture_id")["recording_ids"] == ids).all()


def test_mixture_is_the_sum_of_its_saved_sources(serial):
    result, out_dir = serial
    for row in result.mixtures.to_dict("records"):
        mixture, cough, noise = (sf.read(out_dir / row[c])[0] for c in ("mixture_path", "cough_path", "noise_path"))
        np.testing.assert_allclose(mixture, cough + noise, rtol=0, atol=1e-7)
        assert np.abs(cough).max() > 0 and np.abs(noise).max() > 0


def test_sampled_parameters_lie_in_their_ranges(serial, sources):
    result, _ = serial
    events, mixtures = result.events, result.mixtures
    assert len(events) == COUNT and events["mixture_id"].tolist() == mixtures["mixture_id"].tolist()
    assert events["snr_db"].between(-5, 5).all() and mixtures["ref_db"].between(-53, -47).all()
    applied = events[events["pitch_shift_applied"]]["pitch_shift_semitones"]
    assert applied.between(-2, 2).all() and events[~events["pitch_shift_applied"]]["pitch_shift_semitones"].isna().all()
    stretched = events[events["time_stretch_applied"]]["time_stretch_factor"]
    assert stretched.between(0.9, 1.1).all()
    assert (events["onset_s"] >= 0).all() and (events["onset_s"] + events["event_duration_s"] <= 5.0).all()
    assert events["recording_id"].str.startswith("demo:").all() and (events["dataset"] == "demo").all()
    assert set(mixtures["noise_file"]) <= set(sources[1]["path"]) and mixtures["noise_category"].notna().all()


def test_background_is_normalised_to_the_sampled_reference_level(serial):
    pyloudnorm = pytest.importorskip("pyloudnorm")
    result, out_dir = serial
    meter = pyloudnorm.Meter(44_100)
    for row in result.mixtures.to_dict("records"):
        noise, _ = sf.read(out_dir / row["noise_path"])
        assert meter.integrated_loudness(noise) == pytest.approx(row["ref_db"], abs=0.05)


def test_event_snr_is_over_the_cough_not_the_whole_clip(serial):
    """Why the unprocessed mixture's SDR sits below the SNR range: scaper's SNR compares loudness while the cough
    sounds; over the whole 5 s clip the cough's energy is spread over 10x its duration (about -10 dB more)."""
    result, out_dir = serial
    events = result.events.set_index("mixture_id")
    event_gap, clip_gap = [], []
    for row in result.mixtures.to_dict("records"):
        cough, noise = (sf.read(out_dir / row[c])[0] for c in ("cough_path", "noise_path"))
        event = events.loc[row["mixture_id"]]
        start = round(event["onset_s"] * 44_100)
        stop = start + round(event["event_duration_s"] * 44_100)
        event_snr = 10 * np.log10(np.mean(cough[start:stop] ** 2) / np.mean(noise**2))
        clip_snr = 10 * np.log10(np.sum(cough**2) / np.sum(noise**2))
        event_gap.append(event_snr - event["snr_db"])
        clip_gap.append(clip_snr - event["snr_db"] - 10 * np.log10(event["event_duration_s"] / 5.0))
    # energy vs K-weighted loudness differ per sound, but not by much on average
    assert abs(np.median(event_gap)) < 3 and abs(np.median(clip_gap)) < 3


def test_unusable_coughs_are_returned_with_a_reason_never_dropped_silently(serial):
    result, _ = serial
    reasons = dict(zip(result.rejected["recording_id"], result.rejected["reason"]))
    assert reasons == {"demo:long": COUGH_TOO_LONG, "demo:broken": "audio_unreadable"}
    assert not set(reasons) & set(result.events["recording_id"])


def test_native_44k_wavs_are_used_in_place_and_others_converted_once(serial):
    _, out_dir = serial
    links = sorted((out_dir / "train" / "scaper_sources" / "foreground" / "cough").iterdir())
    targets = [link.resolve() for link in links]
    assert any(target.name == "native.wav" for target in targets)
    assert sum(target.parent == out_dir / "source_cache" for target in targets) == len(targets) - 1


def test_silent_edges_are_trimmed_from_coughs_and_cached_once(tmp_path):
    rate = 44_100
    cough = hummed_cough(np.random.default_rng(1))
    sf.write(tmp_path / "padded.wav", np.concatenate([np.zeros(rate // 2), cough, np.zeros(rate)]), rate)
    first = prepare_source(tmp_path / "padded.wav", tmp_path / "cache", rate, trim_silence=True)
    assert first.converted and first.duration_s == pytest.approx(len(cough) / rate)
    modified = Path(first.prepared).stat().st_mtime_ns
    assert prepare_source(tmp_path / "padded.wav", tmp_path / "cache", rate, trim_silence=True) == first
    assert Path(first.prepared).stat().st_mtime_ns == modified
    untrimmed = prepare_source(tmp_path / "padded.wav", tmp_path / "cache", rate)
    assert not untrimmed.converted and untrimmed.duration_s == pytest.approx(len(cough) / rate + 1.5)
    sf.write(tmp_path / "silent.wav", np.zeros(rate), rate)
    with pytest.raises(AudioDecodeError, match="audio_no_samples"):
        prepare_source(tmp_path / "silent.wav", tmp_path / "cache", rate, trim_silence=True)


def test_parallel_run_equals_serial_run_table_and_audio_bytes(serial, parallel):
    (serial_result, serial_dir), (parallel_result, parallel_dir) = serial, parallel
    pd.testing.assert_frame_equal(serial_result.mixtures, parallel_result.mixtures)
    pd.testing.assert_frame_equal(serial_result.events, parallel_result.events)
    decisions = ["role", "path", "recording_id", "reason"]  # the decoder's detail text holds memory addresses
    pd.testing.assert_frame_equal(serial_result.rejected[decisions], parallel_result.rejected[decisions])
    for row in serial_result.mixtures.to_dict("records"):
        for column in ("mixture_path", "cough_path", "noise_path"):
            assert (serial_dir / row[column]).read_bytes() == (parallel_dir / row[column]).read_bytes()


def test_several_events_per_mixture_still_sum_to_the_mixture(sources, tmp_path):
    spec = MixtureSpec(events_per_mixture=(2, 3))
    result = generate_mixtures(*sources, count=3, split="validation", out_dir=tmp_path, seed=0, spec=spec, workers=1)
    assert result.mixtures["n_events"].between(2, 3).all()
    assert result.events.groupby("mixture_id").size().tolist() == result.mixtures["n_events"].tolist()
    row = result.mixtures.iloc[0]
    mixture, cough, noise = (sf.read(tmp_path / row[c])[0] for c in ("mixture_path", "cough_path", "noise_path"))
    np.testing.assert_allclose(mixture, cough + noise, rtol=0, atol=1e-7)


def test_rerun_replaces_the_split_folder(sources, tmp_path):
    calls, progress = [], []
    throttled_log = throttled(lambda line: progress.append(line), "mixed", every=100)
    generate_mixtures(
        *sources,
        count=2,
        split="test",
        out_dir=tmp_path,
        seed=0,
        workers=1,
        on_progress=lambda done, total: (calls.append((done, total)), throttled_log(done, total)),
    )
    assert calls == [(1, 2), (2, 2)]  # after every mixture; a throttled log reports the last one
    assert progress == ["mixed 2/2"]
    generate_mixtures(*sources, count=1, split="test", out_dir=tmp_path, seed=0, workers=1)
    assert len(list((tmp_path / "test" / "mixture").iterdir())) == 1
    assert (tmp_path / "test" / OWNER_MARKER).is_file()


# ---------------------------------------------------------------- validation before any work


def test_a_folder_not_written_by_this_module_is_never_replaced(sources, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "precious.txt").write_text("keep me")
    with pytest.raises(MixtureError, match="refusing"):
        generate_mixtures(*sources, count=1, split="train", out_dir=tmp_path, workers=1)
    assert (tmp_path / "train" / "precious.txt").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda coughs, noise: (coughs.iloc[:0], noise), "no cough given"),
        (lambda coughs, noise: (coughs, noise.iloc[:0]), "no noise given"),
        (lambda coughs, noise: (coughs.drop(columns="participant_id"), noise), "participant_id"),
        (lambda coughs, noise: (coughs.assign(path=coughs["path"] + ".gone"), noise), "not found"),
        (lambda coughs, noise: (coughs, noise.assign(category="bad/name")), "categories"),
    ],
)
def test_invalid_inputs_fail_before_anything_is_written(sources, tmp_path, change, message):
    coughs, noise = change(*sources)
    with pytest.raises(MixtureError, match=message):
        generate_mixtures(coughs, noise, count=1, split="train", out_dir=tmp_path, workers=1)
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"count": -1}, "count"),
        ({"workers": 0}, "workers"),
        ({"split": "a/b"}, "split"),
        ({"seed": -3}, "seed"),
    ],
)
def test_invalid_arguments_fail_before_anything_is_written(sources, tmp_path, arguments, message):
    settings = {"count": 1, "split": "train", "workers": 1, "seed": 0, **arguments}
    with pytest.raises(MixtureError, match=message):
        generate_mixtures(*sources, out_dir=tmp_path, **settings)


def test_no_usable_cough_is_a_clear_error(sources, tmp_path):
    coughs, noise = sources
    too_long = coughs[coughs["recording_id"].isin(["demo:long", "demo:broken"])]
    with pytest.raises(MixtureError, match="no usable cough"):
        generate_mixtures(too_long, noise, count=1, split="train", out_dir=tmp_path, workers=1)


def test_one_mixture_per_cough_uses_every_usable_cough_exactly_once(sources, tmp_path):
    coughs, noise = sources
    result = generate_mixtures(
        coughs, noise, count=1, split="classification", out_dir=tmp_path, seed=0, workers=1, one_per_cough=True
    )
    used = result.events["cough_file"].tolist()
    rejected = set(result.rejected.loc[result.rejected["role"] == "cough", "path"])
    assert len(used) == len(set(used)) == len(coughs) - len(rejected)
    assert len(result.mixtures) == len(used)
