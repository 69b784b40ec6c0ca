"""Training a cough/non-cough XGBoost filter on labelled clips, with group-disjoint cross-validation.

Clips from one participant (or one source recording) must never sit on both sides of a split, or the ROC-AUC
measures recognition of the person rather than of the cough. :func:`train_cough_classifier` featurises the clips,
cross-validates with ``StratifiedGroupKFold`` (the scaler fitted on each training fold only), then refits the
scaler and the booster on every usable clip. Everything is seeded: the same clips and seed give byte-identical
model JSON.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from cough_pipeline.audio import AudioDecodeError, decode_audio, load_mono, trim_digital_silence
from cough_pipeline.cough_filter.features import UnusableSignalError, extract_features
from cough_pipeline.cough_filter.model import DEFAULT_THRESHOLD, CoughClassifier, FeatureScaler

ESC50_COUGH_CATEGORY = "coughing"
ESC50_GROUPINGS = ("src_file", "fold")


@dataclass(frozen=True)
class LabelledClip:
    """One training clip: a file or raw samples, its label (1 = cough) and its group (participant, source, fold).

    ``sample_rate`` is required when ``source`` holds samples ``(frames,)`` or ``(frames, channels)``; for a file
    it is optional and means "resample to this rate before computing features".
    """

    source: Path | np.ndarray
    label: int
    group: str
    sample_rate: int | None = None
    #: Drop leading/trailing digital silence first: clip collections (Virufy's manual segments, ESC-50) pad
    #: their clips with zeros, and a model would otherwise learn "padding means cough" (or "not cough").
    trim_silence: bool = False

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r}")
        if isinstance(self.source, np.ndarray) and self.sample_rate is None:
            raise ValueError("a clip given as samples needs its sample_rate")


@dataclass(frozen=True)
class TrainingSettings:
    """XGBoost and cross-validation settings; kept small so training takes seconds."""

    n_estimators: int = 100
    max_depth: int = 4
    learning_rate: float = 0.1
    n_splits: int = 5
    n_jobs: int = 1
    balance_classes: bool = True  # weight positives by n_negative / n_positive of the training fold
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class FeatureTable:
    """Features of the usable clips: ``matrix (n, 68)``, ``labels (n,)``, ``groups (n,)``.

    ``clip_index`` gives each row's position in the input; ``rejected`` lists ``(position, reason)`` of the rest.
    """

    matrix: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    clip_index: np.ndarray
    rejected: list[tuple[int, str]]


def clips_from_frame(frame: pd.DataFrame) -> list[LabelledClip]:
    """Clips from a DataFrame.

    Columns: ``source`` (path or samples), ``label``, ``group`` and optional ``sample_rate``.
    """
    missing = {"source", "label", "group"} - set(frame.columns)
    if missing:
        raise ValueError(f"the clip table lacks columns {sorted(missing)}")
    rates = frame["sample_rate"] if "sample_rate" in frame.columns else [None] * len(frame)
    return [
        LabelledClip(
            source=source if isinstance(source, np.ndarray) else Path(source),
            label=int(label),
            group=str(group),
            sample_rate=None if rate is None or pd.isna(rate) else int(rate),
        )
        for source, label, group, rate in zip(frame["source"], frame["label"], frame["group"], rates)
    ]


def esc50_clips(root: Path, group_by: str = "src_file") -> list[LabelledClip]:
    """ESC-50 clips on disk as cough (``coughing``) versus everything else.

    ``root`` holds ``meta/esc50.csv`` and ``audio/``; rows whose file is absent are skipped (subsets ship fewer
    files than the table lists). ``group_by``: ``src_file`` (the Freesound recording; takes A/B of one recording
    share it) or ``fold`` (ESC-50's own folds, which also keep a recording's takes together).
    """
    if group_by not in ESC50_GROUPINGS:
        raise ValueError(f"group_by must be one of {ESC50_GROUPINGS}, got {group_by!r}")
    root = Path(root)
    table = root / "meta" / "esc50.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no ESC-50 metadata at {table}")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    clips = [
        LabelledClip(
            source=root / "audio" / row["filename"],
            label=int(row["category"] == ESC50_COUGH_CATEGORY),
            group=f"{group_by}:{row[group_by]}",
        )
        for row in rows
        if (root / "audio" / row["filename"]).is_file()
    ]
    if not clips:
        raise FileNotFoundError(f"none of the {len(rows)} clips listed in {table} is under {root / 'audio'}")
    return clips


def clip_features(clip: LabelledClip) -> np.ndarray:
    """The features of one clip (silence-trimmed and resampled first when the clip asks for it).

    Args:
        clip: a file or samples with their rate.

    Returns:
        float64 features in :data:`~.features.FEATURE_NAMES` order.

    Raises:
        AudioDecodeError: for a file that cannot be decoded.
        UnusableSignalError: for a clip the features are undefined for.

    Shape:
        returns ``(68,)``.
    """
    if isinstance(clip.source, np.ndarray):
        samples, rate = clip.source, clip.sample_rate
    elif clip.sample_rate is not None:
        samples, rate = load_mono(clip.source, clip.sample_rate)
    else:
        decoded = decode_audio(clip.source)
        samples, rate = decoded.samples, decoded.sample_rate
    return extract_features(trim_digital_silence(samples) if clip.trim_silence else samples, rate)


def featurise(clips: Sequence[LabelledClip]) -> FeatureTable:
    """Features of every clip that decodes and has features; the others are listed with their reason.

    Args:
        clips: the labelled clips.

    Returns:
        The feature table of the usable clips (``matrix`` ``(n, 68)``, ``labels``/``groups``/``clip_index``
        ``(n,)``) and ``(position, reason)`` of each rejected clip.
    """
    rows, kept, rejected = [], [], []
    for position, clip in enumerate(clips):
        try:
            rows.append(clip_features(clip))
        except (AudioDecodeError, UnusableSignalError) as error:
            rejected.append((position, error.reason.value))
        else:
            kept.append(position)
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    return FeatureTable(
        matrix=matrix,
        labels=np.array([clips[i].label for i in kept], dtype=np.int64),
        groups=np.array([clips[i].group for i in kept], dtype=object),
        clip_index=np.array(kept, dtype=np.int64),
        rejected=rejected,
    )


def cross_validation_splits(
    labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded ``StratifiedGroupKFold`` splits; no group is in both halves of a split.

    Args:
        labels: 1 for a cough, 0 otherwise.
        groups: each row's group (participant, source recording, fold).
        n_splits: number of folds.
        seed: shuffling seed.

    Returns:
        ``[(train_rows, test_rows), ...]``, one pair of row-index arrays per fold.

    Raises:
        ValueError: when the labels lack a class or a class spans fewer groups than splits.

    Shape:
        labels, groups: ``(n,)``.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError(
            f"training needs both cough (1) and non-cough (0) clips, got labels {np.unique(labels).tolist()}"
        )
    for label in (0, 1):
        n_groups = len(np.unique(groups[labels == label]))
        if n_groups < n_splits:
            raise ValueError(
                f"{n_groups} groups hold label {label}; {n_splits}-fold grouped CV needs at least {n_splits}"
            )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def fit_booster(standardised: np.ndarray, labels: np.ndarray, settings: TrainingSettings, seed: int) -> xgb.Booster:
    """A seeded ``hist`` booster (``settings.n_jobs`` threads) on standardised features.

    Args:
        standardised: features after :meth:`FeatureScaler.transform`.
        labels: 1 for a cough, 0 otherwise (both present).
        settings: boosting settings; positives are up-weighted when ``balance_classes``.
        seed: xgboost's seed.

    Returns:
        The binary-logistic booster.

    Shape:
        standardised: ``(n, 68)``; labels: ``(n,)``.
    """
    n_positive = int(labels.sum())
    params = {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "max_depth": settings.max_depth,
        "eta": settings.learning_rate,
        "seed": seed,
        "nthread": settings.n_jobs,
        "scale_pos_weight": (len(labels) - n_positive) / n_positive if settings.balance_classes else 1.0,
    }
    return xgb.train(params, xgb.DMatrix(standardised, label=labels), num_boost_round=settings.n_estimators)


def cross_validate(table: FeatureTable, settings: TrainingSettings, seed: int) -> dict:
    """Per-fold and mean ROC-AUC, with the scaler fitted on each training fold only.

    Args:
        table: features of the usable clips.
        settings: boosting and fold settings.
        seed: seed of the splits and the boosters.

    Returns:
        The report: per-fold sizes, ROC-AUC (None for a one-class test fold) and test groups, the mean of the
        fold AUCs and the AUC of the pooled out-of-fold predictions.
    """
    folds, out_of_fold = [], np.zeros(len(table.labels))
    for fold, (train_rows, test_rows) in enumerate(
        cross_validation_splits(table.labels, table.groups, settings.n_splits, seed)
    ):
        scaler = FeatureScaler.fit(table.matrix[train_rows])
        booster = fit_booster(scaler.transform(table.matrix[train_rows]), table.labels[train_rows], settings, seed)
        out_of_fold[test_rows] = booster.inplace_predict(scaler.transform(table.matrix[test_rows]))
        test_labels = table.labels[test_rows]
        both_classes = len(np.unique(test_labels)) == 2
        folds.append(
            {
                "fold": fold,
                "n_train": len(train_rows),
                "n_test": len(test_rows),
                "n_test_positive": int(test_labels.sum()),
                "roc_auc": float(roc_auc_score(test_labels, out_of_fold[test_rows])) if both_classes else None,
                "test_groups": sorted(str(group) for group in np.unique(table.groups[test_rows])),
            }
        )
    fold_aucs = [fold["roc_auc"] for fold in folds if fold["roc_auc"] is not None]
    return {
        "splitter": "StratifiedGroupKFold",
        "n_splits": settings.n_splits,
        "folds": folds,
        "mean_roc_auc": float(np.mean(fold_aucs)) if fold_aucs else None,
        "pooled_roc_auc": float(roc_auc_score(table.labels, out_of_fold)),
    }


def train_from_features(
    table: FeatureTable, seed: int = 0, settings: TrainingSettings = TrainingSettings()
) -> tuple[CoughClassifier, dict]:
    """Cross-validate, then refit scaler and booster on all rows.

    Args:
        table: features of the usable clips.
        seed: seed of the splits and the boosters.
        settings: boosting, fold and threshold settings.

    Returns:
        ``(classifier, report)``: the report holds the settings, clip counts, rejected clips and the
        cross-validation results, and is also the classifier's ``training``.
    """
    cv_report = cross_validate(table, settings, seed)
    scaler = FeatureScaler.fit(table.matrix)
    booster = fit_booster(scaler.transform(table.matrix), table.labels, settings, seed)
    report = {
        "seed": seed,
        "settings": asdict(settings),
        "n_clips": len(table.labels) + len(table.rejected),
        "n_used": len(table.labels),
        "n_positive": int(table.labels.sum()),
        "n_groups": len(np.unique(table.groups)),
        "rejected": [{"clip": position, "reason": reason} for position, reason in table.rejected],
        "cross_validation": cv_report,
    }
    classifier = CoughClassifier(
        booster=booster,
        scaler=scaler,
        threshold=settings.threshold,
        source=f"cough_pipeline.cough_filter.training on {len(table.labels)} clips",
        training=report,
    )
    return classifier, report


def train_cough_classifier(
    clips: Sequence[LabelledClip] | pd.DataFrame, seed: int = 0, settings: TrainingSettings = TrainingSettings()
) -> tuple[CoughClassifier, dict]:
    """Featurise labelled clips and train the filter on them.

    Args:
        clips: a list, or a :func:`clips_from_frame` table.
        seed: seed of the splits and the boosters.
        settings: boosting, fold and threshold settings.

    Returns:
        ``(classifier, report)`` as :func:`train_from_features`.
    """
    clip_list = clips_from_frame(clips) if isinstance(clips, pd.DataFrame) else list(clips)
    return train_from_features(featurise(clip_list), seed, settings)
