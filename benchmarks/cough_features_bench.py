"""Cough feature table (15 features x 7 statistics): shared transforms against independent librosa calls.

Clips are :data:`CLIPS` synthetic 3 s cough recordings at 22.05 kHz (two coughs over room tone,
:func:`cough_pipeline.demo_corpus.synth.cough_recording`, alternating classes). Figures:

* ``naive``: per clip, the 15 librosa functions called independently on the waveform with the same settings
  (each recomputes its STFT, mel spectrogram, tuning estimate or CQT), then the same 7 statistics;
* ``clip_features``: :func:`cough_pipeline.classification.features.clip_features` (one STFT, one CQT whose filter
  bank is cached per estimated tuning). ``clip_features_first_pass`` starts with an empty filter-bank cache, so it
  includes building the banks for the tunings these clips need; later passes reuse them;
* ``feature_table_workers_2``: :func:`feature_table` over :data:`TABLE_ROWS` rows cycling over the clips written as
  PCM_16 wav files (decode + preprocess + features), two spawned workers, pool start-up included;
  ``pool_start_s`` is the time to start two workers and import the feature module (librosa) in each. (A table of
  fewer than ``POOL_MIN_ROWS`` rows runs in the calling process instead.)

``naive`` and ``clip_features`` run in this process with BLAS/OpenMP pools limited to one thread (threadpoolctl),
best of :data:`REPEATS`; ``speedup`` is naive / clip_features. ``max_relative_difference`` compares their
statistics (relative to each feature block's largest value), the check that both compute the same table.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.common import best_of, stopwatch, write_result
from cough_pipeline.classification import features as cough_features
from cough_pipeline.classification.features import FeatureConfig, clip_features, feature_table, summarise
from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.parallel import process_map

SAMPLE_RATE = 22_050
CLIP_S = 3.0
CLIPS = 20
TABLE_ROWS = 128
REPEATS = 3


def synthetic_clips() -> list[np.ndarray]:
    """:data:`CLIPS` two-cough recordings, float32, peak 1."""
    clips = []
    for seed in range(CLIPS):
        samples, _ = synth.cough_recording(np.random.default_rng(seed), SAMPLE_RATE, CLIP_S, 2, bool(seed % 2))
        clips.append((samples / np.abs(samples).max()).astype(np.float32))
    return clips


def naive_matrices(y: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """The 15 features, each from its own librosa call on the waveform (no shared transform)."""
    sr, frame = config.sample_rate, {"n_fft": config.n_fft, "hop_length": config.hop_length}
    cqt = {"sr": sr, "hop_length": config.hop_length, "bins_per_octave": config.cqt_bins_per_octave}
    band_matrix = cough_features._band_matrix(sr, config.n_fft, config.spectrogram_bands, config.spectrogram_fmin)
    return {
        "rms": librosa.feature.rms(y=y, frame_length=config.n_fft, hop_length=config.hop_length),
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=config.n_fft, hop_length=config.hop_length),
        "spectral_centroid": librosa.feature.spectral_centroid(y=y, sr=sr, **frame),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr, **frame),
        "spectral_contrast": librosa.feature.spectral_contrast(y=y, sr=sr, **frame),
        "spectral_flatness": librosa.feature.spectral_flatness(y=y, **frame),
        "spectral_flux": librosa.onset.onset_strength(y=y, sr=sr, **frame)[np.newaxis],
        "spectral_rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr, **frame),
        "mfcc": librosa.feature.mfcc(y=y, sr=sr, n_mfcc=config.n_mfcc, **frame),
        "mfc": librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=config.n_mels, **frame)),
        "spectrogram": librosa.power_to_db(band_matrix @ np.abs(librosa.stft(y, **frame)) ** 2),
        "chroma_stft": librosa.feature.chroma_stft(y=y, sr=sr, **frame),
        "chroma_cqt": librosa.feature.chroma_cqt(y=y, **cqt),
        "chroma_cens": librosa.feature.chroma_cens(y=y, **cqt),
        "tonnetz": librosa.feature.tonnetz(y=y, sr=sr),
    }


def naive_features(y: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """``{feature: (dims, 7)}`` statistics of :func:`naive_matrices`."""
    return {name: summarise(matrix) for name, matrix in naive_matrices(y, config).items()}


def max_relative_difference(clips: list[np.ndarray], config: FeatureConfig) -> float:
    """Largest |ours - naive| / (largest |naive| value of its feature block) over every clip and statistic."""
    worst = 0.0
    for clip in clips:
        ours = np.array(list(clip_features(clip, config).values()))
        start = 0
        for summary in naive_features(clip, config).values():
            block = ours[start : start + summary.size]
            worst = max(worst, float(np.abs(block - summary.ravel()).max() / max(np.abs(summary).max(), 1e-12)))
            start += summary.size
    return worst


def rate_figures(seconds: float, count: int) -> dict:
    return {"clips": count, "s": round(seconds, 4), "clips_per_s": round(count / seconds, 2)}


def recordings_table(paths: list[Path], rows: int) -> pd.DataFrame:
    """A recordings table of ``rows`` rows cycling over ``paths`` (distinct ids, the original variant)."""
    return pd.DataFrame(
        [
            {
                "dataset": "bench",
                "recording_id": f"bench:{index}",
                "participant_id": f"p{index % len(paths)}",
                "covid_label": "positive" if index % 2 else "negative",
                "variant": "original",
                "audio_path": str(paths[index % len(paths)].resolve()),
            }
            for index in range(rows)
        ]
    )


def measure_in_process(clips: list[np.ndarray], config: FeatureConfig) -> dict:
    """Naive and shared-transform timings in this process, one thread."""
    cough_features._cqt_plan.cache_clear()
    with stopwatch() as first:
        [clip_features(clip, config) for clip in clips]
    ours_s = best_of(REPEATS, lambda: [clip_features(clip, config) for clip in clips])
    naive_s = best_of(REPEATS, lambda: [naive_features(clip, config) for clip in clips])
    return {
        "naive": rate_figures(naive_s, len(clips)),
        "clip_features": rate_figures(ours_s, len(clips)),
        "clip_features_first_pass": rate_figures(first(), len(clips)),
        "speedup": round(naive_s / ours_s, 2),
        "speedup_first_pass": round(naive_s / first(), 2),
        "cached_filter_banks": cough_features._cqt_plan.cache_info().currsize,
    }


def _import(module: str) -> str:
    importlib.import_module(module)
    return module


def start_two_workers() -> None:
    """Start two spawned workers and import the feature module in each (what a table pays before its first row)."""
    with process_map(2) as mapper:
        list(mapper(_import, ["cough_pipeline.classification.features"] * 2))


def measure_table(clips: list[np.ndarray], folder: Path, config: FeatureConfig) -> dict:
    """:func:`feature_table` with two workers over wav files of the clips."""
    paths = []
    for index, clip in enumerate(clips):
        paths.append(folder / f"clip_{index}.wav")
        write_wav(paths[-1], clip, SAMPLE_RATE, subtype="PCM_16")
    table = recordings_table(paths, TABLE_ROWS)
    two = FeatureConfig(workers=2)
    rows: list[int] = []
    table_s = best_of(REPEATS, lambda: rows.append(len(feature_table(table, two).features)))
    start_s = best_of(REPEATS, start_two_workers)
    return {
        "feature_table_workers_2": rate_figures(table_s, TABLE_ROWS),
        "rows_accepted": rows[-1],
        "pool_start_s": round(start_s, 3),
        "feature_table_workers_2_after_start": rate_figures(max(table_s - start_s, 1e-9), TABLE_ROWS),
    }


def run() -> Path:
    config = FeatureConfig()
    clips = synthetic_clips()
    with threadpool_limits(limits=1):
        figures = {"clip_s": CLIP_S, "sample_rate": SAMPLE_RATE, **measure_in_process(clips, config)}
        figures["max_relative_difference"] = max_relative_difference(clips[:5], config)
    with tempfile.TemporaryDirectory() as folder:
        figures |= measure_table(clips, Path(folder), config)
    figures["columns"] = len(cough_features.feature_columns(config))
    figures["threads"] = "1 in this process (threadpoolctl); workers=2 uses two spawned processes"
    return write_result("cough_features", figures)


if __name__ == "__main__":
    print(run().read_text())
