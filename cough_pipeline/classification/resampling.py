"""Class rebalancing that only ever sees training rows, and the classical estimators it feeds.

Every classical model is one ``imblearn`` pipeline: ``StandardScaler -> sampler -> estimator``. ``imblearn`` runs a
pipeline's sampler in ``fit`` only, so SMOTE's synthetic rows are made from the rows the pipeline is fitted on (a
training fold) and never from validation or holdout rows, which only pass through ``predict``. Oversampling the
whole table before splitting would instead leak: synthetic training rows interpolated from held-out rows.

The sampler keeps a ledger, ``seen_``: a 64-bit fingerprint of every row it was given. :func:`resampling_leakage`
counts the held-out rows found in it, so a caller (or a test) can prove that resampling saw training rows only.

Strategies (:class:`ResamplingConfig`):

- ``"smote"``: :class:`TrackedSMOTE` oversamples every minority class up to the majority. When a training fold
  has no more minority rows than ``k_neighbors``, ``smote_fallback="reduce_k"`` uses ``minority - 1`` neighbours
  (recorded as ``k_neighbors_used_``) and ``"error"`` raises :class:`ResamplingError`.
- ``"class_weight"``: no new rows; the estimator weighs classes by inverse frequency (``class_weight="balanced"``).
  k-nearest neighbours has no class weights: it trains on the fold as it is, and its sampler's ``note`` says so.
- ``"none"``: the fold as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import numpy as np
from imblearn.base import BaseSampler
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from cough_pipeline.bounds import PositiveInt, Seed, check_fields
from cough_pipeline.classification.errors import ResamplingError

#: The classical estimators :func:`build_pipeline` knows.
ESTIMATORS = ("knn", "svm", "random_forest", "logistic_regression")
EstimatorName = Literal["knn", "svm", "random_forest", "logistic_regression"]

#: Folds of the SVM's sigmoid calibration (within the training fold); the rarer class needs this many rows.
SVM_CALIBRATION_FOLDS = 3


@dataclass(frozen=True)
class ResamplingConfig:
    """How a training fold is rebalanced (see the module docstring).

    ``k_neighbors``: SMOTE's neighbours per minority row. ``smote_fallback``: what to do when a training fold has
    no more minority rows than that. ``seed``: seeds SMOTE and every estimator that draws random numbers.
    """

    strategy: Literal["smote", "class_weight", "none"] = "smote"
    k_neighbors: PositiveInt = 5
    smote_fallback: Literal["reduce_k", "error"] = "reduce_k"
    seed: Seed = 0

    def __post_init__(self):
        check_fields(self)


def row_fingerprints(X) -> np.ndarray:
    """A 64-bit BLAKE2b fingerprint of each row's float64 values (``-0.0`` counts as ``0.0``).

    Shape: ``X`` ``(rows, columns)`` -> ``(rows,)`` uint64.
    """
    values = np.asarray(X, dtype=np.float64)
    if values.ndim != 2:
        raise ResamplingError(f"row fingerprints need a 2-D table, got shape {values.shape}")
    values = np.ascontiguousarray(values + 0.0)  # -0.0 + 0.0 == +0.0: equal values, equal bytes
    digests = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in values]
    return np.frombuffer(b"".join(digests), dtype="<u8").copy() if digests else np.zeros(0, dtype=np.uint64)


class _RowLedger:
    """Mixin: remembers fingerprints of the rows a sampler was fitted on (``seen_``, sorted, unique)."""

    def _record(self, X) -> None:
        self.seen_ = np.unique(row_fingerprints(X))
        self.n_rows_seen_ = int(len(X))


class TrackedSMOTE(_RowLedger, SMOTE):
    """SMOTE that records the rows it saw and the neighbours it used, with a fallback for small minority classes.

    Args:
        smote_fallback: ``"reduce_k"`` uses ``minority - 1`` neighbours when the minority class has no more than
            ``k_neighbors`` rows (still an error below 2 rows); ``"error"`` raises :class:`ResamplingError`.

    Fitted attributes: ``seen_`` (row fingerprints), ``n_rows_seen_``, ``k_neighbors_used_`` (``None`` when no class
    needed new rows), ``n_synthetic_`` (rows added).
    """

    _parameter_constraints: dict = {
        **SMOTE._parameter_constraints,
        "k_neighbors": [Interval(Integral, 1, None, closed="left")],
        "smote_fallback": [StrOptions({"reduce_k", "error"})],
    }

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=5, smote_fallback="reduce_k"):
        super().__init__(sampling_strategy=sampling_strategy, random_state=random_state, k_neighbors=k_neighbors)
        self.smote_fallback = smote_fallback

    def _neighbours_for(self, y: np.ndarray) -> int | None:
        """The neighbours SMOTE can use on this fold (``None``: nothing to generate); raises when none fit."""
        classes = [c for c, n_new in self.sampling_strategy_.items() if n_new > 0]
        if not classes:
            return None
        counts = {c: int(np.sum(y == c)) for c in classes}
        smallest = min(classes, key=lambda c: (counts[c], str(c)))
        count, k = counts[smallest], int(self.k_neighbors)
        if count > k:
            return k
        label = smallest.item() if isinstance(smallest, np.generic) else smallest
        where = f"minority class {label!r} has {count} rows in this training fold"
        if self.smote_fallback == "error":
            raise ResamplingError(f"SMOTE k_neighbors={k} needs more than {k} minority rows: {where}")
        if count < 2:
            raise ResamplingError(f"SMOTE needs at least 2 minority rows to interpolate (k_neighbors={k}): {where}")
        return count - 1

    def _validate_estimator(self):
        super()._validate_estimator()
        self.nn_k_.set_params(n_neighbors=self.k_neighbors_used_ + 1)  # +1: each row is its own first neighbour

    def _fit_resample(self, X, y):
        self._record(X)
        self.k_neighbors_used_ = self._neighbours_for(y)
        if self.k_neighbors_used_ is None:
            self.n_synthetic_ = 0
            return X, y
        X_out, y_out = super()._fit_resample(X, y)
        self.n_synthetic_ = int(len(X_out) - len(X))
        return X_out, y_out


class LedgerSampler(_RowLedger, BaseSampler):
    """A sampler that changes nothing but records the rows it saw (``seen_``), for the strategies without SMOTE.

    Args:
        strategy: the rebalancing in effect (``"class_weight"`` or ``"none"``), for metadata.
        note: why, when it differs from what was configured.
    """

    _sampling_type = "bypass"
    _parameter_constraints: dict = {"strategy": [str], "note": [str]}

    def __init__(self, strategy: str = "none", note: str = ""):
        super().__init__(sampling_strategy="auto")
        self.strategy = strategy
        self.note = note

    def _fit_resample(self, X, y):
        self._record(X)
        self.k_neighbors_used_ = None
        self.n_synthetic_ = 0
        return X, y


def strategy_used(estimator_name: str, config: ResamplingConfig) -> str:
    """The strategy that actually runs for ``estimator_name``: ``"class_weight"`` becomes ``"none"`` for k-NN."""
    _check_estimator(estimator_name)
    if config.strategy == "class_weight" and estimator_name == "knn":
        return "none"
    return config.strategy


def _check_estimator(name: str) -> None:
    if name not in ESTIMATORS:
        raise ResamplingError(f"unknown estimator {name!r}; known: {list(ESTIMATORS)}")


def _estimator(name: str, balanced: bool, seed: int, params: dict):
    """The unfitted estimator ``name``; ``balanced`` sets inverse-frequency class weights."""
    weights = "balanced" if balanced else None
    if name == "knn":
        return KNeighborsClassifier(**{"n_neighbors": 5, **params})
    if name == "random_forest":
        return RandomForestClassifier(
            **{"n_estimators": 100, "class_weight": weights, "random_state": seed, "n_jobs": 1, **params}
        )
    if name == "logistic_regression":
        return LogisticRegression(**{"max_iter": 2000, "class_weight": weights, "random_state": seed, **params})
    # Platt-scaled SVM: the sigmoid is fitted on the SVM's out-of-fold decision values (unshuffled folds, so the
    # probabilities are deterministic); SVC(probability=True) is deprecated in scikit-learn 1.9.
    svm = SVC(**{"kernel": "rbf", "class_weight": weights, "random_state": seed, **params})
    return CalibratedClassifierCV(svm, method="sigmoid", cv=SVM_CALIBRATION_FOLDS, ensemble=False)


def build_pipeline(estimator_name: str, config: ResamplingConfig, estimator_params: dict | None = None) -> Pipeline:
    """``StandardScaler -> sampler -> estimator`` as one ``imblearn`` pipeline; the sampler runs in ``fit`` only.

    Args:
        estimator_name: one of :data:`ESTIMATORS`: ``"knn"`` (k-nearest neighbours), ``"svm"`` (RBF SVM with a
            sigmoid-calibrated probability), ``"random_forest"``, ``"logistic_regression"``.
        config: the rebalancing (module docstring); its seed seeds SMOTE and the estimator.
        estimator_params: estimator settings replacing the defaults (e.g. ``{"n_estimators": 50}``).

    Returns:
        An unfitted pipeline with steps ``scale``, ``sampler`` (:class:`TrackedSMOTE` or :class:`LedgerSampler`)
        and ``model``.
    """
    used = strategy_used(estimator_name, config)
    if used == "smote":
        sampler = TrackedSMOTE(
            random_state=config.seed, k_neighbors=config.k_neighbors, smote_fallback=config.smote_fallback
        )
    else:
        note = "" if used == config.strategy else f"{estimator_name} has no class weights: trained unresampled"
        sampler = LedgerSampler(strategy=used, note=note)
    model = _estimator(estimator_name, used == "class_weight", config.seed, dict(estimator_params or {}))
    return Pipeline([("scale", StandardScaler()), ("sampler", sampler), ("model", model)])


def _ledger(pipeline: Pipeline) -> tuple[int, _RowLedger]:
    """The position and the fitted sampler of ``pipeline``."""
    for position, (_, step) in enumerate(pipeline.steps):
        if isinstance(step, _RowLedger):
            if not hasattr(step, "seen_"):
                raise ResamplingError("the pipeline's sampler is not fitted: fit the pipeline first")
            return position, step
    raise ResamplingError("the pipeline has no row-recording sampler (build it with build_pipeline)")


def resampling_summary(pipeline: Pipeline) -> dict:
    """What the fitted pipeline's sampler did: ``strategy``, ``k_neighbors_used`` (``None`` without SMOTE or when
    nothing was generated), ``rows_seen``, ``synthetic_rows`` and ``note``."""
    _, sampler = _ledger(pipeline)
    smote = isinstance(sampler, TrackedSMOTE)
    return {
        "strategy": "smote" if smote else sampler.strategy,
        "k_neighbors_used": sampler.k_neighbors_used_,
        "rows_seen": sampler.n_rows_seen_,
        "synthetic_rows": sampler.n_synthetic_,
        "note": "" if smote else sampler.note,
    }


def resampling_leakage(pipeline_or_seen, held_out_X) -> int:
    """How many rows of ``held_out_X`` the sampler saw while fitting (0 when resampling saw training rows only).

    Args:
        pipeline_or_seen: a fitted :func:`build_pipeline` pipeline (``held_out_X`` is passed through the steps
            before its sampler, as the sampler saw its rows), a fitted sampler, or an array of fingerprints
            (:func:`row_fingerprints`); the latter two are compared with ``held_out_X`` as given.
        held_out_X: validation or holdout feature rows, the columns the pipeline was fitted on.

    Returns:
        The number of held-out rows whose fingerprint is among the rows the sampler was given.
    """
    X = np.asarray(held_out_X, dtype=np.float64)
    if isinstance(pipeline_or_seen, Pipeline):
        position, sampler = _ledger(pipeline_or_seen)
        for _, step in pipeline_or_seen.steps[:position]:
            X = step.transform(X)
        seen = sampler.seen_
    elif isinstance(pipeline_or_seen, _RowLedger):
        check_is_fitted(pipeline_or_seen, "seen_")
        seen = pipeline_or_seen.seen_
    else:
        seen = np.unique(np.asarray(pipeline_or_seen, dtype=np.uint64))
    return int(np.isin(row_fingerprints(X), seen).sum())


def k_neighbors_used(pipeline: Pipeline) -> int | None:
    """The SMOTE neighbours the fitted pipeline used (``None`` when it did not run SMOTE or generated nothing)."""
    return resampling_summary(pipeline)["k_neighbors_used"]
