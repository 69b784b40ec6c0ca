"""Turn tables and figures into Dagster metadata that renders in the UI."""

from __future__ import annotations

import base64

import pandas as pd
from dagster import MetadataValue

from resources.table_metadata import column_schema, preview

__all__ = ["column_schema", "counts", "image", "preview"]


def image(png: bytes, alt: str) -> MetadataValue:
    """A PNG shown inline in the asset's materialisation panel."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def counts(values: pd.Series) -> dict[str, int]:
    """How often each value occurs (most frequent first), as JSON-ready ``{value: count}``; nulls not counted."""
    return {str(value): int(n) for value, n in values.value_counts().items()}
