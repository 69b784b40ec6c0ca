"""Labelled cough / non-cough clips drawn from a generated demo corpus, for training the cough filter.

Coughs: Virufy's manual single-cough segments. Non-coughs: the noise bank (babble, classroom, hum) and the UK
exhalations. None of these recordings is in the manifest partitions the filter is then applied to, so the demo
filter is scored out of sample. Groups keep one patient's (or one noise file's) clips in one fold.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cough_pipeline.demo_corpus import NOISE_FOLDER

#: A wav with nothing after its 44-byte header holds no audio (the UK corpus has one on purpose).
HEADER_ONLY_BYTES = 44
#: The folders :func:`labelled_clips` reads.
CLIP_DATASETS = ("virufy", "ukcovid")


def labelled_clips(root: Path) -> pd.DataFrame:
    """Columns ``source`` (absolute path), ``label`` (1 cough, 0 not), ``group``, ``kind``; sorted by source."""
    root = Path(root)
    rows = [(p, 1, f"virufy:{p.stem.rsplit('-', 1)[0]}", "virufy:segment")
            for p in (root / "virufy" / "clinical" / "segmented").glob("*/*.mp3")]
    rows += [(p, 0, f"ukcovid:{p.stem.partition('_')[0]}", "ukcovid:exhalation")
             for p in (root / "ukcovid" / "audio").glob("*_exhalation.wav")]
    rows += [(p, 0, f"noise:{p.stem}", f"noise:{p.parent.name}") for p in (root / NOISE_FOLDER).glob("*/*.wav")]
    frame = pd.DataFrame(rows, columns=["source", "label", "group", "kind"])
    frame = frame[frame["source"].map(lambda p: p.stat().st_size > HEADER_ONLY_BYTES)]
    return frame.assign(source=frame["source"].map(str)).sort_values("source", ignore_index=True)
