"""Probability calibration of classifier predictions, fitted on validation predictions only, and its measures.

Two calibrators map a model's P(positive) to a calibrated one:

* ``temperature``: one scalar ``T`` divides the logit, ``p' = sigmoid(logit(p) / T)``; ``T`` minimises the mean
  negative log-likelihood of the validation labels (bounded scalar search over ``log T``). ``T > 1`` softens an
  over-confident model, ``T < 1`` sharpens an under-confident one; the ranking (and so ROC-AUC) never changes.
  Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before the logit, so 0 and 1 stay finite.
* ``isotonic``: :class:`sklearn.isotonic.IsotonicRegression` with ``out_of_bounds="clip"``; the fitted step
  function (its thresholds) is stored and applied by linear interpolation exactly as sklearn predicts it. It may
  merge distinct probabilities into ties, so ROC-AUC can change.

:func:`calibrate_predictions` fits one calibrator per (model, variant) on that model's validation rows (the
out-of-fold predictions of every cross-validation fold, pooled) and applies it to all its rows: validation, the
holdout rows of each fold model and the fold ensemble (fold -1). Holdout rows never enter a fit. The validation
rows' calibrated figures are therefore in-sample (optimistic); the holdout figures are the honest ones. A fold
ensemble averages several fold models, which already pulls probabilities toward the middle, so the calibrator
(fitted on single fold models) can over-correct it; compare its before/after figures in :func:`calibration_table`.

Measures (lower is better): ``brier_score`` (mean squared error of the probability), ``negative_log_likelihood``
(mean, natural log, on clipped probabilities) and ``expected_calibration_error`` over ``n_bins`` equal-width bins of
the probability (``[0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]``): the row-weighted mean over non-empty bins of
``|accuracy - confidence|``, accuracy being the bin's share of positives and confidence its mean probability.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS, check_predictions

CalibrationMethod = Literal["temperature", "isotonic"]
METHODS: tuple[str, ...] = ("temperature", "isotonic")
CALIBRATOR_FORMAT = "cough_pipeline.calibrator/1"
#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before a logit or a log.
EPSILON = 1e-7
#: The temperature search interval: wide enough for any plausible model, narrow enough to stay finite.
TEMPERATURE_BOUNDS = (0.01, 100.0)
CALIBRATION_TABLE_COLUMNS = (
    "model",
    "variant",
    "split",
    "predictions",
    "n",
    "brier_before",
    "brier_after",
    "ece_before",
    "ece_after",
    "nll_before",
    "nll_after",
)
RELIABILITY_COLUMNS = ("bin", "lower", "upper", "n", "confidence", "accuracy")


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map: ``temperature`` for the temperature method; ``x``/``y`` (the isotonic step
    function's thresholds, increasing ``x``) for the isotonic one. ``n_fit``/``n_positive``: the validation rows
    it was fitted on and how many were positive."""

    method: str
    n_fit: int
    n_positive: int
    temperature: float | None = None
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __post_init__(self):
        if self.method not in METHODS:
            raise ClassificationError(f"calibration method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "temperature" and not (self.temperature is not None and self.temperature > 0):
            raise ClassificationError(f"a temperature calibrator needs a positive temperature, got {self.temperature}")
        if self.method == "isotonic":
            x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
            if len(x) == 0 or x.shape != y.shape or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ClassificationError("an isotonic calibrator needs matching, non-decreasing x and y thresholds")

    def apply(self, probabilities) -> np.ndarray:
        """Calibrated P(positive) of each probability.

        Shape: ``(n,)`` in, ``(n,)`` out.
        """
        p = _probabilities(probabilities)
        if self.method == "temperature":
            return _sigmoid(_logit(p) / self.temperature)
        # IsotonicRegression(out_of_bounds="clip").predict: linear between thresholds, constant beyond them.
        return np.interp(p, self.x, self.y)

    def to_json(self) -> str:
        """A portable text form (no pickle); :meth:`from_json` reads it back."""
        return json.dumps(
            {
                "format": CALIBRATOR_FORMAT,
                "method": self.method,
                "n_fit": self.n_fit,
                "n_positive": self.n_positive,
                "temperature": self.temperature,
                "x": list(self.x),
                "y": list(self.y),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        """The calibrator :meth:`to_json` wrote.

        Raises:
            ClassificationError: text that is not a calibrator of this format.
        """
        try:
            data = json.loads(text)
            if data.get("format") != CALIBRATOR_FORMAT:
                raise ClassificationError(f"not a calibrator of format {CALIBRATOR_FORMAT!r}")
            temperature = data["temperature"]
            return cls(
                method=data["method"],
                n_fit=int(data["n_fit"]),
                n_positive=int(data["n_positive"]),
                temperature=None if temperature is None else float(temperature),
                x=tuple(float(v) for v in data["x"]),
                y=tuple(float(v) for v in data["y"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
            if isinstance(error, ClassificationError):
                raise
            raise ClassificationError(f"unreadable calibrator ({error!r})") from error


def fit_calibrator(labels, probabilities, method: CalibrationMethod) -> Calibrator:
    """Fit a calibrator on validation predictions (never on the predictions it will be judged on).

    Args:
        labels: 0/1 per row, shape ``(n,)``; both classes must occur.
        probabilities: P(positive) per row in [0, 1], shape ``(n,)``.
        method: ``"temperature"`` or ``"isotonic"`` (see the module docstring).

    Raises:
        ClassificationError: an unknown method, bad values, or a single class (nothing to calibrate against).
    """
    if method not in METHODS:
        raise ClassificationError(f"calibration method must be one of {list(METHODS)}, got {method!r}")
    y, p = _labels(labels), _probabilities(probabilities)
    if y.shape != p.shape:
        raise ClassificationError(f"labels {y.shape} and probabilities {p.shape} must have the same shape (n,)")
    n_positive = int(y.sum())
    if n_positive == 0 or n_positive == len(y):
        raise ClassificationError(f"calibration needs both classes, got {n_positive} positives of {len(y)} rows")
    if method == "temperature":
        logits = _logit(p)
        result = minimize_scalar(
            lambda log_t: _nll_of_logits(y, logits / math.exp(log_t)),
            bounds=tuple(math.log(b) for b in TEMPERATURE_BOUNDS),
            method="bounded",
            options={"xatol": 1e-6},
        )
        return Calibrator("temperature", len(y), n_positive, temperature=float(math.exp(result.x)))
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    x = tuple(float(v) for v in isotonic.X_thresholds_)
    return Calibrator("isotonic", len(y), n_positive, x=x, y=tuple(float(v) for v in isotonic.y_thresholds_))


def calibrate_predictions(
    predictions: pd.DataFrame, method: CalibrationMethod
) -> tuple[pd.DataFrame, dict[tuple[str, str], Calibrator]]:
    """Calibrate every (model, variant) of a predictions table with a calibrator fitted on its validation rows.

    Args:
        predictions: the predictions table (validation rows of every fold; holdout rows of fold models and/or the
            fold ensemble).
        method: see :func:`fit_calibrator`.

    Returns:
        ``(calibrated, calibrators)``: the same rows and columns in the same order with ``probability`` replaced
        by the calibrated one, and the calibrator of each ``(model, variant)``.

    Raises:
        ClassificationError: a bad schema, or a (model, variant) without validation rows of both classes.
    """
    check_predictions(predictions)
    probability = predictions["probability"].to_numpy(dtype=np.float64).copy()
    calibrators: dict[tuple[str, str], Calibrator] = {}
    # Positions, not index labels: the table's index need not be unique.
    for (model, variant), positions in sorted(predictions.groupby(["model", "variant"]).indices.items()):
        rows = predictions.iloc[positions]
        # Only validation rows of real folds fit; holdout and fold-ensemble rows are only transformed.
        fit_rows = rows[(rows["split"] == "validation") & (rows["fold"] != FOLD_ENSEMBLE)]
        if fit_rows.empty:
            raise ClassificationError(f"{model} ({variant}) has no validation predictions to fit a calibrator on")
        try:
            calibrator = fit_calibrator(fit_rows["label"], fit_rows["probability"], method)
        except ClassificationError as error:
            raise ClassificationError(f"{model} ({variant}): {error}") from error
        calibrators[(str(model), str(variant))] = calibrator
        probability[positions] = calibrator.apply(rows["probability"])
    return predictions.assign(probability=probability), calibrators


def brier_score(labels, probabilities) -> float:
    """Mean of ``(p - y)**2``; NaN without rows."""
    y, p = _paired(labels, probabilities)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def negative_log_likelihood(labels, probabilities) -> float:
    """Mean ``-log P(observed label)`` (natural log, probabilities clipped to ``[EPSILON, 1 - EPSILON]``); NaN
    without rows."""
    y, p = _paired(labels, probabilities)
    return _nll_of_logits(y, _logit(p)) if len(y) else math.nan


def reliability_curve(labels, probabilities, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width probability bin: ``bin``, ``lower``, ``upper``, ``n`` rows, mean ``confidence`` and
    ``accuracy`` (share of positives; both NaN in an empty bin). Bin ``b`` holds ``b/n <= p < (b+1)/n``, the
    last bin also ``p = 1``."""
    if int(n_bins) < 1:
        raise ClassificationError(f"n_bins must be >= 1, got {n_bins}")
    y, p = _paired(labels, probabilities)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=p, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=y, minlength=n_bins) / counts
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "n": counts,
            "confidence": confidence,
            "accuracy": accuracy,
        }
    )


def expected_calibration_error(labels, probabilities, n_bins: int = 10) -> float:
    """Row-weighted mean over non-empty equal-width bins of ``|accuracy - confidence|``; NaN without rows."""
    curve = reliability_curve(labels, probabilities, n_bins)
    used = curve[curve["n"] > 0]
    if used.empty:
        return math.nan
    gaps = (used["accuracy"] - used["confidence"]).abs()
    return float((used["n"] * gaps).sum() / used["n"].sum())


def calibration_table(
    predictions_before: pd.DataFrame, predictions_after: pd.DataFrame, n_bins: int = 10
) -> pd.DataFrame:
    """Brier score, ECE and NLL before and after calibration, per model, variant, split and kind of prediction.

    ``predictions`` is ``"fold_models"`` (every fold model's rows of that split, pooled: the validation rows are
    the out-of-fold predictions) or ``"fold_ensemble"`` (the fold -1 rows).

    Args:
        predictions_before, predictions_after: the same prediction rows (keyed by model, variant, split, fold,
            recording_id) with their uncalibrated and calibrated probabilities.

    Returns:
        :data:`CALIBRATION_TABLE_COLUMNS`, sorted by model, variant, split, predictions.

    Raises:
        ClassificationError: a bad schema, or rows (or labels) that differ between the two tables.
    """
    keys = ["model", "variant", "split", "fold", "recording_id"]
    for table in (predictions_before, predictions_after):
        check_predictions(table)
        if table.duplicated(keys).any():
            raise ClassificationError(f"prediction rows must be unique per {keys}")
    before = predictions_before[list(PREDICTION_COLUMNS)]
    after = predictions_after[[*keys, "probability", "label"]]
    joined = before.merge(after, on=keys, how="outer", suffixes=("_before", "_after"), indicator=True)
    unmatched = joined[joined["_merge"] != "both"]
    if len(unmatched):
        raise ClassificationError(f"{len(unmatched)} prediction rows are in only one of the two tables")
    if (joined["label_before"] != joined["label_after"]).any():
        raise ClassificationError("labels differ between the tables before and after calibration")
    joined["predictions"] = np.where(joined["fold"] == FOLD_ENSEMBLE, "fold_ensemble", "fold_models")
    rows = []
    for (model, variant, split, kind), cell in joined.groupby(["model", "variant", "split", "predictions"]):
        y = cell["label_before"]
        measures = {}
        for when in ("before", "after"):
            p = cell[f"probability_{when}"]
            measures[f"brier_{when}"] = brier_score(y, p)
            measures[f"ece_{when}"] = expected_calibration_error(y, p, n_bins)
            measures[f"nll_{when}"] = negative_log_likelihood(y, p)
        rows.append(
            {"model": model, "variant": variant, "split": split, "predictions": kind, "n": len(cell)} | measures
        )
    return pd.DataFrame(rows, columns=list(CALIBRATION_TABLE_COLUMNS))


def _labels(labels) -> np.ndarray:
    y = np.asarray(pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce"), dtype=float)
    if y.ndim != 1 or not np.isin(y, (0.0, 1.0)).all():
        raise ClassificationError("labels must be a 1-D sequence of 0 and 1")
    return y


def _probabilities(probabilities) -> np.ndarray:
    p = np.asarray(pd.to_numeric(pd.Series(probabilities, dtype=object), errors="coerce"), dtype=float)
    outside = ~((p >= 0.0) & (p <= 1.0))  # NaN fails both comparisons
    if p.ndim != 1 or outside.any():
        raise ClassificationError(f"probabilities must be a 1-D sequence in [0, 1]; {int(outside.sum())} are not")
    return p


def _paired(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y, p = _labels(labels), _probabilities(probabilities)
    if y.shape != p.shape:
        raise ClassificationError(f"labels {y.shape} and probabilities {p.shape} must have the same shape (n,)")
    return y, p


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def _nll_of_logits(y: np.ndarray, z: np.ndarray) -> float:
    """Mean binary cross-entropy of logits ``z``: ``log(1 + exp(z)) - y z``, computed stably."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))
