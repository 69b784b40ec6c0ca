"""Noise bank layout: ``noise/<category>/<category>_NN.wav`` (44.1 kHz PCM16, 5 s) plus ``noise_bank.csv``.

Each file has its own integer seed, listed in the CSV: ``generator(np.random.default_rng(seed),
44100, 5.0)`` reproduces it exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.demo_corpus.layouts.common import write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 44_100
DURATION_S = 5.0
GENERATORS = {"babble": synth.babble, "classroom": synth.classroom, "hum": synth.hum}
HEADER = ("path", "category", "duration_s", "sample_rate", "generator", "seed")


def write_noise(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write ``size.noise_files_per_category`` files per category and the catalogue CSV."""
    rows = []
    for category, generator in GENERATORS.items():
        (root / category).mkdir(parents=True)
        for number in range(1, size.noise_files_per_category + 1):
            file_seed = int(rng.integers(0, 2**32))
            relative = f"{category}/{category}_{number:02d}.wav"
            samples = generator(np.random.default_rng(file_seed), SAMPLE_RATE, DURATION_S)
            write_wav(root / relative, samples, SAMPLE_RATE)
            generator_name = f"{synth.__name__}.{generator.__name__}"
            rows.append((relative, category, DURATION_S, SAMPLE_RATE, generator_name, file_seed))
    write_csv(root / "noise_bank.csv", HEADER, rows)
