"""The one exception type of :mod:`cough_pipeline.mixtures`."""

from __future__ import annotations


class MixtureError(ValueError):
    """Invalid input to noise-bank loading or mixture generation (missing files, empty tables, bad settings).

    Raised before any audio is written, in the spirit of scaper's own ``ScaperError`` validation.
    """
