"""Classification metrics with participant-bootstrap confidence intervals, per model, variant, split and fold.

Intervals resample *participants* (with replacement, each drawn participant bringing all its rows), because rows
of one participant are not independent: a row bootstrap would treat 100 coughs of one person as 100 pieces of
evidence and give intervals that are far too narrow.

A bootstrap replicate is a vector of integer row weights (how many times the row's participant was drawn), so all
replicates of a cell are scored at once with weighted confusion counts and weighted ranking sums (one sort of the
probabilities per cell), and every metric equals its unweighted definition on the resampled rows:

* threshold metrics use ``probability >= threshold``; a ratio with a zero denominator is NaN (precision with no
  predicted positives, recall without positives, specificity without negatives, F1 = 2TP / (2TP + FP + FN) with
  neither, balanced accuracy when recall or specificity is NaN);
* ``roc_auc`` is the Mann-Whitney probability (ties count half), NaN with one class;
* ``pr_auc`` is average precision (step-wise, as :func:`sklearn.metrics.average_precision_score`), NaN without
  positives;
* ``specificity_at_80_sensitivity`` is the best specificity among the ROC points (every distinct probability as a
  threshold) whose sensitivity is at least 0.8, NaN with one class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cough_pipeline.classification.errors import ClassificationError

FOLD_ENSEMBLE = -1
METRICS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "balanced_accuracy",
    "roc_auc",
    "pr_auc",
    "specificity_at_80_sensitivity",
)
PREDICTION_COLUMNS = (
    "recording_id",
    "participant_id",
    "dataset",
    "model",
    "variant",
    "split",
    "fold",
    "probability",
    "label",
)
SPLITS = ("validation", "holdout")
DEFAULT_BY = ("model", "variant", "split", "fold")
BOOTSTRAP_COLUMNS = ("metric", "value", "ci_low", "ci_high", "n", "n_participants", "n_boot_valid")
#: Sensitivity floor of ``specificity_at_80_sensitivity``.
SENSITIVITY_FLOOR = 0.8
#: Bootstrap weights are built in chunks of at most this many (replicate x row) cells, to bound memory.
_CHUNK_CELLS = 4_000_000


def check_predictions(predictions: pd.DataFrame) -> None:
    """Raise ClassificationError unless ``predictions`` follows the predictions schema: every column present,
    ids and model/variant set, split validation/holdout, integer folds, finite probabilities in [0, 1], labels 0/1.
    """
    missing = [column for column in PREDICTION_COLUMNS if column not in predictions.columns]
    if missing:
        raise ClassificationError(f"predictions lack the columns {missing}; need {list(PREDICTION_COLUMNS)}")
    for column in ("recording_id", "participant_id", "dataset", "model", "variant"):
        if predictions[column].isna().any():
            raise ClassificationError(f"predictions column {column!r} has missing values")
    bad_split = sorted(set(predictions["split"].astype(str)) - set(SPLITS))
    if bad_split:
        raise ClassificationError(f"predictions split must be one of {list(SPLITS)}, got {bad_split}")
    folds = pd.to_numeric(predictions["fold"], errors="coerce")
    if folds.isna().any() or (folds != np.round(folds)).any() or (folds < FOLD_ENSEMBLE).any():
        raise ClassificationError("predictions fold must be an integer >= -1 (-1 is the fold ensemble)")
    _check_values(predictions["label"], predictions["probability"])


def binary_metrics(labels, probabilities, threshold: float = 0.5) -> dict[str, float]:
    """Every metric of :data:`METRICS` (see the module docstring for definitions and NaN cases).

    Args:
        labels: 0/1 per row, shape ``(n,)``.
        probabilities: P(positive) per row in [0, 1], shape ``(n,)``.
        threshold: a row is predicted positive when its probability is at least this.
    """
    labels, probabilities = _check_values(labels, probabilities)
    scores = _weighted_metrics(np.ones((1, len(labels))), labels, probabilities, threshold)
    return {name: float(values[0]) for name, values in scores.items()}


def bootstrap_metrics(
    predictions: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    group_column: str = "participant_id",
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Metrics on all rows with percentile intervals from a bootstrap over ``group_column`` (participants).

    Args:
        predictions: label, probability and ``group_column`` per row (``group_column="recording_id"`` gives the
            ordinary row bootstrap).
        n_boot: replicates; seed: their random generator's seed; confidence: the interval's coverage.

    Returns:
        One row per metric: metric, value (all rows), ci_low, ci_high, n (rows), n_participants (groups),
        n_boot_valid (replicates where the metric was defined; the interval uses only those, NaN when none).
    """
    if int(n_boot) < 1 or not 0.0 < confidence < 1.0:
        raise ClassificationError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot} and {confidence}")
    for column in ("label", "probability", group_column):
        if column not in predictions.columns:
            raise ClassificationError(f"predictions lack the column {column!r}")
    labels, probabilities = _check_values(predictions["label"], predictions["probability"])
    _, codes = np.unique(predictions[group_column].astype(str).to_numpy(), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    value = _weighted_metrics(np.ones((1, len(labels))), labels, probabilities, threshold)
    replicates = {name: [] for name in METRICS}
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(1, len(labels), n_groups))
    for start in range(0, int(n_boot) if n_groups else 0, chunk):
        size = min(chunk, int(n_boot) - start)
        weights = _group_counts(rng, size, n_groups)[:, codes]
        for name, values in _weighted_metrics(weights, labels, probabilities, threshold).items():
            replicates[name].append(values)
    tail = 100 * (1 - confidence) / 2
    rows = []
    for name in METRICS:
        values = np.concatenate(replicates[name]) if replicates[name] else np.empty(0)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        rows.append((name, float(value[name][0]), float(low), float(high), len(labels), n_groups, len(values)))
    return pd.DataFrame(rows, columns=list(BOOTSTRAP_COLUMNS))


def metric_table(predictions: pd.DataFrame, by=DEFAULT_BY, **bootstrap_kwargs) -> pd.DataFrame:
    """:func:`bootstrap_metrics` for every cell of ``by``, in long format.

    Every cell uses the same seed, so cells over the same participants (e.g. two models on one fold) are resampled
    alike and their intervals are directly comparable.

    Returns:
        ``[*by, metric, value, ci_low, ci_high, n, n_participants, n_boot_valid]``, cells sorted by ``by``.
    """
    by = list(by)
    missing = [column for column in by if column not in predictions.columns]
    if missing:
        raise ClassificationError(f"predictions lack the grouping columns {missing}")
    tables = []
    for key, cell in predictions.groupby(by, sort=True, dropna=False):
        table = bootstrap_metrics(cell, **bootstrap_kwargs)
        tables.append(table.assign(**dict(zip(by, key))))
    columns = [*by, *BOOTSTRAP_COLUMNS]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


def per_dataset_table(predictions: pd.DataFrame, by=DEFAULT_BY, **bootstrap_kwargs) -> pd.DataFrame:
    """:func:`metric_table` with ``dataset`` added to ``by`` (one cell per source dataset)."""
    return metric_table(predictions, by=[*by, "dataset"], **bootstrap_kwargs)


def fold_ensemble(predictions: pd.DataFrame) -> pd.DataFrame:
    """Holdout predictions averaged over the fold models, per model, variant and recording.

    Returns:
        Prediction rows (the predictions schema) with split ``holdout`` and fold :data:`FOLD_ENSEMBLE`, sorted by
        model, variant and recording_id; existing ensemble rows in the input are ignored.

    Raises:
        ClassificationError: a bad schema, a recording predicted twice by one fold model, a recording whose label,
            participant or dataset differ between fold models, or one missed by some fold models of its model and
            variant (its average would not be comparable).
    """
    check_predictions(predictions)
    holdout = predictions[(predictions["split"] == "holdout") & (predictions["fold"] != FOLD_ENSEMBLE)]
    keys = ["model", "variant", "recording_id"]
    if holdout.duplicated([*keys, "fold"]).any():
        raise ClassificationError("a holdout recording is predicted more than once by one fold model")
    grouped = holdout.groupby(keys, sort=True)
    ensemble = grouped.agg(
        participant_id=("participant_id", "first"),
        dataset=("dataset", "first"),
        probability=("probability", "mean"),
        label=("label", "first"),
        n_models=("fold", "nunique"),
    ).reset_index()
    varying = grouped[["participant_id", "dataset", "label"]].nunique().gt(1).any(axis=1)
    if varying.any():
        raise ClassificationError(f"fold models disagree on label/participant/dataset of {varying[varying].index[0]}")
    expected = holdout.groupby(["model", "variant"])["fold"].nunique().rename("expected")
    ensemble = ensemble.join(expected, on=["model", "variant"])
    short = ensemble[ensemble["n_models"] < ensemble["expected"]]
    if len(short):
        first = short.iloc[0]
        raise ClassificationError(
            f"{len(short)} holdout recordings lack some fold models' predictions, e.g. {first['recording_id']} of "
            f"{first['model']}/{first['variant']}: {first['n_models']} of {first['expected']} folds"
        )
    ensemble = ensemble.assign(split="holdout", fold=FOLD_ENSEMBLE, label=ensemble["label"].astype(int))
    return ensemble[list(PREDICTION_COLUMNS)]


def fold_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over the cross-validation folds of a :func:`metric_table`.

    Args:
        table: metric_table output; only its validation rows of real folds (fold >= 0) are used.

    Returns:
        model, variant (dataset too when the table has it), metric, mean, sd, n_folds (folds where the metric was
        defined).
    """
    needed = ("model", "variant", "split", "fold", "metric", "value")
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise ClassificationError(f"metric table lacks the columns {missing}")
    keys = [column for column in ("model", "variant", "dataset") if column in table.columns] + ["metric"]
    validation = table[(table["split"] == "validation") & (table["fold"] != FOLD_ENSEMBLE)]
    values = validation.groupby(keys, sort=True)["value"]
    summary = values.agg(mean="mean", sd="std", n_folds="count").reset_index()
    return summary.astype({"n_folds": int})


def _check_values(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Labels as a bool array and probabilities as float64, or ClassificationError."""
    labels = np.asarray(pd.to_numeric(pd.Series(labels), errors="coerce"), dtype=float)
    probabilities = np.asarray(pd.to_numeric(pd.Series(probabilities), errors="coerce"), dtype=float)
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise ClassificationError(f"labels {labels.shape} and probabilities {probabilities.shape} must match (n,)")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ClassificationError(f"labels must be 0 or 1, got {sorted(set(labels[~np.isin(labels, (0, 1))]))[:5]}")
    outside = ~((probabilities >= 0.0) & (probabilities <= 1.0))  # NaN fails both comparisons
    if outside.any():
        example = probabilities[outside][0]
        raise ClassificationError(f"{int(outside.sum())} probabilities outside [0, 1] or missing, e.g. {example}")
    return labels == 1.0, probabilities


def _group_counts(rng: np.random.Generator, size: int, n_groups: int) -> np.ndarray:
    """How often each group is drawn in each of ``size`` replicates of ``n_groups`` draws with replacement.

    Shape: ``(size, n_groups)``, float64, each row summing to ``n_groups``.
    """
    draws = rng.integers(0, n_groups, size=(size, n_groups))
    flat = (draws + n_groups * np.arange(size)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n_groups).reshape(size, n_groups).astype(np.float64)


def _weighted_metrics(
    weights: np.ndarray, positive: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Every metric for each row of ``weights`` (a replicate's row multiplicities).

    Shape: weights ``(B, n)``, positive and probabilities ``(n,)``; each returned array ``(B,)``.
    """
    predicted = probabilities >= threshold
    tp, fp = weights @ (positive & predicted), weights @ (~positive & predicted)
    fn, tn = weights @ (positive & ~predicted), weights @ (~positive & ~predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall, specificity = tp / (tp + fn), tn / (tn + fp)
        scores = {
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "precision": tp / (tp + fp),
            "recall": recall,
            "specificity": specificity,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "balanced_accuracy": (recall + specificity) / 2,
        }
    scores.update(_ranking_metrics(weights, positive, probabilities))
    return {name: np.where(np.isfinite(values), values, np.nan) for name, values in scores.items()}


def _ranking_metrics(weights: np.ndarray, positive: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """ROC-AUC, average precision and specificity at 80 % sensitivity per replicate, from one sort.

    Rows are sorted by descending probability and tied probabilities merged into one ROC point; per replicate,
    ``pos``/``neg`` ``(B, U)`` are the weights of positives/negatives at each distinct probability.
    """
    n_replicates = weights.shape[0]
    if len(probabilities) == 0:
        return {name: np.full(n_replicates, np.nan) for name in ("roc_auc", "pr_auc", "specificity_at_80_sensitivity")}
    order = np.argsort(-probabilities, kind="stable")
    ranked = probabilities[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    pos = np.add.reduceat(weights[:, order] * positive[order], starts, axis=1)
    neg = np.add.reduceat(weights[:, order] * ~positive[order], starts, axis=1)
    true_pos, false_pos = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    n_pos, n_neg = true_pos[:, -1:], false_pos[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Each positive beats the negatives strictly below it and ties half of those level with it.
        auc = (pos * (n_neg - false_pos + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)[:, 0]
        precision = np.nan_to_num(true_pos / (true_pos + false_pos))
        average_precision = (pos * precision).sum(axis=1) / n_pos[:, 0]
        sensitivity, specificity = true_pos / n_pos, 1 - false_pos / n_neg
    reached = sensitivity >= SENSITIVITY_FLOOR
    best = np.where(reached, specificity, -np.inf).max(axis=1)
    defined = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
    return {
        "roc_auc": np.where(defined, auc, np.nan),
        "pr_auc": np.where(n_pos[:, 0] > 0, average_precision, np.nan),
        "specificity_at_80_sensitivity": np.where(defined, best, np.nan),
    }
