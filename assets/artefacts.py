"""The check every table that lists files carries: no two rows share a file, and every listed file exists."""

from __future__ import annotations

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from resources.storage import Storage

CHECK_NAME = "artefact_paths_unique_and_present"


def artefact_paths_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        CHECK_NAME,
        asset=asset,
        blocking=True,
        description="No two rows share a file (one recording's files never overwrite another's) "
        "and every file the table lists exists.",
    )


def artefact_paths_check(
    table: pd.DataFrame, storage: Storage, paths: list[str], index_column: str | None = None
) -> AssetCheckResult:
    """``paths``: columns of files relative to the storage root (nulls ignored). With ``index_column`` rows may
    share a file (an array file) but not the pair (file, index)."""
    shared, absent = {}, []
    for column in paths:
        listed = table[[column] + ([index_column] if index_column else [])].dropna(subset=[column])
        repeated = listed[listed.duplicated(keep=False)]
        if len(repeated):
            shared[column] = repeated[column].astype(str).unique()[:10].tolist()
        absent += [p for p in listed[column].astype(str).unique() if not (storage.root_path / p).is_file()]
    return AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not shared and not absent,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "shared_paths": MetadataValue.json(shared),
            "absent_files": len(absent),
            "absent_examples": MetadataValue.json(absent[:10]),
        },
    )
