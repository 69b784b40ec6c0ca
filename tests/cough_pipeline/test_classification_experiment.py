"""``make classify-experiment``: Virufy's manual segments as classification recordings, and the headline table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cough_pipeline.classification.experiment import headline, virufy_segments


@pytest.mark.shared_data
def test_virufy_segments_are_121_labelled_recordings_of_16_participants(shared_data):
    recordings = virufy_segments(shared_data / "virufy")
    assert len(recordings) == 121 and recordings["participant_id"].nunique() == 16
    assert recordings["covid_label"].value_counts().to_dict() == {"negative": 73, "positive": 48}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in recordings["audio_path"])
    assert set(recordings["variant"]) == {"original"}


def test_headline_puts_holdout_and_cv_with_their_intervals_side_by_side():
    rows = []
    for model, holdout, cv in (("a", 0.9, 0.7), ("b", 0.6, 0.8)):
        for evaluation, value in (("holdout", holdout), ("cv", cv)):
            rows.append(
                {
                    "model": model,
                    "variant": "original",
                    "evaluation": evaluation,
                    "dataset": "all",
                    "metric": "roc_auc",
                    "value": value,
                    "ci_low": value - 0.1,
                    "ci_high": value + 0.1,
                    "cv_mean": cv,
                    "cv_sd": 0.05,
                }
            )
    rows.append({**rows[0], "dataset": "ccs", "value": 0.1})  # per-dataset rows are not the headline
    table = headline(pd.DataFrame(rows))
    assert table["model"].tolist() == ["a", "b"]
    assert table.iloc[0][["holdout_value", "holdout_ci_low", "cv_value", "cv_ci_high"]].tolist() == pytest.approx(
        [0.9, 0.8, 0.7, 0.8]
    )
