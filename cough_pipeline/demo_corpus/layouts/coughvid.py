"""COUGHVID v3 layout: ``public_dataset_v3/coughvid_20211012/`` with webm/ogg Opus, JSON sidecars and CSV.

Every third recording is ``.ogg`` (Opus in Ogg), the rest ``.webm`` (Opus in WebM),
all 48 kHz mono. Two recordings are not coughs (mains hum, speech) and carry
``cough_detected`` below 0.8. Sidecar values are strings, as in the real JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import OGG_OPUS, WEBM_OPUS, LossyBatch
from cough_pipeline.demo_corpus.layouts.common import cough_clip, pick, shuffled_labels, uuid_like, write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 48_000
FOLDER = Path("public_dataset_v3") / "coughvid_20211012"
NON_COUGH_RECORDINGS = ("hum", "speech")
EXPERT_LABELLED = 3
STATUS = {"positive": "COVID-19", "negative": "healthy"}
EXPERT_FIELDS = (
    "quality", "cough_type", "dyspnea", "wheezing", "stridor",
    "choking", "congestion", "nothing", "diagnosis", "severity",
)  # fmt: skip
EXPERT_BOOLEANS = ("dyspnea", "wheezing", "stridor", "choking", "congestion", "nothing")
CSV_COLUMNS = (
    "uuid", "datetime", "cough_detected", "SNR", "latitude", "longitude", "age", "gender",
    "respiratory_condition", "fever_muscle_pain", "status", "status_SSL",
    *(f"{field}_{k}" for k in range(1, 5) for field in EXPERT_FIELDS),
)  # fmt: skip
UPLOAD_PERIOD_START = dt.datetime(2020, 4, 1, tzinfo=dt.timezone.utc)
UPLOAD_PERIOD_SECONDS = 300 * 24 * 3600


def _statuses(rng: np.random.Generator, n_coughs: int) -> list[str | None]:
    """COVID-19 / healthy roughly balanced, plus ``symptomatic`` and absent (``None``) statuses."""
    labels = shuffled_labels(rng, n_coughs, n_unknown=max(2, n_coughs // 5))
    unknown_cycle = iter(("symptomatic", None) * n_coughs)
    return [STATUS[label] if label in STATUS else next(unknown_cycle) for label in labels]


def _upload_time(rng: np.random.Generator) -> str:
    """An ISO timestamp with microseconds and ``+00:00``, like COUGHVID's ``datetime``."""
    moment = UPLOAD_PERIOD_START + dt.timedelta(seconds=float(rng.uniform(0, UPLOAD_PERIOD_SECONDS)))
    return moment.isoformat(timespec="microseconds")


def _expert_labels(rng: np.random.Generator, status: str | None) -> dict[str, str]:
    """One physician's annotation dict (values as strings)."""
    labels = {
        "quality": pick(rng, ("good", "ok", "poor")),
        "cough_type": pick(rng, ("wet", "dry", "unknown")),
        **{field: str(rng.random() < 0.2) for field in EXPERT_BOOLEANS},
        "diagnosis": "COVID-19" if status == "COVID-19" else pick(rng, ("healthy_cough", "upper_infection")),
        "severity": pick(rng, ("mild", "pseudocough", "unknown")),
    }
    return {field: labels[field] for field in EXPERT_FIELDS}


def _non_cough_audio(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A 1.5 s upload that is not a cough: mains hum or speech-like counting."""
    if kind == "hum":
        return synth.hum(rng, SAMPLE_RATE, 1.5)
    voice = synth.voiced_sound(rng, SAMPLE_RATE, 1.5, rng.uniform(100, 220), synth.NEUTRAL_FORMANTS_HZ, 4.0)
    return synth.peak_normalise(synth.peak_normalise(voice) + synth.background(rng, voice.size))


def _sidecar(rng: np.random.Generator, status: str | None, cough_detected: float) -> dict[str, str]:
    """The ``<uuid>.json`` content; rows without a status also lack the questionnaire answers."""
    sidecar = {"datetime": _upload_time(rng), "cough_detected": f"{cough_detected:.4f}"}
    if rng.random() < 0.8:
        sidecar.update(latitude=f"{rng.uniform(-40, 60):.1f}", longitude=f"{rng.uniform(-120, 140):.1f}")
    if status is not None:
        sidecar.update(
            age=str(int(rng.integers(15, 80))), gender=pick(rng, ("male", "female", "male", "female", "other")),
            respiratory_condition=str(rng.random() < 0.15),
            fever_muscle_pain=str(status == "COVID-19" and rng.random() < 0.5), status=status,
        )  # fmt: skip
    return sidecar


def _csv_row(rng: np.random.Generator, recording_id: str, sidecar: dict) -> dict[str, str]:
    """One ``metadata_compiled.csv`` row built from the sidecar (CSV booleans are True/False)."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update({key: value for key, value in sidecar.items() if not key.startswith("expert_labels")})
    row.update(uuid=recording_id, SNR=f"{rng.uniform(3.0, 30.0):.8f}")
    if "status" not in sidecar:
        row["status_SSL"] = pick(rng, ("healthy", "symptomatic", "COVID-19"))
    for field, value in sidecar.get("expert_labels_1", {}).items():
        row[f"{field}_1"] = value
    return row


FAILED_UPLOAD = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>\n"


def write_coughvid(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write the v3 folder: audio, sidecars and ``metadata_compiled.csv`` (leading unnamed index)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    n_coughs = size.covid_recordings - len(NON_COUGH_RECORDINGS)
    recordings = [("cough", status) for status in _statuses(rng, n_coughs)]
    recordings += [(kind, pick(rng, ("healthy", None))) for kind in NON_COUGH_RECORDINGS]
    rows = []
    batch = LossyBatch()
    failed_upload = None
    for index, (kind, status) in enumerate(recordings):
        recording_id = uuid_like(rng)
        if kind == "cough":
            audio = cough_clip(rng, SAMPLE_RATE, int(rng.integers(1, 4)), status == "COVID-19")[0]
            sidecar = _sidecar(rng, status, rng.uniform(0.85, 0.999))
        else:
            audio = _non_cough_audio(rng, kind)
            sidecar = _sidecar(rng, status, rng.uniform(0.01, 0.3))
        if kind == "cough" and index < EXPERT_LABELLED:
            sidecar["expert_labels_1"] = _expert_labels(rng, status)
        lossy_format = OGG_OPUS if index % 3 == 2 else WEBM_OPUS
        batch.add(folder / f"{recording_id}.{lossy_format.container}", audio, SAMPLE_RATE, lossy_format)
        failed_upload = failed_upload or folder / f"{recording_id}.{lossy_format.container}"
        (folder / f"{recording_id}.json").write_text(json.dumps(sidecar), encoding="utf-8")
        rows.append(_csv_row(rng, recording_id, sidecar))
    batch.encode()
    # A planted defect (see PLANTED_DEFECTS): the first upload holds a server error page instead of audio.
    failed_upload.write_bytes(FAILED_UPLOAD)
    rows.sort(key=lambda row: row["uuid"])
    indexed_rows = [(index, *(row[column] for column in CSV_COLUMNS)) for index, row in enumerate(rows)]
    write_csv(folder / "metadata_compiled.csv", ("", *CSV_COLUMNS), indexed_rows)
