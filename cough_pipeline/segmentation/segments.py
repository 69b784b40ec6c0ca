"""What every segmentation method shares: the :class:`Segment` it returns, the block protocol that lets one
implementation serve both in-memory arrays and streamed files, and input validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: In-memory arrays are fed to a segmenter in blocks of this many samples, which bounds the float64
#: temporaries (squares, cumulative sums) a block needs, whatever the length of the recording.
IN_MEMORY_BLOCK = 1 << 20


@dataclass(frozen=True)
class Segment:
    """One cough: ``[start_s, end_s)`` in seconds from the start of the recording."""

    start_s: float
    end_s: float

    def __post_init__(self):
        if not (np.isfinite(self.start_s) and np.isfinite(self.end_s)) or self.end_s < self.start_s or self.start_s < 0:
            raise ValueError(f"a segment needs 0 <= start_s <= end_s, got [{self.start_s}, {self.end_s})")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def overlaps(self, other: Segment) -> bool:
        """True when the two half-open intervals share a stretch of positive length."""
        return self.start_s < other.end_s and other.start_s < self.end_s

    def sample_span(self, sample_rate: int) -> tuple[int, int]:
        """``(start, stop)`` sample indices of this segment at ``sample_rate`` (stop exclusive)."""
        return round(self.start_s * sample_rate), round(self.end_s * sample_rate)


def segment_from_samples(start: int, stop: int, sample_rate: int) -> Segment:
    """The segment covering samples ``[start, stop)`` at ``sample_rate``."""
    return Segment(start / sample_rate, stop / sample_rate)


class BlockSegmenter(Protocol):
    """Two passes over a recording fed in consecutive blocks of mono float32 samples.

    Pass 1 (:meth:`measure` on every block) gathers the global statistic the thresholds depend on; pass 2
    (:meth:`segment` on the same blocks, in the same order) finds the coughs, carrying its state across block
    boundaries; :meth:`finish` closes the recording and returns the segments. Feeding the whole signal as one
    block, or as many, gives the same segments.

    Shape:
        block: ``(block,)`` float32, any length (the last one may be shorter or empty).
    """

    def measure(self, block: np.ndarray) -> None:
        """Pass 1: fold ``block`` into the recording's statistic."""
        ...

    def segment(self, block: np.ndarray) -> None:
        """Pass 2: advance the segmentation over ``block``."""
        ...

    def finish(self) -> list[Segment]:
        """Close the recording; returns its segments in time order."""
        ...


def validate_sample_rate(sample_rate: int) -> int:
    """``sample_rate`` as a positive int, or a ValueError."""
    if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def validate_signal(signal: np.ndarray) -> np.ndarray:
    """Mono float samples as float32; ValueError for other shapes, integer dtypes or NaN/inf.

    Integer PCM is refused rather than rescaled because the hysteresis thresholds are not scale invariant.

    Args:
        signal: mono float samples in [-1, 1].

    Returns:
        The samples as float32 (no copy when they already are).

    Shape:
        signal: ``(samples,)``; returns ``(samples,)``.
    """
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(
            f"expected mono samples of shape (samples,), got shape {signal.shape}; "
            "average the channels first (e.g. DecodedAudio.mono())"
        )
    if not np.issubdtype(signal.dtype, np.floating):
        raise ValueError(f"expected float samples in [-1, 1], got dtype {signal.dtype}")
    signal = signal.astype(np.float32, copy=False)
    if not np.isfinite(signal).all():
        bad = int(np.count_nonzero(~np.isfinite(signal)))
        raise ValueError(f"signal contains {bad} NaN or infinite sample(s); segmentation needs finite samples")
    return signal


def run_in_blocks(segmenter: BlockSegmenter, signal: np.ndarray, block: int = IN_MEMORY_BLOCK) -> list[Segment]:
    """Both passes of ``segmenter`` over an in-memory signal.

    Args:
        segmenter: a fresh block segmenter.
        signal: validated mono float32 samples.
        block: samples fed per call, which bounds the temporaries a call allocates.

    Returns:
        The segments :meth:`BlockSegmenter.finish` returns.

    Shape:
        signal: ``(samples,)``.
    """
    blocks = [signal[start : start + block] for start in range(0, len(signal), block)]
    for piece in blocks:
        segmenter.measure(piece)
    for piece in blocks:
        segmenter.segment(piece)
    return segmenter.finish()
