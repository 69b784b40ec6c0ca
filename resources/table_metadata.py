"""The metadata every stored table carries in the Dagster UI: row count, column schema, path, view, preview."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

#: Rows and characters per cell shown in a preview.
PREVIEW_ROWS = 10
PREVIEW_CELL_CHARS = 60


def preview(frame: pd.DataFrame, columns: list[str] | None = None, rows: int = PREVIEW_ROWS) -> MetadataValue:
    """The first ``rows`` rows (of ``columns``, default all) as a markdown table."""
    head = frame[columns or list(frame.columns)].head(rows)
    if head.empty:
        return MetadataValue.md("_no rows_")
    cells = head.astype("string").fillna("").map(lambda v: str(v).replace("|", "\\|")[:PREVIEW_CELL_CHARS])
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return MetadataValue.md("\n".join(lines))


def column_schema(frame: pd.DataFrame) -> TableSchema:
    """Column names and dtypes, shown as the asset's schema."""
    return TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])


def table_metadata(frame: pd.DataFrame, path: Path, view: str, catalog: Path) -> dict:
    """The standard metadata of a stored table: ``dagster/row_count``, ``dagster/column_schema``, the parquet
    ``path``, the catalog ``view`` to query with DuckDB, the ``catalog`` file and a ``preview``."""
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(frame),
        "path": MetadataValue.path(str(path)),
        "view": MetadataValue.text(view),
        "catalog": MetadataValue.path(str(catalog)),
        "preview": preview(frame),
    }
