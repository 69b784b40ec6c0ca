"""The distillation front end in clips per second: the low-rate transform plus the log-mel patch of 5 s, 16 kHz
clips, on two threads, next to a plain librosa loop in the same run.

Clips are :data:`CLIPS` synthetic 5 s sounds (demo-corpus babble, pink and band noise, coughs). Per target rate
(1 kHz, 2 kHz):

* ``plain``: per clip, ``librosa.resample`` down to the rate and back up (soxr high quality, librosa's default),
  then ``librosa.feature.melspectrogram`` (64 mels, 512 window, 160 hop, 50-8000 Hz) and ``power_to_db``;
* ``pipeline``: :func:`~cough_pipeline.distillation.lowrate.to_low_rate` (soxr high quality, clip by clip) then
  :func:`~cough_pipeline.distillation.frontend.log_mel` (batched torch STFT and mel matmul);
* ``direct``: :func:`~cough_pipeline.distillation.frontend.low_rate_direct_log_mels`: down-sampling then the
  patch computed at the low rate (no up-sampling), with ``max_abs_difference_db`` from ``pipeline``'s patch over
  the bins below the low rate's Nyquist frequency.

torch and BLAS use two threads (the target machine's cores). Each figure is the best of :data:`REPEATS` runs.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.common import best_of, write_result
from cough_pipeline.demo_corpus import synth
from cough_pipeline.distillation.frontend import DB_SCALE, LogMelConfig, log_mel, low_rate_direct_log_mels
from cough_pipeline.distillation.lowrate import to_low_rate

CLIPS = 200
RATES = (1_000, 2_000)
REPEATS = 3
THREADS = 2


def clips(count: int, config: LogMelConfig) -> np.ndarray:
    """``(count, 5 s)`` float32 synthetic clips at ``config.sample_rate``."""
    n, sr = 5 * config.sample_rate, config.sample_rate
    makers = (
        lambda rng: synth.babble(rng, sr, 5.0),
        lambda rng: synth.pink_noise(rng, n),
        lambda rng: synth.band_noise(rng, sr, n, 200.0, 3000.0),
        lambda rng: synth.cough_recording(rng, sr, 5.0, 3, bool(rng.integers(0, 2)))[0],
    )
    out = [synth.peak_normalise(makers[i % 4](np.random.default_rng(i))[:n]) for i in range(count)]
    return np.stack(out).astype(np.float32)


def plain(audio: np.ndarray, rate: int, config: LogMelConfig) -> np.ndarray:
    out = []
    for clip in audio:
        low = librosa.resample(clip, orig_sr=config.sample_rate, target_sr=rate)
        back = librosa.resample(low, orig_sr=rate, target_sr=config.sample_rate)[: clip.size]
        mel = librosa.feature.melspectrogram(
            y=back,
            sr=config.sample_rate,
            n_fft=config.window,
            hop_length=config.hop,
            n_mels=config.mels,
            fmin=config.fmin,
            fmax=config.fmax,
        )
        out.append(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None))
    return np.stack(out)


def pipeline(audio: np.ndarray, rate: int, config: LogMelConfig) -> np.ndarray:
    return log_mel(to_low_rate(audio, config.sample_rate, rate), config)


def figures(seconds: float) -> dict:
    return {"s": round(seconds, 3), "clips_per_s": round(CLIPS / seconds, 1)}


def run():
    config = LogMelConfig()
    audio = clips(CLIPS, config)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    results = {"clips": CLIPS, "clip_seconds": 5.0, "threads": THREADS, "rates": {}}
    try:
        with threadpool_limits(THREADS):
            for rate in RATES:
                plain_s = best_of(REPEATS, lambda rate=rate: plain(audio, rate, config))
                pipeline_s = best_of(REPEATS, lambda rate=rate: pipeline(audio, rate, config))
                direct_s = best_of(REPEATS, lambda rate=rate: low_rate_direct_log_mels(audio, (rate,), config))
                upsampled, direct = (
                    pipeline(audio, rate, config),
                    low_rate_direct_log_mels(audio, (rate,), config)[rate],
                )
                band = librosa.mel_frequencies(config.mels + 2, fmin=config.fmin, fmax=config.fmax)[2:] < rate / 2
                difference = np.abs(upsampled[:, band] - direct[:, band]) * DB_SCALE
                results["rates"][str(rate)] = {
                    "plain": figures(plain_s),
                    "pipeline": figures(pipeline_s),
                    "direct": figures(direct_s),
                    "pipeline_speedup": round(plain_s / pipeline_s, 2),
                    "direct_speedup_over_pipeline": round(pipeline_s / direct_s, 2),
                    "direct_max_abs_difference_db": round(float(difference.max()), 3),
                    "direct_median_abs_difference_db": round(float(np.median(difference)), 4),
                    "bins_compared": int(band.sum()),
                }
    finally:
        torch.set_num_threads(threads)
    return write_result("distillation", results)
