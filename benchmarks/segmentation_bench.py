"""Cough segmentation speed as a real-time factor (audio seconds per wall second) on one core.

Ten minutes of demo-corpus cough recordings per method, at the method's default rate (16 kHz hysteresis, 48 kHz
RMS), as ten one-minute recordings. Three figures per method: segmenting arrays already in memory, segmenting
the recordings as wav files (decoding included, at the method's rate so nothing is resampled), and the same wav
files streamed in blocks (two passes). BLAS/OpenMP pools are limited to one thread with ``threadpoolctl``; the
segmentation itself is single-threaded numpy. Each figure is the best of three runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from benchmarks.common import stopwatch, write_result
from cough_pipeline.demo_corpus import synth
from cough_pipeline.segmentation import METHODS, segment_file

RECORDINGS = 10
RECORDING_S = 60.0
REPEATS = 3


def synthetic_recording(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A demo-corpus recording (:func:`cough_pipeline.demo_corpus.synth.cough_recording`): one cough every
    ~2.5 s over room tone; ``(samples,)`` float32."""
    samples, _ = synth.cough_recording(
        np.random.default_rng(seed), sample_rate, seconds, int(seconds / 2.5), covid_positive=bool(seed % 2)
    )
    return samples.astype(np.float32)


def best_of(repeats: int, task) -> tuple[float, int]:
    """Shortest wall time of ``repeats`` calls of ``task`` (which returns a segment count), and that count."""
    times, count = [], 0
    for _ in range(repeats):
        with stopwatch() as elapsed:
            count = task()
        times.append(elapsed())
    return min(times), count


def measure_method(method: str, folder: Path) -> dict:
    """Real-time factors of ``method`` on arrays, on wav files, and on streamed wav files."""
    function, config_class = METHODS[method]
    config = config_class()
    rate = config.sample_rate
    recordings = [synthetic_recording(RECORDING_S, rate, seed) for seed in range(RECORDINGS)]
    paths = []
    for index, samples in enumerate(recordings):
        paths.append(folder / f"{method}_{index}.wav")
        sf.write(paths[-1], samples, rate, subtype="PCM_16")
    audio_s = RECORDINGS * RECORDING_S
    arrays_s, n_segments = best_of(REPEATS, lambda: sum(len(function(x, rate, config)) for x in recordings))
    files_s, _ = best_of(REPEATS, lambda: sum(len(segment_file(p, method, config).segments) for p in paths))
    streamed_s, _ = best_of(
        REPEATS, lambda: sum(len(segment_file(p, method, config, stream_above_s=0.0).segments) for p in paths)
    )
    return {
        "sample_rate": rate,
        "audio_s": audio_s,
        "segments": n_segments,
        "arrays_s": round(arrays_s, 4),
        "realtime_factor_arrays": round(audio_s / arrays_s),
        "wav_files_s": round(files_s, 4),
        "realtime_factor_wav_decode_included": round(audio_s / files_s),
        "streamed_wav_s": round(streamed_s, 4),
        "realtime_factor_streamed_wav": round(audio_s / streamed_s),
    }


def run() -> Path:
    """Measure every method on one thread and write ``benchmarks/results/segmentation.json``."""
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        figures = {method: measure_method(method, Path(folder)) for method in METHODS}
    figures["threads"] = "1 (threadpoolctl limits BLAS/OpenMP pools; numpy element-wise code is single-threaded)"
    figures["target_realtime_factor"] = 500
    return write_result("segmentation", figures)
