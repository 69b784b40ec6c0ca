"""The real-data separation experiment's inputs (the training run itself is `make separation-experiment`)."""

from __future__ import annotations

from cough_pipeline.separation.experiment import real_coughs
from cough_pipeline.subsets import split_coughs


def test_real_coughs_are_virufy_segments_and_esc50_coughing(shared_data):
    coughs = real_coughs(shared_data / "virufy", shared_data / "esc50")
    counts = coughs["dataset"].value_counts().to_dict()
    assert counts["virufy"] == 121 and counts["esc50"] >= 1
    split = split_coughs(coughs, seed=0)
    assert (split.groupby("participant_id")["split"].nunique() == 1).all()
    assert split.loc[split["dataset"] == "virufy", "participant_id"].nunique() == 16
