"""Pure signal generators for the synthetic demo corpus.

Every function takes a ``numpy.random.Generator`` and returns float32 arrays in
[-1, 1]; nothing here touches the file system, so the same generator state
always yields the same samples.

Documented acoustic difference between classes
----------------------------------------------
A synthetic cough is an explosive onset (broadband noise burst, 5 ms attack,
30-60 ms decay) followed by a voiced tail (glottal pulse train shaped by three
formant resonators, with a decaying envelope). COVID-positive coughs differ
from negative ones only in the tail, with every value drawn uniformly per
cough:

=====================  ==============  ==============
tail property          positive        negative
=====================  ==============  ==============
fundamental (f0)       90-150 Hz       170-260 Hz
tail duration          400-550 ms      280-380 ms
harmonic-to-noise      2-4 dB (~3)     10.5-13.5 (~12)
=====================  ==============  ==============

So positives have a lower, longer, "wetter" (noisier) tail. A classifier that
beats chance on the demo corpus has learnt these cues, nothing clinical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

PEAK_DBFS = -3.0
BACKGROUND_DBFS = -45.0
MIN_COUGH_GAP_S = 0.4
RECORDING_MARGIN_S = 0.1

BURST_ATTACK_S = 0.005
BURST_DECAY_S = (0.03, 0.06)
TAIL_GAIN = (0.6, 0.8)


@dataclass(frozen=True)
class CoughTailProfile:
    """Ranges (low, high) from which one class's voiced-tail parameters are drawn."""

    f0_hz: tuple[float, float]
    tail_s: tuple[float, float]
    hnr_db: tuple[float, float]


POSITIVE_TAIL = CoughTailProfile(f0_hz=(90.0, 150.0), tail_s=(0.40, 0.55), hnr_db=(2.0, 4.0))
NEGATIVE_TAIL = CoughTailProfile(f0_hz=(170.0, 260.0), tail_s=(0.28, 0.38), hnr_db=(10.5, 13.5))

MAX_COUGH_S = BURST_ATTACK_S + BURST_DECAY_S[1] / 2 + max(POSITIVE_TAIL.tail_s[1], NEGATIVE_TAIL.tail_s[1])

VOWEL_FORMANTS_HZ = {
    "a": (800.0, 1200.0, 2500.0),
    "e": (450.0, 1900.0, 2550.0),
    "o": (500.0, 900.0, 2400.0),
}
NEUTRAL_FORMANTS_HZ = (500.0, 1500.0, 2500.0)


@dataclass(frozen=True)
class BreathingCycle:
    """One annotated ICBHI-style respiratory cycle (seconds, 0/1 flags)."""

    onset_s: float
    offset_s: float
    crackles: int
    wheezes: int


def db_to_amplitude(db: float) -> float:
    """Linear amplitude of a level given in dB (relative to full scale)."""
    return float(10.0 ** (db / 20.0))


def peak_normalise(x: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale ``x`` so its largest absolute sample sits at ``peak_dbfs``."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x.astype(np.float32)
    return (x * (db_to_amplitude(peak_dbfs) / peak)).astype(np.float32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` to RMS 1 (left unchanged when silent)."""
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    return x / rms if rms > 0 else x


def _time_axis(sr: int, n: int) -> np.ndarray:
    """Sample times in seconds for ``n`` samples at ``sr``."""
    return np.arange(n) / sr


PINK_FILTER_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
PINK_FILTER_A = (1.0, -2.494956002, 2.017265875, -0.522189400)


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with a ~1/f power spectrum (room-tone-like background).

    Uses Paul Kellet's 3-pole filter on white noise: linear time for any length,
    unlike FFT shaping, which is slow for lengths with large prime factors.
    """
    return _unit_rms(signal.lfilter(PINK_FILTER_B, PINK_FILTER_A, rng.standard_normal(n)))


def band_noise(rng: np.random.Generator, sr: int, n: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Unit-RMS white noise band-passed to [low_hz, high_hz] (clipped below Nyquist)."""
    high_hz = min(high_hz, 0.45 * sr)
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return _unit_rms(signal.sosfilt(sos, rng.standard_normal(n)))


def _formant_filter(x: np.ndarray, sr: int, formants_hz: tuple[float, ...]) -> np.ndarray:
    """Sum of two-pole resonators at ``formants_hz`` (weights 1, 1/2, 1/4...), unit RMS.

    Formants at or above 0.45*sr are dropped so low-rate devices stay valid.
    """
    out = np.zeros_like(x)
    for rank, freq in enumerate(f for f in formants_hz if f < 0.45 * sr):
        radius = np.exp(-np.pi * (60.0 + 0.06 * freq) / sr)
        theta = 2 * np.pi * freq / sr
        resonated = signal.lfilter([1.0 - radius], [1.0, -2 * radius * np.cos(theta), radius**2], x)
        out += _unit_rms(resonated) * 0.5**rank
    return _unit_rms(out)


def _glottal_pulses(sr: int, f0_track: np.ndarray) -> np.ndarray:
    """Zero-mean pulse train following ``f0_track`` with a -6 dB/octave tilt above 300 Hz.

    A pulse train is a harmonic series at f0, which is all a voiced source needs here.
    """
    phase = np.cumsum(f0_track / sr)
    pulses = np.zeros(f0_track.size)
    pulses[np.flatnonzero(np.diff(np.floor(phase))) + 1] = 1.0
    pole = np.exp(-2 * np.pi * 300.0 / sr)
    tilted = signal.lfilter([1.0], [1.0, -pole], pulses)
    return tilted - tilted.mean()


def _cough_burst(rng: np.random.Generator, sr: int, decay_s: float) -> np.ndarray:
    """Explosive onset: white noise with a 5 ms linear attack then exponential decay."""
    n_attack = max(1, round(BURST_ATTACK_S * sr))
    n_decay = round(decay_s * sr)
    envelope = np.concatenate([np.linspace(0.0, 1.0, n_attack), np.exp(-5.0 * np.arange(n_decay) / n_decay)])
    return rng.standard_normal(envelope.size) * envelope


def _cough_tail(rng: np.random.Generator, sr: int, profile: CoughTailProfile) -> np.ndarray:
    """Voiced tail: formant-shaped pulse train plus noise at the profile's HNR, decaying."""
    n = round(rng.uniform(*profile.tail_s) * sr)
    f0_start = rng.uniform(*profile.f0_hz)
    f0_track = np.linspace(f0_start, f0_start * rng.uniform(0.88, 0.97), n)
    formants = (rng.uniform(400, 700), rng.uniform(1000, 1600), rng.uniform(2200, 2800))
    harmonic = _formant_filter(_glottal_pulses(sr, f0_track), sr, formants)
    noise = _formant_filter(rng.standard_normal(n), sr, formants)
    hnr_db = rng.uniform(*profile.hnr_db)
    t = np.arange(n) / n
    n_rise = max(1, round(0.015 * sr))
    envelope = np.exp(-2.0 * t)
    envelope[:n_rise] *= np.sin(np.linspace(0, np.pi / 2, n_rise)) ** 2
    n_fade = max(1, round(0.02 * sr))
    envelope[-n_fade:] *= np.linspace(1.0, 0.0, n_fade)
    return (harmonic + noise * db_to_amplitude(-hnr_db)) * envelope


def cough(rng: np.random.Generator, sr: int, covid_positive: bool) -> np.ndarray:
    """One synthetic cough (burst + voiced tail), peak 1.0; see the module docstring for classes."""
    profile = POSITIVE_TAIL if covid_positive else NEGATIVE_TAIL
    decay_s = rng.uniform(*BURST_DECAY_S)
    burst = _cough_burst(rng, sr, decay_s)
    tail = _cough_tail(rng, sr, profile) * rng.uniform(*TAIL_GAIN)
    tail_start = round((BURST_ATTACK_S + decay_s / 2) * sr)
    out = np.zeros(max(burst.size, tail_start + tail.size))
    out[: burst.size] += burst
    out[tail_start : tail_start + tail.size] += tail
    return peak_normalise(out, 0.0)


def min_cough_recording_s(n_coughs: int) -> float:
    """Shortest ``duration_s`` that :func:`cough_recording` accepts for ``n_coughs`` of either class."""
    return n_coughs * MAX_COUGH_S + (n_coughs - 1) * MIN_COUGH_GAP_S + 2 * RECORDING_MARGIN_S


def background(rng: np.random.Generator, n: int, level_dbfs: float = BACKGROUND_DBFS) -> np.ndarray:
    """Low-level pink room tone with RMS at ``level_dbfs``."""
    return pink_noise(rng, n) * db_to_amplitude(level_dbfs)


def cough_recording(
    rng: np.random.Generator, sr: int, duration_s: float, n_coughs: int, covid_positive: bool
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``n_coughs`` coughs separated by >= 0.4 s of -45 dBFS room tone, peak -3 dBFS.

    Returns the samples and each cough's (start_s, end_s), the ground truth that
    AICovidVN's ``cough_intervals`` and Virufy's segments are cut from.
    """
    n_total = round(duration_s * sr)
    coughs = [cough(rng, sr, covid_positive) * rng.uniform(0.6, 1.0) for _ in range(n_coughs)]
    fixed = sum(c.size for c in coughs) + round(((n_coughs - 1) * MIN_COUGH_GAP_S + 2 * RECORDING_MARGIN_S) * sr)
    slack = n_total - fixed
    if slack < 0:
        shortest = min_cough_recording_s(n_coughs)
        raise ValueError(f"{n_coughs} coughs need duration_s >= {shortest:.3f}, got {duration_s}")
    spare = [int(part) for part in np.floor(rng.dirichlet(np.ones(n_coughs + 1)) * slack)]
    foreground = np.zeros(n_total)
    intervals = []
    position = round(RECORDING_MARGIN_S * sr) + spare[0]
    for index, samples in enumerate(coughs):
        foreground[position : position + samples.size] = samples
        intervals.append((position / sr, (position + samples.size) / sr))
        position += samples.size + round(MIN_COUGH_GAP_S * sr) + spare[index + 1]
    mixed = peak_normalise(foreground) + background(rng, n_total)
    return peak_normalise(mixed), intervals


def breathing(rng: np.random.Generator, sr: int, duration_s: float, deep: bool) -> np.ndarray:
    """One inhale/exhale of band-passed noise with a slow envelope (Coswara breathing tasks)."""
    n = round(duration_s * sr)
    low, high = (150.0, 1200.0) if deep else (300.0, 2000.0)
    t = np.arange(n) / n
    inhale_end = rng.uniform(0.35, 0.45)
    envelope = np.where(
        t < inhale_end,
        np.sin(np.pi * t / inhale_end) ** 2,
        0.8 * np.sin(np.pi * (t - inhale_end) / (1 - inhale_end)) ** 2,
    )
    breath = band_noise(rng, sr, n, low, high) * envelope
    mixed = peak_normalise(breath, -6.0 if deep else -12.0) + background(rng, n)
    return peak_normalise(mixed, -6.0 if deep else -12.0)


def voiced_sound(
    rng: np.random.Generator,
    sr: int,
    duration_s: float,
    f0_hz: float,
    formants_hz: tuple[float, ...],
    syllable_rate_hz: float,
) -> np.ndarray:
    """Speech-like voiced sound, peak 1.0: pulse train through formants, with syllabic AM.

    ``syllable_rate_hz == 0`` gives a sustained vowel (smooth on/offset only).
    """
    n = round(duration_s * sr)
    t = _time_axis(sr, n)
    drift = 1.0 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi))
    declination = np.linspace(1.05, 0.92, n)
    voiced = _formant_filter(_glottal_pulses(sr, f0_hz * drift * declination), sr, formants_hz)
    if syllable_rate_hz > 0:
        syllables = np.clip(np.sin(2 * np.pi * syllable_rate_hz * t + rng.uniform(0, 2 * np.pi)), 0.0, None) ** 0.7
    else:
        syllables = np.ones(n)
    edge = min(n // 2, round(0.05 * sr))
    ramp = np.sin(np.linspace(0, np.pi / 2, edge)) ** 2
    syllables[:edge] *= ramp
    syllables[n - edge :] *= ramp[::-1]
    return peak_normalise(voiced * syllables, 0.0)


def speech_task(
    rng: np.random.Generator, sr: int, duration_s: float, f0_hz: float, vowel: str | None, syllable_rate_hz: float
) -> np.ndarray:
    """A Coswara counting/vowel recording: voiced sound over room tone, peak -3 dBFS.

    ``vowel`` picks formants from :data:`VOWEL_FORMANTS_HZ`; ``None`` means counting
    (neutral formants).
    """
    formants = VOWEL_FORMANTS_HZ[vowel] if vowel else NEUTRAL_FORMANTS_HZ
    voice = voiced_sound(rng, sr, duration_s, f0_hz, formants, syllable_rate_hz)
    return peak_normalise(peak_normalise(voice) + background(rng, voice.size))


def _wheeze(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Sustained tone (100-1000 Hz, slight glide, weak 2nd harmonic), unit RMS, smooth edges."""
    start_hz = rng.uniform(150.0, 900.0)
    freq = np.linspace(start_hz, start_hz * rng.uniform(0.9, 1.1), n)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    tone = np.sin(phase) + 0.25 * np.sin(2 * phase)
    edge = round(0.03 * sr)
    ramp = np.sin(np.linspace(0, np.pi / 2, edge)) ** 2
    tone[:edge] *= ramp
    tone[n - edge :] *= ramp[::-1]
    return _unit_rms(tone)


def _crackle(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One fine/coarse crackle: a damped click under 20 ms, peak 1.0."""
    n = round(0.015 * sr)
    t = _time_axis(sr, n)
    freq = min(rng.uniform(300.0, 1200.0), 0.4 * sr)
    return np.exp(-t / rng.uniform(0.0015, 0.003)) * np.cos(2 * np.pi * freq * t)


def _breathing_cycle(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Lung-sound cycle: 100-1000 Hz noise, louder inhale then softer exhale, unit peak envelope."""
    t = np.arange(n) / n
    inhale_end = rng.uniform(0.35, 0.45)
    envelope = np.where(
        t < inhale_end,
        np.sin(np.pi * t / inhale_end) ** 2,
        0.6 * np.sin(np.pi * (t - inhale_end) / (1 - inhale_end)) ** 2,
    )
    return band_noise(rng, sr, n, 100.0, 1000.0) * (0.15 + envelope)


def _add_wheeze(rng: np.random.Generator, sr: int, cycle: np.ndarray) -> None:
    """Add, in place, one wheeze of 0.3-0.9 s at 2-3x the cycle's RMS."""
    length = round(rng.uniform(0.3, min(0.9, 0.6 * cycle.size / sr)) * sr)
    at = rng.integers(0, cycle.size - length)
    cycle[at : at + length] += _wheeze(rng, sr, length) * np.sqrt(np.mean(cycle**2)) * rng.uniform(2.0, 3.0)


def _add_crackles(rng: np.random.Generator, sr: int, cycle: np.ndarray) -> None:
    """Add, in place, 3-8 crackles whose peaks are 10-14x the cycle's RMS."""
    cycle_rms = np.sqrt(np.mean(cycle**2))
    for _ in range(rng.integers(3, 9)):
        click = _crackle(rng, sr)
        at = rng.integers(0, cycle.size - click.size)
        cycle[at : at + click.size] += click * cycle_rms * rng.uniform(10.0, 14.0)


def lung_sound_recording(
    rng: np.random.Generator, sr: int, duration_s: float, crackle_probability: float, wheeze_probability: float
) -> tuple[np.ndarray, list[BreathingCycle]]:
    """ICBHI-like auscultation: consecutive 1.5-4 s cycles with adventitious sounds.

    Each cycle independently gets a wheeze (tone 0.3-0.9 s, RMS 2-3x the breath
    noise) with ``wheeze_probability`` and crackles (3-8 damped clicks, peaks
    10-14x the cycle RMS) with ``crackle_probability``. Returns peak -6 dBFS
    samples and the cycles, every one of which ends inside the recording.
    """
    out = background(rng, round(duration_s * sr), -50.0)
    cycles = []
    onset_s = rng.uniform(0.05, 0.6)
    while True:
        length_s = rng.uniform(1.5, 4.0)
        if onset_s + length_s > duration_s - 0.05:
            break
        start, n = round(onset_s * sr), round(length_s * sr)
        cycle = _breathing_cycle(rng, sr, n) * 0.05
        has_wheeze = rng.random() < wheeze_probability
        has_crackles = rng.random() < crackle_probability
        if has_wheeze:
            _add_wheeze(rng, sr, cycle)
        if has_crackles:
            _add_crackles(rng, sr, cycle)
        out[start : start + n] += cycle
        offset_s = round(onset_s + length_s, 3)
        cycles.append(BreathingCycle(round(onset_s, 3), offset_s, int(has_crackles), int(has_wheeze)))
        onset_s += length_s
    return peak_normalise(out, -6.0), cycles


def babble(rng: np.random.Generator, sr: int, duration_s: float, n_talkers: int | None = None) -> np.ndarray:
    """Crowd babble: 4-8 (or ``n_talkers``) speech-like streams with distinct f0 and syllable rates."""
    n_talkers = n_talkers if n_talkers is not None else int(rng.integers(4, 9))
    n = round(duration_s * sr)
    mix = np.zeros(n)
    for _ in range(n_talkers):
        formants = (rng.uniform(350, 850), rng.uniform(900, 2200), rng.uniform(2300, 3000))
        stream = voiced_sound(rng, sr, duration_s, rng.uniform(90, 250), formants, rng.uniform(3.0, 6.0))
        mix += stream * rng.uniform(0.5, 1.0)
    return peak_normalise(mix)


def _knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A desk knock: damped low tone plus a short noise transient, peak ~1."""
    n = round(0.08 * sr)
    t = _time_axis(sr, n)
    tone = np.sin(2 * np.pi * rng.uniform(120, 300) * t) * np.exp(-t / 0.015)
    click = rng.standard_normal(n) * np.exp(-t / 0.003)
    return tone + 0.3 * click


def _chair_scrape(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A chair scrape: 300-3000 Hz noise with rough, stick-slip amplitude modulation."""
    n = round(rng.uniform(0.3, 0.8) * sr)
    t = _time_axis(sr, n)
    roughness = 0.6 + 0.4 * np.sign(np.sin(2 * np.pi * rng.uniform(20, 40) * t))
    return band_noise(rng, sr, n, 300.0, 3000.0) * roughness * np.sin(np.pi * t / t[-1]) * 0.4


def classroom(rng: np.random.Generator, sr: int, duration_s: float) -> np.ndarray:
    """Classroom ambience: pink noise, occasional knocks and chair scrapes, faint babble."""
    n = round(duration_s * sr)
    mix = pink_noise(rng, n) * 0.05 + babble(rng, sr, duration_s, n_talkers=3) * 0.1
    for make_event in [_knock] * int(rng.integers(2, 6)) + [_chair_scrape] * int(rng.integers(1, 3)):
        event = make_event(rng, sr)
        at = rng.integers(0, n - event.size)
        mix[at : at + event.size] += event * rng.uniform(0.3, 0.8)
    return peak_normalise(mix)


def hum(rng: np.random.Generator, sr: int, duration_s: float) -> np.ndarray:
    """Mains hum at 50 or 60 Hz with decaying harmonics, slight wobble and noise, peak -6 dBFS."""
    n = round(duration_s * sr)
    t = _time_axis(sr, n)
    mains_hz = float(rng.choice([50.0, 60.0]))
    mix = np.zeros(n)
    for harmonic in range(1, 9):
        mix += np.sin(2 * np.pi * mains_hz * harmonic * t + rng.uniform(0, 2 * np.pi)) / harmonic**1.2
    mix *= 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    mix += rng.standard_normal(n) * 0.02
    return peak_normalise(mix, -6.0)
