"""What a cough filter model is trained on and with: one frozen settings object for the whole stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd

from cough_pipeline.bounds import Bounds, NonNegativeInt, PositiveInt, Probability, Seed, check_fields
from cough_pipeline.cough_filter.model import DEFAULT_THRESHOLD
from cough_pipeline.cough_filter.training import LabelledClip, TrainingSettings


@dataclass(frozen=True)
class CoughFilterSettings:
    """The cough filter model's training data and settings.

    ``training_clips`` is ``demo`` (the demo corpus's labelled clips) or an ESC-50 folder (``coughing`` versus
    every other class). ``input_sample_rate``: every clip is resampled to this rate before its features (0 keeps
    each file's own rate, as COUGHVID did). ``threshold``: the cough probability at or above which a recording is
    kept.
    """

    training_clips: str = "demo"
    seed: Seed = 0
    n_estimators: PositiveInt = 100
    max_depth: PositiveInt = 4
    n_splits: Annotated[int, Bounds(ge=2)] = 5
    threshold: Probability = DEFAULT_THRESHOLD
    input_sample_rate: NonNegativeInt = 48_000

    def __post_init__(self):
        check_fields(self)
        if not self.training_clips:
            raise ValueError("CoughFilterSettings.training_clips must be 'demo' or an ESC-50 folder, got ''")

    def training_settings(self) -> TrainingSettings:
        """The XGBoost and cross-validation settings (the library defaults for everything not set here)."""
        return TrainingSettings(
            n_estimators=self.n_estimators, max_depth=self.max_depth, n_splits=self.n_splits, threshold=self.threshold
        )


def clip_table(clips: list[LabelledClip]) -> pd.DataFrame:
    """One row per training clip (``source``, ``label``, ``group``, ``sample_rate``) for fingerprinting: a file
    clip by its path, an in-memory clip by a SHA-1 of its samples."""

    def source(clip: LabelledClip) -> str:
        if isinstance(clip.source, np.ndarray):
            return "samples:" + hashlib.sha1(np.ascontiguousarray(clip.source).tobytes()).hexdigest()
        return str(clip.source)

    return pd.DataFrame(
        {
            "source": [source(clip) for clip in clips],
            "label": [int(clip.label) for clip in clips],
            "group": [str(clip.group) for clip in clips],
            "sample_rate": [clip.sample_rate or 0 for clip in clips],
        }
    )
