"""Helpers of the tests that run the per-dataset stage (``dataset_job``, ``make backfill``) as real processes
against a persistent instance, storage root and DuckDB catalog, and then check what a reader finds there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
#: Tables ``dataset_job`` writes for one partition.
DATASET_TABLES = ("manifest", "manifest_quarantine", "cough_segments", "cough_list")


def pipeline_home(tmp_path: Path, cough_model: Path) -> dict[str, str]:
    """A Dagster home with the project's instance config, an empty storage root holding only the cough filter model
    (the per-dataset stage reads it, a backfill does not rebuild it) and a catalog path; returns the environment."""
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    shutil.copytree(cough_model, data / "models" / cough_model.name)
    return {
        "DAGSTER_HOME": str(home),
        "COUGH_PIPELINE_STORAGE": str(data),
        "COUGH_PIPELINE_CATALOG": str(tmp_path / "warehouse.duckdb"),
    }


def demo_rows_in(dataset: str, root: Path) -> int:
    """Input rows of a demo dataset folder, counted from its files without the pipeline: every metadata row plus
    every audio file that no metadata row names (the manifest's ``unlisted_file`` rows)."""
    if dataset == "ccs":
        listed = pd.concat([pd.read_csv(p) for p in sorted((root / "dist" / "lab").glob("*.csv"))])
        names = set(listed["filename"])
        audio = {p.name for p in (root / "dist" / "wav").glob("*.wav")}
    elif dataset == "coughvid":
        (metadata,) = root.glob("public_dataset_v3/*/metadata_compiled.csv")
        listed = pd.read_csv(metadata)
        names = set(listed["uuid"])
        audio = {p.stem for p in metadata.parent.iterdir() if p.suffix in (".webm", ".ogg", ".wav")}
    else:
        raise ValueError(f"no independent count for {dataset}")
    assert len(listed) > 0 and audio
    return len(listed) + len(audio - names)


def parquet_rows(tables_root: Path) -> dict[str, int]:
    """Rows per table over its partition files, read with pandas (not through the catalog)."""
    return {
        folder.name: sum(len(pd.read_parquet(p)) for p in folder.glob("*.parquet"))
        for folder in sorted(tables_root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }


def assert_nothing_partial(data: Path, partitions: set[str]) -> None:
    """No staged, journalled or temporary file anywhere a reader looks, and each table folder holds exactly the
    partitions written."""
    tables_root = data / "tables"
    leftovers = [
        p.relative_to(data).as_posix()
        for folder in (tables_root / ".staging", tables_root / ".journal")
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file()
    ]
    assert not leftovers, f"staged or journalled files left behind: {leftovers}"
    for table in DATASET_TABLES:
        files = sorted(p.name for p in (tables_root / table).iterdir())
        assert files == sorted(f"{p}.parquet" for p in partitions), (table, files)
    hidden = [
        p.relative_to(data).as_posix()
        for top in ("tables", "segments")
        for p in (data / top).rglob("*")
        if p.is_file() and (any(part.startswith(".") for part in p.relative_to(data / top).parts) or ".tmp" in p.name)
    ]
    assert not hidden, f"temporary or partial files: {hidden}"


def assert_segment_files_match_the_table(data: Path, partitions: set[str]) -> pd.DataFrame:
    """Every WAV the committed ``cough_segments`` lists exists and decodes; no WAV exists that it does not list;
    each partition has one generation folder. Returns the table."""
    table = pd.concat([pd.read_parquet(data / "tables" / "cough_segments" / f"{p}.parquet") for p in partitions])
    listed = table["path"].dropna()
    assert len(listed) > 0 and not listed.duplicated().any()
    on_disk = {p.relative_to(data).as_posix() for p in (data / "segments").rglob("*") if p.is_file()}
    assert on_disk == set(listed), (
        f"unlisted files: {sorted(on_disk - set(listed))[:5]}, missing files: {sorted(set(listed) - on_disk)[:5]}"
    )
    for path in listed:
        info = sf.info(str(data / path))
        assert info.frames > 0, path
    for partition in partitions:
        generations = [p.name for p in (data / "segments" / partition).iterdir()]
        assert len(generations) == 1, (partition, generations)
    return table


def assert_catalog_intact(catalog: Path, tables_root: Path) -> dict[str, int]:
    """Every table folder has a view in the DuckDB catalog, every view is queryable, and each view's row count is
    the parquet's; returns the counts."""
    expected = parquet_rows(tables_root)
    assert set(DATASET_TABLES) <= set(expected)
    with duckdb.connect(str(catalog), read_only=True) as connection:
        views = {
            row[0] for row in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert views == set(expected), f"views {sorted(views)} != tables {sorted(expected)}"
        counts = {view: connection.execute(f'SELECT count(*) FROM "{view}"').fetchone()[0] for view in sorted(views)}
        for view in views:  # every column of every row decodes, not only the row count
            connection.execute(f'SELECT * FROM "{view}"').fetchall()
    assert counts == expected
    return counts


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment with ``env`` on top (no developer ``COUGH_PIPELINE_*`` leaks in: the test
    suite's fixtures have removed them)."""
    return {**os.environ, **env}
