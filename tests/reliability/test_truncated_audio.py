"""A file cut short keeps its header, which still promises the whole recording: such a file is quarantined as
``audio_truncated`` instead of entering the manifest with part of its audio. Headers that leave the length open
(streaming writers) or carry chunks after the audio are not truncation. Something other than a file at an audio
path (a directory) is ``audio_unreadable``, not ``audio_missing``."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError, decode_audio
from cough_pipeline.manifest import build_manifest
from cough_pipeline.schema import QuarantineReason

RATE = 16_000
FRAMES = 15_520  # 0.970 s


def write_tone(path: Path, frames: int = FRAMES, **options) -> Path:
    t = np.arange(frames) / RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440.0 * t), RATE, **options)
    return path


def cut_to_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def decode_error(path: Path) -> AudioDecodeError:
    with pytest.raises(AudioDecodeError) as raised:
        decode_audio(path)
    return raised.value


def held_frames(detail: str) -> int:
    match = re.fullmatch(r"header declares (\d+) frames \(\d+\.\d{3} s\), file holds (\d+) \(\d+\.\d{3} s\)", detail)
    assert match, detail
    return int(match[2])


def test_a_wav_cut_to_half_its_bytes_is_truncated(tmp_path):
    path = cut_to_half(write_tone(tmp_path / "tone.wav", subtype="PCM_16"))
    held = sf.info(str(path)).frames  # libsndfile quietly reports only what is left
    assert 7_000 < held < 8_000
    error = decode_error(path)
    assert error.reason is QuarantineReason.AUDIO_TRUNCATED
    assert error.detail == f"header declares {FRAMES} frames (0.970 s), file holds {held} ({held / RATE:.3f} s)"


@pytest.mark.parametrize(
    "name, options",
    [
        ("float.wav", {"subtype": "FLOAT"}),  # carries a fact chunk before data
        ("stereo24.wav", {"subtype": "PCM_24", "format": "WAVEX"}),  # WAVE_FORMAT_EXTENSIBLE
        ("bigendian.wav", {"subtype": "PCM_16", "format": "WAV", "endian": "BIG"}),  # RIFX
        ("rf64.wav", {"subtype": "PCM_16", "format": "RF64"}),  # size in the ds64 chunk
        ("adpcm.wav", {"subtype": "IMA_ADPCM"}),  # counted by its fact chunk
        ("tone.flac", {"subtype": "PCM_16"}),  # STREAMINFO total samples; libsndfile fails, ffmpeg decodes a part
    ],
)
def test_other_wav_layouts_and_flac_cut_short_are_truncated(tmp_path, name, options):
    path = cut_to_half(write_tone(tmp_path / name, **options))
    error = decode_error(path)
    assert error.reason is QuarantineReason.AUDIO_TRUNCATED, error.detail
    assert error.detail.startswith("header declares ") and 0 < held_frames(error.detail) < FRAMES


def test_a_wav_cut_right_after_its_header_is_truncated_not_empty(tmp_path):
    path = write_tone(tmp_path / "tone.wav", subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:44])
    error = decode_error(path)
    assert error.reason is QuarantineReason.AUDIO_TRUNCATED and held_frames(error.detail) == 0


def test_an_intact_wav_decodes_whole(tmp_path):
    decoded = decode_audio(write_tone(tmp_path / "tone.wav", subtype="PCM_16"))
    assert decoded.samples.shape == (FRAMES, 1)


def test_a_streaming_header_of_unknown_length_is_not_truncation(tmp_path):
    path = write_tone(tmp_path / "stream.wav", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)  # RIFF size: unknown, as a writer to a pipe leaves it
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)  # data size: unknown
    path.write_bytes(bytes(data))
    assert decode_audio(path).samples.shape == (FRAMES, 1)


def test_a_chunk_after_the_audio_is_not_truncation(tmp_path):
    path = write_tone(tmp_path / "trailing.wav", subtype="PCM_16")
    info = b"INFO" + b"ISFT" + struct.pack("<I", 6) + b"tests\x00"
    data = bytearray(path.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info)
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))
    assert decode_audio(path).samples.shape == (FRAMES, 1)


def test_a_directory_is_unreadable_and_an_absent_path_missing(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    error = decode_error(tmp_path / "folder.wav")
    assert error.reason is QuarantineReason.AUDIO_UNREADABLE and "is a directory" in error.detail
    assert decode_error(tmp_path / "absent.wav").reason is QuarantineReason.AUDIO_MISSING


# ---- end to end, on copies of demo corpus datasets ----


def copy_dataset(demo_corpus: Path, dataset: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_corpus / dataset, tmp_path / dataset))


def only_row(quarantine: pd.DataFrame, recording_id: str) -> pd.Series:
    rows = quarantine[quarantine["recording_id"] == recording_id]
    assert len(rows) == 1, f"{recording_id} should be quarantined exactly once, found {len(rows)}"
    return rows.iloc[0]


def assert_accounted(build, rows_in: int) -> None:
    assert build.rows_in == rows_in == len(build.manifest) + len(build.quarantine)


def test_truncated_wav_is_quarantined_by_the_manifest_builder(demo_corpus, tmp_path):
    root = copy_dataset(demo_corpus, "ccs", tmp_path)
    before = build_manifest("ccs", root)
    path = root / "dist" / "wav" / "train_001.wav"
    declared = sf.info(str(path)).frames
    cut_to_half(path)
    held = sf.info(str(path)).frames

    build = build_manifest("ccs", root)
    row = only_row(build.quarantine, "ccs:train_001")
    assert row["reason"] == "audio_truncated" and row["audio_path"] == "dist/wav/train_001.wav"
    assert f"header declares {declared} frames" in row["detail"] and f"file holds {held} " in row["detail"]
    assert "ccs:train_001" not in set(build.manifest["recording_id"])
    assert len(build.manifest) == len(before.manifest) - 1 and len(build.quarantine) == len(before.quarantine) + 1
    assert_accounted(build, before.rows_in)


@pytest.mark.parametrize(
    "dataset, relative_path, recording_id",
    [
        ("ccs", "dist/wav/train_002.wav", "ccs:train_002"),  # path built from the metadata
        # found by listing the audio folder
        ("virufy", "clinical/original/neg/neg-0423-083-cough-m-75.mp3", "virufy:neg-0423-083-cough-m-75"),
    ],
)
def test_directory_in_place_of_audio_is_unreadable_end_to_end(
    demo_corpus, tmp_path, dataset, relative_path, recording_id
):
    root = copy_dataset(demo_corpus, dataset, tmp_path)
    before = build_manifest(dataset, root)
    path = root / relative_path
    path.unlink()
    path.mkdir()

    build = build_manifest(dataset, root)
    row = only_row(build.quarantine, recording_id)
    assert row["reason"] == "audio_unreadable" and "is a directory" in row["detail"]
    assert row["audio_path"] == relative_path
    assert len(build.manifest) == len(before.manifest) - 1
    assert_accounted(build, before.rows_in)
