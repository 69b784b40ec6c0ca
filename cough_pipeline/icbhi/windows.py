"""Fixed-length 16 kHz windows of ICBHI recordings: slice long recordings, loop-pad short ones, never pad silence.

A recording is decoded, mixed to mono and resampled once to :attr:`WindowConfig.sample_rate` (soxr, high
quality; the 4 kHz Littmann recordings are upsampled, so they hold no energy above 2 kHz). For each window
length ``W`` (seconds) windows start at ``0, H, 2H, ...`` with hop ``H = hop_fraction * W``:

* every window that fits completely in the recording is a plain slice (``loop_padded=False, repeats=1.0``);
* the first window that would run past the end (the recording's *final partial slice*, ``[start, end)`` of
  length ``r < W``) is kept only when ``r >= min_tail_fraction * W``, and then loop-padded: its own content is
  repeated from its start until it fills ``W`` (:func:`loop_pad`); shorter tails are dropped. Later partial
  starts (possible with overlapping hops) would be sub-slices of that tail and are never produced;
* a recording shorter than ``W`` gives exactly one window, the whole recording loop-padded, whatever
  ``min_tail_fraction`` says (otherwise short recordings would vanish from the 20 s set).

Loop padding joins the slice's end to its start with no cross-fade (so a padded tone equals the tiled tone); the
joint can click when the two ends differ, which is the documented price of never inserting silence.

:func:`make_windows` streams recordings one at a time (at most ``workers`` decoded recordings in memory at once)
and writes each window as a WAV under ``out_dir/<W>s/``; every recording that yields no window is a row of the
``problems`` table with a machine-readable reason.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError, decode_audio, resample
from cough_pipeline.bounds import Bounds, Fraction, PositiveFloat, PositiveInt
from cough_pipeline.icbhi.config_checks import check_config
from cough_pipeline.naming import artefact_stem
from cough_pipeline.parallel import ProgressCallback, notify, ordered_bounded_map

WINDOW_COLUMNS = [
    "window_id",
    "recording_id",
    "patient_id",
    "lung_label",
    "diagnosis",
    "official_split",
    "window_seconds",
    "window_index",
    "source_start_s",
    "source_end_s",
    "loop_padded",
    "repeats",
    "source_sample_rate",
    "sample_rate",
    "audio_path",
]
PROBLEM_COLUMNS = ["recording_id", "audio_path", "reason", "detail"]
#: ``problems.reason`` for a recording the table marks as having no WAV (``audio_present`` false or no path).
AUDIO_ABSENT = "audio_absent"
#: How window WAVs are encoded.
WavSubtype = Literal["PCM_16", "FLOAT"]
WAV_SUBTYPES: tuple[str, ...] = get_args(WavSubtype)


class WindowError(ValueError):
    """Invalid window settings or input samples."""


@dataclass(frozen=True)
class WindowConfig:
    """How recordings become windows.

    sample_rate: rate (Hz) every window is resampled to.
    window_seconds: window lengths (s); one set of windows per length.
    hop_fraction: hop between window starts as a fraction of the window length; 1.0 = back to back (no overlap),
        0.5 = 50 % overlap. Must be in (0, 1].
    min_tail_fraction: a recording's final partial slice shorter than this fraction of the window is dropped,
        otherwise it is loop-padded to a full window. In [0, 1]; recordings shorter than the window are always
        loop-padded to one window.
    wav_subtype: ``"PCM_16"`` (half the disk; samples clipped to [-1, 1] first, because resampling can overshoot
        full scale by a hair) or ``"FLOAT"`` (bit-exact float32).
    """

    sample_rate: PositiveInt = 16_000
    window_seconds: tuple[PositiveFloat, ...] = (6.0, 20.0)
    hop_fraction: Annotated[float, Bounds(gt=0.0, le=1.0)] = 1.0
    min_tail_fraction: Fraction = 0.5
    wav_subtype: WavSubtype = "PCM_16"

    def __post_init__(self):
        check_config(self, WindowError)
        if not self.window_seconds or any(w <= 0 for w in self.window_seconds):
            raise WindowError(f"window_seconds must be positive lengths, got {self.window_seconds}")
        if len(set(map(window_label, self.window_seconds))) != len(self.window_seconds):
            raise WindowError(f"window_seconds has duplicates: {self.window_seconds}")


@dataclass(frozen=True)
class Window:
    """One window: source span ``[start_s, end_s)`` (seconds in the recording) and its samples ``(length,)``.

    ``repeats`` = window length / source span length (1.0 for a plain slice, 3.0 for a 2 s span filling 6 s).
    """

    start_s: float
    end_s: float
    loop_padded: bool
    repeats: float
    samples: np.ndarray


def window_label(window_s: float) -> str:
    """``6.0`` -> ``"6s"``, ``2.5`` -> ``"2.5s"``: the length as it appears in ids and folder names."""
    return f"{float(window_s):g}s"


def window_samples(window_s: float, sample_rate: int) -> int:
    """Samples in a window of ``window_s`` seconds (rounded to the nearest sample)."""
    length = int(round(window_s * sample_rate))
    if length <= 0:
        raise WindowError(f"a {window_s} s window at {sample_rate} Hz has no samples")
    return length


def loop_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """``samples`` ``(n,)`` repeated from its start until it has ``length`` samples (cut to ``length`` when
    longer), like ``np.resize``; never inserts zeros. A 0-sample input is a :class:`WindowError`."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise WindowError(f"loop_pad expects a 1-D signal, got shape {samples.shape}")
    if samples.size == 0:
        raise WindowError("cannot loop-pad an empty signal (0 samples)")
    if length < 0:
        raise WindowError(f"length must be >= 0, got {length}")
    if length <= samples.size:
        return samples[:length].copy()
    return np.resize(samples, length)


def slice_windows(
    samples: np.ndarray, sample_rate: int, window_s: float, config: WindowConfig | None = None
) -> list[Window]:
    """The windows of one recording ``samples`` ``(n,)`` at ``sample_rate`` for one length ``window_s``.

    See the module docstring for the slicing and tail rules. Raises :class:`WindowError` for an empty recording.
    """
    config = WindowConfig() if config is None else config
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.size == 0:
        raise WindowError(f"expected a non-empty 1-D recording, got shape {samples.shape}")
    n, length = samples.size, window_samples(window_s, sample_rate)
    if n < length:
        return [_padded(samples, 0, n, length, sample_rate)]
    hop = max(1, int(round(config.hop_fraction * length)))
    windows = [
        Window(start / sample_rate, (start + length) / sample_rate, False, 1.0, samples[start : start + length])
        for start in range(0, n - length + 1, hop)
    ]
    tail_start = (n - length) // hop * hop + hop  # first start whose window would run past the end
    if tail_start < n and n - tail_start >= config.min_tail_fraction * length:
        windows.append(_padded(samples, tail_start, n, length, sample_rate))
    return windows


def _padded(samples: np.ndarray, start: int, end: int, length: int, sample_rate: int) -> Window:
    return Window(
        start / sample_rate, end / sample_rate, True, length / (end - start), loop_pad(samples[start:end], length)
    )


def write_wav(path: Path, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono ``samples`` as a WAV, clipping to [-1, 1] for integer PCM (soundfile would wrap around)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype != "FLOAT":
        samples = np.clip(samples, -1.0, 1.0)
    # Encoded in memory, then one plain write: soundfile closing a real file fsyncs it, a disk flush per window
    # that nothing here needs (the bytes are identical).
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, subtype=subtype, format="WAV")
    path.write_bytes(buffer.getbuffer())


#: Recordings-table columns :func:`make_windows` reads.
REQUIRED_COLUMNS = (
    "recording_id",
    "stem",
    "patient_id",
    "lung_label",
    "diagnosis",
    "official_split",
    "audio_path",
    "audio_present",
)


def make_windows(
    recordings: pd.DataFrame,
    root: str | Path,
    config: WindowConfig | None,
    out_dir: str | Path,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Window every recording of an ICBHI ``recordings`` table; returns ``(windows, problems)``.

    ``recordings`` needs :data:`REQUIRED_COLUMNS` (``audio_path`` relative to ``root``). WAVs go to
    ``out_dir/<W>s/<artefact stem of stem>_<W>s_<index>.wav``; ``windows.audio_path`` is relative to ``out_dir``.
    Rows are ordered by recording (table order), then window length (config order), then window index;
    ``window_id`` is ``<stem>:<W>s:<index>`` (3 digits). Every recording without a window is a ``problems`` row:
    ``audio_absent`` (the table has no WAV for it) or the decoder's quarantine code (``audio_missing``,
    ``audio_empty``, ``audio_no_samples``, ``audio_unreadable``). WAVs already in ``out_dir/<W>s/`` are removed
    first, so a re-run never leaves stale windows behind. ``workers`` threads decode/resample/write in parallel
    (the work is in libsndfile/soxr/numpy, which release the GIL); ``progress(done, total)`` is called after each
    recording.
    """
    config = WindowConfig() if config is None else config
    missing = sorted(set(REQUIRED_COLUMNS) - set(recordings.columns))
    if missing:
        raise WindowError(f"recordings table lacks columns {missing}")
    if workers < 1:
        raise WindowError(f"workers must be >= 1, got {workers}")
    root, out_dir = Path(root), Path(out_dir)
    _remove_stale_windows(out_dir, config)
    rows = recordings.to_dict("records")
    window_rows: list[dict] = []
    problems: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = ordered_bounded_map(pool, lambda row: _window_one(row, root, config, out_dir), rows, 2 * workers)
        for done, outcome in enumerate(outcomes, start=1):
            if isinstance(outcome, dict):
                problems.append(outcome)
            else:
                window_rows += outcome
            notify(progress, done, len(rows))
    return _windows_frame(window_rows), pd.DataFrame(problems, columns=PROBLEM_COLUMNS)


def _remove_stale_windows(out_dir: Path, config: WindowConfig) -> None:
    """Delete the WAVs of an earlier run from the folders of ``config``'s window lengths."""
    for window_s in config.window_seconds:
        folder = out_dir / window_label(window_s)
        for stale in folder.glob("*.wav") if folder.is_dir() else ():
            stale.unlink()


def _windows_frame(rows: list[dict]) -> pd.DataFrame:
    """Window rows with :data:`WINDOW_COLUMNS` and their dtypes (also when empty)."""
    return pd.DataFrame(rows, columns=WINDOW_COLUMNS).astype(
        {
            "window_seconds": "float64",
            "window_index": "int64",
            "source_start_s": "float64",
            "source_end_s": "float64",
            "loop_padded": "bool",
            "repeats": "float64",
            "source_sample_rate": "int64",
            "sample_rate": "int64",
        }
    )


def _present(row: dict) -> bool:
    """The table says this recording has a WAV (``audio_present`` true and a path)."""
    path, present = row.get("audio_path"), row.get("audio_present")
    return isinstance(path, str) and bool(path) and present is not None and not pd.isna(present) and bool(present)


def _window_one(row: dict, root: Path, config: WindowConfig, out_dir: Path) -> list[dict] | dict:
    """Window rows of one recording, or its problem row."""
    audio_path = row.get("audio_path")
    if not _present(row):
        return {
            "recording_id": row["recording_id"],
            "audio_path": audio_path if isinstance(audio_path, str) else None,
            "reason": AUDIO_ABSENT,
            "detail": "recordings table has no WAV for this recording",
        }
    try:
        decoded = decode_audio(root / audio_path)
    except AudioDecodeError as error:
        return {
            "recording_id": row["recording_id"],
            "audio_path": audio_path,
            "reason": error.reason.value,
            "detail": error.detail,
        }
    # What load_mono(path, rate) does, keeping the decoded rate for the table; soxr resamples once per recording.
    source_rate, rate = decoded.sample_rate, config.sample_rate
    samples = resample(decoded.mono(), source_rate, rate)
    del decoded
    rows = []
    for window_s in config.window_seconds:
        label = window_label(window_s)
        for index, window in enumerate(slice_windows(samples, rate, window_s, config)):
            relative = f"{label}/{artefact_stem(str(row['stem']))}_{label}_{index:03d}.wav"
            write_wav(out_dir / relative, window.samples, rate, config.wav_subtype)
            rows.append(
                {
                    "window_id": f"{row['stem']}:{label}:{index:03d}",
                    "recording_id": row["recording_id"],
                    "patient_id": row["patient_id"],
                    "lung_label": row["lung_label"],
                    "diagnosis": row["diagnosis"],
                    "official_split": row["official_split"],
                    "window_seconds": float(window_s),
                    "window_index": index,
                    "source_start_s": round(window.start_s, 6),
                    "source_end_s": round(window.end_s, 6),
                    "loop_padded": window.loop_padded,
                    "repeats": round(window.repeats, 6),
                    "source_sample_rate": source_rate,
                    "sample_rate": rate,
                    "audio_path": relative,
                }
            )
    return rows


def expected_window_count(duration_s: float, window_s: float, config: WindowConfig | None = None) -> int:
    """How many windows :func:`slice_windows` gives a recording of ``duration_s`` seconds (for checks/plans)."""
    config = WindowConfig() if config is None else config
    n, length = int(round(duration_s * config.sample_rate)), window_samples(window_s, config.sample_rate)
    if n <= 0:
        return 0
    if n < length:
        return 1
    hop = max(1, int(round(config.hop_fraction * length)))
    full = (n - length) // hop + 1
    tail_start = (n - length) // hop * hop + hop
    return full + int(tail_start < n and n - tail_start >= config.min_tail_fraction * length)


__all__ = [
    "AUDIO_ABSENT",
    "PROBLEM_COLUMNS",
    "WINDOW_COLUMNS",
    "Window",
    "WindowConfig",
    "WindowError",
    "expected_window_count",
    "loop_pad",
    "make_windows",
    "slice_windows",
    "window_label",
    "window_samples",
    "write_wav",
]
