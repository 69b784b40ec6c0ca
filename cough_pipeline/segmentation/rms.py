"""RMS-threshold cough segmentation (Atmaja et al. 2023, after Zanjabila's "simple" segmentation).

Frame RMS as ``librosa.feature.rms`` computes it (centred frames: ``frame_length // 2`` zeros on both sides, frame
``k`` covers padded samples ``[k * hop, k * hop + frame_length)``), min-max normalised over the recording. A run of
consecutive frames whose normalised RMS is above ``threshold`` is one candidate region; it is cut from sample
``(first - margin) * hop`` to sample ``(last + margin) * hop`` (frame start times, as the published code uses
``librosa.times_like``), clipped to the signal, and kept when its length is within ``[min_s, max_s]``.

Where this differs from the published script (documented, and irrelevant on the Virufy recordings): a region
whose margin runs past either end of the signal is clipped to the signal (the script wraps around to the end of
the recording at the start, and drops the end margin near the end); a frame exactly equal to the threshold counts
as below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from cough_pipeline.bounds import Bounds, NonNegativeFloat, NonNegativeInt, PositiveInt
from cough_pipeline.segmentation.segments import (
    Segment,
    run_in_blocks,
    segment_from_samples,
    validate_sample_rate,
    validate_signal,
)


@dataclass(frozen=True)
class RmsConfig:
    """Parameters of the RMS-threshold method; the defaults are those of the published Virufy segmentation.

    ``sample_rate``: rate :func:`~cough_pipeline.segmentation.segment_file` resamples to (None keeps the file's
    rate); ``frame_length``/``hop_length``: RMS frames in samples; ``threshold``: on the min-max normalised RMS;
    ``min_s``/``max_s``: shortest and longest region kept (inclusive); ``margin_frames``: hops added on both sides.
    """

    sample_rate: PositiveInt | None = 48_000
    frame_length: PositiveInt = 2048
    hop_length: PositiveInt = 512
    threshold: Annotated[float, Bounds(ge=0.0, lt=1.0)] = 0.09
    min_s: NonNegativeFloat = 0.3
    max_s: NonNegativeFloat = 3.0
    margin_frames: NonNegativeInt = 3

    def __post_init__(self):
        if self.sample_rate is not None:
            validate_sample_rate(self.sample_rate)
        if not 0 < self.hop_length <= self.frame_length:
            raise ValueError(f"need 0 < hop_length <= frame_length, got {self.hop_length}, {self.frame_length}")
        if not 0 <= self.threshold < 1:
            raise ValueError(
                f"threshold applies to the min-max normalised RMS and must be in [0, 1), got {self.threshold}"
            )
        if not (math.isfinite(self.max_s) and 0 <= self.min_s <= self.max_s):
            raise ValueError(f"need 0 <= min_s <= max_s (finite), got {self.min_s}, {self.max_s}")
        if self.margin_frames < 0:
            raise ValueError(f"margin_frames must be >= 0, got {self.margin_frames}")


class FrameRms:
    """Streaming ``librosa.feature.rms(center=True, pad_mode="constant")``: feed blocks, get the frames they
    complete; :meth:`finish` adds the trailing padding and returns the last frames. Values are float64."""

    def __init__(self, frame_length: int, hop_length: int):
        self.frame_length = frame_length
        self.hop_length = hop_length
        self._pending = np.zeros(frame_length // 2, dtype=np.float32)  # leading centre padding

    def add(self, block: np.ndarray) -> np.ndarray:
        """RMS of every frame that ``block`` completes.

        Args:
            block: the next mono float32 samples.

        Returns:
            float64 RMS of each completed frame (none until a whole frame has arrived).

        Shape:
            block: ``(block,)``; returns ``(frames,)``.
        """
        buffer = np.concatenate((self._pending, block))
        if buffer.size < self.frame_length:
            self._pending = buffer
            return np.zeros(0)
        n_frames = 1 + (buffer.size - self.frame_length) // self.hop_length
        squares = buffer.astype(np.float64)
        np.square(squares, out=squares)
        cumulative = np.concatenate(([0.0], np.cumsum(squares)))
        starts = np.arange(n_frames) * self.hop_length
        sums = cumulative[starts + self.frame_length] - cumulative[starts]
        self._pending = buffer[n_frames * self.hop_length :]
        # Cancellation in the running sum can leave tiny negatives where the signal is silent.
        return np.sqrt(np.maximum(sums, 0.0) / self.frame_length)

    def finish(self) -> np.ndarray:
        """RMS of the frames that need the trailing centre padding.

        Returns:
            float64 RMS of the last frames.

        Shape:
            returns ``(frames,)``.
        """
        return self.add(np.zeros(self.frame_length // 2, dtype=np.float32))


class RmsSegmenter:
    """The RMS-threshold method as a :class:`~cough_pipeline.segmentation.segments.BlockSegmenter`.

    Pass 1 finds the minimum and maximum frame RMS (the min-max normalisation); pass 2 recomputes the frames,
    tracks runs above the threshold across blocks, and turns each closed run into a region.
    """

    def __init__(self, sample_rate: int, config: RmsConfig = RmsConfig()):
        self.sample_rate = validate_sample_rate(sample_rate)
        self.config = config
        self._measure_frames = FrameRms(config.frame_length, config.hop_length)
        self._segment_frames = FrameRms(config.frame_length, config.hop_length)
        self._lowest, self._highest = math.inf, -math.inf
        self._range_closed = False
        self._samples = 0  # consumed by pass 2
        self._frames = 0  # frames produced by pass 2
        self._open_run: int | None = None  # first frame of a run above the threshold still in progress
        self._runs: list[tuple[int, int]] = []  # (first, last) frames of closed runs that may be long enough

    def measure(self, block: np.ndarray) -> None:
        """Pass 1: update the frame-RMS range with the frames ``block`` completes.

        Shape:
            block: ``(block,)`` float32.
        """
        self._update_range(self._measure_frames.add(block))

    def _update_range(self, rms: np.ndarray) -> None:
        if rms.size:
            self._lowest = min(self._lowest, float(rms.min()))
            self._highest = max(self._highest, float(rms.max()))

    def segment(self, block: np.ndarray) -> None:
        """Pass 2: track runs of frames above the threshold through ``block``.

        Shape:
            block: ``(block,)`` float32.
        """
        if not self._range_closed:
            self._update_range(self._measure_frames.finish())
            self._range_closed = True
        self._samples += block.size
        self._track(self._segment_frames.add(block))

    def _track(self, rms: np.ndarray) -> None:
        """Extend, open and close runs with the next frames ``rms`` (shape ``(frames,)``)."""
        if not rms.size:
            return
        spread = self._highest - self._lowest
        if spread > 0:
            above = (rms - self._lowest) / spread > self.config.threshold
        else:  # silent or constant recording: nothing stands out
            above = np.zeros(rms.size, dtype=bool)
        edges = np.diff(above.view(np.int8), prepend=np.int8(0), append=np.int8(0))
        firsts = (np.flatnonzero(edges == 1) + self._frames).tolist()
        lasts = (np.flatnonzero(edges == -1) - 1 + self._frames).tolist()
        if self._open_run is not None:
            if firsts and firsts[0] == self._frames:
                firsts[0] = self._open_run
            else:
                self._close_run(self._open_run, self._frames - 1)
            self._open_run = None
        if lasts and lasts[-1] == self._frames + rms.size - 1:
            self._open_run = firsts.pop()
            lasts.pop()
        for first, last in zip(firsts, lasts):
            self._close_run(first, last)
        self._frames += rms.size

    def _close_run(self, first: int, last: int) -> None:
        """Keep a closed run unless it is already too short (clipping its end at the signal can only shorten it)."""
        start, stop = self._sample_span(first, last, end_of_signal=None)
        if (stop - start) / self.sample_rate >= self.config.min_s:
            self._runs.append((first, last))

    def _sample_span(self, first: int, last: int, end_of_signal: int | None) -> tuple[int, int]:
        """Samples ``[start, stop)`` of a run with its margin, clipped to 0 and to ``end_of_signal`` when given."""
        margin, hop = self.config.margin_frames, self.config.hop_length
        stop = (last + margin) * hop
        return max(first - margin, 0) * hop, stop if end_of_signal is None else min(stop, end_of_signal)

    def finish(self) -> list[Segment]:
        """Close the recording and return the regions whose length is within ``[min_s, max_s]``.

        Returns:
            The kept regions in time order; none for a recording shorter than one frame.
        """
        self._track(self._segment_frames.finish())
        if self._open_run is not None:
            self._close_run(self._open_run, self._frames - 1)
        if self._samples < self.config.frame_length:
            return []
        segments = []
        for first, last in self._runs:
            start, stop = self._sample_span(first, last, end_of_signal=self._samples)
            if self.config.min_s <= (stop - start) / self.sample_rate <= self.config.max_s:
                segments.append(segment_from_samples(start, stop, self.sample_rate))
        return segments


def segment_rms(signal: np.ndarray, sample_rate: int, config: RmsConfig = RmsConfig()) -> list[Segment]:
    """Coughs in ``signal`` by the RMS threshold.

    ``config.sample_rate`` is not used here (it is the rate :func:`segment_file` resamples to).

    Args:
        signal: mono float samples, already at the rate to use.
        sample_rate: the rate of ``signal`` (Hz).
        config: the method's parameters.

    Returns:
        One segment per cough, in time order; none for a silent, constant, empty or shorter-than-one-frame signal.

    Raises:
        ValueError: for a malformed signal (not mono, not float, NaN/inf samples) or sample rate.

    Shape:
        signal: ``(samples,)``.
    """
    signal = validate_signal(signal)
    return run_in_blocks(RmsSegmenter(sample_rate, config), signal)
