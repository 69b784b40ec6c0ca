"""The distillation report: the study's Table 1 (model x rate x task x strategy -> mean ± sd over folds), the
per-fold fine-tuned vs CSSD figure, and per-class accuracy changes of chosen ESC-50 classes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cough_pipeline.distillation.generations import STRATEGIES, THIRD_GENERATION
from cough_pipeline.plots import plt, to_png

#: The ESC-50 classes whose accuracy change the report lists.
FOCUS_CLASSES = ("coughing", "crying_baby", "snoring")
REPORT_COLUMNS = ("task", "model", "rate", "metric", "strategy", "mean", "sd", "folds", "score")


def report_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per task, model, rate, metric and strategy: the mean and sample sd over folds, the folds counted and
    ``score`` as ``"mean ± sd"`` (3 decimals); NaN fold values (a one-class cough fold's ROC-AUC) are left out."""
    keys = ["task", "model", "rate", "metric", "strategy"]
    if scores.empty:
        return pd.DataFrame(columns=list(REPORT_COLUMNS))
    grouped = scores.groupby(keys, sort=False)["value"]
    table = grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1) if v.count() > 1 else np.nan, folds="count")
    table = table.reset_index()
    table["score"] = [
        f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(table["mean"], table["sd"])
    ]
    order = {strategy: rank for rank, strategy in enumerate(STRATEGIES)}
    table = table.sort_values(
        ["task", "model", "metric", "rate", "strategy"],
        key=lambda c: c.map(order) if c.name == "strategy" else c,
        kind="stable",
    )
    return table[list(REPORT_COLUMNS)].reset_index(drop=True)


def wide_table(report: pd.DataFrame) -> pd.DataFrame:
    """Table 1's layout: one row per task, model, metric and rate, one column per strategy."""
    if report.empty:
        return report
    wide = report.pivot_table(
        index=["task", "model", "metric", "rate"], columns="strategy", values="score", aggfunc="first"
    )
    return wide[[s for s in STRATEGIES if s in wide.columns]].reset_index()


def _paired(key: dict, wide: pd.DataFrame, strategy: str, baseline: str) -> dict:
    """``strategy`` against ``baseline`` over the folds of ``wide`` (fold x strategy)."""
    difference = (wide[strategy] - wide[baseline]).dropna()
    spread, mean = wide[baseline].std(ddof=1), difference.mean()
    return {
        **key,
        "strategy": strategy,
        "mean_difference": mean,
        "sd_difference": difference.std(ddof=1),
        "baseline_sd": spread,
        "folds_better": int((difference > 0).sum()),
        "folds": int(difference.count()),
        "exceeds_spread": bool(np.isfinite(spread) and abs(mean) > spread),
    }


def _by_fold(scores: pd.DataFrame):
    """``(task, model, rate, metric)`` and that group's fold x strategy table of scores."""
    keys = ["task", "model", "rate", "metric"]
    for key, group in scores.groupby(keys):
        yield dict(zip(keys, key)), group.pivot_table(index="fold", columns="strategy", values="value")


def spread_reading(scores: pd.DataFrame, baseline: str = "fine_tuned") -> pd.DataFrame:
    """Each distilled strategy against ``baseline``, per task, model, rate and metric: the mean paired
    difference over folds, its sd, and whether the mean difference exceeds the sd of the baseline over folds (the
    fold-to-fold spread)."""
    rows = []
    for key, wide in _by_fold(scores):
        if baseline in wide.columns:
            skip = (baseline, "full_rate", "raw")
            rows += [_paired(key, wide, strategy, baseline) for strategy in wide.columns if strategy not in skip]
    return pd.DataFrame(rows)


def generation_gains(scores: pd.DataFrame) -> pd.DataFrame:
    """Each third-generation student against its teacher, the second-generation student of the same kind
    (``basd_g3`` against ``basd``), paired by fold as in :func:`spread_reading`, with the teacher in ``baseline``
    (``baseline_sd`` is the teacher's spread over folds). Empty without a third generation."""
    rows = [
        {**_paired(key, wide, student, teacher), "baseline": teacher}
        for key, wide in _by_fold(scores)
        for student, teacher in THIRD_GENERATION.items()
        if {student, teacher} <= set(wide.columns)
    ]
    return pd.DataFrame(rows)


def focus_class_changes(per_class: pd.DataFrame, classes=FOCUS_CLASSES, baseline: str = "fine_tuned") -> pd.DataFrame:
    """Mean accuracy over folds of ``classes`` per strategy and rate, and the change from ``baseline``."""
    chosen = per_class[per_class["class_name"].isin(classes)]
    if chosen.empty:
        return pd.DataFrame(columns=["task", "model", "rate", "class_name", "strategy", "accuracy", "change"])
    mean = chosen.groupby(["task", "model", "rate", "class_name", "strategy"], as_index=False)["accuracy"].mean()
    base = mean[mean["strategy"] == baseline].set_index(["task", "model", "rate", "class_name"])["accuracy"]
    keys = list(zip(mean["task"], mean["model"], mean["rate"], mean["class_name"]))
    mean["change"] = mean["accuracy"].to_numpy() - np.array([base.get(k, np.nan) for k in keys])
    return mean


def per_fold_png(scores: pd.DataFrame, metric: str, title: str) -> bytes:
    """Per rate, fine-tuned vs CSSD (and BASD) score on each fold: one panel per rate, folds on the x axis."""
    rows = scores[(scores["metric"] == metric) & scores["strategy"].isin(["fine_tuned", "basd", "cssd"])]
    rates = sorted(rows["rate"].unique())
    figure, axes = plt.subplots(1, max(len(rates), 1), figsize=(4.5 * max(len(rates), 1), 3.2), squeeze=False)
    for axis, rate in zip(axes[0], rates):
        for strategy, marker in (("fine_tuned", "o"), ("basd", "s"), ("cssd", "^")):
            line = rows[(rows["rate"] == rate) & (rows["strategy"] == strategy)].sort_values("fold")
            if not line.empty:
                axis.plot(line["fold"], line["value"], marker=marker, label=strategy)
        axis.set_title(f"{rate} Hz")
        axis.set_xlabel("fold")
        axis.set_ylabel(metric)
        axis.legend(fontsize="small")
    figure.suptitle(title)
    return to_png(figure)


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a GitHub Markdown table (the note and README carry it as it is)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
