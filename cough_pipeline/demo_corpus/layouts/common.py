"""Helpers shared by the per-dataset layout writers: ids, labels, dates, CSV output."""

from __future__ import annotations

import csv
import datetime as dt
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth

HEX_DIGITS = "0123456789abcdef"
ALNUM = string.ascii_letters + string.digits


def uuid_like(rng: np.random.Generator) -> str:
    """A random version-4-shaped UUID string drawn from ``rng`` (so it is reproducible)."""
    digits = [HEX_DIGITS[d] for d in rng.integers(0, 16, 32)]
    digits[12] = "4"
    digits[16] = HEX_DIGITS[8 + int(rng.integers(0, 4))]
    text = "".join(digits)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def alnum_id(rng: np.random.Generator, length: int = 28) -> str:
    """A mixed-case alphanumeric id, the shape of Coswara's 28-character participant ids."""
    return "".join(ALNUM[i] for i in rng.integers(0, len(ALNUM), length))


def shuffled_labels(rng: np.random.Generator, n: int, n_unknown: int = 0) -> list[str]:
    """``n`` labels: ``n_unknown`` "unknown", the rest split evenly "positive"/"negative", shuffled."""
    n_known = n - n_unknown
    labels = ["positive"] * (n_known // 2) + ["negative"] * (n_known - n_known // 2) + ["unknown"] * n_unknown
    return [labels[i] for i in rng.permutation(n)]


def random_date(rng: np.random.Generator, first: dt.date, last: dt.date) -> dt.date:
    """A uniformly drawn day in [first, last]."""
    return first + dt.timedelta(days=int(rng.integers(0, (last - first).days + 1)))


def pick(rng: np.random.Generator, choices: Sequence[str]) -> str:
    """One element of ``choices`` as a plain ``str``."""
    return choices[int(rng.integers(0, len(choices)))]


def cough_clip(
    rng: np.random.Generator, sample_rate: int, n_coughs: int, covid_positive: bool
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A cough recording just long enough for ``n_coughs`` plus 0.05-0.2 s of slack.

    The length depends only on ``n_coughs``, never on the class, so duration
    leaks no label.
    """
    duration_s = synth.min_cough_recording_s(n_coughs) + rng.uniform(0.05, 0.2)
    return synth.cough_recording(rng, sample_rate, duration_s, n_coughs, covid_positive)


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> None:
    """Write a header plus rows with ``\\n`` line endings (``None`` becomes an empty field)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if value is None else value for value in row] for row in rows])
