"""The ICBHI branch: tables, association tests, spectral features, windows, balanced training sets and features,
on the demo corpus and on the real metadata and annotations in ../shared/data/icbhi."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import materialize

from assets.icbhi import (
    icbhi_associations,
    icbhi_features,
    icbhi_spectral_features,
    icbhi_tables,
    icbhi_training_set,
    icbhi_windows,
)
from assets.resources import build_resources

UNPARTITIONED = [icbhi_tables, icbhi_associations, icbhi_spectral_features, icbhi_windows]
PARTITIONED = [icbhi_training_set, icbhi_features]


def plot_in(metadata, key):
    return "data:image/png;base64," in metadata[key].value


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    resources = build_resources(str(root), str(root / "warehouse.duckdb"))
    result = materialize(UNPARTITIONED, resources=resources)
    assert result.success
    return resources, result


def test_tables_and_eda_materialise_with_plots_and_passing_checks(demo_run):
    resources, result = demo_run
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "every_annotation_accounted": True,
        "labels_in_domain": True,
        "every_recording_windowed_or_reported": True,
        "artefact_paths_unique_and_present": True,
    }
    recordings = result.asset_materializations_for_node("icbhi_tables")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in recordings}
    assert plot_in(by_key["icbhi_recordings"], "labels_plot")
    spectral_node = result.asset_materializations_for_node("icbhi_spectral_features")
    eda = {m.asset_key.to_user_string(): m.metadata for m in spectral_node}
    assert plot_in(eda["icbhi_spectral_features"], "box_plots")
    assert plot_in(eda["icbhi_spectral_features"], "rms_envelopes")
    storage = resources["storage"]
    tests = storage.query("SELECT * FROM icbhi_associations")
    assert len(tests) == 4 and set(tests["level"]) == {"recording"}
    assert {"n", "df", "statistic", "p_value", "effect"} <= set(tests.columns)
    spectral = storage.query("SELECT * FROM icbhi_spectral_features")
    recordings_with_audio = storage.query("SELECT count(*) AS n FROM icbhi_recordings WHERE audio_present")["n"][0]
    assert len(spectral) == recordings_with_audio
    medians = storage.query("SELECT * FROM icbhi_spectral_medians")
    assert list(medians["lung_label"]) == ["normal", "crackles", "wheezes", "both"]


def test_association_tests_rerun_alone_and_reproduce_their_table(demo_run):
    """The association tests read only the recordings and cycles tables: re-running them materialises their two
    tables and nothing acoustic."""
    resources, _ = demo_run
    storage = resources["storage"]
    before = storage.query("SELECT * FROM icbhi_associations")
    result = materialize(UNPARTITIONED, selection=[icbhi_associations], resources=resources)
    assert result.success
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"icbhi_associations", "icbhi_durations"}
    after = storage.query("SELECT * FROM icbhi_associations")
    assert after.equals(before)


def test_windows_are_16k_and_loop_padded_never_silence_padded(demo_run):
    resources, _ = demo_run
    storage = resources["storage"]
    windows = storage.read_table("icbhi_windows")
    assert set(windows["window_seconds"]) == {6.0, 20.0}
    import soundfile as sf

    for row in windows.head(6).itertuples():
        samples, rate = sf.read(storage.root_path / row.audio_path)
        assert rate == 16_000 and len(samples) == round(row.window_seconds * 16_000)
        assert np.abs(samples[-1600:]).max() > 0  # the last 0.1 s is never zero padding


@pytest.mark.parametrize("strategy", ["original", "hybrid_anchor"])
def test_balanced_training_sets_and_features_per_strategy(demo_run, strategy):
    resources, _ = demo_run
    result = materialize(
        UNPARTITIONED + PARTITIONED, selection=PARTITIONED, partition_key=strategy, resources=resources
    )
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"test_split_untouched": True, "artefact_paths_unique_and_present": True}
    storage = resources["storage"]
    examples = storage.read_table("icbhi_training_set", partitions=[strategy])
    windows = storage.read_table("icbhi_windows")
    test_windows = set(windows.loc[windows["official_split"] == "test", "window_id"])
    assert set(examples.loc[examples["split"] == "test", "window_id"]) == test_windows
    if strategy == "original":
        assert not examples["augmented"].any()
    else:
        train6 = examples[(examples["split"] == "train") & (examples["window_seconds"] == 6.0)]
        sizes = train6.groupby("label").size()
        assert sizes.max() - sizes.min() <= 1  # every non-empty class brought to the mean class size
    features = storage.read_table("icbhi_features", partitions=[strategy])
    assert len(features) == len(examples)
    metadata = result.asset_materializations_for_node("icbhi_features")[0].metadata
    assert plot_in(metadata, "log_mel_examples")
    six = features[features["window_seconds"] == 6.0]
    array = np.load(storage.root_path / six["logmel_path"].iloc[0], mmap_mode="r")
    assert array.shape == (len(six), 128, 188)


def test_eda_runs_on_the_real_metadata_and_annotations_alone(shared_data, tmp_path):
    """../shared/data/icbhi has all 920 annotation files but only 10 WAVs: the tests still use every recording
    (durations from annotations) and reproduce the reference statistics."""
    resources = build_resources(str(tmp_path), str(tmp_path / "warehouse.duckdb"))
    result = materialize(
        [icbhi_tables, icbhi_associations, icbhi_spectral_features],
        resources=resources,
        run_config={"resources": {"data_roots": {"config": {"icbhi": str(shared_data / "icbhi")}}}},
    )
    assert result.success
    storage = resources["storage"]
    tests = storage.query("SELECT * FROM icbhi_associations").set_index(["variable", "grouping"])
    assert (tests["n"] == 914).all() and (tests["n_excluded"] == 6).all()
    assert tests.loc[("age", "diagnosis"), "statistic"] == pytest.approx(418.525, abs=5e-4)
    assert tests.loc[("age", "diagnosis"), "effect"] == pytest.approx(0.874, abs=5e-4)
    assert tests.loc[("sex", "diagnosis"), "statistic"] == pytest.approx(31.036, abs=5e-4)
    assert tests.loc[("sex", "lung_label"), "effect"] == pytest.approx(0.124, abs=5e-4)
    assert tests.loc[("age", "lung_label"), "df"] == "3, 910"
    durations = storage.query("SELECT * FROM icbhi_durations WHERE lung_label = 'all'")
    assert durations["duration_from_annotations"][0] == 910 and durations["duration_from_wav"][0] == 10
    assert len(storage.query("SELECT * FROM icbhi_spectral_features")) == 10
