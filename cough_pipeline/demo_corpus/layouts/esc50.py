"""ESC-50 layout as a converted copy holds it: ``meta/esc50.csv`` (``filename,fold,target,category,esc10,src_file,
take``) naming ``<fold>-<src_file>-<take>-<target>.wav``, and each clip under ``audio/`` as the same stem in FLAC
(16 kHz, 16-bit, 5 s; a third of the WAV's size), for the distillation stage's environmental-sound task.

Five synthetic classes named as ESC-50's (with ESC-50's target numbers) whose energy sits in different bands, so
a 1-2 kHz microphone keeps some classes apart and loses others: ``coughing`` (broadband bursts), ``crying_baby``
(a 400-600 Hz voice with harmonics up to 4 kHz), ``snoring`` (a 90-140 Hz voice under 1 kHz noise), ``dog``
(short 700-900 Hz barks) and ``rain`` (3-7 kHz noise). Each source recording gives two takes (``A``, ``B``) that
share its ``src_file``; the five official folds each hold whole source recordings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.layouts.common import write_csv
from cough_pipeline.demo_corpus.sizes import CorpusSize

SAMPLE_RATE = 16_000
DURATION_S = 5.0
HEADER = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
#: category -> ESC-50 target number.
TARGETS = {"dog": 0, "rain": 10, "crying_baby": 20, "coughing": 24, "snoring": 28}
FOLDS = 5
TAKES = ("A", "B")


def _events(rng: np.random.Generator, n: int, make_event, per_second: float) -> np.ndarray:
    """Events from ``make_event()`` at random times, about ``per_second`` of them each second."""
    out = np.zeros(n)
    for _ in range(max(1, rng.poisson(per_second * n / SAMPLE_RATE))):
        event = make_event()[: n // 2]
        start = int(rng.integers(0, n - event.size))
        out[start : start + event.size] += event
    return out


def _voice(rng: np.random.Generator, n: int, f0: float, formants: tuple[float, ...], rate: float) -> np.ndarray:
    return synth.voiced_sound(rng, SAMPLE_RATE, n / SAMPLE_RATE, f0, formants, rate)


def _clip(category: str, rng: np.random.Generator) -> np.ndarray:
    n = round(DURATION_S * SAMPLE_RATE)
    if category == "coughing":
        sound = _events(rng, n, lambda: synth.cough(rng, SAMPLE_RATE, bool(rng.integers(0, 2))), 0.8)
    elif category == "crying_baby":
        sound = _voice(rng, n, rng.uniform(400, 600), (1100.0, 2600.0, 3800.0), rng.uniform(0.8, 1.5))
    elif category == "snoring":
        hum = _voice(rng, n, rng.uniform(90, 140), (300.0, 700.0), rng.uniform(0.25, 0.4))
        sound = hum + 0.3 * synth.band_noise(rng, SAMPLE_RATE, n, 200.0, 1000.0) * np.abs(hum).max()
    elif category == "dog":
        bark = lambda: _voice(rng, int(SAMPLE_RATE * rng.uniform(0.15, 0.3)), rng.uniform(700, 900), (1500.0,), 0)
        sound = _events(rng, n, bark, 1.2)
    else:
        sound = synth.band_noise(rng, SAMPLE_RATE, n, 3000.0, 7000.0)
    return synth.peak_normalise(synth.peak_normalise(sound) + synth.background(rng, n))


def write_esc50(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """``size.esc50_sources_per_class`` source recordings per class, two takes each, spread over the five folds."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for category, target in TARGETS.items():
        for number in range(size.esc50_sources_per_class):
            src_file = str(100_000 + 1_000 * target + number)
            fold = number % FOLDS + 1
            for take in TAKES:
                filename = f"{fold}-{src_file}-{take}-{target}.wav"
                flac = root / "audio" / filename.replace(".wav", ".flac")
                sf.write(flac, np.clip(_clip(category, rng), -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
                rows.append((filename, fold, target, category, "False", src_file, take))
    write_csv(root / "meta" / "esc50.csv", HEADER, rows)
