"""AICovidVN (AICV-115M) layout: final-round train set, 8 kHz warm-up set and macOS junk.

``cough_intervals`` holds the true synthetic cough times, written as a Python-literal
list such as ``[{'start': 0.31, 'end': 0.82, 'labels': ['cough']}]`` (3 decimals).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.demo_corpus.layouts.common import cough_clip, pick, shuffled_labels, uuid_like, write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

FINAL_DIR = "aicv115m_final_public_train"
WARMUP_DIR = "aicv115m_public_train"
FINAL_RATE = 48_000
ODD_FINAL_RATE = 44_100
WARMUP_RATE = 8_000
METADATA_HEADER = ("uuid", "subject_age", "subject_gender", "audio_noise_note", "cough_intervals", "assessment_result")
MEDICAL_HEADER = (
    "uuid", "symptoms_status_choice", "medical_condition_choice", "smoke_status_choice", "insomnia_status_choice",
)  # fmt: skip
AGE_GROUPS = (
    "group_0_2", "group_3_5", "group_6_13", "group_14_18", "group_19_33",
    "group_34_48", "group_49_64", "group_65_78", "group_79_98",
)  # fmt: skip
NOISE_NOTE = "nhiễu nền, có tiếng nói"
APPLEDOUBLE_JUNK = b"\x00\x05\x16\x07"
JUNK_FILES = 3


def _format_intervals(intervals: list[tuple[float, float]]) -> str:
    """Render cough times the way the challenge CSV does: a Python-literal list of dicts."""
    items = [f"{{'start': {start:.3f}, 'end': {end:.3f}, 'labels': ['cough']}}" for start, end in intervals]
    return "[" + ", ".join(items) + "]"


def _write_recordings(
    rng: np.random.Generator, audio_dir: Path, sample_rates: list[int], noisy_indices: set[int]
) -> list[tuple]:
    """Write one balanced-label recording per entry of ``sample_rates``; return the metadata rows."""
    audio_dir.mkdir(parents=True)
    rows = []
    for index, label in enumerate(shuffled_labels(rng, len(sample_rates))):
        recording_id = uuid_like(rng)
        sample_rate = sample_rates[index]
        samples, intervals = cough_clip(rng, sample_rate, int(rng.integers(1, 3)), label == "positive")
        write_wav(audio_dir / f"{recording_id}.wav", samples, sample_rate)
        rows.append((
            recording_id, pick(rng, AGE_GROUPS), pick(rng, ("male", "female", "male", "female", "")),
            NOISE_NOTE if index in noisy_indices else "", _format_intervals(intervals), int(label == "positive"),
        ))  # fmt: skip
    return rows


def _medical_row(rng: np.random.Generator, recording_id: str) -> tuple[str, ...]:
    """One ``public_train_medical_condition.csv`` row of free-choice answers."""
    return (
        recording_id,
        pick(rng, ("No", "cough", "fever,cough", "sore_throat", "")),
        pick(rng, ("None", "asthma", "hypertension", "")),
        pick(rng, ("never", "former", "current")),
        pick(rng, ("no", "yes")),
    )


def write_aicovidvn(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write both rounds; every fifth final-round file is 44.1 kHz, two carry a noise note."""
    final = root / FINAL_DIR
    final_rates = [ODD_FINAL_RATE if index % 5 == 4 else FINAL_RATE for index in range(size.covid_recordings)]
    rows = _write_recordings(rng, final / "public_train_audio_files", final_rates, noisy_indices={1, 6})
    write_csv(final / "public_train_metadata.csv", METADATA_HEADER, rows)
    write_csv(final / "public_train_medical_condition.csv", MEDICAL_HEADER, [_medical_row(rng, r[0]) for r in rows])
    junk_dir = final / "__MACOSX" / "public_train_audio_files"
    junk_dir.mkdir(parents=True)
    for row in rows[:JUNK_FILES]:
        (junk_dir / f"._{row[0]}.wav").write_bytes(APPLEDOUBLE_JUNK)
    warmup = root / WARMUP_DIR
    warmup_rates = [WARMUP_RATE] * size.aicovidvn_warmup_recordings
    warmup_rows = _write_recordings(rng, warmup / "train_audio_files_8k", warmup_rates, noisy_indices=set())
    write_csv(warmup / "metadata_train_challenge.csv", METADATA_HEADER, warmup_rows)
