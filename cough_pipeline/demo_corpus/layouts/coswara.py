"""Coswara-Data layout: per-date split tarballs, per-date CSVs, ``combined_data.csv``, annotations.

Each date folder ``<YYYYMMDD>/`` holds ``<YYYYMMDD>.csv`` and ``<YYYYMMDD>.tar.gz.aa``,
``.ab``, ... which concatenate into one gzip tarball whose (file-only) members are
``<YYYYMMDD>/<participant id>/<task>.wav``, 44.1 kHz mono PCM16. The tarball is
deterministic: sorted members, mtime 0, uid/gid 0, gzip mtime 0.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import string
import tarfile
from collections.abc import Iterator
from itertools import product
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import wav_bytes
from cough_pipeline.demo_corpus.layouts.common import alnum_id, cough_clip, pick, write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 44_100
PART_BYTES = 256 * 1024
RECORD_DATES = (dt.date(2020, 4, 17), dt.date(2020, 7, 20), dt.date(2021, 4, 26))
TASKS = (
    "breathing-deep", "breathing-shallow", "cough-heavy", "cough-shallow",
    "counting-fast", "counting-normal", "vowel-a", "vowel-e", "vowel-o",
)  # fmt: skip
COMBINED_COLUMNS = (
    "id", "a", "covid_status", "record_date", "ep", "g", "l_c", "l_l", "l_s", "rU", "smoker", "cold", "ht",
    "diabetes", "cough", "ctDate", "ctScan", "ctScore", "diarrhoea", "fever", "loss_of_smell", "mp", "testType",
    "test_date", "test_status", "um", "vacc", "bd", "others_resp", "ftg", "st", "ihd", "asthma",
    "others_preexist", "cld", "pneumonia",
)  # fmt: skip
PER_DATE_COLUMN_SETS = (
    ("id", "l_c", "a", "record_date", "covid_status", "g"),
    ("id", "a", "covid_status", "record_date", "g", "l_c", "l_l", "l_s", "rU", "test_status"),
)
SYMPTOM_FLAGS = ("cough", "fever", "cold", "st", "bd", "ftg", "mp", "loss_of_smell", "diarrhoea")
CONDITION_FLAGS = ("smoker", "ht", "diabetes", "ihd", "asthma", "others_preexist", "cld", "pneumonia", "others_resp")
SYMPTOMATIC_POSITIVE_STATUSES = ("positive_mild", "positive_moderate")
POSITIVE_STATUSES = (*SYMPTOMATIC_POSITIVE_STATUSES, "positive_asymp")
AMBIGUOUS_STATUSES = ("no_resp_illness_exposed", "resp_illness_not_identified", "recovered_full", "under_validation")
LOCATIONS = (
    ("India", "Bangalore Urban", "Karnataka"),
    ("India", "Mumbai", "Maharashtra"),
    ("Greece", "Chalkida", "Evia"),
)
LEGEND = {
    "a": "Age (number)",
    "covid_status": "Health status (e.g. positive_mild, healthy, etc.)",
    "record_date": "Date when the user recorded and submitted the samples",
    "ep": "Proficient in English (y/n)",
    "g": "Gender (male/female/other)",
    "l_c": "Country",
    "l_l": "Locality",
    "l_s": "State",
    "rU": "Returning User (y/n)",
    "test_status": "COVID Test status (p/n/na/ut)",
    "testType": "Type of test (rtpcr/rat)",
    "um": "Using Mask (y/n)",
    "vacc": "Vaccination status (y/n/p)",
    "cough": "Cough",
    "fever": "Fever",
}
QUALITY_WEIGHTS = (0.15, 0.35, 0.5)


def _covid_statuses(rng: np.random.Generator, n: int) -> list[str]:
    """Positive (mild/moderate/asymp) and healthy in equal parts, plus >= 2 ambiguous/excluded, shuffled."""
    n_ambiguous = max(2, round(n / 6))
    n_positive = (n - n_ambiguous) // 2
    statuses = (
        [POSITIVE_STATUSES[i % 3] for i in range(n_positive)]
        + ["healthy"] * (n - n_ambiguous - n_positive)
        + [AMBIGUOUS_STATUSES[i % 4] for i in range(n_ambiguous)]
    )
    return [statuses[i] for i in rng.permutation(n)]


def _test_fields(rng: np.random.Generator, status: str, record_date: dt.date) -> dict[str, str]:
    """testType / test_date / test_status consistent with ``covid_status``."""
    if status == "under_validation":
        return {"testType": "", "test_date": "", "test_status": "ut"}
    if status in POSITIVE_STATUSES or status == "recovered_full":
        test_status = "p"
    elif status == "healthy":
        test_status = pick(rng, ("n", "n", "na", ""))
    else:
        test_status = pick(rng, ("na", "n", ""))
    if test_status in ("", "na"):
        return {"testType": "", "test_date": "", "test_status": test_status}
    test_date = record_date - dt.timedelta(days=int(rng.integers(0, 10)))
    test_type = pick(rng, ("rtpcr", "rtpcr", "rat"))
    return {"testType": test_type, "test_date": test_date.isoformat(), "test_status": test_status}


def _participant_row(
    rng: np.random.Generator, participant_id: str, status: str, record_date: dt.date
) -> dict[str, str]:
    """One ``combined_data.csv`` row; flags are ``True`` or blank, symptoms likelier when positive."""
    country, locality, state = LOCATIONS[int(rng.integers(0, len(LOCATIONS)))]
    symptom_rate = 0.5 if status in SYMPTOMATIC_POSITIVE_STATUSES else 0.1
    row = dict.fromkeys(COMBINED_COLUMNS, "")
    row.update(
        id=participant_id, a=str(int(rng.integers(18, 75))), covid_status=status, record_date=record_date.isoformat(),
        ep=pick(rng, ("y", "n")), g=pick(rng, ("male", "female", "female", "male", "other")),
        l_c=country, l_l=locality, l_s=state, rU=pick(rng, ("n", "n", "n", "y")),
        um=pick(rng, ("y", "n")), vacc=pick(rng, ("y", "n", "p", "")) if record_date.year > 2020 else "",
    )  # fmt: skip
    for flag in SYMPTOM_FLAGS:
        row[flag] = "True" if rng.random() < symptom_rate else ""
    for flag in CONDITION_FLAGS:
        row[flag] = "True" if rng.random() < 0.08 else ""
    row.update(_test_fields(rng, status, record_date))
    return row


def _task_audio(rng: np.random.Generator, task: str, positive: bool, gender: str) -> np.ndarray:
    """Samples for one of the nine Coswara tasks (heavy: 1-2 coughs, shallow: 1, other tasks ~1 s)."""
    f0 = rng.uniform(100, 140) if gender == "male" else rng.uniform(180, 240)
    kind, _, variant = task.partition("-")
    if kind == "cough":
        return cough_clip(rng, SAMPLE_RATE, int(rng.integers(1, 3)) if variant == "heavy" else 1, positive)[0]
    if kind == "breathing":
        return synth.breathing(rng, SAMPLE_RATE, rng.uniform(0.9, 1.1), deep=variant == "deep")
    if kind == "counting":
        rate = rng.uniform(5.0, 6.0) if variant == "fast" else rng.uniform(3.0, 4.0)
        return synth.speech_task(rng, SAMPLE_RATE, 1.0, f0, None, rate)
    return synth.speech_task(rng, SAMPLE_RATE, rng.uniform(0.8, 1.0), f0, variant, 0.0)


def _deterministic_tar_gz(members: dict[str, bytes]) -> bytes:
    """A gzip tarball of ``members`` (name -> bytes) whose bytes depend only on the members."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()


def _split_suffixes() -> Iterator[str]:
    """``aa``, ``ab``, ... ``zz``: the suffixes GNU ``split`` gives the parts."""
    return ("".join(pair) for pair in product(string.ascii_lowercase, repeat=2))


def _write_split(path_prefix: Path, payload: bytes) -> None:
    """Write ``payload`` as ``<prefix>.aa``, ``.ab``, ... parts of :data:`PART_BYTES` each."""
    for suffix, offset in zip(_split_suffixes(), range(0, len(payload), PART_BYTES)):
        Path(f"{path_prefix}.{suffix}").write_bytes(payload[offset : offset + PART_BYTES])


def _write_date_folder(
    root: Path, rng: np.random.Generator, record_date: dt.date, rows: list[dict[str, str]], columns: tuple[str, ...]
) -> None:
    """Write one ``<YYYYMMDD>/`` folder: its CSV (own column subset) and split audio tarball."""
    stamp = record_date.strftime("%Y%m%d")
    folder = root / stamp
    folder.mkdir()
    members = {}
    for row in rows:
        positive = row["covid_status"] in POSITIVE_STATUSES
        for task in TASKS:
            audio = _task_audio(rng, task, positive, row["g"])
            members[f"{stamp}/{row['id']}/{task}.wav"] = wav_bytes(audio, SAMPLE_RATE)
    write_csv(folder / f"{stamp}.csv", columns, [[row[c] for c in columns] for row in rows])
    _write_split(folder / f"{stamp}.tar.gz", _deterministic_tar_gz(members))


def _write_annotations(root: Path, rng: np.random.Generator, participant_ids: list[str]) -> None:
    """``annotations/cough-{heavy,shallow}_labels.csv``: ``FILENAME, QUALITY`` with some space-padded values."""
    for task in ("cough-heavy", "cough-shallow"):
        rows = []
        for participant_id in participant_ids:
            quality = int(rng.choice(3, p=QUALITY_WEIGHTS))
            rows.append((f"{participant_id}_{task}", f" {quality}" if rng.random() < 0.5 else str(quality)))
        write_csv(root / "annotations" / f"{task}_labels.csv", ("FILENAME", " QUALITY"), rows)


def write_coswara(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write the Coswara-Data tree for ``size.covid_recordings`` participants over three dates."""
    statuses = _covid_statuses(rng, size.covid_recordings)
    rows = []
    for index, status in enumerate(statuses):
        record_date = RECORD_DATES[index % len(RECORD_DATES)]
        rows.append(_participant_row(rng, alnum_id(rng), status, record_date))
    for index, record_date in enumerate(RECORD_DATES):
        on_date = [row for row in rows if row["record_date"] == record_date.isoformat()]
        _write_date_folder(root, rng, record_date, on_date, PER_DATE_COLUMN_SETS[index % len(PER_DATE_COLUMN_SETS)])
    write_csv(root / "combined_data.csv", COMBINED_COLUMNS, [[row[c] for c in COMBINED_COLUMNS] for row in rows])
    (root / "csv_labels_legend.json").write_text(json.dumps(LEGEND, indent=2) + "\n", encoding="utf-8")
    _write_annotations(root, rng, [row["id"] for row in rows])
