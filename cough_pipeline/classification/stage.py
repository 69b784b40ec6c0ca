"""The classical classification stage end to end: rank features on the CV folds, train the classical models per
fold on all features and on the top-k, and evaluate them with participant-bootstrap intervals.

One library call, used by the ``feature_ranking`` / ``classical_models`` assets and by ``make classify-experiment``:

* ``cv``: each recording of the CV part predicted once, by the fold model that did not train on it (pooled
  out-of-fold predictions); ``cv_mean`` / ``cv_sd``: the metric per validation fold, over folds;
* ``holdout``: the fold models' holdout probabilities averaged (the fold ensemble) on the untouched holdout;
* ``lodo:<dataset>``: trained on every other dataset (all their recordings), tested on this one.

Each cell is reported overall (``dataset = "all"``) and per source dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import pandas as pd

from cough_pipeline.bounds import Bounds, PositiveInt, Seed, check_fields
from cough_pipeline.classification.classical import (
    ClassicalConfig,
    ClassicalModels,
    column_sets,
    train_classical,
)
from cough_pipeline.classification.evaluation import (
    FOLD_ENSEMBLE,
    fold_ensemble,
    fold_summary,
    metric_table,
    per_dataset_table,
)
from cough_pipeline.classification.ranking import RankerConfig, RankingResult, positive_probability, rank_features
from cough_pipeline.classification.resampling import build_pipeline
from cough_pipeline.parallel import ProgressCallback

REPORT_COLUMNS = [
    "model",
    "variant",
    "evaluation",
    "dataset",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_participants",
    "n_boot_valid",
    "cv_mean",
    "cv_sd",
]
ALL_DATASETS = "all"


@dataclass(frozen=True)
class EvaluationConfig:
    """Bootstrap over participants: ``n_boot`` replicates, ``confidence`` level, seeded by ``seed``."""

    n_boot: PositiveInt = 1000
    confidence: Annotated[float, Bounds(gt=0.5, lt=1.0)] = 0.95
    seed: Seed = 0

    def __post_init__(self):
        check_fields(self)

    def kwargs(self) -> dict:
        return {"n_boot": self.n_boot, "confidence": self.confidence, "seed": self.seed}


@dataclass(frozen=True)
class StageConfig:
    ranker: RankerConfig = field(default_factory=RankerConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


@dataclass
class StageResult:
    """``rankings``: per variant. ``predictions``: validation, holdout (per fold and the fold ensemble) and LODO
    rows. ``report``: :data:`REPORT_COLUMNS`. ``resampling``: what resampling did per fold model."""

    rankings: dict[str, RankingResult]
    models: ClassicalModels
    predictions: pd.DataFrame
    report: pd.DataFrame
    resampling: pd.DataFrame
    column_sets: dict[str, dict[str, list[str]]]


def lodo_predictions(
    features: pd.DataFrame,
    lodo: pd.DataFrame,
    columns_by_set: dict[str, list[str]],
    variant: str,
    config: ClassicalConfig,
) -> pd.DataFrame:
    """Predictions of models trained on every dataset but one, for that dataset (``split = "lodo:<dataset>"``).

    Args:
        features: the feature table (rows of ``variant`` are used).
        lodo: leave-one-dataset-out rows: test_dataset, recording_id, role (``train`` | ``test``), label.
    """
    rows = features[features["variant"] == variant].drop(columns=["dataset", "participant_id"], errors="ignore")
    out = []
    for test_dataset, split in lodo.groupby("test_dataset", sort=True):
        frame = split.merge(rows, on="recording_id")
        train, test = frame[frame["role"] == "train"], frame[frame["role"] == "test"]
        if train["label"].nunique() < 2 or test.empty:
            continue
        for classifier in config.classifiers:
            for set_name, columns in columns_by_set.items():
                pipeline = build_pipeline(classifier, config.pipeline_config())
                pipeline.fit(train[columns].to_numpy(np.float64), train["label"].to_numpy(int))
                probability = positive_probability(pipeline, test[columns].to_numpy(np.float64))
                out.append(
                    test[["recording_id", "participant_id", "dataset", "label"]].assign(
                        model=f"{classifier}@{set_name}",
                        variant=variant,
                        split=f"lodo:{test_dataset}",
                        fold=FOLD_ENSEMBLE,
                        probability=probability,
                    )
                )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def evaluation_rows(predictions: pd.DataFrame, evaluation: str, config: EvaluationConfig) -> pd.DataFrame:
    """Overall and per-dataset metric rows of one kind of evaluation (fold column left out: pooled)."""
    by = ("model", "variant")
    overall = metric_table(predictions, by=by, **config.kwargs()).assign(dataset=ALL_DATASETS)
    by_dataset = per_dataset_table(predictions, by=by, **config.kwargs())
    return pd.concat([overall, by_dataset], ignore_index=True).assign(evaluation=evaluation)


def report_table(predictions: pd.DataFrame, config: EvaluationConfig) -> pd.DataFrame:
    """The report of a predictions table (see the module docstring for the evaluations)."""
    validation = predictions[predictions["split"] == "validation"]
    parts = [
        evaluation_rows(validation, "cv", config),
        evaluation_rows(
            predictions[predictions["fold"].eq(FOLD_ENSEMBLE) & predictions["split"].eq("holdout")], "holdout", config
        ),
    ]
    for split, rows in predictions[predictions["split"].str.startswith("lodo:")].groupby("split", sort=True):
        parts.append(evaluation_rows(rows, split, config))
    per_fold = metric_table(validation, by=("model", "variant", "split", "fold"), **{**config.kwargs(), "n_boot": 1})
    spread = fold_summary(per_fold).rename(columns={"mean": "cv_mean", "sd": "cv_sd"})
    report = pd.concat(parts, ignore_index=True).merge(
        spread[["model", "variant", "metric", "cv_mean", "cv_sd"]], on=["model", "variant", "metric"], how="left"
    )
    return report[REPORT_COLUMNS].sort_values(
        ["evaluation", "dataset", "model", "variant", "metric"], ignore_index=True
    )


def rank_variants(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    blocks: dict[str, list[str]],
    domains: dict[str, str],
    config: RankerConfig,
    progress: ProgressCallback | None = None,
) -> dict[str, RankingResult]:
    """The CoughFeatureRanker on the CV folds of each variant in ``features`` (the holdout is never used)."""
    return {
        variant: rank_features(features[features["variant"] == variant], folds, blocks, domains, config, progress)
        for variant in sorted(features["variant"].unique())
    }


def ranking_table(rankings: dict[str, RankingResult]) -> pd.DataFrame:
    """The rankings of every variant as one table (``variant`` first)."""
    return pd.concat([r.ranking.assign(variant=v) for v, r in rankings.items()], ignore_index=True)[
        ["variant", *next(iter(rankings.values())).ranking.columns]
    ]


def top_features(ranking: pd.DataFrame, variant: str, k: int) -> list[str]:
    """The ``k`` best-ranked features of ``variant`` in a :func:`ranking_table`."""
    return ranking[ranking["variant"] == variant].sort_values("rank")["feature"].head(k).tolist()


def train_and_evaluate(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    lodo: pd.DataFrame | None,
    sets: dict[str, dict[str, list[str]]],
    config: StageConfig,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Train the classical models per variant and feature set, predict, and build the report.

    Args:
        features: the feature table (one row per recording and variant).
        folds: the fold table; ``lodo``: leave-one-dataset-out rows (or None to skip that evaluation).
        sets: variant -> feature set name -> columns (e.g. :func:`column_sets` of each variant's ranking).
        config: classical models and bootstrap settings (``config.ranker`` is not used here).
    """
    parts, predictions, notes = [], [], []
    for variant, columns_by_set in sets.items():
        trained = train_classical(features, folds, columns_by_set, variant, config.classical, progress)
        parts.append(trained.models)
        predictions.append(trained.predictions)
        notes.append(trained.resampling)
        if lodo is not None and len(lodo):
            predictions.append(lodo_predictions(features, lodo, columns_by_set, variant, config.classical))
    table = pd.concat(predictions, ignore_index=True)
    table = pd.concat([table, fold_ensemble(table[~table["split"].str.startswith("lodo:")])], ignore_index=True)
    return StageResult(
        rankings={},
        models=ClassicalModels.combine(*parts),
        predictions=table,
        report=report_table(table, config.evaluation),
        resampling=pd.concat(notes, ignore_index=True),
        column_sets=sets,
    )


def run_stage(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    lodo: pd.DataFrame | None,
    blocks: dict[str, list[str]],
    domains: dict[str, str],
    config: StageConfig,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Rank, then train and evaluate, for every variant in ``features`` (what the assets do in two steps)."""
    rankings = rank_variants(features, folds, blocks, domains, config.ranker, progress)
    k = config.classical.top_k
    sets = {variant: column_sets(blocks, ranking.top_features(k), k) for variant, ranking in rankings.items()}
    result = train_and_evaluate(features, folds, lodo, sets, config, progress)
    result.rankings = rankings
    return result


def best_models(report: pd.DataFrame, metric: str = "roc_auc", evaluation: str = "holdout") -> pd.DataFrame:
    """Per variant, the model with the highest ``metric`` on ``evaluation`` over all datasets (ties by name)."""
    rows = report[
        (report["metric"] == metric) & (report["evaluation"] == evaluation) & (report["dataset"] == ALL_DATASETS)
    ]
    ordered = rows.sort_values(["variant", "value", "model"], ascending=[True, False, True])
    return ordered.drop_duplicates("variant").reset_index(drop=True)
