"""Separated clips: every mixture of a table passed through a separator and written as a 16-bit WAV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import soundfile as sf

from cough_pipeline.audio import load_mono
from cough_pipeline.parallel import ProgressCallback, notify
from cough_pipeline.separation.evaluation import Separator


def separate_files(
    mixtures: pd.DataFrame,
    mixtures_dir: str | Path,
    out_dir: str | Path,
    separate: Separator,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Separate every mixture of ``mixtures`` into ``<out_dir>/<mixture_id>.wav`` (PCM_16, the mixture's rate).

    Args:
        mixtures: ``mixture_id`` and ``mixture_path`` (relative to ``mixtures_dir``) columns.
        mixtures_dir: the folder the mixture paths are relative to.
        out_dir: a new folder for the separated WAVs (created; it must not exist yet).
        separate: mono float32 ``(samples,)`` mixture -> cough estimate of the same shape (e.g.
            :func:`~cough_pipeline.separation.evaluation.model_separator`).
        progress: called as ``progress(done, total)`` after every clip.

    Returns:
        The written paths, in the table's row order.
    """
    mixtures_dir, out_dir = Path(mixtures_dir), Path(out_dir)
    out_dir.mkdir()
    paths = []
    for done, (mixture_id, mixture_path) in enumerate(zip(mixtures["mixture_id"], mixtures["mixture_path"]), start=1):
        samples, rate = load_mono(mixtures_dir / mixture_path)
        path = out_dir / f"{mixture_id}.wav"
        sf.write(path, separate(samples), rate, subtype="PCM_16")
        paths.append(path)
        notify(progress, done, len(mixtures))
    return paths
