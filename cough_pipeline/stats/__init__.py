"""Association tests with effect sizes: one-way ANOVA with the correlation ratio η, and the chi-square test of
independence with Cramér's V.

Both functions take two aligned 1-D inputs of length N (one entry per observation: a recording, a patient or a
cycle), drop every observation with a null in either input (``None``, ``NaN``, ``pd.NA``) and report how many
they dropped in :attr:`TestResult.n_excluded`, so a missing value is never lost silently.

Levels (groups, categories) are the distinct non-null values actually observed, so an empty group cannot arise
from the data; with ``levels=`` given, every listed level must be observed and nothing else may occur.

Degenerate inputs raise :class:`StatsError` (a ``ValueError``) naming the cause rather than returning NaN:
fewer than two groups or categories, no within-group degrees of freedom, all values equal, mismatched lengths,
non-numeric or infinite values. Callers that build a table of many tests (for example
:func:`cough_pipeline.icbhi.associations.association_tests`) catch it and write the message into a ``note``
column. Zero within-group variance with non-zero between-group variance is not an error: the groups separate
perfectly, so F = ∞, p = 0 and η = 1.

Statistics are computed by hand with NumPy; only the tail probabilities come from SciPy
(``scipy.stats.f.sf`` and ``scipy.stats.chi2.sf``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

__all__ = [
    "RESULT_COLUMNS",
    "StatsError",
    "TestResult",
    "anova_oneway",
    "chi_square",
    "contingency_table",
    "results_frame",
]

#: Column order of :meth:`TestResult.as_row` (and of :func:`results_frame`).
RESULT_COLUMNS = (
    "test",
    "n",
    "n_excluded",
    "groups",
    "df1",
    "df2",
    "df",
    "statistic",
    "p_value",
    "effect_name",
    "effect",
    "effect_squared",
)


class StatsError(ValueError):
    """The inputs do not admit the test (too few groups, no variance, bad values...); the message says why."""


@dataclass(frozen=True)
class TestResult:
    """One test's outcome.

    ``df`` is ``(between, within)`` for ANOVA and ``(dof,)`` for chi-square. ``effect`` is η (ANOVA) or
    Cramér's V (chi-square) and ``effect_squared`` its square (η², V²). ``n`` counts the observations used,
    ``n_excluded`` those dropped for a null in either input, ``groups`` the number of groups (ANOVA) or the
    number of categories of the second argument ``b`` (chi-square).
    """

    __test__ = False  # not a pytest test class, despite the name

    test: str
    statistic: float
    df: tuple[int, ...]
    p_value: float
    effect_name: str
    effect: float
    effect_squared: float
    n: int
    n_excluded: int
    groups: int

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a table: ``df`` as text (``"7, 906"``) plus integer ``df1``/``df2`` (``df2`` is
        ``None`` for chi-square) so SQL can filter on them."""
        return {
            "test": self.test,
            "n": self.n,
            "n_excluded": self.n_excluded,
            "groups": self.groups,
            "df1": self.df[0],
            "df2": self.df[1] if len(self.df) > 1 else None,
            "df": ", ".join(str(d) for d in self.df),
            "statistic": self.statistic,
            "p_value": self.p_value,
            "effect_name": self.effect_name,
            "effect": self.effect,
            "effect_squared": self.effect_squared,
        }


def _paired(a: Any, b: Any, names: tuple[str, str]) -> tuple[pd.Series, pd.Series, int]:
    """``a`` and ``b`` as aligned Series with rows holding a null in either removed, plus the removed count."""
    arrays = [np.asarray(a, dtype=object), np.asarray(b, dtype=object)]
    if any(array.ndim != 1 for array in arrays) or len(arrays[0]) != len(arrays[1]):
        raise StatsError(
            f"{names[0]} and {names[1]} must be 1-D and of equal length, got shapes "
            f"{arrays[0].shape} and {arrays[1].shape}"
        )
    first, second = pd.Series(arrays[0]), pd.Series(arrays[1])
    keep = ~(first.isna() | second.isna()).to_numpy()
    return first[keep].reset_index(drop=True), second[keep].reset_index(drop=True), int((~keep).sum())


def _codes(labels: pd.Series, levels: Sequence | None, name: str) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 of ``labels`` and k; with ``levels`` every level must occur and nothing else."""
    if levels is None:
        codes, uniques = pd.factorize(labels, sort=False)
        return codes.astype(np.intp), len(uniques)
    levels = list(levels)
    lookup = {level: index for index, level in enumerate(levels)}
    unknown = sorted({str(v) for v in labels if v not in lookup})
    if unknown:
        raise StatsError(f"{name} holds value(s) {unknown} outside levels {levels}")
    codes = np.fromiter((lookup[v] for v in labels), dtype=np.intp, count=len(labels))
    empty = [levels[i] for i in np.flatnonzero(np.bincount(codes, minlength=len(levels)) == 0)]
    if empty:
        raise StatsError(f"{name} level(s) {empty} have no observations (a group of size 0)")
    return codes, len(levels)


def anova_oneway(values: Any, groups: Any, *, levels: Sequence | None = None) -> TestResult:
    """One-way ANOVA of ``values`` across ``groups``, with the correlation ratio η = √(SS_between / SS_total).

    values: (N,) numbers (e.g. age in years); groups: (N,) labels. Rows with a null in either are excluded and
    counted. With k groups and n observations: F = (SS_between / (k - 1)) / (SS_within / (n - k)) on
    (k - 1, n - k) degrees of freedom, p = P(F_{k-1, n-k} > F).

    Raises :class:`StatsError` for fewer than 2 groups, n - k < 1 (no within-group degrees of freedom), all
    values equal (η undefined), non-numeric or infinite values, or a listed level without observations.
    """
    raw_values, labels, excluded = _paired(values, groups, ("values", "groups"))
    try:
        x = raw_values.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise StatsError(f"values must be numeric: {error}") from None
    if not np.isfinite(x).all():
        raise StatsError("values hold an infinite number")
    codes, k = _codes(labels, levels, "groups")
    n = len(x)
    if k < 2:
        raise StatsError(f"ANOVA needs at least 2 groups, got {k} (n={n}, {excluded} excluded for nulls)")
    if n - k < 1:
        raise StatsError(f"ANOVA needs more observations than groups: n={n}, groups={k}")
    # Centre first: sums of squares of large, similar numbers lose precision otherwise.
    x = x - x.mean()
    sizes = np.bincount(codes, minlength=k).astype(np.float64)
    means = np.bincount(codes, weights=x, minlength=k) / sizes
    ss_total = float(np.sum(x**2))
    ss_between = float(np.sum(sizes * means**2))
    ss_within = float(np.sum((x - means[codes]) ** 2))
    if ss_total == 0.0:
        raise StatsError(f"ANOVA is undefined when all {n} values are equal (zero variance)")
    df_between, df_within = k - 1, n - k
    if ss_within == 0.0:  # every group constant, groups differ: perfect separation
        statistic, p_value = float("inf"), 0.0
    else:
        statistic = (ss_between / df_between) / (ss_within / df_within)
        p_value = float(_scipy_stats.f.sf(statistic, df_between, df_within))
    eta_squared = min(1.0, ss_between / ss_total)
    return TestResult(
        "anova",
        float(statistic),
        (df_between, df_within),
        p_value,
        "eta",
        float(np.sqrt(eta_squared)),
        float(eta_squared),
        n,
        excluded,
        k,
    )


def contingency_table(a: Any, b: Any) -> pd.DataFrame:
    """Counts of each (a, b) pair over the rows where both are non-null: rows = levels of ``a``, columns =
    levels of ``b``, both sorted by their string form."""
    first, second, _ = _paired(a, b, ("a", "b"))
    return pd.crosstab(first.astype(str), second.astype(str)).rename_axis(index="a", columns="b")


def chi_square(a: Any, b: Any) -> TestResult:
    """Chi-square test of independence of two categorical arrays, without Yates' continuity correction.

    a, b: (N,) labels. Rows with a null in either are excluded and counted. On the r × c table of observed
    counts O with expected counts E = row total × column total / n: χ² = Σ (O - E)² / E with (r - 1)(c - 1)
    degrees of freedom; Cramér's V = √(χ² / (n (min(r, c) - 1))). ``groups`` is c, the levels of ``b``.

    Raises :class:`StatsError` when either variable has fewer than 2 observed levels.
    """
    first, second, excluded = _paired(a, b, ("a", "b"))
    codes_a, r = _codes(first, None, "a")
    codes_b, c = _codes(second, None, "b")
    n = len(first)
    if r < 2 or c < 2:
        raise StatsError(
            f"chi-square needs at least 2 levels in each variable, got {r} x {c} (n={n}, {excluded} excluded for nulls)"
        )
    observed = np.zeros((r, c))
    np.add.at(observed, (codes_a, codes_b), 1.0)
    # Levels come from the data, so every margin is positive and E > 0 everywhere.
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    dof = (r - 1) * (c - 1)
    v_squared = min(1.0, statistic / (n * (min(r, c) - 1)))
    return TestResult(
        "chi_square",
        statistic,
        (dof,),
        float(_scipy_stats.chi2.sf(statistic, dof)),
        "cramers_v",
        float(np.sqrt(v_squared)),
        float(v_squared),
        n,
        excluded,
        c,
    )


def results_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Dicts from :meth:`TestResult.as_row` (possibly with extra leading keys) as a typed DataFrame: counts and
    degrees of freedom as nullable ``Int64``, statistics as float."""
    frame = pd.DataFrame.from_records(list(rows))
    for column in ("n", "n_excluded", "groups", "df1", "df2"):
        if column in frame:
            frame[column] = pd.array(frame[column].astype(object).where(frame[column].notna(), None), dtype="Int64")
    for column in ("statistic", "p_value", "effect", "effect_squared"):
        if column in frame:
            frame[column] = frame[column].astype(np.float64)
    return frame
