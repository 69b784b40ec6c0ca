"""The loaders on the real samples in ../shared/data (read in place; skipped when absent).

Coswara and COUGHVID ship metadata only, so their recordings land in the quarantine as ``audio_missing`` while
every label is still read; Virufy and ten ICBHI recordings have audio and are decoded for real.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cough_pipeline.datasets import get_loader
from cough_pipeline.datasets.icbhi import read_all_cycles
from cough_pipeline.manifest import build_manifest


def rows(dataset, root, **options) -> pd.DataFrame:
    read = get_loader(dataset, **options).read_metadata(root)
    assert not read.quarantine, read.quarantine[:3]
    return pd.DataFrame(read.rows)


def test_coswara_metadata(shared_data):
    frame = rows("coswara", shared_data / "coswara")
    assert len(frame) == 2 * 2746 and frame["participant_id"].nunique() == 2746
    per_participant = frame[frame["cough_type"] == "heavy"]
    assert per_participant["covid_label"].value_counts().to_dict() == {
        "negative": 1433,
        "positive": 681,
        "unknown": 632,
    }
    raw = per_participant["covid_label_raw"].value_counts()
    assert raw["positive_mild"] == 426 and raw["no_resp_illness_exposed"] == 248 and raw["recovered_full"] == 146
    reasons = per_participant["exclude_reason"].value_counts()
    assert reasons["ambiguous_status"] == 248 + 157 and reasons["recovered"] == 146
    # Quality 0 in annotations/cough-*_labels.csv (after stripping the stray spaces) marks low quality.
    assert (frame["exclude_reason"] == "low_quality").sum() > 0
    assert set(frame["label_source"]) == {"pcr", "antigen", "self_report"}


def test_coswara_ambiguous_statuses_can_count_as_negative(shared_data):
    frame = rows("coswara", shared_data / "coswara", ambiguous_as_negative=True)
    heavy = frame[frame["cough_type"] == "heavy"]
    assert (heavy["covid_label"] == "negative").sum() == 1433 + 248 + 157


def test_coswara_without_audio_is_all_accounted_for(shared_data):
    build = build_manifest("coswara", shared_data / "coswara")
    assert build.manifest.empty and len(build.quarantine) == 5492 and build.accounted
    assert set(build.quarantine["reason"]) == {"audio_missing"}


def test_coughvid_metadata(shared_data):
    frame = rows("coughvid", shared_data / "coughvid" / "third_party_column_subset")
    assert len(frame) == 27_550
    assert frame["covid_label_raw"].value_counts().to_dict() == {
        "healthy": 12_479,
        "symptomatic": 2_590,
        "COVID-19": 1_155,
    }
    assert frame["covid_label_raw"].isna().sum() == 11_326
    assert (frame["cough_detected"] >= 0.8).sum() == 15_125
    assert (frame["exclude_reason"] == "not_cough").sum() == 27_550 - 15_125
    assert (frame["covid_label"] == "positive").sum() == 1_155
    # status_SSL is absent from this copy; SNR (present) stays in extra, never as a label.
    assert "SNR" in json.loads(frame["extra"].iloc[1])


def test_coughvid_without_audio_is_all_accounted_for(shared_data):
    build = build_manifest("coughvid", shared_data / "coughvid" / "third_party_column_subset")
    assert len(build.quarantine) == 27_550 and build.accounted


@pytest.mark.parametrize("unit, count, positives", [("original", 16, 7), ("segment", 121, 48)])
def test_virufy_decodes_every_file(shared_data, unit, count, positives):
    build = build_manifest("virufy", shared_data / "virufy", options={"unit": unit})
    frame = build.manifest
    assert len(frame) == count and build.quarantine.empty and build.accounted
    assert (frame["covid_label"] == "positive").sum() == positives
    assert frame["participant_id"].nunique() == 16
    assert set(frame["audio_format"]) == {"mp3"} and set(frame["sample_rate"]) == {48_000}
    assert set(frame["channels"]) == {1} and set(frame["label_source"]) == {"pcr"}
    if unit == "original":
        assert frame["duration_s"].sum() == pytest.approx(302.4, abs=0.5)
        assert frame["quality"].isna().all()  # file names agree with labels.csv
        assert frame["recording_date"].str.startswith("2020-04").all()


def test_icbhi_metadata_and_annotations(shared_data):
    frame = rows("icbhi", shared_data / "icbhi")
    assert len(frame) == 920 and frame["participant_id"].nunique() == 126
    assert frame["official_split"].value_counts().to_dict() == {"train": 539, "test": 381}
    assert (frame["gender"] == "unknown").sum() == 6  # patient 223: age and sex NA
    assert set(frame["exclude_reason"]) == {"not_cough"} and set(frame["label_source"]) == {"pre_pandemic"}
    cycles = read_all_cycles(shared_data / "icbhi")
    assert len(cycles) == 6898
    both = cycles["crackles"] & cycles["wheezes"]
    assert ((cycles["crackles"] == 1) & ~both.astype(bool)).sum() == 1864
    assert ((cycles["wheezes"] == 1) & ~both.astype(bool)).sum() == 886 and both.sum() == 506


def test_icbhi_decodes_the_ten_recordings(shared_data):
    build = build_manifest("icbhi", shared_data / "icbhi")
    assert len(build.manifest) == 10 and len(build.quarantine) == 910 and build.accounted
    assert build.manifest["sample_rate"].value_counts().to_dict() == {4000: 6, 44100: 4}
    durations = build.manifest.set_index("native_id")["duration_s"]
    assert durations["104_1b1_Ar_sc_Litt3200"] == pytest.approx(25.584, abs=1e-3)
