"""UK COVID-19 Vocal Audio Dataset (open edition) layout: three CSVs plus ``audio/<name>.wav`` at 48 kHz.

Per participant: ``<id>_cough.wav`` (one cough), ``<id>_three_cough.wav`` (three
coughs) and ``<id>_exhalation.wav`` (a breath). One participant's exhalation is a
header-only 44-byte wav (``exhalation_length`` 0, ``missing_audio`` True), the case
the official code skips. ``m_length`` is seconds; ``m_size`` is the real byte size.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.demo_corpus.layouts.common import (
    cough_clip,
    pick,
    random_date,
    shuffled_labels,
    uuid_like,
    write_csv,
)
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 48_000
MODALITIES = ("cough", "three_cough", "exhalation")
SYMPTOMS = ("cough_any", "new_continuous_cough", "shortness_of_breath", "sore_throat", "fever_high_temperature")
PARTICIPANT_COLUMNS = (
    "participant_identifier", "age", "gender", "covid_test_result", "covid_test_method", "covid_test_date",
    "submission_date", "symptom_none", *(f"symptom_{s}" for s in SYMPTOMS),
    "respiratory_condition_asthma", "respiratory_condition_none", "smoker_status", "recruitment_source",
)  # fmt: skip
AUDIO_COLUMNS = (
    "participant_identifier",
    *(f"{m}_{field}" for m in MODALITIES for field in ("file_name", "sample_rate", "channels", "length", "size")),
    "missing_audio",
)
SPLIT_COLUMNS = (
    "participant_identifier", "splits", "naive_splits",
    "in_matched_rebalanced_train", "in_matched_rebalanced_test", "in_matched_rebalanced_long_test",
)  # fmt: skip
TEST_RESULT = {"positive": "Positive", "negative": "Negative", "unknown": "Unknown/Void"}
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84")
SMOKER_STATUSES = ("Never smoked", "Ex-smoker", "Current smoker", "Prefer not to say")
COLLECTION_PERIOD = (dt.date(2021, 3, 1), dt.date(2022, 3, 1))
LONGITUDINAL_START = dt.date(2021, 11, 29)
HEADER_ONLY_PARTICIPANT = 0


def _modality_audio(rng: np.random.Generator, modality: str, positive: bool) -> np.ndarray:
    """Samples for one modality: a single cough, three coughs or a deep exhalation."""
    if modality == "exhalation":
        return synth.breathing(rng, SAMPLE_RATE, rng.uniform(0.9, 1.1), deep=True)
    return cough_clip(rng, SAMPLE_RATE, 1 if modality == "cough" else 3, positive)[0]


def _write_audio(
    audio_dir: Path, rng: np.random.Generator, participant: str, positive: bool, header_only_exhalation: bool
) -> list:
    """Write the three files of one participant; return the ``audio_metadata.csv`` row."""
    row: list[object] = [participant]
    for modality in MODALITIES:
        file_name = f"{participant}_{modality}.wav"
        if header_only_exhalation and modality == "exhalation":
            audio = np.zeros(0, np.float32)
        else:
            audio = _modality_audio(rng, modality, positive)
        write_wav(audio_dir / file_name, audio, SAMPLE_RATE)
        row += [file_name, SAMPLE_RATE, 1, round(audio.size / SAMPLE_RATE, 3), (audio_dir / file_name).stat().st_size]
    return [*row, header_only_exhalation]


def _participant_row(rng: np.random.Generator, participant: str, label: str, submitted: dt.date) -> list:
    """One ``participant_metadata.csv`` row; symptom flags 1/0, likelier when positive."""
    symptom_rate = 0.5 if label == "positive" else 0.1
    symptoms = [int(rng.random() < symptom_rate) for _ in SYMPTOMS]
    asthma = int(rng.random() < 0.1)
    return [
        participant, pick(rng, AGE_BANDS), pick(rng, ("Male", "Female")), TEST_RESULT[label],
        pick(rng, ("PCR", "PCR", "PCR", "LFT")), (submitted - dt.timedelta(days=int(rng.integers(0, 5)))).isoformat(),
        submitted.isoformat(), int(not any(symptoms)), *symptoms, asthma, 1 - asthma,
        pick(rng, SMOKER_STATUSES), pick(rng, ("Test and Trace", "REACT")),
    ]  # fmt: skip


def _split_row(rng: np.random.Generator, participant: str, submitted: dt.date) -> list:
    """One ``train_test_splits.csv`` row; submissions after 2021-11-29 form the ``long`` split."""
    split = "long" if submitted > LONGITUDINAL_START else pick(rng, ("train", "train", "val", "test"))
    matched = rng.random() < 0.7
    return [
        participant, split, pick(rng, ("train", "train", "val", "test")),
        matched and split in ("train", "val"), matched and split == "test", matched and split == "long",
    ]  # fmt: skip


def write_ukcovid(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write the three metadata CSVs and every participant's audio."""
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True)
    labels = shuffled_labels(rng, size.covid_recordings, n_unknown=max(1, size.covid_recordings // 12))
    participants, audio_rows, split_rows = [], [], []
    for index, label in enumerate(labels):
        participant = uuid_like(rng)
        submitted = random_date(rng, *COLLECTION_PERIOD)
        participants.append(_participant_row(rng, participant, label, submitted))
        header_only = index == HEADER_ONLY_PARTICIPANT
        audio_rows.append(_write_audio(audio_dir, rng, participant, label == "positive", header_only))
        split_rows.append(_split_row(rng, participant, submitted))
    write_csv(root / "participant_metadata.csv", PARTICIPANT_COLUMNS, participants)
    write_csv(root / "audio_metadata.csv", AUDIO_COLUMNS, audio_rows)
    write_csv(root / "train_test_splits.csv", SPLIT_COLUMNS, split_rows)
