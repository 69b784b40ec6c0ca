"""Parquet + DuckDB storage, and how dataset roots are resolved."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from resources.data_roots import DataRoots
from resources.storage import Storage


@pytest.fixture
def storage(tmp_path):
    return Storage(root=str(tmp_path / "data"), catalog=str(tmp_path / "warehouse.duckdb"))


def test_rewriting_a_partition_replaces_its_rows(storage):
    storage.write_table("things", pd.DataFrame({"dataset": ["a", "a"], "x": [1, 2]}), "a")
    storage.write_table("things", pd.DataFrame({"dataset": ["b"], "x": [3]}), "b")
    storage.write_table("things", pd.DataFrame({"dataset": ["a"], "x": [9]}), "a")
    assert storage.read_table("things", ["a"])["x"].tolist() == [9]
    assert sorted(storage.read_table("things")["x"]) == [3, 9]
    with duckdb.connect(str(storage.catalog_path), read_only=True) as connection:
        assert connection.execute("SELECT sum(x) FROM things").fetchone()[0] == 12


def test_views_tolerate_columns_added_later(storage):
    storage.write_table("evolving", pd.DataFrame({"x": [1]}), "old")
    storage.write_table("evolving", pd.DataFrame({"x": [2], "y": ["new"]}), "new")
    frame = storage.query("SELECT x, y FROM evolving ORDER BY x")
    assert frame["y"].isna().tolist() == [True, False]


def test_reading_an_unmaterialised_table_says_so(storage):
    with pytest.raises(FileNotFoundError, match="materialise it first"):
        storage.read_table("nothing_here", ["ccs"])


def test_roots_from_config_then_environment_then_demo(storage, tmp_path, monkeypatch):
    configured, from_env = tmp_path / "configured", tmp_path / "from_env"
    configured.mkdir(), from_env.mkdir()
    roots = DataRoots(storage=storage, ccs=str(configured))
    monkeypatch.setenv("COUGH_PIPELINE_COUGHVID_ROOT", str(from_env))
    assert roots.root_for("ccs") == configured
    assert roots.root_for("coughvid") == from_env
    assert roots.source("iatos") == "demo"
    assert roots.root_for("iatos") == storage.root_path / "demo_corpus" / "iatos"
    assert (roots.root_for("iatos") / "metadata.csv").is_file()


def test_a_configured_root_that_does_not_exist_is_an_error(storage, monkeypatch):
    monkeypatch.setenv("COUGH_PIPELINE_UKCOVID_ROOT", "/nonexistent/ukcovid")
    with pytest.raises(FileNotFoundError, match=r"COUGH_PIPELINE_UKCOVID_ROOT"):
        DataRoots(storage=storage).root_for("ukcovid")


def test_a_failed_block_deletes_its_generation_and_keeps_the_current_one(storage):
    kept = storage.new_generation("segments", "ccs")
    (kept / "a.wav").write_bytes(b"x")
    with pytest.raises(RuntimeError):
        with storage.generation("segments", "ccs") as folder:
            (folder / "b.wav").write_bytes(b"y")
            raise RuntimeError("the stage failed")
    assert not folder.exists() and (kept / "a.wav").is_file()
    assert storage.retire_generations("segments", "ccs", keep=kept) == []


def test_retiring_keeps_caches_and_foreign_files(storage):
    cache = storage.artefact_dir("mixtures", "source_cache")
    old, new = storage.new_generation("mixtures"), storage.new_generation("mixtures")
    (storage.root_path / "mixtures" / "notes.txt").write_text("mine")
    assert storage.retire_generations("mixtures", keep=new) == [old.name]
    assert cache.is_dir() and new.is_dir() and (storage.root_path / "mixtures" / "notes.txt").is_file()
