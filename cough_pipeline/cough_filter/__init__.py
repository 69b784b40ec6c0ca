"""Cough/non-cough filter: COUGHVID-compatible features, the XGBoost classifier, and its training.

``CoughClassifier.from_coughvid_folder(folder)`` loads the pretrained COUGHVID model from its converted JSON
files; :func:`train_cough_classifier` fits a new one with group-disjoint cross-validation.
"""

from cough_pipeline.cough_filter.features import (
    FEATURE_NAMES,
    SignalIssue,
    UnusableSignalError,
    extract_features,
    preprocess,
)
from cough_pipeline.cough_filter.model import (
    CoughClassifier,
    CoughDecision,
    CoughModelError,
    FeatureScaler,
    clipping_fraction,
)
from cough_pipeline.cough_filter.training import (
    LabelledClip,
    TrainingSettings,
    esc50_clips,
    train_cough_classifier,
)

__all__ = [
    "FEATURE_NAMES",
    "SignalIssue",
    "UnusableSignalError",
    "extract_features",
    "preprocess",
    "CoughClassifier",
    "CoughDecision",
    "CoughModelError",
    "FeatureScaler",
    "clipping_fraction",
    "LabelledClip",
    "TrainingSettings",
    "esc50_clips",
    "train_cough_classifier",
]
