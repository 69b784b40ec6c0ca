"""Virufy clinical layout: ``labels.csv``, 8 s originals and fixed 1.6 s single-cough segments (mp3).

Originals: ``clinical/original/{pos,neg}/<pos|neg>-MMDD-NNN-cough-<m|f>-<age>.mp3``,
48 kHz mono 64 kb/s, 4-8 coughs each. Segments: ``clinical/segmented/{pos,neg}/<stem>-<k>.mp3``,
k counting the original's coughs from 0: like Virufy's, each holds one cough (cut from the
original at its true start/end) followed by digital silence up to 1.6 s. One segment per
patient, never the first or last, is left out (as Virufy removed noisy ones), so every k
sequence has a gap.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import MP3, LossyBatch
from cough_pipeline.demo_corpus.layouts.common import pick, random_date, shuffled_labels, write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 48_000
ORIGINAL_S = 8.0
SEGMENT_S = 1.6
FIRST_PATIENT_NUMBER = 83
HEADER = (
    "date", "corona_test", "age", "gender", "medical_history", "smoker", "patient_reported_symptoms", "cough_filename",
)  # fmt: skip
COLLECTION_PERIOD = (dt.date(2020, 4, 21), dt.date(2020, 4, 30))
HISTORIES = ("Asthma,", "Congestive heart failure,", "Diabetes,Hypertension,")
SYMPTOMS = ("Cough,", "Shortness of breath,", "Fever,Cough,", "Sore throat,Cough,")


def _list_field(rng: np.random.Generator, choices: tuple[str, ...], probability: float) -> str:
    """A comma-joined list with trailing comma, or ``none,`` when empty (Virufy's convention)."""
    return pick(rng, choices) if rng.random() < probability else "none,"


def _segment(samples: np.ndarray, cough_start_s: float, cough_end_s: float) -> np.ndarray:
    """One cough cut from ``samples`` and padded with zeros to the fixed 1.6 s (Virufy's manual segments)."""
    cough = samples[round(cough_start_s * SAMPLE_RATE) : round(cough_end_s * SAMPLE_RATE)]
    segment = np.zeros(round(SEGMENT_S * SAMPLE_RATE), dtype=samples.dtype)
    segment[: min(cough.size, segment.size)] = cough[: segment.size]
    return segment


def _queue_patient(
    root: Path, rng: np.random.Generator, batch: LossyBatch, stem: str, folder: str, positive: bool
) -> None:
    """Queue one patient's original and its single-cough segments (skipping one k) on ``batch``."""
    samples, intervals = synth.cough_recording(rng, SAMPLE_RATE, ORIGINAL_S, int(rng.integers(4, 9)), positive)
    original_dir = root / "clinical" / "original" / folder
    segment_dir = root / "clinical" / "segmented" / folder
    original_dir.mkdir(parents=True, exist_ok=True)
    segment_dir.mkdir(parents=True, exist_ok=True)
    batch.add(original_dir / f"{stem}.mp3", samples, SAMPLE_RATE, MP3)
    removed = int(rng.integers(1, len(intervals) - 1))
    for k, (start_s, end_s) in enumerate(intervals):
        if k != removed:
            batch.add(segment_dir / f"{stem}-{k}.mp3", _segment(samples, start_s, end_s), SAMPLE_RATE, MP3)


def write_virufy(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write ``clinical/labels.csv`` and the mp3 files; patient numbers NNN rise with the visit date."""
    rows = []
    batch = LossyBatch()
    visits = sorted(random_date(rng, *COLLECTION_PERIOD) for _ in range(size.virufy_patients))
    for index, (label, visit) in enumerate(zip(shuffled_labels(rng, size.virufy_patients), visits)):
        folder = "pos" if label == "positive" else "neg"
        age, gender = int(rng.integers(20, 80)), pick(rng, ("male", "female"))
        stem = f"{folder}-{visit:%m%d}-{FIRST_PATIENT_NUMBER + index:03d}-cough-{gender[0]}-{age}"
        _queue_patient(root, rng, batch, stem, folder, label == "positive")
        rows.append((
            f"{visit.month}/{visit.day}", label, age, gender, _list_field(rng, HISTORIES, 0.4),
            pick(rng, ("yes", "no", "no")), _list_field(rng, SYMPTOMS, 0.6 if label == "positive" else 0.2),
            f"{stem}.mp3",
        ))  # fmt: skip
    batch.encode()
    write_csv(root / "clinical" / "labels.csv", HEADER, rows)
