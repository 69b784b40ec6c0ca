"""ICBHI spectral-feature extraction in recordings per second.

Recordings are 20 s demo-corpus auscultations (:func:`cough_pipeline.demo_corpus.synth.lung_sound_recording`:
breathing cycles with crackles and wheezes) at the two common ICBHI rates, 44.1 kHz and 4 kHz, analysed with the
default :class:`cough_pipeline.icbhi.acoustics.SpectralConfig` (resampled to 4 kHz, 256-point STFT, hop 64).
Figures per rate:

* ``features_only``: :func:`recording_features` on arrays already at 4 kHz (no decoding, no resampling);
* ``arrays``: :func:`recording_features` on arrays at the native rate (resampling included);
* ``files_workers_1`` / ``files_workers_2``: :func:`spectral_table` over :data:`TABLE_ROWS` rows cycling over the
  PCM_16 wav files (decode + resample + features + table), in this process and in a pool of two spawned workers.
  ``pool_start_s`` is the time of a 2-row table with two workers (mostly starting the interpreters and importing
  numpy/pandas); ``files_workers_2`` includes it, ``files_workers_2_after_start`` subtracts it.

BLAS/OpenMP pools are limited to one thread with ``threadpoolctl`` in this process. Each figure is the best of
:data:`REPEATS` runs; ``full_icbhi_s`` extrapolates the single-process file figure to the 920 ICBHI recordings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.common import best_of, write_result
from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.icbhi.acoustics import SpectralConfig, recording_features, spectral_table

RECORDING_S = 20.0
RATES = (44_100, 4_000)
RECORDINGS = 20
TABLE_ROWS = 200
REPEATS = 3
ICBHI_RECORDINGS = 920


def synthetic_recording(sample_rate: int, seed: int) -> np.ndarray:
    """A 20 s auscultation with crackles and wheezes in about half the cycles; ``(samples,)`` float32."""
    samples, _ = synth.lung_sound_recording(np.random.default_rng(seed), sample_rate, RECORDING_S, 0.5, 0.5)
    return samples.astype(np.float32)


def rate_figures(seconds: float, count: int) -> dict:
    return {
        "recordings": count,
        "s": round(seconds, 4),
        "recordings_per_s": round(count / seconds, 1),
        "ms_per_recording": round(1000 * seconds / count, 2),
    }


def recordings_table(paths: list[Path], rows: int) -> pd.DataFrame:
    """A minimal ICBHI recordings table (the columns :func:`spectral_table` reads) cycling over ``paths``."""
    return pd.DataFrame(
        [
            {
                "recording_id": f"icbhi:bench_{index}",
                "lung_label": "both",
                "diagnosis": "COPD",
                "device": "bench",
                "audio_path": paths[index % len(paths)].name,
                "audio_present": True,
            }
            for index in range(rows)
        ]
    )


def measure_rate(sample_rate: int, folder: Path, config: SpectralConfig) -> dict:
    recordings = [synthetic_recording(sample_rate, seed) for seed in range(RECORDINGS)]
    analysis_rate = config.rate_for(sample_rate)
    resampled = [synthetic_recording(analysis_rate, seed) for seed in range(RECORDINGS)]
    paths = []
    for index, samples in enumerate(recordings):
        paths.append(folder / f"rec_{sample_rate}_{index}.wav")
        write_wav(paths[-1], samples, sample_rate, subtype="PCM_16")
    table, tiny = recordings_table(paths, TABLE_ROWS), recordings_table(paths, 2)
    features_s = best_of(REPEATS, lambda: [recording_features(x, analysis_rate, config) for x in resampled])
    arrays_s = best_of(REPEATS, lambda: [recording_features(x, sample_rate, config) for x in recordings])
    files_s = best_of(REPEATS, lambda: spectral_table(table, folder, config))
    start_s = best_of(REPEATS, lambda: spectral_table(tiny, folder, config, workers=2))
    pool_s = best_of(REPEATS, lambda: spectral_table(table, folder, config, workers=2))
    return {
        "sample_rate": sample_rate,
        "recording_s": RECORDING_S,
        "features_only": rate_figures(features_s, RECORDINGS),
        "arrays_resample_and_features": rate_figures(arrays_s, RECORDINGS),
        "files_workers_1": rate_figures(files_s, TABLE_ROWS),
        "pool_start_s": round(start_s, 3),
        "files_workers_2": rate_figures(pool_s, TABLE_ROWS),
        "files_workers_2_after_start": rate_figures(max(pool_s - start_s, 1e-9), TABLE_ROWS),
        "full_icbhi_s_workers_1": round(ICBHI_RECORDINGS * files_s / TABLE_ROWS, 1),
    }


def run() -> Path:
    config = SpectralConfig()
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        figures = {f"{rate / 1000:g}kHz": measure_rate(rate, Path(folder), config) for rate in RATES}
    figures["config"] = {
        "analysis_sample_rate": config.analysis_sample_rate,
        "n_fft": config.n_fft,
        "hop_length": config.hop_length,
        "window": config.window,
        "rolloff_percents": list(config.rolloff_percents),
    }
    figures["threads"] = "1 in this process (threadpoolctl); workers=2 uses two spawned processes"
    return write_result("icbhi_spectral", figures)


if __name__ == "__main__":
    print(run().read_text())
