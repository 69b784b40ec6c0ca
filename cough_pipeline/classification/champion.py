"""The champion classifier: which model (and input variant) answers ``predict``, at which decision threshold.

The challenger is the model with the best score on the configured evaluation (the holdout fold ensemble's ROC-AUC
by default) in a report of :data:`cough_pipeline.classification.stage.REPORT_COLUMNS`. It replaces the current
champion only when it beats the champion's recorded score by ``margin``; otherwise the champion stays, with the
reason recorded. The decision threshold is chosen on validation predictions only (pooled out-of-fold
predictions of the CV folds), never on the holdout that scored the model: the highest threshold whose
sensitivity reaches ``target_sensitivity``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cough_pipeline.bounds import Fraction, NonNegativeFloat, check_fields
from cough_pipeline.classification.calibration import Calibrator
from cough_pipeline.classification.errors import ClassificationError

ChampionMetric = Literal["roc_auc", "pr_auc", "balanced_accuracy", "f1", "specificity_at_80_sensitivity"]


@dataclass(frozen=True)
class ChampionConfig:
    """``metric`` on ``evaluation`` (over all datasets) ranks challengers; ``margin``: how much higher a challenger
    must score to replace the champion; ``target_sensitivity``: the decision threshold's sensitivity on validation
    predictions."""

    metric: ChampionMetric = "roc_auc"
    evaluation: Literal["holdout", "cv"] = "holdout"
    margin: NonNegativeFloat = 0.01
    target_sensitivity: Fraction = 0.8

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class Champion:
    """The chosen model: where it is stored (``asset``, ``version``), what it reads (``variant``), how good it was
    when chosen (``metric``, ``score`` with its interval), how its probabilities are calibrated (``calibrator``:
    a :class:`~cough_pipeline.classification.calibration.Calibrator` as JSON, or None for raw probabilities) and
    where it says "positive" (``threshold``, on the calibrated probabilities when there is a calibrator)."""

    model: str
    variant: str
    asset: str
    version: str
    metric: str
    score: float
    ci_low: float
    ci_high: float
    threshold: float
    validation_sensitivity: float
    validation_specificity: float
    calibrator: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Champion:
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})

    def calibrate(self, probability: float) -> float:
        """``probability`` on the scale of :attr:`threshold` (calibrated when the champion has a calibrator)."""
        if self.calibrator is None:
            return float(probability)
        return float(Calibrator.from_json(self.calibrator).apply([probability])[0])


def threshold_for_sensitivity(labels, probabilities, target: float) -> tuple[float, float, float]:
    """The highest threshold ``t`` (predict positive when ``p >= t``) whose sensitivity is at least ``target``.

    Returns:
        ``(threshold, sensitivity, specificity)`` at that threshold on these predictions.

    Raises:
        ClassificationError: no positive or no negative row.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    if not (y == 1).any() or not (y == 0).any():
        raise ClassificationError("a decision threshold needs validation predictions of both classes")
    positives = np.sort(p[y == 1])[::-1]
    # Predicting positive at p >= t catches every positive scoring t or more: the k-th highest positive score is
    # the highest threshold that catches k of them.
    needed = int(np.ceil(target * len(positives)))
    threshold = float(positives[max(needed, 1) - 1])
    sensitivity = float((p[y == 1] >= threshold).mean())
    specificity = float((p[y == 0] < threshold).mean())
    return threshold, sensitivity, specificity


def ranked(report: pd.DataFrame, metric: str = "roc_auc", evaluation: str = "holdout") -> pd.DataFrame:
    """Rows of ``metric`` on ``evaluation`` over all datasets, best first (ties: the higher interval's lower end,
    then the model and variant names)."""
    rows = report[(report["metric"] == metric) & (report["evaluation"] == evaluation) & (report["dataset"] == "all")]
    order = rows.sort_values(["value", "ci_low", "model", "variant"], ascending=[False, False, True, True])
    return order.reset_index(drop=True)


def best_challenger(report: pd.DataFrame, config: ChampionConfig) -> pd.Series:
    """The report row of the best model (:func:`ranked`, models without a value left out)."""
    rows = ranked(report, config.metric, config.evaluation).dropna(subset=["value"])
    if rows.empty:
        raise ClassificationError(f"the report has no {config.metric} on {config.evaluation!r} to choose a champion")
    return rows.iloc[0]


def challenger(
    report: pd.DataFrame,
    validation: pd.DataFrame,
    asset_of: dict[str, tuple[str, str]],
    config: ChampionConfig,
    calibrators: dict[tuple[str, str], str] | None = None,
) -> Champion:
    """The best model of ``report`` as a :class:`Champion`, its threshold chosen on its ``validation`` rows.

    Args:
        report: the leaderboard (one family's report or several joined).
        validation: prediction rows with split ``validation`` (model, variant, label, probability).
        asset_of: model name -> (model-store asset, version) that holds it.
        calibrators: (model, variant) -> calibrator JSON fitted on those validation rows; the champion's
            probabilities, and so its threshold, are then calibrated ones.
    """
    row = best_challenger(report, config)
    mine = validation[(validation["model"] == row["model"]) & (validation["variant"] == row["variant"])]
    calibrator = (calibrators or {}).get((str(row["model"]), str(row["variant"])))
    probability = mine["probability"].to_numpy(float)
    if calibrator is not None:
        probability = Calibrator.from_json(calibrator).apply(probability)
    threshold, sensitivity, specificity = threshold_for_sensitivity(
        mine["label"], probability, config.target_sensitivity
    )
    asset, version = asset_of[row["model"]]
    return Champion(
        model=str(row["model"]),
        variant=str(row["variant"]),
        asset=asset,
        version=version,
        metric=config.metric,
        score=float(row["value"]),
        ci_low=float(row["ci_low"]),
        ci_high=float(row["ci_high"]),
        threshold=threshold,
        validation_sensitivity=sensitivity,
        validation_specificity=specificity,
        calibrator=calibrator,
    )


def promote(current: Champion | None, candidate: Champion, margin: float) -> tuple[Champion, str]:
    """The champion after comparing ``candidate`` with ``current``, and why.

    A candidate replaces the champion only when it scores at least ``margin`` higher on the same metric (a change
    of metric always promotes, since scores would not compare). Scores are those recorded when each was chosen.
    """
    if current is None:
        return (
            candidate,
            f"no champion yet: {candidate.model} ({candidate.variant}) {candidate.metric} {candidate.score:.4f}",
        )
    if current.metric != candidate.metric:
        return candidate, f"metric changed from {current.metric} to {candidate.metric}: {candidate.model} promoted"
    if (current.model, current.variant, current.version) == (candidate.model, candidate.variant, candidate.version):
        return current, f"the champion {current.model} ({current.variant}) is unchanged"
    if candidate.score >= current.score + margin:
        return candidate, (
            f"{candidate.model} ({candidate.variant}) {candidate.score:.4f} beats the champion {current.model} "
            f"({current.variant}) {current.score:.4f} by at least {margin}"
        )
    return current, (
        f"the champion {current.model} ({current.variant}) {current.score:.4f} stays: the best challenger "
        f"{candidate.model} ({candidate.variant}) {candidate.score:.4f} is not {margin} better"
    )
