"""Comparing automatic segmentations with manual ones (Atmaja et al. 2023 report counts, a listening test rated
with Fleiss' kappa, and how many automatic segments are single coughs).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from cough_pipeline.segmentation.segments import Segment, segment_from_samples, validate_sample_rate, validate_signal


def coughs_per_minute(n_segments: int, duration_s: float) -> float:
    """Cough rate of a recording of ``duration_s`` seconds holding ``n_segments`` coughs."""
    if n_segments < 0:
        raise ValueError(f"n_segments must be >= 0, got {n_segments}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    return 60.0 * n_segments / duration_s


def count_table(automatic: dict[str, int], manual: dict[str, int]) -> pd.DataFrame:
    """Per file (index ``file``, sorted): ``automatic``, ``manual`` and ``difference`` = automatic - manual.

    Both dicts must name the same files, so a file missing from one side is an error, not a silent zero.
    """
    if set(automatic) != set(manual):
        only_automatic, only_manual = sorted(set(automatic) - set(manual)), sorted(set(manual) - set(automatic))
        raise ValueError(f"files differ: only automatic {only_automatic[:5]}, only manual {only_manual[:5]}")
    files = sorted(automatic)
    table = pd.DataFrame(
        {"automatic": [int(automatic[f]) for f in files], "manual": [int(manual[f]) for f in files]},
        index=pd.Index(files, name="file"),
    )
    table["difference"] = table["automatic"] - table["manual"]
    return table


def precision_proxy(automatic: list[Segment], manual: list[Segment]) -> float:
    """Share of ``automatic`` segments that overlap exactly one ``manual`` segment (a single, real cough).

    An automatic segment overlapping none is a false detection; one overlapping several merged coughs.

    Args:
        automatic: the segments a method found.
        manual: the reference segments of the same recording.

    Returns:
        A share in [0, 1]; NaN when there are no automatic segments (precision is undefined).
    """
    if not automatic:
        return math.nan
    single = sum(1 for found in automatic if sum(found.overlaps(truth) for truth in manual) == 1)
    return single / len(automatic)


def fleiss_kappa(table: np.ndarray) -> float:
    """Fleiss' kappa of a rating table.

    Args:
        table: entry ``[i, j]`` = raters who put subject i in category j; every subject must be rated by the same
            number (>= 2) of raters.

    Returns:
        Kappa; NaN when all ratings fall in a single category (chance agreement is then 1 and kappa undefined).

    Raises:
        ValueError: for a table that is not a matrix of counts with a constant number of raters.

    Shape:
        table: ``(subjects, categories)``.
    """
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise ValueError(f"expected a (subjects, categories) matrix, got shape {table.shape}")
    if not np.issubdtype(table.dtype, np.number) or (table < 0).any() or not np.all(table == np.round(table)):
        raise ValueError("entries must be non-negative counts of raters")
    raters = table.sum(axis=1)
    if not (raters == raters[0]).all() or raters[0] < 2:
        raise ValueError(f"every subject needs the same number (>= 2) of raters, got {sorted(set(raters.tolist()))}")
    n = float(raters[0])
    agreement = ((table.astype(np.float64) ** 2).sum(axis=1) - n) / (n * (n - 1))
    category_share = table.sum(axis=0) / (table.shape[0] * n)
    chance = float((category_share**2).sum())
    if chance == 1.0:
        return math.nan
    return (float(agreement.mean()) - chance) / (1.0 - chance)


#: Windows of the original with less energy than this share of the loudest window are not candidate positions.
_AUDIBLE_WINDOW = 1e-7


def _best_lag(original: np.ndarray, clip: np.ndarray) -> int:
    """Start (samples, may be negative) of ``clip`` in ``original`` maximising the normalised cross-correlation.

    Every lag where the clip overlaps the original at all is tried (the original is zero-padded by the clip
    length), so clips cut at the very start or end, or shifted by codec delay, are found too. Normalising by the
    energy of the original under the clip keeps loud passages from winning by loudness alone.
    """
    m = clip.size
    padded = np.concatenate((np.zeros(m - 1), original.astype(np.float64), np.zeros(m - 1)))
    correlation = fftconvolve(padded, clip[::-1].astype(np.float64), mode="valid")  # (n + m - 1,)
    energy = np.concatenate(([0.0], np.cumsum(padded**2)))
    window_energy = energy[m:] - energy[:-m]
    # Windows of (near) digital silence are skipped: their energy is within the running sum's rounding error.
    audible = window_energy > _AUDIBLE_WINDOW * window_energy.max()
    score = np.zeros_like(correlation)
    score[audible] = correlation[audible] / np.sqrt(window_energy[audible])
    return int(np.argmax(score)) - (m - 1)


def _active_span(clip: np.ndarray, silence_db: float) -> tuple[int, int]:
    """``(start, stop)`` of ``clip`` (``(samples,)``) without the leading/trailing samples quieter than
    ``silence_db`` relative to its peak (Virufy pads each manual cough with silence to 1.6 s)."""
    magnitude = np.abs(clip)
    loud = np.flatnonzero(magnitude > magnitude.max() * 10.0 ** (silence_db / 20.0))
    return int(loud[0]), int(loud[-1]) + 1


def locate_clips(
    original: np.ndarray, clips: list[np.ndarray], sample_rate: int, *, silence_db: float = -60.0
) -> list[Segment]:
    """Where each clip (cut from ``original`` and re-encoded, so not bit-exact) sits in ``original``.

    Leading and trailing silence (``silence_db`` below the clip's peak) is trimmed from each clip first, so the
    segment covers the sound itself; the trimmed clip is found by FFT cross-correlation of the waveforms, and the
    segment clipped to the original. Clip gain does not matter.

    Args:
        original: the recording the clips were cut from, mono float at ``sample_rate``.
        clips: the clips, mono float at ``sample_rate``.
        sample_rate: the rate of both (Hz).
        silence_db: the trimming level, negative dB relative to each clip's peak.

    Returns:
        One segment per clip, in the order given.

    Raises:
        ValueError: for a silent or empty original or clip, or a non-negative ``silence_db``.

    Shape:
        original: ``(samples,)``; each clip: ``(clip_samples,)``.
    """
    sample_rate = validate_sample_rate(sample_rate)
    original = validate_signal(original)
    if not np.any(original):
        raise ValueError("the original is empty or silent: there is nothing to locate clips in")
    if not silence_db < 0:
        raise ValueError(f"silence_db must be negative (dB below the clip's peak), got {silence_db}")
    located = []
    for index, clip in enumerate(clips):
        clip = validate_signal(clip)
        if not clip.size or not np.any(clip):
            raise ValueError(f"clip {index} is empty or silent and cannot be located")
        first, stop = _active_span(clip, silence_db)
        start = _best_lag(original, clip[first:stop])
        located.append(
            segment_from_samples(max(start, 0), min(max(start + stop - first, 0), original.size), sample_rate)
        )
    return located
