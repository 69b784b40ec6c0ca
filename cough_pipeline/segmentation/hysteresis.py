"""Hysteresis-comparator cough segmentation (COUGHVID, Orlandic et al. 2021; used by Atmaja et al. 2023).

The published comparator walks the signal sample by sample:

* thresholds are ``low_multiplier * rms`` and ``high_multiplier * rms`` where ``rms`` is the RMS *amplitude* of
  the whole signal, yet each is compared with the *power* ``x[i]**2`` of a sample (so the method is not scale
  invariant: peak normalisation changes the result);
* while idle, a cough starts at the first sample whose power is above the high threshold;
* while a cough is in progress, a counter counts consecutive samples with power below the low threshold (any other
  sample resets it); the cough ends at the sample where the counter exceeds the tolerance (``round(0.01 * fs)``
  samples), and that sample is the last one of the cough;
* the counter is *not* reset when a new cough starts, so after the first cough ends, a cough whose next sample is
  already below the low threshold ends at once (and is dropped as too short);
* a cough still in progress at the last sample is kept only if that sample is not below the low threshold;
* ``padding`` samples are added on both sides (clipped to the signal), and a cough is kept when
  ``end + 1 - start - 2 * padding > round(fs * min_cough_s)``.

This module reproduces all of that without a Python loop over samples: each block is turned into index arrays
(samples above the high threshold, samples not below the low one, and the samples where a run below the low
threshold gets longer than the tolerance) and the state machine jumps from event to event with ``searchsorted``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cough_pipeline.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from cough_pipeline.segmentation.segments import (
    Segment,
    run_in_blocks,
    segment_from_samples,
    validate_sample_rate,
    validate_signal,
)


@dataclass(frozen=True)
class HysteresisConfig:
    """Parameters of the hysteresis comparator; the defaults are those of the published Virufy segmentation.

    ``sample_rate``: rate :func:`~cough_pipeline.segmentation.segment_file` resamples to (None keeps the file's
    rate); ``normalize``: divide by the peak amplitude first; ``low_multiplier``/``high_multiplier``: thresholds
    as multiples of the signal RMS; ``min_cough_s``: shortest cough kept; ``padding_s``: added on both sides;
    ``tolerance_s``: how long the power must stay below the low threshold before a cough ends.
    """

    sample_rate: PositiveInt | None = 16_000
    normalize: bool = False
    low_multiplier: PositiveFloat = 0.1
    high_multiplier: PositiveFloat = 2.0
    min_cough_s: NonNegativeFloat = 0.2
    padding_s: NonNegativeFloat = 0.0
    tolerance_s: NonNegativeFloat = 0.01

    def __post_init__(self):
        if self.sample_rate is not None:
            validate_sample_rate(self.sample_rate)
        if not 0 < self.low_multiplier < self.high_multiplier:
            raise ValueError(
                f"need 0 < low_multiplier < high_multiplier, got {self.low_multiplier}, {self.high_multiplier}"
            )
        for name in ("min_cough_s", "padding_s", "tolerance_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _long_run_ends(below: np.ndarray, tolerance: int) -> np.ndarray:
    """Indices where a run of ``True`` in ``below`` (shape ``(block,)``) first gets longer than ``tolerance``."""
    edges = np.diff(below.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return starts[stops - starts > tolerance] + tolerance


class HysteresisSegmenter:
    """The comparator as a :class:`~cough_pipeline.segmentation.segments.BlockSegmenter`.

    Pass 1 accumulates the sum of squares (for the RMS) and the peak amplitude (for ``normalize``).
    """

    def __init__(self, sample_rate: int, config: HysteresisConfig = HysteresisConfig()):
        self.sample_rate = validate_sample_rate(sample_rate)
        self.config = config
        self._tolerance = round(config.tolerance_s * self.sample_rate)
        self._padding = round(config.padding_s * self.sample_rate)
        self._min_samples = round(config.min_cough_s * self.sample_rate)
        self._sum_squares = 0.0
        self._peak = 0.0
        self._measured = 0
        self._scale: float | None = None  # set by the first segment() call, with the thresholds
        self._low = self._high = 0.0
        self._seen = 0  # samples consumed by pass 2
        self._in_cough = False
        self._onset = 0  # absolute index of the sample that crossed the high threshold
        self._below_count = 0
        self._last_below = False
        self._kept: list[tuple[int, int]] = []  # (first sample, last sample + padding), end not yet clipped

    def measure(self, block: np.ndarray) -> None:
        """Pass 1: accumulate the sum of squares and the peak of ``block``.

        Shape:
            block: ``(block,)`` float32.
        """
        if block.size:
            wide = block.astype(np.float64)
            self._sum_squares += float(np.dot(wide, wide))
            self._peak = max(self._peak, float(np.max(np.abs(block))))
            self._measured += block.size

    def _set_thresholds(self) -> None:
        """Turn the pass-1 statistics into thresholds on the (possibly peak-normalised) power."""
        rms = math.sqrt(self._sum_squares / self._measured) if self._measured else 0.0
        self._scale = 1.0 / self._peak if self.config.normalize and self._peak > 0 else 1.0
        self._low = self.config.low_multiplier * rms * self._scale
        self._high = self.config.high_multiplier * rms * self._scale

    def segment(self, block: np.ndarray) -> None:
        """Pass 2: advance the comparator over ``block``, keeping its state for the next one.

        Shape:
            block: ``(block,)`` float32.
        """
        if self._scale is None:
            self._set_thresholds()
        if not block.size:
            return
        if self._scale != 1.0:
            block = block * np.float32(self._scale)
        power = block * block
        below = power < self._low
        onsets = np.flatnonzero(power > self._high)
        resets = np.flatnonzero(~below)
        run_ends = _long_run_ends(below, self._tolerance)
        position = 0
        while position < block.size:
            if not self._in_cough:
                k = np.searchsorted(onsets, position)
                if k == onsets.size:
                    break
                self._in_cough, self._onset = True, self._seen + int(onsets[k])
                position = int(onsets[k]) + 1
                continue
            end = self._end_of_cough(position, resets, run_ends, block.size)
            if end is None:
                break
            self._keep(self._onset, self._seen + end + self._padding)
            self._in_cough, self._below_count = False, self._tolerance + 1
            position = end + 1
        self._last_below = bool(below[-1])
        self._seen += block.size

    def _end_of_cough(self, position: int, resets: np.ndarray, run_ends: np.ndarray, size: int) -> int | None:
        """Block index where the cough in progress ends, scanning from ``position``; None (and the counter
        updated) when it does not end in this block."""
        k = np.searchsorted(resets, position)
        first_reset = int(resets[k]) if k < resets.size else size
        leading_below = first_reset - position
        if leading_below and self._below_count + leading_below > self._tolerance:
            return position + max(self._tolerance - self._below_count, 0)
        k = np.searchsorted(run_ends, first_reset)
        if k < run_ends.size:
            return int(run_ends[k])
        self._below_count = self._below_count + leading_below if first_reset == size else size - 1 - int(resets[-1])
        return None

    def _keep(self, onset: int, padded_end: int) -> None:
        """Record a cough if it can still pass the length test (clipping the end can only shorten it)."""
        start = max(onset - self._padding, 0)
        if padded_end + 1 - start - 2 * self._padding > self._min_samples:
            self._kept.append((start, padded_end))

    def finish(self) -> list[Segment]:
        """Close the recording: the last-sample rule, then clip ends to the signal and apply the length test.

        Returns:
            The kept coughs in time order.
        """
        last = self._seen - 1
        if self._in_cough and self._onset < last and not self._last_below:
            self._keep(self._onset, last)
        segments = []
        for start, padded_end in self._kept:
            end = min(padded_end, last)
            if end + 1 - start - 2 * self._padding > self._min_samples:
                segments.append(segment_from_samples(start, end + 1, self.sample_rate))
        return segments


def segment_hysteresis(
    signal: np.ndarray, sample_rate: int, config: HysteresisConfig = HysteresisConfig()
) -> list[Segment]:
    """Coughs in ``signal`` by the hysteresis comparator.

    ``config.sample_rate`` is not used here (it is the rate :func:`segment_file` resamples to).

    Args:
        signal: mono float samples, already at the rate to use.
        sample_rate: the rate of ``signal`` (Hz).
        config: the comparator's parameters.

    Returns:
        One segment per cough, in time order; none for a silent or empty signal.

    Raises:
        ValueError: for a malformed signal (not mono, not float, NaN/inf samples) or sample rate.

    Shape:
        signal: ``(samples,)``.
    """
    signal = validate_signal(signal)
    return run_in_blocks(HysteresisSegmenter(sample_rate, config), signal)
