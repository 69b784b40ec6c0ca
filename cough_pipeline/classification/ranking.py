"""CoughFeatureRanker: how well each feature alone separates COVID-positive from negative coughs.

Each feature's block of summary columns (e.g. the 7 statistics of ``rms``) is scored on its own: for every
classifier and every cross-validation fold, a :func:`~cough_pipeline.classification.resampling.build_pipeline`
pipeline is fitted on the other folds and scored on that fold (ROC-AUC, precision and recall at probability 0.5).
A feature's score is the mean over classifiers and folds; rank 1 is the best by the configured metric (ties by
name). Only ``split == "cv"`` recordings are used: the holdout never reaches a fit or a score, so choosing the
top features cannot peek at the data the final models are judged on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from cough_pipeline.bounds import PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.resampling import ESTIMATORS, EstimatorName, ResamplingConfig, build_pipeline
from cough_pipeline.parallel import ProgressCallback, notify, process_map

RANK_METRICS = ("roc_auc", "precision", "recall")
FOLD_COLUMNS = ("recording_id", "participant_id", "dataset", "label", "split", "fold")
#: Probability at or above which a recording counts as predicted positive (precision, recall).
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class RankerConfig:
    """What the ranking fits and how it orders features.

    ``classifiers``: the estimators averaged over (:data:`~cough_pipeline.classification.resampling.ESTIMATORS`).
    ``metric``: what rank 1 is best at. ``top_k``: how many features :meth:`RankingResult.top_features` returns
    by default. ``seed``: seeds every pipeline (it replaces ``resampling.seed``, so one number reproduces the stage).
    """

    classifiers: tuple[EstimatorName, ...] = ESTIMATORS
    metric: Literal["roc_auc", "precision", "recall"] = "roc_auc"
    top_k: PositiveInt = 5
    resampling: ResamplingConfig = field(default_factory=ResamplingConfig)
    seed: Seed = 0
    #: Processes scoring features in parallel (one feature block per task; 1 = in this process).
    workers: PositiveInt = 1

    def __post_init__(self):
        check_fields(self)
        if not self.classifiers or len(set(self.classifiers)) != len(self.classifiers):
            raise ValueError(f"RankerConfig.classifiers must be distinct and not empty, got {self.classifiers!r}")

    def pipeline_config(self) -> ResamplingConfig:
        """The resampling settings each pipeline is built with (seeded by ``seed``)."""
        return dataclasses.replace(self.resampling, seed=self.seed)


@dataclass
class RankingResult:
    """Per-fold scores and the ranking of every feature.

    ``scores``: one row per feature x classifier x fold: feature, domain, classifier, fold, roc_auc, precision,
    recall, n_train, n_validation. ``ranking``: one row per feature, best first: feature, domain, roc_auc,
    precision, recall (means over classifiers and folds), rank, n_columns. ``blocks``: feature -> its columns.
    """

    scores: pd.DataFrame
    ranking: pd.DataFrame
    blocks: dict[str, list[str]]
    config: RankerConfig

    def top_features(self, k: int | None = None) -> list[str]:
        """The ``k`` (default ``config.top_k``) best features, best first."""
        k = self.config.top_k if k is None else k
        if k < 1:
            raise ClassificationError(f"top_features needs k >= 1, got {k}")
        return self.ranking.sort_values("rank")["feature"].head(k).tolist()

    def top_columns(self, k: int | None = None) -> list[str]:
        """The columns of the ``k`` best features, best feature's block first."""
        return [column for feature in self.top_features(k) for column in self.blocks[feature]]


def with_folds(features: pd.DataFrame, folds: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The fold table's rows (recording_id, participant_id, dataset, label, split, fold) with ``columns`` of each
    recording's feature row; recordings missing from either table are left out.

    Raises:
        ClassificationError: missing columns, a recording twice in either table, labels other than 0/1, an unknown
            split, or no recording in both tables.
    """
    missing_f = [c for c in ["recording_id", *columns] if c not in features.columns]
    missing_k = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing_f or missing_k:
        raise ClassificationError(f"missing columns: features {missing_f[:10]}, folds {missing_k}")
    for name, table in (("features", features), ("folds", folds)):
        repeated = table["recording_id"][table["recording_id"].duplicated()].unique()
        if len(repeated):
            raise ClassificationError(f"{name} has {len(repeated)} recordings twice, e.g. {list(repeated[:3])}")
    frame = folds[list(FOLD_COLUMNS)].merge(features[["recording_id", *columns]], on="recording_id", how="inner")
    if frame.empty:
        raise ClassificationError("no recording is in both the feature table and the fold table")
    if not frame["label"].isin([0, 1]).all():
        raise ClassificationError(f"labels must be 0/1, got {sorted(frame['label'].unique().tolist())[:5]}")
    if not frame["split"].isin(["cv", "holdout"]).all():
        raise ClassificationError(f"split must be 'cv' or 'holdout', got {sorted(frame['split'].unique())}")
    return frame.reset_index(drop=True)


def check_finite(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise :class:`ClassificationError` naming the columns of ``frame`` with NaN or infinite values."""
    bad = ~np.isfinite(frame[columns].to_numpy(dtype=np.float64))
    if bad.any():
        named = [columns[i] for i in np.flatnonzero(bad.any(axis=0))]
        raise ClassificationError(
            f"{what}: {int(bad.any(axis=1).sum())} rows have non-finite values in {len(named)} columns, e.g. "
            f"{named[:5]}"
        )


def cv_folds(frame: pd.DataFrame) -> list[int]:
    """The fold numbers of the ``split == "cv"`` rows; at least two are needed to train and validate."""
    numbers = sorted(int(k) for k in frame.loc[frame["split"] == "cv", "fold"].unique())
    if len(numbers) < 2:
        raise ClassificationError(f"cross-validation needs at least 2 folds of cv rows, got {numbers}")
    return numbers


def fold_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """ROC-AUC (NaN with one class), precision and recall at :data:`DECISION_THRESHOLD` (0 when undefined)."""
    predicted = (probabilities >= DECISION_THRESHOLD).astype(int)
    both = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both else float("nan"),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
    }


def positive_probability(pipeline, X: np.ndarray) -> np.ndarray:
    """P(label 1) from a fitted classifier pipeline."""
    classes = list(pipeline.classes_)
    if 1 not in classes:
        raise ClassificationError(f"the model was trained without positive rows (classes {classes})")
    return pipeline.predict_proba(X)[:, classes.index(1)]


def _block_scores(task: tuple[np.ndarray, np.ndarray, np.ndarray, list[int], RankerConfig]) -> list[dict]:
    """Per classifier x fold scores of one feature block: ``task`` is (X, labels, fold numbers per row, folds,
    config), a plain tuple so a worker process can take it."""
    X, y, fold, folds, config = task
    rows = []
    for classifier in config.classifiers:
        for k in folds:
            train, validation = fold != k, fold == k
            pipeline = build_pipeline(classifier, config.pipeline_config()).fit(X[train], y[train])
            scores = fold_scores(y[validation], positive_probability(pipeline, X[validation]))
            rows.append({"classifier": classifier, "fold": k, **scores, "n_train": int(train.sum())})
            rows[-1]["n_validation"] = int(validation.sum())
    return rows


def rank_features(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    blocks: dict[str, list[str]],
    domains: dict[str, str],
    config: RankerConfig,
    progress: ProgressCallback | None = None,
) -> RankingResult:
    """Score every feature block alone with each classifier over the cross-validation folds, and rank them.

    Args:
        features: one row per recording (one variant: the caller filters), keyed by ``recording_id``.
        folds: the fold table; only its ``split == "cv"`` rows are used.
        blocks: feature -> its columns (e.g. ``features.feature_blocks(columns)``).
        domains: feature -> domain ("time", "spectral", ...), for every feature in ``blocks``.
        config: classifiers, ranking metric and resampling.
        progress: ``progress(done, total)`` after each feature's classifiers x folds fits.

    Returns:
        The per-fold scores and the ranking (:class:`RankingResult`).
    """
    if "variant" in features.columns and features["variant"].nunique() > 1:
        raise ClassificationError(f"rank one variant at a time, got {sorted(features['variant'].unique())}")
    if not blocks or any(not columns for columns in blocks.values()):
        raise ClassificationError("every feature block needs at least one column")
    unknown = sorted(set(blocks) - set(domains))
    if unknown:
        raise ClassificationError(f"features without a domain: {unknown}")
    columns = [column for feature in sorted(blocks) for column in blocks[feature]]
    frame = with_folds(features, folds, columns)
    cv = frame[frame["split"] == "cv"].reset_index(drop=True)  # the holdout stops here
    check_finite(cv, columns, "cross-validation features")
    numbers = cv_folds(cv)
    y, fold = cv["label"].to_numpy(int), cv["fold"].to_numpy(int)
    features = sorted(blocks)
    tasks = ((cv[blocks[f]].to_numpy(np.float64), y, fold, numbers, config) for f in features)
    rows = []
    with process_map(config.workers) as mapper:
        for done, (feature, block_rows) in enumerate(zip(features, mapper(_block_scores, tasks)), start=1):
            rows += [{"feature": feature, "domain": domains[feature], **row} for row in block_rows]
            notify(progress, done, len(features))
    scores = pd.DataFrame(rows)
    return RankingResult(
        scores, _ranking(scores, blocks, config.metric), {f: list(c) for f, c in blocks.items()}, config
    )


def _ranking(scores: pd.DataFrame, blocks: dict[str, list[str]], metric: str) -> pd.DataFrame:
    """One row per feature: mean metrics, rank by ``metric`` (1 = best; ties and NaN-only features by name)."""
    ranking = scores.groupby(["feature", "domain"], as_index=False)[list(RANK_METRICS)].mean()
    ranking = ranking.sort_values([metric, "feature"], ascending=[False, True], na_position="last")
    ranking["rank"] = np.arange(1, len(ranking) + 1)
    ranking["n_columns"] = [len(blocks[f]) for f in ranking["feature"]]
    return ranking.reset_index(drop=True)


def ranking_bar_png(ranking: pd.DataFrame, metric: str = "roc_auc", title: str | None = None) -> bytes:
    """Horizontal bars of each feature's mean ``metric``, best at the top, coloured by domain.

    Args:
        ranking: :attr:`RankingResult.ranking` (feature, domain, rank and the metric column).
        metric: one of :data:`RANK_METRICS`.
        title: the figure title (default: the metric).
    """
    from cough_pipeline.plots import plt, to_png  # matplotlib loads only when a figure is drawn

    if metric not in RANK_METRICS:
        raise ClassificationError(f"metric must be one of {list(RANK_METRICS)}, got {metric!r}")
    ordered = ranking.sort_values("rank")
    domains = sorted(ordered["domain"].unique())
    colours = {domain: plt.get_cmap("tab10")(i % 10) for i, domain in enumerate(domains)}
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(ordered) + 1.2))
    axis.barh(
        ordered["feature"], ordered[metric].fillna(0.0), color=[colours[d] for d in ordered["domain"]], height=0.7
    )
    axis.invert_yaxis()  # rank 1 at the top
    if metric == "roc_auc":
        axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)  # chance
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel(f"mean {metric} over classifiers and folds")
    axis.set_title(title or f"features ranked by {metric}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[d]) for d in domains]
    axis.legend(handles, domains, fontsize="small", loc="lower right")
    return to_png(figure)
