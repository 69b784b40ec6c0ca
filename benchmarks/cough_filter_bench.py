"""Cough filter: feature extraction (clips/s at 48 kHz, 44.1 kHz and 16 kHz), training, and inference per clip.

The clips are synthetic and seeded (decaying noise bursts as "coughs", hum plus noise as "not coughs"), so the
benchmark needs no data set; the model it times is trained on them with the default settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import stopwatch, write_result
from cough_pipeline.cough_filter.features import extract_features
from cough_pipeline.cough_filter.model import CoughClassifier
from cough_pipeline.cough_filter.training import FeatureTable, train_from_features

CLIP_SECONDS = 3.0
SAMPLE_RATES = (48_000, 44_100, 16_000)
INFERENCE_REPEATS = 200


def synthetic_clip(rng: np.random.Generator, sample_rate: int, is_cough: bool) -> np.ndarray:
    """A float32 ``(frames,)`` clip: two or three decaying noise bursts, or mains hum with a tone and noise."""
    frames = int(CLIP_SECONDS * sample_rate)
    t = np.arange(frames) / sample_rate
    background = 0.01 * rng.standard_normal(frames)
    if not is_cough:
        hum = 0.3 * np.sin(2 * np.pi * 50 * t) + 0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        return (hum + background).astype(np.float32)
    clip = background
    for onset in rng.uniform(0.1, CLIP_SECONDS - 0.5, size=rng.integers(2, 4)):
        start = int(onset * sample_rate)
        burst = rng.standard_normal(frames - start) * np.exp(-(t[: frames - start]) / rng.uniform(0.05, 0.15))
        clip[start:] += 0.5 * burst
    return clip.astype(np.float32)


def time_feature_extraction(sample_rate: int, n_clips: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Clips/s of :func:`extract_features` on ``n_clips`` alternating cough / non-cough clips.

    Returns the timing row and the features too.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_clips) % 2
    clips = [synthetic_clip(rng, sample_rate, bool(label)) for label in labels]
    extract_features(clips[0], sample_rate)  # warm-up: imports and filter-coefficient caches
    with stopwatch() as elapsed:
        matrix = np.stack([extract_features(clip, sample_rate) for clip in clips])
    seconds = elapsed()
    figures = {
        "clips": n_clips,
        "clip_seconds": CLIP_SECONDS,
        "seconds": round(seconds, 3),
        "clips_per_s": round(n_clips / seconds, 1),
        "ms_per_clip": round(1000 * seconds / n_clips, 2),
        "audio_seconds_per_s": round(n_clips * CLIP_SECONDS / seconds, 1),
    }
    return figures, matrix, labels


def time_inference(classifier: CoughClassifier, matrix: np.ndarray, clip: np.ndarray, sample_rate: int) -> dict:
    """Milliseconds per single-row prediction, per row of a batch, and per raw clip end to end."""
    single_rows = [matrix[i : i + 1] for i in range(min(INFERENCE_REPEATS, len(matrix)))]
    classifier.probabilities(single_rows[0])
    with stopwatch() as single:
        for row in single_rows:
            classifier.probabilities(row)
    with stopwatch() as batch:
        classifier.probabilities(matrix)
    end_to_end_repeats = 20
    with stopwatch() as end_to_end:
        for _ in range(end_to_end_repeats):
            classifier.classify(clip, sample_rate)
    return {
        "single_row_ms": round(1000 * single() / len(single_rows), 3),
        "batch_rows": len(matrix),
        "batch_ms_per_row": round(1000 * batch() / len(matrix), 4),
        "classify_clip_ms": round(1000 * end_to_end() / end_to_end_repeats, 2),
        "classify_clip_rate": sample_rate,
    }


def run(n_clips: int = 200, seed: int = 0) -> Path:
    """Time feature extraction at each rate, training on the 48 kHz features, and inference; write the JSON."""
    timed = {sample_rate: time_feature_extraction(sample_rate, n_clips, seed) for sample_rate in SAMPLE_RATES}
    _, matrix, labels = timed[48_000]
    table = FeatureTable(
        matrix=matrix, labels=labels, groups=np.arange(len(labels)) // 4, clip_index=np.arange(len(labels)), rejected=[]
    )
    with stopwatch() as training:
        classifier, report = train_from_features(table, seed=seed)
    clip = synthetic_clip(np.random.default_rng(seed), 48_000, is_cough=True)
    return write_result(
        "cough_filter",
        {
            "feature_extraction": {str(sample_rate): figures for sample_rate, (figures, _, _) in timed.items()},
            "training": {
                "clips": len(labels),
                "folds": report["cross_validation"]["n_splits"],
                "seconds_with_cv": round(training(), 2),
                "n_estimators": report["settings"]["n_estimators"],
            },
            "inference": time_inference(classifier, matrix, clip, 48_000),
        },
    )
