"""Small PNG figures for materialisation metadata (rendered in the Dagster UI)."""

from __future__ import annotations

import io
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to bytes
import matplotlib.pyplot as plt  # noqa: E402


def to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def stacked_bar_png(counts: Mapping[str, Mapping[str, int]], title: str, xlabel: str = "",
                    ylabel: str = "rows") -> bytes:
    """Bars per outer key, stacked by inner key: e.g. ``{"positive": {"usable": 5, "excluded": 2}}``."""
    categories = list(counts)
    stacks = sorted({inner for values in counts.values() for inner in values})
    figure, axis = plt.subplots(figsize=(6, 3.2))
    bottom = [0] * len(categories)
    for stack in stacks:
        heights = [counts[c].get(stack, 0) for c in categories]
        axis.bar(categories, heights, bottom=bottom, label=stack)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if len(stacks) > 1:
        axis.legend(fontsize="small")
    return to_png(figure)
