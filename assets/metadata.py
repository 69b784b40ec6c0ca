"""Turn tables and figures into Dagster metadata that renders in the UI."""

from __future__ import annotations

import base64

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema


def image(png: bytes, alt: str) -> MetadataValue:
    """A PNG shown inline in the asset's materialisation panel."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def counts(values: pd.Series) -> dict[str, int]:
    """How often each value occurs (most frequent first), as JSON-ready ``{value: count}``; nulls not counted."""
    return {str(value): int(n) for value, n in values.value_counts().items()}


def preview(frame: pd.DataFrame, columns: list[str] | None = None, rows: int = 10) -> MetadataValue:
    """The first ``rows`` rows as a markdown table."""
    head = frame[columns or list(frame.columns)].head(rows)
    if head.empty:
        return MetadataValue.md("_no rows_")
    cells = head.astype("string").fillna("").map(lambda v: str(v).replace("|", "\\|")[:60])
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return MetadataValue.md("\n".join(lines))


def column_schema(frame: pd.DataFrame) -> TableSchema:
    """Column names and dtypes, shown as the asset's schema."""
    return TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])
