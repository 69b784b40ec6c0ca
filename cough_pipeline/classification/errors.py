"""Errors of the classification stage."""

from __future__ import annotations


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
