"""ComParE 2021 CCS layout: ``dist/wav/<part>_NNN.wav`` (16 kHz PCM16) and ``dist/lab/<part>.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.demo_corpus.layouts.common import cough_clip, shuffled_labels, write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 16_000
TRAIN_SHARE = 0.4
DEVEL_SHARE = 0.35
UNRELEASED_TEST_LABELS = 2


def _partition_sizes(n: int) -> dict[str, int]:
    """Split ``n`` recordings over train/devel/test roughly 40/35/25 (test gets the remainder)."""
    train = round(n * TRAIN_SHARE)
    devel = round(n * DEVEL_SHARE)
    return {"train": train, "devel": devel, "test": n - train - devel}


def write_ccs(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write the CCS package; a couple of test rows carry the ``?`` placeholder label."""
    wav_dir = root / "dist" / "wav"
    wav_dir.mkdir(parents=True)
    for partition, count in _partition_sizes(size.covid_recordings).items():
        labels = shuffled_labels(rng, count)
        rows = []
        for index, label in enumerate(labels, start=1):
            file_name = f"{partition}_{index:03d}.wav"
            samples, _ = cough_clip(rng, SAMPLE_RATE, int(rng.integers(1, 5)), label == "positive")
            write_wav(wav_dir / file_name, samples, SAMPLE_RATE)
            published = "?" if partition == "test" and index > count - UNRELEASED_TEST_LABELS else label
            rows.append((file_name, published))
        write_csv(root / "dist" / "lab" / f"{partition}.csv", ("filename", "label"), rows)
    # A planted defect (see PLANTED_DEFECTS): a wav whose label line is missing from train.csv.
    samples, _ = cough_clip(rng, SAMPLE_RATE, 2, False)
    write_wav(wav_dir / f"train_{_partition_sizes(size.covid_recordings)['train'] + 1:03d}.wav", samples, SAMPLE_RATE)
