"""Labelled cough / non-cough clips drawn from a generated demo corpus, for training the cough filter.

Coughs: Virufy's originals (several coughs each) and its manual single-cough segments. Non-coughs: the UK
exhalations and excerpts of random length from the noise bank (babble, classroom, hum). Clip lengths overlap
between the classes on purpose: "length in seconds" is one of the 68 COUGHVID features, and a model trained on
short coughs against long noise would learn duration, not coughs. None of these recordings is in the manifest
partitions the filter is applied to, so the demo filter is scored out of sample. Groups keep one patient's (or
one noise file's) clips in one fold.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import load_mono
from cough_pipeline.demo_corpus import NOISE_FOLDER

#: A wav with nothing after its 44-byte header holds no audio (the UK corpus has one on purpose).
HEADER_ONLY_BYTES = 44
#: The folders :func:`labelled_clips` reads.
CLIP_DATASETS = ("virufy", "ukcovid")
NOISE_EXCERPTS_PER_FILE = 3
NOISE_EXCERPT_S = (0.4, 4.0)


def labelled_clips(root: Path, seed: int = 0) -> pd.DataFrame:
    """Columns ``source`` (a path, or samples for noise excerpts), ``sample_rate`` (for samples), ``label``
    (1 cough, 0 not), ``group`` and ``kind``; deterministic for a given corpus and ``seed``."""
    root = Path(root)
    virufy = root / "virufy" / "clinical"
    rows = [(str(p), None, 1, f"virufy:{p.stem}", "virufy:original") for p in sorted(virufy.glob("original/*/*.mp3"))]
    rows += [
        (str(p), None, 1, f"virufy:{p.stem.rsplit('-', 1)[0]}", "virufy:segment")
        for p in sorted(virufy.glob("segmented/*/*.mp3"))
    ]
    rows += [
        (str(p), None, 0, f"ukcovid:{p.stem.partition('_')[0]}", "ukcovid:exhalation")
        for p in sorted((root / "ukcovid" / "audio").glob("*_exhalation.wav"))
        if p.stat().st_size > HEADER_ONLY_BYTES
    ]
    for path in sorted((root / NOISE_FOLDER).glob("*/*.wav")):
        rows += [
            (excerpt, rate, 0, f"noise:{path.stem}", f"noise:{path.parent.name}")
            for excerpt, rate in _excerpts(path, seed)
        ]
    return pd.DataFrame(rows, columns=["source", "sample_rate", "label", "group", "kind"])


def _excerpts(path: Path, seed: int) -> list[tuple[np.ndarray, int]]:
    """:data:`NOISE_EXCERPTS_PER_FILE` excerpts of random length and position from one noise file."""
    samples, rate = load_mono(path)
    rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
    excerpts = []
    for _ in range(NOISE_EXCERPTS_PER_FILE):
        length = min(samples.size, round(rng.uniform(*NOISE_EXCERPT_S) * rate))
        start = int(rng.integers(0, samples.size - length + 1))
        excerpts.append((samples[start : start + length], rate))
    return excerpts
