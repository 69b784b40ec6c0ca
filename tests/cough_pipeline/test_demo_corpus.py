"""Tests for cough_pipeline.demo_corpus: native layouts, formats, determinism, idempotence, signal truth."""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from cough_pipeline.demo_corpus import (
    CORPUS_VERSION,
    DEMO_DATASETS,
    NOISE_FOLDER,
    PLANTED_DEFECTS,
    encode,
    generate_demo_corpus,
    synth,
)
from cough_pipeline.demo_corpus.layouts.coswara import COMBINED_COLUMNS, TASKS
from cough_pipeline.demo_corpus.layouts.coughvid import FAILED_UPLOAD

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the demo corpus needs ffmpeg")

UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small corpus, generated once for the whole module."""
    root = tmp_path_factory.mktemp("demo_corpus")
    generate_demo_corpus(root, size="small", seed=0)
    return root


def read_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[dict[str, str]]:
    """Rows of a CSV file as dicts keyed by the raw header."""
    with path.open(newline="", encoding=encoding) as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, keyed by relative path."""
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def ffprobe_stream(path: Path) -> dict[str, str]:
    """codec_name / sample_rate / channels of the first audio stream, via ffprobe."""
    command = [
        "ffprobe", "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=codec_name,sample_rate,channels", "-of", "json", str(path),
    ]  # fmt: skip
    return json.loads(subprocess.run(command, capture_output=True, check=True, text=True).stdout)["streams"][0]


def autocorrelation_f0(samples: np.ndarray, sr: int) -> float:
    """Fundamental frequency from the strongest autocorrelation peak between 70 and 400 Hz."""
    segment = samples.astype(float) - samples.mean()
    correlation = np.correlate(segment, segment, "full")[segment.size - 1 :]
    shortest, longest = int(sr / 400), int(sr / 70)
    return sr / (shortest + int(np.argmax(correlation[shortest:longest])))


def voiced_tail_f0(cough: np.ndarray, sr: int) -> float:
    """f0 of the first 100 ms of the voiced tail (which starts by 35 ms after onset)."""
    return autocorrelation_f0(cough[int(0.06 * sr) : int(0.16 * sr)], sr)


def test_returns_every_folder_with_demo_note_and_marker(corpus: Path) -> None:
    folders = generate_demo_corpus(corpus)
    assert list(folders) == [*DEMO_DATASETS, NOISE_FOLDER]
    for name, folder in folders.items():
        assert folder == corpus / name
        assert "synthetic" in (folder / "DEMO.md").read_text(encoding="utf-8").lower()
        marker = json.loads((folder / ".complete").read_text())
        assert marker == {"corpus_version": CORPUS_VERSION, "seed": 0, "size": "small"}


def test_small_corpus_stays_small(corpus: Path) -> None:
    total = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    assert total < 36_000_000  # "small by default": about 34 MB, 5 MB of it the ESC-50 stand-in (FLAC)


def test_ccs_layout(corpus: Path) -> None:
    dist = corpus / "ccs" / "dist"
    labels = {}
    for partition in ("train", "devel", "test"):
        rows = read_csv(dist / "lab" / f"{partition}.csv")
        assert list(rows[0]) == ["filename", "label"]
        for index, row in enumerate(rows, start=1):
            assert row["filename"] == f"{partition}_{index:03d}.wav"
            info = sf.info(dist / "wav" / row["filename"])
            assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
            labels[row["filename"]] = row["label"]
    assert {"positive", "negative", "?"} == set(labels.values())
    assert [name for name, label in labels.items() if label == "?"] == ["test_002.wav", "test_003.wav"]
    unlisted = {p.name for p in (dist / "wav").glob("*.wav")} - set(labels)
    assert len(unlisted) == PLANTED_DEFECTS["ccs"]["unlisted_file"]  # the planted defect


def test_iatos_layout(corpus: Path) -> None:
    raw = (corpus / "iatos" / "metadata.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    rows = read_csv(corpus / "iatos" / "metadata.csv", delimiter=";", encoding="latin-1")
    assert list(rows[0]) == ["id_audio", "resultado_pcr", "sexo", "edad", "fecha_hisopado", "comentario"]
    assert any("señal débil" in row["comentario"] for row in rows)
    assert {row["resultado_pcr"] for row in rows} == {"positivo", "negativo"}
    for row in rows:
        assert re.fullmatch(r"\d{2}/\d{2}/2020", row["fecha_hisopado"]) and row["edad"].isdigit()
        info = sf.info(corpus / "iatos" / "audios" / f"{row['id_audio']}.ogg")
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "OPUS", 48_000, 1)


def test_coswara_metadata_layout(corpus: Path) -> None:
    root = corpus / "coswara"
    header = (root / "combined_data.csv").read_text().splitlines()[0]
    assert header.split(",") == list(COMBINED_COLUMNS) and len(COMBINED_COLUMNS) == 36
    combined = read_csv(root / "combined_data.csv")
    assert all(len(row["id"]) == 28 and row["id"].isalnum() for row in combined)
    assert all(row[flag] in ("True", "") for row in combined for flag in ("cough", "fever", "asthma", "smoker"))
    assert isinstance(json.loads((root / "csv_labels_legend.json").read_text()), dict)
    for task in ("cough-heavy", "cough-shallow"):
        lines = (root / "annotations" / f"{task}_labels.csv").read_text().splitlines()
        assert lines[0] == "FILENAME, QUALITY"
        names, qualities = zip(*(line.split(",") for line in lines[1:]))
        assert sorted(names) == sorted(f"{row['id']}_{task}" for row in combined)
        assert {q.strip() for q in qualities} <= {"0", "1", "2"} and any(q.startswith(" ") for q in qualities)
    date_folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    assert 2 <= len(date_folders) <= 3
    per_date_ids = [row["id"] for folder in date_folders for row in read_csv(folder / f"{folder.name}.csv")]
    assert sorted(per_date_ids) == sorted(row["id"] for row in combined)


def test_coswara_split_tarball_holds_nine_tasks_per_participant(corpus: Path) -> None:
    for folder in sorted(p for p in (corpus / "coswara").iterdir() if p.is_dir() and p.name.isdigit()):
        parts = sorted(folder.glob(f"{folder.name}.tar.gz.*"))
        assert [p.suffix for p in parts][:2] == [".aa", ".ab"]
        assert all(p.stat().st_size == 256 * 1024 for p in parts[:-1])
        with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts)), mode="r:gz") as tar:
            members = tar.getmembers()
            ids = [row["id"] for row in read_csv(folder / f"{folder.name}.csv")]
            expected = sorted(f"{folder.name}/{pid}/{task}.wav" for pid in ids for task in TASKS)
            assert sorted(m.name for m in members) == expected
            assert all(m.isfile() and m.mtime == 0 and m.uid == 0 for m in members)
            info = sf.info(io.BytesIO(tar.extractfile(members[0]).read()))
            assert (info.samplerate, info.channels, info.subtype) == (44_100, 1, "PCM_16")


def test_aicovidvn_layout(corpus: Path) -> None:
    final = corpus / "aicovidvn" / "aicv115m_final_public_train"
    rows = read_csv(final / "public_train_metadata.csv")
    assert list(rows[0]) == [
        "uuid", "subject_age", "subject_gender", "audio_noise_note", "cough_intervals", "assessment_result",
    ]  # fmt: skip
    assert {row["assessment_result"] for row in rows} == {"0", "1"}
    assert 1 <= sum(bool(row["audio_noise_note"]) for row in rows) <= 2
    rates = set()
    for row in rows:
        assert re.fullmatch(UUID_PATTERN, row["uuid"]) and row["subject_age"].startswith("group_")
        info = sf.info(final / "public_train_audio_files" / f"{row['uuid']}.wav")
        rates.add(info.samplerate)
        intervals = ast.literal_eval(row["cough_intervals"])
        assert intervals and all(i["labels"] == ["cough"] for i in intervals)
        assert all(0 <= i["start"] < i["end"] <= info.duration for i in intervals)
    assert rates == {48_000, 44_100}
    medical = read_csv(final / "public_train_medical_condition.csv")
    assert [row["uuid"] for row in medical] == [row["uuid"] for row in rows]
    junk = list((final / "__MACOSX" / "public_train_audio_files").glob("._*.wav"))
    assert junk and all(p.stat().st_size == 4 for p in junk)
    warmup = corpus / "aicovidvn" / "aicv115m_public_train"
    warmup_rows = read_csv(warmup / "metadata_train_challenge.csv")
    assert len(warmup_rows) == 4 and list(warmup_rows[0]) == list(rows[0])
    assert {sf.info(warmup / "train_audio_files_8k" / f"{r['uuid']}.wav").samplerate for r in warmup_rows} == {8_000}


def test_coughvid_layout(corpus: Path) -> None:
    folder = corpus / "coughvid" / "public_dataset_v3" / "coughvid_20211012"
    csv_text = (folder / "metadata_compiled.csv").read_text()
    assert csv_text.startswith(",uuid,datetime,cough_detected,SNR,latitude,longitude,age,gender,")
    header = csv_text.splitlines()[0].split(",")
    assert header[header.index("status") + 1] == "status_SSL" and header[-1] == "severity_4"
    rows = read_csv(folder / "metadata_compiled.csv")
    assert [row[""] for row in rows] == [str(i) for i in range(len(rows))]
    assert sum(float(row["cough_detected"]) < 0.8 for row in rows) == 2
    assert {row["status"] for row in rows} == {"healthy", "COVID-19", "symptomatic", ""}
    suffixes, failed_uploads = set(), 0
    for row in rows:
        sidecar = json.loads((folder / f"{row['uuid']}.json").read_text())
        assert sidecar["cough_detected"] == row["cough_detected"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00", sidecar["datetime"])
        (audio,) = [p for p in folder.glob(f"{row['uuid']}.*") if p.suffix in (".webm", ".ogg")]
        suffixes.add(audio.suffix)
        if audio.read_bytes() == FAILED_UPLOAD:  # the planted defect
            failed_uploads += 1
            continue
        stream = ffprobe_stream(audio)
        assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("opus", "48000", 1)
    assert suffixes == {".webm", ".ogg"} and failed_uploads == PLANTED_DEFECTS["coughvid"]["audio_unreadable"]
    assert any("expert_labels_1" in json.loads(p.read_text()) for p in folder.glob("*.json"))
    assert any(row["quality_1"] for row in rows) and any(row["dyspnea_1"] in ("True", "False") for row in rows)


def test_ukcovid_layout(corpus: Path) -> None:
    root = corpus / "ukcovid"
    participants = read_csv(root / "participant_metadata.csv")
    assert {row["covid_test_result"] for row in participants} == {"Positive", "Negative", "Unknown/Void"}
    assert {row["covid_test_method"] for row in participants} <= {"PCR", "LFT"}
    audio_rows = read_csv(root / "audio_metadata.csv")
    assert [r["participant_identifier"] for r in audio_rows] == [r["participant_identifier"] for r in participants]
    header_only = 0
    for row in audio_rows:
        for modality in ("cough", "three_cough", "exhalation"):
            path = root / "audio" / row[f"{modality}_file_name"]
            assert path.name == f"{row['participant_identifier']}_{modality}.wav"
            assert int(row[f"{modality}_size"]) == path.stat().st_size
            header_only += path.stat().st_size <= 44
            assert sf.info(path).samplerate == int(row[f"{modality}_sample_rate"]) == 48_000
    assert header_only == 1
    splits = read_csv(root / "train_test_splits.csv")
    assert {row["splits"] for row in splits} <= {"train", "val", "test", "long"}


def test_virufy_layout(corpus: Path) -> None:
    clinical = corpus / "virufy" / "clinical"
    rows = read_csv(clinical / "labels.csv")
    assert len(rows) == 6 and {row["corona_test"] for row in rows} == {"positive", "negative"}
    segment_sizes = set()
    for row in rows:
        assert re.fullmatch(r"\d{1,2}/\d{1,2}", row["date"]) and row["medical_history"].endswith(",")
        stem = row["cough_filename"].removesuffix(".mp3")
        folder = "pos" if row["corona_test"] == "positive" else "neg"
        assert re.fullmatch(rf"{folder}-\d{{4}}-\d{{3}}-cough-[mf]-{row['age']}", stem)
        info = sf.info(clinical / "original" / folder / row["cough_filename"])
        assert (info.format, info.samplerate, info.channels) == ("MP3", 48_000, 1) and 7.5 < info.duration < 8.5
        segments = sorted(clinical.glob(f"segmented/{folder}/{stem}-*.mp3"))
        ks = sorted(int(p.stem.rsplit("-", 1)[1]) for p in segments)
        assert ks[0] == 0 and len(ks) < ks[-1] + 1
        segment_sizes |= {p.stat().st_size for p in segments}
        assert sf.info(segments[0]).samplerate == 48_000
    assert len(segment_sizes) == 1


def test_icbhi_layout_and_cycles_within_duration(corpus: Path) -> None:
    root = corpus / "icbhi"
    splits = dict(line.split("\t") for line in (root / "ICBHI_challenge_train_test.txt").read_text().splitlines())
    assert set(splits.values()) == {"train", "test"}
    subtypes, flag_pairs = set(), set()
    for stem in splits:
        pid, _, _, _, device = stem.split("_")
        info = sf.info(root / "ICBHI_final_database" / f"{stem}.wav")
        assert info.samplerate == (4_000 if device == "Litt3200" else 44_100) and 10.0 <= info.duration <= 20.0
        subtypes.add(info.subtype)
        for line in (root / "ICBHI_final_database" / f"{stem}.txt").read_text().splitlines():
            onset, offset, crackles, wheezes = line.split("\t")
            assert re.fullmatch(r"\d+\.\d{3}", onset) and 0 <= float(onset) < float(offset) <= info.duration
            flag_pairs.add((int(crackles), int(wheezes)))
    assert subtypes == {"PCM_16", "PCM_24"}
    assert flag_pairs == {(0, 0), (1, 0), (0, 1), (1, 1)}
    diagnoses = dict(line.split("\t") for line in (root / "ICBHI_Challenge_diagnosis.txt").read_text().splitlines())
    assert set(diagnoses) == {stem.split("_")[0] for stem in splits}
    demographic_lines = (root / "ICBHI_Challenge_demographic_information.txt").read_text().splitlines()
    demographics = [line.split("\t") for line in demographic_lines]
    assert all(len(fields) == 6 for fields in demographics)
    assert any(fields[1:3] == ["NA", "NA"] for fields in demographics)


def wheeze_run_s(cycle: np.ndarray, sr: int) -> float:
    """Longest stretch (s) of STFT frames with a tonal 100-1000 Hz peak >15 dB over the band median."""
    nperseg = 2 ** int(np.ceil(np.log2(0.064 * sr)))
    freqs, _, spectrum = signal.stft(cycle, sr, nperseg=nperseg, noverlap=nperseg // 2)
    band = np.abs(spectrum[(freqs >= 90) & (freqs <= 1100)])
    tonal = 20 * np.log10(band.max(0) / np.median(band, 0)) > 15
    peak_bins = band.argmax(0)
    longest = run = 0
    for frame, is_tonal in enumerate(tonal):
        continues = frame > 0 and tonal[frame - 1] and abs(int(peak_bins[frame]) - int(peak_bins[frame - 1])) <= 2
        run = (run + 1 if continues else 1) if is_tonal else 0
        longest = max(longest, run)
    return longest * (nperseg // 2) / sr


def crackle_crest(cycle: np.ndarray, sr: int) -> float:
    """Peak-to-RMS ratio of the high-passed cycle: clicks stand far above band-limited breath noise."""
    sos = signal.butter(4, min(2500.0, 0.3 * sr), btype="highpass", fs=sr, output="sos")
    high = signal.sosfilt(sos, cycle)
    return float(np.abs(high).max() / np.sqrt(np.mean(high**2)))


def test_icbhi_flags_match_the_synthesised_sounds(corpus: Path) -> None:
    for annotation in sorted((corpus / "icbhi" / "ICBHI_final_database").glob("*.txt")):
        samples, sr = sf.read(annotation.with_suffix(".wav"))
        for line in annotation.read_text().splitlines():
            onset, offset, crackles, wheezes = (float(v) for v in line.split("\t"))
            cycle = samples[round(onset * sr) : round(offset * sr)]
            assert (wheeze_run_s(cycle, sr) > 0.18) == bool(wheezes), f"{annotation.name} {line}"
            assert (crackle_crest(cycle, sr) > 11.0) == bool(crackles), f"{annotation.name} {line}"


def test_noise_bank_catalogue_matches_files(corpus: Path) -> None:
    rows = read_csv(corpus / "noise" / "noise_bank.csv")
    assert sorted({row["category"] for row in rows}) == ["babble", "classroom", "hum"] and len(rows) == 9
    for row in rows:
        assert re.fullmatch(rf"{row['category']}/{row['category']}_\d\d\.wav", row["path"])
        samples, sr = sf.read(corpus / "noise" / row["path"], dtype="float32")
        assert sr == 44_100 and samples.size == 5 * 44_100
    first = rows[0]
    generator = getattr(synth, first["generator"].rsplit(".", 1)[1])
    regenerated = generator(np.random.default_rng(int(first["seed"])), 44_100, 5.0)
    stored, _ = sf.read(corpus / "noise" / first["path"], dtype="float32")
    np.testing.assert_allclose(stored, regenerated, atol=1 / 16_000)


def test_generation_is_byte_identical(corpus: Path, tmp_path: Path) -> None:
    generate_demo_corpus(tmp_path, size="small", seed=0)
    assert file_digests(tmp_path) == file_digests(corpus)


def test_second_call_is_a_no_op(corpus: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*")}
    generate_demo_corpus(corpus, size="small", seed=0)
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*")} == before


def test_changed_seed_rebuilds_in_place_without_leftovers(tmp_path: Path) -> None:
    generate_demo_corpus(tmp_path, seed=0, datasets=["ccs"])
    first = file_digests(tmp_path / "ccs")
    generate_demo_corpus(tmp_path, seed=1, datasets=["ccs"])
    assert json.loads((tmp_path / "ccs" / ".complete").read_text())["seed"] == 1
    assert file_digests(tmp_path / "ccs") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccs", "noise"]


def test_missing_ffmpeg_fails_clearly_and_leaves_no_partial_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(encode.shutil, "which", lambda name: None)
    with pytest.raises(encode.FfmpegNotFoundError, match="ffmpeg"):
        generate_demo_corpus(tmp_path, datasets=["iatos"])
    assert not (tmp_path / "iatos").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rejects_unknown_size_and_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        generate_demo_corpus(tmp_path, size="huge")
    with pytest.raises(ValueError, match="datasets"):
        generate_demo_corpus(tmp_path, datasets=["fsd50k"])


def test_positive_coughs_have_lower_voiced_tail_f0() -> None:
    rng = np.random.default_rng(123)
    sr = 16_000
    positive = [voiced_tail_f0(synth.cough(rng, sr, covid_positive=True), sr) for _ in range(40)]
    negative = [voiced_tail_f0(synth.cough(rng, sr, covid_positive=False), sr) for _ in range(40)]
    assert 80 < np.mean(positive) < 160 < np.mean(negative) < 270


def test_positive_coughs_are_longer() -> None:
    rng = np.random.default_rng(7)
    sr = 16_000
    lengths = {label: [synth.cough(rng, sr, label).size / sr for _ in range(20)] for label in (True, False)}
    assert min(lengths[True]) > max(lengths[False])


def test_corpus_cough_intervals_carry_the_class_difference(corpus: Path) -> None:
    final = corpus / "aicovidvn" / "aicv115m_final_public_train"
    f0_by_result: dict[str, list[float]] = {"0": [], "1": []}
    for row in read_csv(final / "public_train_metadata.csv"):
        samples, sr = sf.read(final / "public_train_audio_files" / f"{row['uuid']}.wav")
        for interval in ast.literal_eval(row["cough_intervals"]):
            cough = samples[round(interval["start"] * sr) : round(interval["end"] * sr)]
            f0_by_result[row["assessment_result"]].append(voiced_tail_f0(cough, sr))
    assert np.mean(f0_by_result["1"]) < 160 < np.mean(f0_by_result["0"])


def test_cough_recording_respects_gaps_and_peak() -> None:
    rng = np.random.default_rng(3)
    samples, intervals = synth.cough_recording(rng, 16_000, synth.min_cough_recording_s(4), 4, covid_positive=True)
    assert samples.dtype == np.float32 and abs(20 * np.log10(np.abs(samples).max()) - synth.PEAK_DBFS) < 0.01
    gaps = [later[0] - earlier[1] for earlier, later in zip(intervals, intervals[1:])]
    assert len(intervals) == 4 and min(gaps) >= synth.MIN_COUGH_GAP_S - 1e-3
    with pytest.raises(ValueError, match="duration_s"):
        synth.cough_recording(rng, 16_000, 1.0, 4, covid_positive=False)


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    real_data = tmp_path / "ccs" / "dist"
    real_data.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a demo corpus folder"):
        generate_demo_corpus(tmp_path, datasets=["ccs"])
    assert real_data.is_dir() and not list(real_data.iterdir())
