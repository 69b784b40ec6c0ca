"""One leaderboard over every classifier family, evaluated alike, with the two checks a plain holdout lacks.

Rows are :data:`~cough_pipeline.classification.stage.REPORT_COLUMNS` plus ``family`` (``classical`` or
``neural``); each family's own report (pooled CV, the holdout fold ensemble, per dataset, leave-one-dataset-out
where trained) is joined with two further evaluations computed here from the families' predictions:

``holdout_matched``
    The fold ensemble on the matched holdout (:mod:`cough_pipeline.classification.matching`): per stratum of
    dataset, gender and age band as many positive as negative participants. A model that learned *who* coughs
    rather than *how* loses most of its edge here.
``holdout_calibrated``
    The fold ensemble after calibration fitted on the pooled validation predictions of each model and variant
    only (:mod:`cough_pipeline.classification.calibration`). Temperature scaling keeps the ranking (ROC-AUC); it
    moves the thresholded metrics at 0.5 and the probabilities' calibration, whose Brier score, ECE and NLL before
    and after are in :attr:`Leaderboard.calibration`.

:func:`variant_comparison` answers whether separation helps classification: per model, the holdout metric on
separated coughs against the original recordings, with both intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cough_pipeline.bounds import PositiveInt, check_fields
from cough_pipeline.classification.calibration import CalibrationMethod, calibrate_predictions, calibration_table
from cough_pipeline.classification.champion import ranked as ranking
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS
from cough_pipeline.classification.matching import MATCH_KEYS, join_demographics, matched_holdout, matching_summary
from cough_pipeline.classification.stage import REPORT_COLUMNS, EvaluationConfig, evaluation_rows

MatchKey = Literal["dataset", "gender", "age_band"]
LEADERBOARD_COLUMNS = ["family", *REPORT_COLUMNS]
MATCHED = "holdout_matched"
CALIBRATED = "holdout_calibrated"
VARIANT_COLUMNS = (
    "model",
    "family",
    "original",
    "original_ci_low",
    "original_ci_high",
    "separated",
    "separated_ci_low",
    "separated_ci_high",
    "difference",
)


@dataclass(frozen=True)
class LeaderboardConfig:
    """``calibration``: the calibrator fitted per model and variant; ``reliability_bins``: bins of ECE and the
    reliability diagrams; ``match_on``: the strata of the matched holdout."""

    calibration: CalibrationMethod = "temperature"
    reliability_bins: PositiveInt = 10
    match_on: tuple[MatchKey, ...] = MATCH_KEYS

    def __post_init__(self):
        check_fields(self)
        if not self.match_on or len(set(self.match_on)) != len(self.match_on):
            raise ValueError(f"match_on needs distinct keys, got {list(self.match_on)}")


@dataclass
class Leaderboard:
    """``table``: :data:`LEADERBOARD_COLUMNS`. ``calibration``: measures before/after per model, variant, split
    and kind of prediction, with the ``method`` and the fitted ``calibrator`` (JSON). ``calibrated``: the
    calibrated predictions. ``matched``: the matched holdout's fold-ensemble rows. ``matching``: per stratum the
    participants before and after matching."""

    table: pd.DataFrame
    calibration: pd.DataFrame
    calibrated: pd.DataFrame
    matched: pd.DataFrame
    matching: pd.DataFrame


def _holdout_ensemble(predictions: pd.DataFrame) -> pd.DataFrame:
    return predictions[predictions["split"].eq("holdout") & predictions["fold"].eq(FOLD_ENSEMBLE)]


def _report_rows(predictions: pd.DataFrame, evaluation: str, config: EvaluationConfig) -> pd.DataFrame:
    """Report rows of one evaluation (no fold spread: one set of predictions), empty without predictions."""
    if predictions.empty:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    rows = evaluation_rows(predictions[list(PREDICTION_COLUMNS)], evaluation, config)
    return rows.assign(cv_mean=np.nan, cv_sd=np.nan)[REPORT_COLUMNS]


def matched_evaluation(
    predictions: pd.DataFrame, manifest: pd.DataFrame, keys, config: EvaluationConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The matched holdout's report rows, its fold-ensemble prediction rows and the matching summary."""
    holdout = join_demographics(_holdout_ensemble(predictions), manifest)
    matched = matched_holdout(holdout, config.seed, keys)
    summary = matching_summary(holdout, matched, keys)
    return _report_rows(matched, MATCHED, config), matched, summary


def calibrated_evaluation(
    predictions: pd.DataFrame, config: LeaderboardConfig, evaluation: EvaluationConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Report rows of the calibrated holdout ensemble, the calibrated predictions and the calibration table."""
    calibrated, calibrators = calibrate_predictions(predictions, config.calibration)
    table = calibration_table(predictions, calibrated, config.reliability_bins)
    fitted = pd.DataFrame(
        [{"model": m, "variant": v, "calibrator": c.to_json()} for (m, v), c in calibrators.items()],
        columns=["model", "variant", "calibrator"],
    )
    table = table.assign(method=config.calibration).merge(fitted, on=["model", "variant"], how="left")
    return _report_rows(_holdout_ensemble(calibrated), CALIBRATED, evaluation), calibrated, table


def build_leaderboard(
    reports: dict[str, pd.DataFrame],
    predictions: dict[str, pd.DataFrame],
    manifest: pd.DataFrame,
    config: LeaderboardConfig,
    evaluation: EvaluationConfig,
) -> Leaderboard:
    """Join each family's report and add the matched and calibrated holdout evaluations.

    Args:
        reports: family -> its report (:data:`REPORT_COLUMNS`).
        predictions: family -> its predictions (validation, holdout with the fold ensemble; LODO rows are
            ignored here).
        manifest: the manifest (gender, age) the matched holdout strata come from.
        config: calibration and matching settings.
        evaluation: bootstrap settings (its seed also seeds the matching).

    Raises:
        ClassificationError: a model name in two families, or what calibration and matching raise.
    """
    families = {model: family for family, rows in predictions.items() for model in rows["model"].unique()}
    shared = [m for m in families if sum(m in set(r["model"]) for r in predictions.values()) > 1]
    if shared:
        raise ClassificationError(f"models named in more than one family: {shared}")
    pooled = pd.concat([rows[list(PREDICTION_COLUMNS)] for rows in predictions.values()], ignore_index=True)
    pooled = pooled[pooled["split"].isin(["validation", "holdout"])].reset_index(drop=True)
    matched_rows, matched, summary = matched_evaluation(pooled, manifest, list(config.match_on), evaluation)
    calibrated_rows, calibrated, calibration = calibrated_evaluation(pooled, config, evaluation)
    parts = [*reports.values(), matched_rows, calibrated_rows]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    table.insert(0, "family", table["model"].map(families))
    table = table[LEADERBOARD_COLUMNS].sort_values(["evaluation", "dataset", "model", "variant", "metric"])
    return Leaderboard(table.reset_index(drop=True), calibration, calibrated, matched, summary)


def variant_comparison(table: pd.DataFrame, metric: str = "roc_auc", evaluation: str = "holdout") -> pd.DataFrame:
    """Per model trained on both variants: the metric with its interval on each, and separated minus original.

    Returns:
        :data:`VARIANT_COLUMNS`, largest difference first; empty when no model has both variants.
    """
    rows = ranking(table, metric, evaluation)
    wide = rows.pivot_table(index=["model", "family"], columns="variant", values=["value", "ci_low", "ci_high"])
    if wide.empty or not {"original", "separated"} <= set(wide.columns.get_level_values(1)):
        return pd.DataFrame(columns=list(VARIANT_COLUMNS))
    out = pd.DataFrame(index=wide.index)
    for variant in ("original", "separated"):
        out[variant] = wide[("value", variant)]
        out[f"{variant}_ci_low"] = wide[("ci_low", variant)]
        out[f"{variant}_ci_high"] = wide[("ci_high", variant)]
    out["difference"] = out["separated"] - out["original"]
    out = out.dropna(subset=["difference"]).reset_index()
    return out[list(VARIANT_COLUMNS)].sort_values("difference", ascending=False, ignore_index=True)


def separation_verdict(comparison: pd.DataFrame, metric: str = "roc_auc") -> str:
    """One sentence on whether separated coughs scored better than the original recordings."""
    if comparison.empty:
        return "no model was trained on both variants: separation's effect is not measured"
    better = int((comparison["difference"] > 0).sum())
    overlapping = (comparison["separated_ci_low"] <= comparison["original_ci_high"]) & (
        comparison["original_ci_low"] <= comparison["separated_ci_high"]
    )
    return (
        f"separated coughs scored a higher holdout {metric} than the original recordings for {better} of "
        f"{len(comparison)} models (median difference {comparison['difference'].median():+.3f}); the 95 % intervals "
        f"overlap for {int(overlapping.sum())} of them"
    )
