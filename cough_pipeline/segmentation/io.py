"""Segmenting audio files and writing each segment as its own WAV.

Files up to ``stream_above_s`` seconds are decoded whole (:func:`cough_pipeline.audio.load_mono`, any format the
decoder reads). Longer files that libsndfile can read (wav, flac, ogg, mp3) are *streamed*: read twice with
``soundfile.blocks`` (pass 1 for the global statistic, pass 2 to segment), so at most one block of
``stream_block_s`` seconds is in memory at a time. When the method's rate differs from the file's, each pass
resamples block by block with ``soxr.ResampleStream`` (HQ), which gives the same samples as the one-shot
``soxr.resample`` used for decoded files. A streamed recording keeps no samples; its segments are read back from
the file span by span when written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cough_pipeline.audio import AudioDecodeError, load_mono, resample
from cough_pipeline.schema import QuarantineReason
from cough_pipeline.segmentation.methods import resolve_method
from cough_pipeline.segmentation.segments import Segment

#: Files longer than this (seconds) are streamed rather than decoded whole.
STREAM_ABOVE_S = 600.0
#: Length (seconds, at the file's rate) of the blocks a streamed file is read in.
STREAM_BLOCK_S = 10.0
#: Extra audio (seconds) read on both sides of a segment resampled from a streamed file, so the resampling
#: filter sees the same neighbourhood as when the whole file is resampled.
_RESAMPLE_CONTEXT_S = 0.1


@dataclass(frozen=True, eq=False)
class SegmentedRecording:
    """A file, the rate it was segmented at, its segments, and its mono samples at that rate
    (``(samples,)`` float32, or None when the file was streamed). Compared by identity (it holds an array)."""

    path: Path
    method: str
    sample_rate: int
    duration_s: float
    segments: tuple[Segment, ...]
    samples: np.ndarray | None

    @property
    def streamed(self) -> bool:
        """True when the file was read in blocks and no samples are held."""
        return self.samples is None

    def segment_samples(self, segment: Segment) -> np.ndarray:
        """The samples of ``segment`` at :attr:`sample_rate` (read from the file when streamed).

        Args:
            segment: one of :attr:`segments`.

        Returns:
            Mono float32 samples of the segment.

        Shape:
            returns ``(samples,)``.
        """
        if self.samples is not None:
            start, stop = segment.sample_span(self.sample_rate)
            return self.samples[start:stop]
        return _read_span(self.path, segment, self.sample_rate)


def _soundfile_duration(path: Path) -> float | None:
    """Duration in seconds when libsndfile can open ``path`` (so it can be streamed), else None."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return info.duration if info.samplerate > 0 and info.frames > 0 else None


def _mono(block: np.ndarray) -> np.ndarray:
    """Channel mean of a ``(frames, channels)`` float32 block, shape ``(frames,)``, as ``DecodedAudio.mono``."""
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


def _finite(block: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(block).all():
        raise AudioDecodeError(
            QuarantineReason.AUDIO_UNREADABLE, f"{path.name}: decoded samples contain NaN or infinity"
        )
    return block


def stream_mono_blocks(path: Path, sample_rate: int | None, block_s: float = STREAM_BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path``, read lazily and resampled block by block when needed.

    Args:
        path: a file libsndfile reads.
        sample_rate: the rate to deliver (None: the file's own).
        block_s: seconds of the file read per block.

    Returns:
        An iterator of blocks; after resampling their lengths vary (the resampler holds some samples back).

    Raises:
        AudioDecodeError: ``audio_unreadable`` when a block holds NaN or infinite samples.

    Shape:
        each block: ``(block,)``.
    """
    native_rate = sf.info(str(path)).samplerate
    target_rate = sample_rate or native_rate
    resampler = None
    if target_rate != native_rate:
        resampler = soxr.ResampleStream(native_rate, target_rate, 1, dtype="float32", quality="HQ")
    block_frames = max(1, round(block_s * native_rate))
    for block in sf.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
        mono = _finite(_mono(block), path)
        yield mono if resampler is None else resampler.resample_chunk(mono, last=False)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _segment_streamed(path: Path, method: str, segmenter_class, config, block_s: float) -> SegmentedRecording:
    """Two streamed passes over ``path``; never more than one block of samples in memory."""
    rate = config.sample_rate or sf.info(str(path)).samplerate
    segmenter = segmenter_class(rate, config)
    for block in stream_mono_blocks(path, rate, block_s):
        segmenter.measure(block)
    n_samples = 0
    for block in stream_mono_blocks(path, rate, block_s):
        segmenter.segment(block)
        n_samples += block.size
    return SegmentedRecording(path, method, rate, n_samples / rate, tuple(segmenter.finish()), None)


def segment_file(
    path: str | Path,
    method: str,
    config=None,
    *,
    stream_above_s: float = STREAM_ABOVE_S,
    stream_block_s: float = STREAM_BLOCK_S,
) -> SegmentedRecording:
    """Decode ``path`` to mono, resample to ``config.sample_rate`` when set, and segment it with ``method``.

    Args:
        path: an audio file in any format the decoder reads.
        method: a name in :data:`~cough_pipeline.segmentation.METHODS`.
        config: the method's config (None: its defaults).
        stream_above_s: files longer than this that libsndfile reads are streamed (see the module docstring).
        stream_block_s: block length of a streamed file.

    Returns:
        The recording's segments, its rate and duration, and its samples unless it was streamed.

    Raises:
        AudioDecodeError: for a file that cannot be decoded.
        ValueError: for an unknown method or bad streaming limits (TypeError for another method's config).
    """
    function, segmenter_class, config = resolve_method(method, config)
    if not (stream_above_s >= 0 and stream_block_s > 0):
        raise ValueError(f"need stream_above_s >= 0 and stream_block_s > 0, got {stream_above_s}, {stream_block_s}")
    path = Path(path)
    duration = _soundfile_duration(path) if path.is_file() else None
    if duration is not None and duration > stream_above_s:
        return _segment_streamed(path, method, segmenter_class, config, stream_block_s)
    samples, rate = load_mono(path, config.sample_rate)
    segments = tuple(function(samples, rate, config))
    return SegmentedRecording(path, method, rate, samples.size / rate, segments, samples)


def _read_span(path: Path, segment: Segment, sample_rate: int) -> np.ndarray:
    """``segment`` of ``path`` at ``sample_rate`` without decoding the whole file, ``(samples,)`` float32.

    When resampling, the span is read with some context and starts on a file sample that falls exactly on the
    target grid, so the result matches resampling the whole file.
    """
    start, stop = segment.sample_span(sample_rate)
    with sf.SoundFile(str(path)) as audio:
        native_rate = audio.samplerate
        if native_rate == sample_rate:
            audio.seek(start)
            return _finite(_mono(audio.read(stop - start, dtype="float32", always_2d=True)), path)
        grid = native_rate // math.gcd(native_rate, sample_rate)  # file samples per point shared by both grids
        context = math.ceil(_RESAMPLE_CONTEXT_S * native_rate)
        native_start = max(0, (start * native_rate // sample_rate - context) // grid * grid)
        native_stop = math.ceil(stop * native_rate / sample_rate) + context
        audio.seek(native_start)
        span = _finite(_mono(audio.read(native_stop - native_start, dtype="float32", always_2d=True)), path)
    offset = native_start * sample_rate // native_rate
    return resample(span, native_rate, sample_rate)[start - offset : stop - offset]


def _write_wav(samples: np.ndarray, sample_rate: int, path: Path) -> Path:
    """Write ``samples`` (``(samples,)``) as 16-bit PCM, clipping to [-1, 1] rather than letting PCM wrap."""
    sf.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


def _segment_paths(folder: Path, stem: str, count: int) -> list[Path]:
    """``folder/<stem>_<k>.wav`` for k = 0..count-1, creating ``folder``."""
    if not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"stem must be a non-empty file name without separators, got {stem!r}")
    folder.mkdir(parents=True, exist_ok=True)
    return [folder / f"{stem}_{k}.wav" for k in range(count)]


def write_segments(
    samples: np.ndarray, sample_rate: int, segments: list[Segment], folder: Path, stem: str
) -> list[Path]:
    """Write each segment of ``samples`` as ``<folder>/<stem>_<k>.wav`` (16-bit PCM).

    Args:
        samples: mono float samples at ``sample_rate``.
        sample_rate: their rate (Hz).
        segments: segments within the signal.
        folder: where the files go (created when missing).
        stem: the file-name prefix, without separators.

    Returns:
        The written paths, one per segment, in order.

    Shape:
        samples: ``(samples,)``.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (samples,), got shape {samples.shape}")
    paths = _segment_paths(Path(folder), stem, len(segments))
    for segment, path in zip(segments, paths):
        start, stop = segment.sample_span(sample_rate)
        if stop > samples.size:
            raise ValueError(
                f"segment [{segment.start_s}, {segment.end_s}) s runs past the {samples.size / sample_rate} s signal"
            )
        _write_wav(samples[start:stop], sample_rate, path)
    return paths


def write_recording_segments(recording: SegmentedRecording, folder: Path, stem: str | None = None) -> list[Path]:
    """Write the segments of ``recording`` as ``<folder>/<stem>_<k>.wav``; a streamed one is read span by span.

    Args:
        recording: a result of :func:`segment_file`.
        folder: where the files go (created when missing).
        stem: the file-name prefix (None: the recording's file stem).

    Returns:
        The written paths, one per segment, in order.
    """
    paths = _segment_paths(Path(folder), stem or recording.path.stem, len(recording.segments))
    for segment, path in zip(recording.segments, paths):
        _write_wav(recording.segment_samples(segment), recording.sample_rate, path)
    return paths
