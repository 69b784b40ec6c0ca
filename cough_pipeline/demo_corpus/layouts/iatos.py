"""IATos layout: Latin-1, ``;``-separated ``metadata.csv`` plus WhatsApp-like ``audios/<id>.ogg`` (Opus, 48 kHz)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus.encode import OGG_OPUS, LossyBatch
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
HEADER = ("id_audio", "resultado_pcr", "sexo", "edad", "fecha_hisopado", "comentario")
PCR_RESULT = {"positive": "positivo", "negative": "negativo"}
ACCENTED_COMMENT = "tos leve, sin fiebre - señal débil"
OTHER_COMMENTS = ("sin síntomas", "tos seca, dolor de garganta", "grabación con ruido de calle", "")
SWAB_PERIOD = (dt.date(2020, 8, 11), dt.date(2020, 12, 2))


def write_iatos(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write ``metadata.csv`` (Latin-1; the first row's comment has accents) and the Opus notes."""
    audio_dir = root / "audios"
    audio_dir.mkdir(parents=True)
    rows = []
    batch = LossyBatch()
    for index, label in enumerate(shuffled_labels(rng, size.covid_recordings)):
        audio_id = uuid_like(rng)
        samples, _ = cough_clip(rng, SAMPLE_RATE, int(rng.integers(1, 4)), label == "positive")
        batch.add(audio_dir / f"{audio_id}.ogg", samples, SAMPLE_RATE, OGG_OPUS, bitrate_kbps=16)
        comment = ACCENTED_COMMENT if index == 0 else pick(rng, OTHER_COMMENTS)
        swab_date = random_date(rng, *SWAB_PERIOD)
        sex = pick(rng, ("masculino", "femenino"))
        age = int(rng.integers(18, 80))
        rows.append((audio_id, PCR_RESULT[label], sex, age, swab_date.strftime("%d/%m/%Y"), comment))
    batch.encode()
    write_csv(root / "metadata.csv", HEADER, rows, delimiter=";", encoding="latin-1")
