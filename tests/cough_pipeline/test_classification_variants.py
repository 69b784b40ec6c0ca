"""The classification subset in two variants: the recording's file and its separated coughs joined in order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.classification.variants import VARIANTS, classification_recordings, join_separated

RATE = 8_000


def _clip(root, name: str, value: float, onset_s: float, duration_s: float) -> dict:
    """A 1 s separated clip that is ``value`` inside the event window and 0 elsewhere."""
    samples = np.zeros(RATE, dtype=np.float32)
    samples[int(onset_s * RATE) : int((onset_s + duration_s) * RATE)] = value
    sf.write(str(root / name), samples, RATE, subtype="FLOAT")
    return {"separated_path": name, "onset_s": onset_s, "event_duration_s": duration_s}


def test_separated_coughs_are_cut_at_their_events_and_joined_in_cough_order(tmp_path):
    clips = pd.DataFrame(
        [
            {"recording_id": "ccs:a", "cough_file": "a-1.wav", **_clip(tmp_path, "a1.wav", 0.5, 0.5, 0.25)},
            {"recording_id": "ccs:a", "cough_file": "a-0.wav", **_clip(tmp_path, "a0.wav", 0.25, 0.1, 0.125)},
            {"recording_id": "ccs:b", "cough_file": "b-0.wav", **_clip(tmp_path, "b0.wav", 0.75, 0.0, 0.5)},
        ]
    )
    joined, unreadable = join_separated(clips, tmp_path, tmp_path / "out")
    assert unreadable.empty
    assert joined.set_index("recording_id")["n_coughs"].to_dict() == {"ccs:a": 2, "ccs:b": 1}
    a, rate = sf.read(joined.set_index("recording_id").loc["ccs:a", "audio_path"], dtype="float32")
    assert rate == RATE
    np.testing.assert_array_equal(a, np.r_[np.full(1000, 0.25), np.full(2000, 0.5)].astype(np.float32))


def test_every_subset_row_is_a_variant_row_or_a_quarantine_row_with_a_reason(tmp_path):
    clips = pd.DataFrame(
        [
            {"recording_id": "ccs:a", "cough_file": "a-0.wav", **_clip(tmp_path, "a0.wav", 0.5, 0.1, 0.2)},
            {
                "recording_id": "ccs:c",
                "cough_file": "c-0.wav",
                "separated_path": "gone.wav",
                "onset_s": 0.0,
                "event_duration_s": 0.1,
            },
        ]
    )
    joined, unreadable = join_separated(clips, tmp_path, tmp_path / "out")
    subset = pd.DataFrame(
        {
            "dataset": "ccs",
            "recording_id": ["ccs:a", "ccs:b", "ccs:c", "ccs:d"],
            "participant_id": ["ccs:p1", "ccs:p2", "ccs:p3", "ccs:p4"],
            "covid_label": ["positive", "negative", "negative", "unknown"],
            "audio_path": ["a.wav", "b.wav", "c.wav", "d.wav"],
        }
    )
    tables = classification_recordings(subset, tmp_path / "root", joined, unreadable)
    kept = set(zip(tables.recordings["recording_id"], tables.recordings["variant"]))
    reasons = dict(
        zip(zip(tables.quarantine["recording_id"], tables.quarantine["variant"]), tables.quarantine["reason"])
    )
    assert kept == {("ccs:a", "original"), ("ccs:a", "separated"), ("ccs:b", "original"), ("ccs:c", "original")}
    assert reasons == {
        ("ccs:b", "separated"): "no_separated_clip",
        ("ccs:c", "separated"): "audio_unreadable",
        ("ccs:d", "original"): "label_unknown",
        ("ccs:d", "separated"): "label_unknown",
    }
    assert len(kept) + len(reasons) == len(subset) * len(VARIANTS)
    original = tables.recordings.set_index(["recording_id", "variant"]).loc[("ccs:b", "original"), "audio_path"]
    assert original == str(tmp_path / "root" / "b.wav")
