"""Every kind of bad input ends up as a quarantine row with its reason, or as a clear error: nothing is lost.

The fixture is a CCS-layout folder built here (``dist/wav`` + ``dist/lab/*.csv``); each test breaks one thing and
checks that (a) the affected recording is in the quarantine with the expected reason and (b) every input row is
accounted for, counted independently of the builder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.datasets.base import LayoutError
from cough_pipeline.manifest import build_manifest
from cough_pipeline.schema import ManifestSchemaError
from tests.conftest import write_tone


def make_ccs(root: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    """``rows``: split -> [(filename, label)]; writes a distinct tone for every listed filename."""
    for split, entries in rows.items():
        (root / "dist" / "lab").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(entries, columns=["filename", "label"]).to_csv(root / "dist" / "lab" / f"{split}.csv", index=False)
    frequency = 200.0
    for entries in rows.values():
        for filename, _ in entries:
            frequency += 37.0
            write_tone(root / "dist" / "wav" / filename, frequency=frequency)
    return root


BASE = {
    "train": [("train_001.wav", "positive"), ("train_002.wav", "negative"), ("train_003.wav", "negative")],
    "devel": [("devel_001.wav", "positive")],
}


def metadata_rows(root: Path) -> int:
    return sum(len(pd.read_csv(p)) for p in (root / "dist" / "lab").glob("*.csv"))


def quarantined(build, recording_id: str) -> pd.Series:
    rows = build.quarantine[build.quarantine["recording_id"] == recording_id]
    assert len(rows) == 1, f"{recording_id} should be quarantined exactly once, found {len(rows)}"
    return rows.iloc[0]


def test_clean_folder_keeps_every_row(tmp_path):
    root = make_ccs(tmp_path, BASE)
    build = build_manifest("ccs", root)
    assert len(build.manifest) == 4 and build.quarantine.empty
    assert set(build.manifest["official_split"]) == {"train", "dev"}
    assert build.manifest["sample_rate"].eq(16_000).all()


def test_corrupt_audio_is_quarantined_as_unreadable(tmp_path):
    root = make_ccs(tmp_path, BASE)
    (root / "dist" / "wav" / "train_002.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 8)
    build = build_manifest("ccs", root)
    row = quarantined(build, "ccs:train_002")
    assert row["reason"] == "audio_unreadable"
    assert "libsndfile" in row["detail"] and "ffprobe" in row["detail"] and str(tmp_path) not in row["detail"]
    assert build.accounted and build.rows_in == metadata_rows(root)


def test_zero_length_file_is_quarantined_as_empty(tmp_path):
    root = make_ccs(tmp_path, BASE)
    (root / "dist" / "wav" / "train_003.wav").write_bytes(b"")
    build = build_manifest("ccs", root)
    assert quarantined(build, "ccs:train_003")["reason"] == "audio_empty"
    assert build.accounted and len(build.manifest) == 3


def test_header_only_wav_is_quarantined_as_no_samples(tmp_path):
    root = make_ccs(tmp_path, BASE)
    path = root / "dist" / "wav" / "devel_001.wav"
    sf.write(path, [], 16_000, subtype="PCM_16")
    assert path.stat().st_size == 44  # the canonical header-only wav
    build = build_manifest("ccs", root)
    assert quarantined(build, "ccs:devel_001")["reason"] == "audio_no_samples"
    assert build.accounted


def test_missing_metadata_column_is_a_clear_error(tmp_path):
    root = make_ccs(tmp_path, BASE)
    pd.DataFrame({"filename": ["train_001.wav"], "diagnosis": ["positive"]}).to_csv(
        root / "dist" / "lab" / "train.csv", index=False
    )
    with pytest.raises(ManifestSchemaError, match=r"train\.csv lacks required column\(s\) \['label'\].*diagnosis"):
        build_manifest("ccs", root)


def test_unknown_label_is_quarantined(tmp_path):
    root = make_ccs(tmp_path, {**BASE, "train": BASE["train"] + [("train_004.wav", "probably")]})
    build = build_manifest("ccs", root)
    row = quarantined(build, "ccs:train_004")
    assert row["reason"] == "unknown_label" and "'probably'" in row["detail"]
    assert row["source_file"] == "dist/lab/train.csv" and row["source_row"] == 4
    assert build.accounted and build.rows_in == metadata_rows(root)


def test_blank_file_name_is_quarantined_as_missing_id(tmp_path):
    root = make_ccs(tmp_path, BASE)
    rows = BASE["train"] + [("", "positive")]
    pd.DataFrame(rows, columns=["filename", "label"]).to_csv(root / "dist" / "lab" / "train.csv", index=False)
    build = build_manifest("ccs", root)
    blank = build.quarantine[build.quarantine["reason"] == "missing_id"]
    assert len(blank) == 1 and blank.iloc[0]["source_row"] == 4 and pd.isna(blank.iloc[0]["native_id"])
    assert not build.manifest["recording_id"].str.contains("nan").any()
    assert build.accounted and build.rows_in == metadata_rows(root)


def test_duplicate_ids_keep_the_first_and_quarantine_the_rest(tmp_path):
    root = make_ccs(tmp_path, BASE)
    rows = BASE["train"] + [("train_002.wav", "positive")]
    pd.DataFrame(rows, columns=["filename", "label"]).to_csv(root / "dist" / "lab" / "train.csv", index=False)
    build = build_manifest("ccs", root)
    kept = build.manifest.set_index("recording_id")
    assert kept.loc["ccs:train_002", "covid_label"] == "negative"  # the first row wins
    row = quarantined(build, "ccs:train_002")
    assert row["reason"] == "duplicate_id" and row["source_row"] == 4
    assert build.accounted and build.rows_in == metadata_rows(root)


def test_listed_but_absent_file_is_quarantined_as_missing(tmp_path):
    root = make_ccs(tmp_path, BASE)
    (root / "dist" / "wav" / "train_001.wav").unlink()
    build = build_manifest("ccs", root)
    row = quarantined(build, "ccs:train_001")
    assert row["reason"] == "audio_missing" and row["audio_path"] == "dist/wav/train_001.wav"
    assert build.accounted


def test_present_but_unlisted_file_is_quarantined(tmp_path):
    root = make_ccs(tmp_path, BASE)
    write_tone(root / "dist" / "wav" / "train_099.wav", frequency=999.0)
    build = build_manifest("ccs", root)
    rows = build.quarantine[build.quarantine["audio_path"] == "dist/wav/train_099.wav"]
    assert rows["reason"].tolist() == ["unlisted_file"]
    assert build.rows_in == metadata_rows(root) + 1 and build.accounted


def test_identical_audio_is_kept_once_and_marked_duplicate(tmp_path):
    root = make_ccs(tmp_path, BASE)
    source = root / "dist" / "wav" / "train_001.wav"
    (root / "dist" / "wav" / "devel_001.wav").write_bytes(source.read_bytes())
    build = build_manifest("ccs", root)
    by_id = build.manifest.set_index("recording_id")
    assert by_id.loc["ccs:train_001", "content_hash"] == by_id.loc["ccs:devel_001", "content_hash"]
    # Both carry an official split, so the first in recording-id order is kept and the other points to it.
    assert pd.isna(by_id.loc["ccs:devel_001", "exclude_reason"])
    assert by_id.loc["ccs:train_001", "exclude_reason"] == "duplicate"
    assert '"duplicate_of": "ccs:devel_001"' in by_id.loc["ccs:train_001", "extra"]


def test_unknown_layout_lists_expected_and_found(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(LayoutError, match=r"(?s)Expected one of:.*dist/wav.*Found:.*something_else/"):
        build_manifest("ccs", tmp_path)
