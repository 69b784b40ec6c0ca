"""ICBHI preprocessing throughput: windowing, augmentation, balancing render, log-mel/MFCC features.

Input: 40 synthetic ICBHI-like auscultations (:func:`cough_pipeline.demo_corpus.synth.lung_sound_recording`) of
20 s — the typical ICBHI length — alternating 44.1 kHz (AKG C417L / Meditron) and 4 kHz (Littmann 3200), PCM_16.

* windows: :func:`make_windows` with 6 s and 20 s windows — decode + resample to 16 kHz + slice + loop-pad +
  write PCM_16 WAVs — as windows/s and source audio seconds/s, with 1 and 2 worker threads.
* augmentation: 6 s windows in memory through :func:`augment`, one transform at a time (probability 1) and all
  four together, for both pitch-shift methods (``librosa`` phase vocoder, ``resample`` vari-speed).
* render: :func:`render_plan` of an ``oversample`` plan (read window, augment with the default config, write).
* features: :func:`log_mel_and_mfcc` on 6 s and 20 s arrays, and :func:`feature_arrays` reading 6 s WAV files.

BLAS/OpenMP pools are limited to one thread (``threadpoolctl``); "workers" are the library's own threads. Each
figure is the best of three runs.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from threadpoolctl import threadpool_limits

from benchmarks.common import stopwatch, write_result
from cough_pipeline.demo_corpus import synth
from cough_pipeline.icbhi.augmentation import TRANSFORMS, AugmentConfig, augment
from cough_pipeline.icbhi.balancing import BalancingWarning, balance_plan, render_plan
from cough_pipeline.icbhi.features import feature_arrays, log_mel_and_mfcc
from cough_pipeline.icbhi.windows import WindowConfig, make_windows

RECORDINGS = 40
RECORDING_S = 20.0
RATES = (44_100, 4_000)
AUGMENT_WINDOWS = 30
REPEATS = 3
LABELS = ("normal", "crackles", "wheezes", "both")


def best_of(repeats: int, task) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls of ``task`` and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        with stopwatch() as elapsed:
            result = task()
        times.append(elapsed())
    return min(times), result


def write_corpus(folder: Path) -> pd.DataFrame:
    """The synthetic recordings as WAVs and their recordings table (contract columns used by windowing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(RECORDINGS):
        rate = RATES[index % len(RATES)]
        samples, _ = synth.lung_sound_recording(np.random.default_rng(index), rate, RECORDING_S, 0.5, 0.5)
        name = f"{101 + index}_1b1_Al_sc_{'Meditron' if rate > 8_000 else 'Litt3200'}"
        sf.write(folder / f"{name}.wav", samples, rate, subtype="PCM_16")
        rows.append(
            {
                "recording_id": f"icbhi:{name}",
                "stem": name,
                "patient_id": str(101 + index),
                "lung_label": LABELS[index % 3 if index % 5 else 0],
                "diagnosis": "COPD",
                "official_split": "train" if index % 4 else "test",
                "audio_path": f"{name}.wav",
                "audio_present": True,
            }
        )
    return pd.DataFrame(rows)


def measure_windows(recordings: pd.DataFrame, source: Path, out: Path) -> dict:
    figures = {}
    audio_s = RECORDINGS * RECORDING_S
    for workers in (1, 2):

        def task(workers=workers):
            return make_windows(recordings, source, WindowConfig(), out, workers=workers)

        seconds, (windows, problems) = best_of(REPEATS, task)
        assert problems.empty
        figures[f"workers_{workers}"] = {
            "seconds": round(seconds, 4),
            "windows": len(windows),
            "windows_per_s": round(len(windows) / seconds, 1),
            "audio_seconds_per_s": round(audio_s / seconds, 1),
            "recordings_per_s": round(RECORDINGS / seconds, 1),
        }
    figures["recordings"] = RECORDINGS
    figures["recording_s"] = RECORDING_S
    figures["window_seconds"] = list(WindowConfig().window_seconds)
    return figures


def measure_augmentation(windows: list[np.ndarray]) -> dict:
    figures = {}
    configs = {name: AugmentConfig.only(name) for name in TRANSFORMS}
    configs["pitch_shift_resample"] = AugmentConfig.only("pitch_shift", pitch_method="resample")
    always = {"pitch_probability": 1.0, "shift_probability": 1.0, "noise_probability": 1.0, "gain_probability": 1.0}
    configs["all_four_librosa_pitch"] = AugmentConfig(**always)
    configs["all_four_resample_pitch"] = AugmentConfig(**always, pitch_method="resample")
    configs["default_config"] = AugmentConfig()  # each transform with probability 0.5, librosa pitch shift
    for name, config in configs.items():

        def task(config=config):
            for index, window in enumerate(windows):
                augment(window, 16_000, np.random.default_rng(index), config)

        seconds, _ = best_of(REPEATS, task)
        figures[name] = {
            "windows_per_s": round(len(windows) / seconds, 1),
            "ms_per_window": round(1000 * seconds / len(windows), 2),
        }
    figures["window_s"] = 6.0
    return figures


def measure_render(windows: pd.DataFrame, window_dir: Path, out: Path) -> dict:
    six = windows[windows["window_seconds"] == 6.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BalancingWarning)
        plan = balance_plan(six, "oversample", seed=0)
    augmented = int(plan["augmented"].sum())
    figures = {"plan_rows": len(plan), "augmented_copies": augmented}
    for workers in (1, 2):

        def task(workers=workers):
            return render_plan(plan, windows, window_dir, out, AugmentConfig(), workers=workers)

        seconds, _ = best_of(REPEATS, task)
        figures[f"workers_{workers}"] = {
            "seconds": round(seconds, 4),
            "augmented_windows_per_s": round(augmented / seconds, 1),
        }
    return figures


def measure_features(windows: pd.DataFrame, window_dir: Path) -> dict:
    figures = {}
    for window_s in (6.0, 20.0):
        subset = windows[windows["window_seconds"] == window_s].head(AUGMENT_WINDOWS)
        arrays = [sf.read(window_dir / path, dtype="float32")[0] for path in subset["audio_path"]]
        seconds, _ = best_of(REPEATS, lambda arrays=arrays: [log_mel_and_mfcc(a) for a in arrays])
        figures[f"arrays_{window_s:g}s_windows_per_s"] = round(len(arrays) / seconds, 1)
    six = windows[windows["window_seconds"] == 6.0]
    for workers in (1, 2):
        seconds, _ = best_of(REPEATS, lambda workers=workers: feature_arrays(six, window_dir, workers=workers))
        figures[f"files_6s_workers_{workers}_windows_per_s"] = round(len(six) / seconds, 1)
    figures["files_6s_windows"] = len(six)
    return figures


def run() -> Path:
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        recordings = write_corpus(folder / "source")
        figures = {"windows": measure_windows(recordings, folder / "source", folder / "windows")}
        windows, _ = make_windows(recordings, folder / "source", WindowConfig(), folder / "windows")
        six = windows[windows["window_seconds"] == 6.0].head(AUGMENT_WINDOWS)
        arrays = [sf.read(folder / "windows" / path, dtype="float32")[0] for path in six["audio_path"]]
        figures["augmentation"] = measure_augmentation(arrays)
        figures["render_oversample"] = measure_render(windows, folder / "windows", folder / "augmented")
        figures["features"] = measure_features(windows, folder / "windows")
    figures["threads"] = "BLAS/OpenMP limited to 1 with threadpoolctl; workers = library threads"
    return write_result("icbhi_preprocessing", figures)


if __name__ == "__main__":
    import json

    path = run()
    print(json.dumps(json.loads(path.read_text())["figures"], indent=2))
