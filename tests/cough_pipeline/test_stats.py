"""One-way ANOVA with η and chi-square with Cramér's V: hand-computed answers, agreement with SciPy, nulls
excluded and counted, and clear errors for inputs the tests cannot handle."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from scipy.stats.contingency import association

from cough_pipeline.stats import (
    RESULT_COLUMNS,
    StatsError,
    TestResult,
    anova_oneway,
    chi_square,
    contingency_table,
    results_frame,
)


def test_anova_by_hand():
    # A = [1, 2, 3] (mean 2), B = [4, 6] (mean 5), C = [7, 8, 9] (mean 8); n = 8, grand mean 40 / 8 = 5.
    # SS_between = 3(2-5)² + 2(5-5)² + 3(8-5)² = 27 + 0 + 27 = 54
    # SS_within  = (1+0+1) + (1+1) + (1+0+1) = 6;  SS_total = 16+9+4+1+1+4+9+16 = 60 = 54 + 6
    # df = (3 - 1, 8 - 3) = (2, 5);  F = (54 / 2) / (6 / 5) = 27 / 1.2 = 22.5
    # η² = 54 / 60 = 0.9;  for df1 = 2 the F tail is closed-form: p = (1 + 2F/df2)^(-df2/2) = 10^-2.5
    values = [1, 2, 3, 4, 6, 7, 8, 9]
    groups = ["A", "A", "A", "B", "B", "C", "C", "C"]
    result = anova_oneway(values, groups)
    assert result.test == "anova" and result.effect_name == "eta"
    assert result.df == (2, 5) and result.n == 8 and result.n_excluded == 0 and result.groups == 3
    assert result.statistic == pytest.approx(22.5, rel=1e-12)
    assert result.effect_squared == pytest.approx(0.9, rel=1e-12)
    assert result.effect == pytest.approx(math.sqrt(0.9), rel=1e-12)
    assert result.p_value == pytest.approx(10**-2.5, rel=1e-9)


def test_chi_square_2x2_by_hand():
    # Table [[10, 20], [30, 40]]: n = 100, row totals 30, 70, column totals 40, 60.
    # E = [[12, 18], [28, 42]]; every |O - E| = 2, so χ² = 4 (1/12 + 1/18 + 1/28 + 1/42) = 4 · 50/252 = 50/63.
    # dof = 1; V = √(χ² / (100 · 1)); for dof = 1 the tail is erfc(√(χ²/2)).
    a = ["x"] * 30 + ["y"] * 70
    b = ["p"] * 10 + ["q"] * 20 + ["p"] * 30 + ["q"] * 40
    result = chi_square(a, b)
    assert result.test == "chi_square" and result.effect_name == "cramers_v"
    assert result.df == (1,) and result.n == 100 and result.groups == 2
    assert result.statistic == pytest.approx(50 / 63, rel=1e-12)
    assert result.effect == pytest.approx(math.sqrt(50 / 63 / 100), rel=1e-12)
    assert result.effect_squared == pytest.approx(50 / 63 / 100, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(50 / 63 / 2)), rel=1e-9)
    assert contingency_table(a, b).to_numpy().tolist() == [[10, 20], [30, 40]]


def test_chi_square_2x3_by_hand():
    # Table M: [10, 10, 20], F: [20, 10, 10]: n = 80, rows 40/40, columns 30/20/30.
    # E = 15, 10, 15 in both rows; χ² = 4 · 25/15 + 0 + 0 = 20/3 on dof (2-1)(3-1) = 2.
    # V = √((20/3) / (80 · (2 - 1))) = √(1/12); for dof = 2 the tail is exp(-χ²/2) = exp(-10/3).
    sex = ["M"] * 40 + ["F"] * 40
    label = ["a"] * 10 + ["b"] * 10 + ["c"] * 20 + ["a"] * 20 + ["b"] * 10 + ["c"] * 10
    result = chi_square(sex, label)
    assert result.df == (2,) and result.n == 80 and result.groups == 3
    assert result.statistic == pytest.approx(20 / 3, rel=1e-12)
    assert result.effect == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    assert result.p_value == pytest.approx(math.exp(-10 / 3), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anova_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    groups = rng.choice(list("abcde"), size=300)
    values = rng.normal(50, 10, size=300) + (groups == "c") * 4.0 + 1e6  # a large offset tests the centring
    result = anova_oneway(values, groups)
    samples = [values[groups == g] for g in sorted(set(groups))]
    reference = scipy_stats.f_oneway(*samples)
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-7)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-6)
    grand = values.mean()
    ss_between = sum(len(s) * (s.mean() - grand) ** 2 for s in samples)
    assert result.effect_squared == pytest.approx(ss_between / ((values - grand) ** 2).sum(), rel=1e-7)
    assert result.df == (4, 295)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chi_square_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.choice(["M", "F", "X"], size=400, p=[0.5, 0.4, 0.1])
    b = np.where(rng.random(400) < 0.3, "both", rng.choice(["normal", "crackles", "wheezes"], size=400))
    result = chi_square(a, b)
    table = pd.crosstab(a, b).to_numpy()
    statistic, p_value, dof, _ = scipy_stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(statistic, rel=1e-10)
    assert result.p_value == pytest.approx(p_value, rel=1e-8)
    assert result.df == (dof,) == ((3 - 1) * (4 - 1),)
    assert result.effect == pytest.approx(association(table, method="cramer", correction=False), rel=1e-10)


def test_nulls_are_excluded_and_counted():
    values = [1, 2, None, 3, 4, 6, np.nan, 7, 8, 9, 5.0]
    groups = ["A", "A", "B", "A", "B", "B", "C", "C", "C", "C", pd.NA]
    result = anova_oneway(pd.Series(values, dtype="Float64"), pd.Series(groups, dtype="string"))
    assert result.n == 8 and result.n_excluded == 3
    assert result.statistic == pytest.approx(22.5)  # the hand-computed example once the nulls are gone

    a = pd.Series(["M", None, "F", "M", "F", np.nan], dtype=object)
    b = pd.Series(["x", "x", None, "y", "y", "x"], dtype=object)
    chi = chi_square(a, b)
    assert chi.n == 3 and chi.n_excluded == 3 and chi.groups == 2


def test_perfect_separation_is_infinite_f_not_an_error():
    result = anova_oneway([1, 1, 2, 2], ["a", "a", "b", "b"])
    assert math.isinf(result.statistic) and result.p_value == 0.0 and result.effect == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("values", "groups", "message"),
    [
        ([1, 2, 3], ["a", "a", "a"], "at least 2 groups"),
        ([1, 2, None], ["a", "a", "b"], "at least 2 groups"),  # the only "b" is null: one group left
        ([1, 2], ["a", "b"], "more observations than groups"),
        ([3, 3, 3, 3], ["a", "a", "b", "b"], "zero variance"),
        ([1, 2, 3], ["a", "b"], "equal length"),
        ([1, "x", 3, 4], ["a", "a", "b", "b"], "numeric"),
        ([1, np.inf, 3, 4], ["a", "a", "b", "b"], "infinite"),
        ([[1, 2], [3, 4]], [["a", "b"], ["a", "b"]], "1-D"),
    ],
)
def test_anova_errors(values, groups, message):
    with pytest.raises(StatsError, match=message):
        anova_oneway(values, groups)


def test_anova_levels_reject_empty_and_unknown_groups():
    values, groups = [1, 2, 3, 4], ["a", "a", "b", "b"]
    assert anova_oneway(values, groups, levels=["b", "a"]).groups == 2
    with pytest.raises(StatsError, match="group of size 0"):
        anova_oneway(values, groups, levels=["a", "b", "c"])
    with pytest.raises(StatsError, match="outside levels"):
        anova_oneway(values, groups, levels=["a"])
    assert issubclass(StatsError, ValueError)


def test_chi_square_errors():
    with pytest.raises(StatsError, match="at least 2 levels"):
        chi_square(["M", "M", "M"], ["a", "b", "c"])
    with pytest.raises(StatsError, match="at least 2 levels"):
        chi_square(["M", "F", None], ["a", None, "b"])  # one complete row left
    with pytest.raises(StatsError, match="equal length"):
        chi_square(["M", "F"], ["a"])


def test_result_rows_for_tables():
    anova = anova_oneway([1, 2, 3, 4, 6, 7, 8, 9], list("AAABBCCC"))
    row = anova.as_row()
    assert tuple(row) == RESULT_COLUMNS
    assert row["df"] == "2, 5" and row["df1"] == 2 and row["df2"] == 5
    chi = chi_square(["M", "F", "M", "F"], ["a", "a", "b", "b"]).as_row()
    assert chi["df"] == "1" and chi["df1"] == 1 and chi["df2"] is None
    frame = results_frame([row, chi])
    assert str(frame["df2"].dtype) == "Int64" and frame["df2"].isna().tolist() == [False, True]
    assert frame["statistic"].dtype == np.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        anova.statistic = 0.0  # type: ignore[misc]
    assert isinstance(anova, TestResult)
