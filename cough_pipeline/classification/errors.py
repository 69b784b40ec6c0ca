"""Errors of the classification stage."""

from __future__ import annotations

import json
from pathlib import Path


class ClassificationError(ValueError):
    """Base class: bad input or configuration for the classification stage."""


class InputRejected(ClassificationError):
    """A recording that cannot become a feature row; ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FoldError(ClassificationError):
    """Recordings that cannot be split as configured (too few participants of a class, unknown labels)."""


class ResamplingError(ClassificationError):
    """A resampling setting the training fold cannot satisfy (e.g. more SMOTE neighbours than minority rows)."""


def read_tagged_json(path: Path, expected_format: str, what: str, wrong_format: type = ClassificationError) -> dict:
    """The JSON object in ``path`` whose ``format`` is ``expected_format`` (a stored model's card or index).

    Raises:
        ClassificationError: the file is missing or not JSON.
        wrong_format: the file holds something else than ``what`` of that format.
    """
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ClassificationError(f"{path}: unreadable ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise wrong_format(f"{path}: not {what} ({expected_format!r})")
    return payload
