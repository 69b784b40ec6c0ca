"""Segmenting and scoring whole manifests: every row is accounted for, with a reason when it is not used."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.cough_filter import TrainingSettings, train_cough_classifier
from cough_pipeline.cough_filter.batch import (
    BELOW_THRESHOLD,
    NOT_A_COUGH_RECORDING,
    classify_recordings,
    prepared_clips,
)
from cough_pipeline.demo_corpus.clips import labelled_clips
from cough_pipeline.manifest import build_manifest
from cough_pipeline.segmentation import HysteresisConfig, RmsConfig
from cough_pipeline.segmentation.batch import SegmentationRun, segment_recordings
from cough_pipeline.segmentation.virufy_evaluation import evaluate_virufy


@pytest.fixture(scope="module")
def ccs(demo_corpus, tmp_path_factory):
    """A copy of the demo CCS folder and its manifest, plus three awkward rows: a breath recording, a silent clip
    and a file deleted after the manifest was built."""
    root = shutil.copytree(demo_corpus / "ccs", tmp_path_factory.mktemp("ccs") / "ccs")
    manifest = build_manifest("ccs", root).manifest
    sf.write(root / "dist" / "wav" / "silent.wav", np.zeros(16_000), 16_000)
    extra = manifest.iloc[:3].copy()
    extra["recording_id"] = ["ccs:breath", "ccs:silent", "ccs:deleted"]
    extra["sound_type"] = ["breath", "cough", "cough"]
    extra["audio_path"] = [manifest.iloc[0]["audio_path"], "dist/wav/silent.wav", "dist/wav/deleted.wav"]
    extra["exclude_reason"] = None
    return root, pd.concat([manifest, extra], ignore_index=True)


@pytest.fixture(scope="module")
def classifier(demo_corpus):
    clips = prepared_clips(labelled_clips(demo_corpus), 48_000)
    model, _ = train_cough_classifier(clips, seed=0, settings=TrainingSettings(n_splits=3))
    model.input_sample_rate = 48_000
    return model


def test_segment_recordings_accounts_for_every_row(ccs, tmp_path):
    root, manifest = ccs
    run = SegmentationRun(
        {"hysteresis": HysteresisConfig(), "rms": RmsConfig()}, output_dir=tmp_path / "segments", relative_to=tmp_path
    )
    result = segment_recordings(manifest, root, run)
    recordings = result.per_recording
    status = recordings.drop_duplicates("recording_id").set_index("recording_id")
    assert set(status.index) == set(manifest["recording_id"])
    assert status.loc["ccs:breath", "reason"] == "sound_type_breath"
    assert status.loc["ccs:deleted", ["status", "reason"]].tolist() == ["failed", "audio_missing"]
    silent = recordings[recordings["recording_id"] == "ccs:silent"]
    assert silent["segments"].tolist() == [0, 0]  # segmented by both methods, nothing found, no error
    excluded = manifest.loc[manifest["exclude_reason"].isin(["not_cough", "duplicate"]), "recording_id"]
    assert (status.loc[list(excluded), "status"] == "skipped").all()
    segments = result.segments
    assert len(segments) > 0 and set(segments["method"]) == {"hysteresis", "rms"}
    assert all((tmp_path / p).is_file() for p in segments["path"])
    assert (segments["end_s"] > segments["start_s"]).all()
    assert set(segments.loc[segments["method"] == "rms", "sample_rate"]) == {48_000}
    assert result.example is not None and sum(map(len, result.example.segments_by_method.values())) > 0
    assert result.failed_counts == {"audio_missing": 1}


def test_cough_list_keeps_every_row_with_a_reason(ccs, classifier):
    root, manifest = ccs
    table = classify_recordings(manifest, root, classifier, threshold=0.8)
    assert table["recording_id"].tolist() == manifest["recording_id"].tolist()
    by_id = table.set_index("recording_id")
    assert by_id.loc["ccs:breath", "reason"] == NOT_A_COUGH_RECORDING
    assert by_id.loc["ccs:silent", ["reason", "cough_probability"]].tolist() == ["silent", 0.0]
    assert by_id.loc["ccs:deleted", "reason"] == "audio_missing"
    scored = table[table["cough_probability"].notna() & ~table["reason"].isin(["silent"])]
    assert ((scored["cough_probability"] >= 0.8) == scored["is_cough"]).all()
    assert set(scored.loc[~scored["is_cough"], "reason"]) <= {BELOW_THRESHOLD}
    assert scored["is_cough"].mean() > 0.5  # the demo coughs are coughs


def test_virufy_evaluation_reproduces_the_published_counts(shared_data):
    evaluation = evaluate_virufy(shared_data / "virufy", {"hysteresis": HysteresisConfig(), "rms": RmsConfig()})
    summary = evaluation.summary.set_index("method")
    assert summary.loc["rms", ["automatic_total", "published_total", "files_equal_published"]].tolist() == [
        150,
        150,
        16,
    ]
    assert summary.loc["hysteresis", "automatic_total"] == pytest.approx(120, abs=5)
    assert summary.loc["hysteresis", "files_equal_published"] >= 12
    assert set(summary["manual_total"]) == {121}
    assert 0.6 < summary.loc["hysteresis", "precision_proxy"] <= 1 and 0.6 < summary.loc["rms", "precision_proxy"] <= 1
    assert 0 < evaluation.fleiss_kappa < 1
