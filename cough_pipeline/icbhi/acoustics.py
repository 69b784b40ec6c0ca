"""Spectral features, RMS-energy envelopes and their plots for ICBHI 2017 recordings.

Analysis rate
    ICBHI recordings were made at 4 kHz (Littmann 3200), 10 kHz and 44.1 kHz (Rocha et al. 2019). By default every
    recording is resampled (once, soxr, band-limited) to **4 kHz**, the lowest device rate, so every feature
    describes the same 0-2 kHz band whatever the device. At the native rate a 44.1 kHz recording's centroid and
    roll-off would reach into 2-22 kHz, where a Litt3200 has no content at all: the features would measure the
    device, not the lung sound. Lung sounds (100-1000 Hz breath noise, wheezes mostly 100-1000 Hz, most crackle
    energy below 2 kHz) lie inside that band. ``analysis_sample_rate=None`` (or 0) analyses each file at its own rate.

Frames
    ``n_fft=256`` samples at 4 kHz is a 64 ms Hann window: 15.6 Hz bins, fine enough to place a wheeze tone
    (>= 100 Hz, >= 80 ms long) and short enough to follow a 1.5-4 s breathing cycle. ``hop_length=64`` (16 ms, 75 %
    overlap, the usual n_fft/4) samples the Hann window without gaps. Frames are centred (``n_fft // 2`` zeros padded
    at each end, librosa's ``center=True, pad_mode="constant"``), so frame ``t`` is centred on ``t * hop / rate`` s.
    With native-rate analysis ``n_fft``/``hop_length`` are read as samples at 4 kHz and scaled to the file's rate
    (same durations in seconds), so recordings of different devices keep comparable time-frequency tiles.

Frame features (one STFT; every feature but RMS comes from its magnitude ``S[t, k]``)
    * ``centroid_hz``: ``sum_k f_k S[t,k] / sum_k S[t,k]`` (librosa ``spectral_centroid``).
    * ``bandwidth_hz``: ``sqrt(sum_k p[t,k] (f_k - centroid_t)^2)`` with ``p = S / sum_k S`` (librosa
      ``spectral_bandwidth``, ``p=2``, ``norm=True``).
    * ``rolloff85_hz`` / ``rolloff95_hz``: the lowest bin frequency at which the cumulative magnitude reaches
      85 % / 95 % of the frame's total (librosa ``spectral_rolloff``; the percents come from the config).
    * ``flux``: ``|| max(0, u_t - u_{t-1}) ||_2`` where ``u_t = S[t] / ||S[t]||_2`` is the L2-normalised magnitude
      spectrum: the half-wave-rectified change of spectral *shape* between consecutive frames, in [0, 1] (0 for a
      stationary sound, 1 for a frame that follows digital silence). Normalising removes the recording gain, which
      differs between devices and chest locations; frame 0 has no predecessor and gets flux 0. (librosa's
      ``onset_strength`` is a different quantity: a mean rectified difference of log-power mel spectra.)
    * ``rms``: root mean square of the frame's raw (unwindowed) samples, librosa ``feature.rms`` with
      ``frame_length=n_fft``; a sine of amplitude ``a`` gives ``a / sqrt(2)``.

Silent frames
    A frame whose magnitude spectrum sums to zero (digital silence) has no spectral shape: its centroid, bandwidth
    and roll-offs are 0, as librosa returns, and ``silent`` is True. Recording summaries (mean and median) use the
    non-silent frames only (flux also skips frame 0); a recording silent throughout cannot be summarised and lands
    in the problems table of :func:`spectral_table` with reason ``audio_silent``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd

from cough_pipeline.audio import AudioDecodeError, decode_audio, resample
from cough_pipeline.bounds import Bounds, NonNegativeInt, PositiveInt
from cough_pipeline.icbhi.config_checks import check_config
from cough_pipeline.icbhi.tables import LUNG_LABELS
from cough_pipeline.parallel import ProgressCallback, notify, process_map
from cough_pipeline.schema import QuarantineReason

#: Lowest device rate in ICBHI 2017 (Littmann 3200), the default analysis rate.
ICBHI_MIN_RATE = 4_000
#: Problems-table reason for a recording that decodes but is digital silence throughout (no spectral shape).
SILENT_REASON = "audio_silent"
#: Columns of the problems table returned by :func:`spectral_table`.
PROBLEM_COLUMNS = ("recording_id", "lung_label", "audio_path", "reason", "detail")
#: Frame samples per processing block of :func:`frame_features` (about 256 kB of float64 per temporary).
_BLOCK_VALUES = 32_768
#: Recordings-table columns :func:`spectral_table` reads.
REQUIRED_COLUMNS = ("recording_id", "audio_present", "audio_path", "lung_label", "diagnosis", "device")


@dataclass(frozen=True)
class SpectralConfig:
    """How recordings are analysed; see the module docstring for why these defaults.

    ``analysis_sample_rate``: Hz every recording is resampled to before analysis; ``None`` or 0 = native rate.
    ``n_fft`` / ``hop_length``: STFT frame and hop in samples at the analysis rate (at 4 kHz for native analysis,
    then scaled to each file's rate). ``window``: any ``scipy.signal.get_window`` name (periodic).
    ``rolloff_percents``: fractions in (0, 1), one roll-off feature each.
    """

    analysis_sample_rate: NonNegativeInt | None = ICBHI_MIN_RATE
    n_fft: Annotated[int, Bounds(ge=2)] = 256
    hop_length: PositiveInt = 64
    window: str = "hann"
    rolloff_percents: tuple[Annotated[float, Bounds(gt=0.0, lt=1.0)], ...] = (0.85, 0.95)

    def __post_init__(self):
        check_config(self)
        if self.analysis_sample_rate is not None and self.analysis_sample_rate < 0:
            raise ValueError(f"analysis_sample_rate must be positive, 0 or None, got {self.analysis_sample_rate}")
        if not self.rolloff_percents or not all(0.0 < p < 1.0 for p in self.rolloff_percents):
            raise ValueError(f"rolloff_percents must be fractions in (0, 1), got {self.rolloff_percents}")
        names = [_rolloff_name(p) for p in self.rolloff_percents]
        if len(set(names)) != len(names):
            raise ValueError(f"rolloff_percents {self.rolloff_percents} give duplicate feature names {names}")
        _window(self.window, self.n_fft)  # an unknown window name fails here, not in a worker

    def rate_for(self, native_rate: int) -> int:
        """The rate a file recorded at ``native_rate`` Hz is analysed at."""
        return int(self.analysis_sample_rate) if self.analysis_sample_rate else int(native_rate)

    def frame_lengths(self, rate: int) -> tuple[int, int]:
        """``(n_fft, hop_length)`` in samples at ``rate``: as configured, or scaled from 4 kHz for native analysis."""
        if self.analysis_sample_rate:
            return self.n_fft, self.hop_length
        scale = rate / ICBHI_MIN_RATE
        return max(2, round(self.n_fft * scale)), max(1, round(self.hop_length * scale))

    @property
    def features(self) -> tuple[str, ...]:
        """Frame-feature names, e.g. ``centroid_hz, bandwidth_hz, rolloff85_hz, rolloff95_hz, flux, rms``."""
        return ("centroid_hz", "bandwidth_hz", *(_rolloff_name(p) for p in self.rolloff_percents), "flux", "rms")

    @property
    def summary_columns(self) -> tuple[str, ...]:
        """Recording-summary columns: ``<feature>_mean`` and ``<feature>_median`` for each feature."""
        return tuple(f"{name}_{stat}" for name in self.features for stat in ("mean", "median"))


def _rolloff_name(percent: float) -> str:
    return f"rolloff{round(percent * 100):d}_hz"


@lru_cache(maxsize=16)
def _window(name: str, length: int) -> np.ndarray:
    """Periodic (DFT-even) window, as librosa and ``scipy.signal.get_window(name, length, fftbins=True)``."""
    if name == "hann":
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    else:  # importing scipy.signal is slow, and every spawned worker would pay for it even for "hann"
        from scipy.signal import get_window

        window = get_window(name, length, fftbins=True).astype(np.float64)
    window.flags.writeable = False
    return window


def _frames(samples: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """Centred frames ``(n_frames, frame_length)``, a strided view of the zero-padded signal.

    ``n_frames = 1 + len(samples) // hop_length`` when ``frame_length`` is even (librosa's ``center=True``).
    """
    pad = frame_length // 2
    padded = np.pad(np.asarray(samples, dtype=np.float64), (pad, pad))  # >= frame_length for any non-empty signal
    return np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]


def _as_mono(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got shape {samples.shape}")
    if samples.size == 0:
        raise ValueError("cannot analyse an empty signal")
    if not np.isfinite(samples).all():
        raise ValueError("samples contain NaN or infinity")
    return samples


def frame_features(
    samples: np.ndarray, sample_rate: int, config: SpectralConfig = SpectralConfig()
) -> dict[str, np.ndarray]:
    """Frame-wise spectral features of a mono signal (resampled to the analysis rate first when it differs).

    ``samples``: ``(n,)`` float at ``sample_rate`` Hz. Returns arrays of shape ``(n_frames,)``: ``times_s`` (frame
    centres, s), ``centroid_hz``, ``bandwidth_hz``, one ``rolloffNN_hz`` per configured percent (Hz), ``flux``
    (dimensionless, [0, 1]), ``rms`` (sample units) and ``silent`` (bool); definitions in the module docstring.
    """
    samples = _as_mono(samples)
    rate = config.rate_for(sample_rate)
    if rate != sample_rate:
        samples = resample(samples.astype(np.float32, copy=False), sample_rate, rate)
    n_fft, hop = config.frame_lengths(rate)
    frames = _frames(samples, n_fft, hop)
    n_frames = frames.shape[0]
    spectrum = _Spectrum(config, _window(config.window, n_fft), np.fft.rfftfreq(n_fft, 1.0 / rate))
    out = {name: np.empty(n_frames) for name in config.features}
    out["silent"] = np.empty(n_frames, dtype=bool)
    previous_unit = None
    # Blocks of frames keep every temporary a few hundred kB: whole-signal (frames, bins) arrays are large enough
    # for malloc to map and unmap them on every call, and the page faults then cost more than the FFT itself.
    block = max(8, _BLOCK_VALUES // n_fft)
    for start in range(0, n_frames, block):
        chunk = frames[start : start + block]
        previous_unit = spectrum.block(chunk, out, slice(start, start + chunk.shape[0]), previous_unit)
    return {"times_s": np.arange(n_frames) * (hop / rate), **out}


@dataclass(frozen=True)
class _Spectrum:
    """What every block of :func:`frame_features` shares: the config, the analysis window and the bin frequencies."""

    config: SpectralConfig
    window: np.ndarray
    freqs: np.ndarray

    def block(
        self, chunk: np.ndarray, out: dict[str, np.ndarray], rows: slice, previous_unit: np.ndarray | None
    ) -> np.ndarray:
        """Fill ``out[...][rows]`` from the frames ``chunk`` ``(frames in block, n_fft)``; returns the last frame's
        unit spectrum, the predecessor of the next block's first frame for the flux."""
        n_fft = chunk.shape[1]
        out["rms"][rows] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk) / n_fft)
        magnitude = np.abs(np.fft.rfft(chunk * self.window, axis=1))  # (frames in block, n_fft // 2 + 1)
        cumulative = np.cumsum(magnitude, axis=1)
        total = cumulative[:, -1]
        out["silent"][rows] = quiet = total <= np.finfo(np.float32).tiny  # librosa's threshold: all-zero distribution
        scale = np.divide(1.0, total, out=np.zeros_like(total), where=~quiet)
        centroid = (magnitude @ self.freqs) * scale
        out["centroid_hz"][rows] = centroid
        # sum_k p_k (f_k - c)^2 = sum_k p_k f_k^2 - c^2: no (frames, bins) temporaries; in float64 the cancellation
        # error is ~1e-10 Hz^2, far below a bin; clipped at 0 for single-bin frames.
        out["bandwidth_hz"][rows] = np.sqrt(
            np.maximum((magnitude @ (self.freqs * self.freqs)) * scale - centroid**2, 0.0)
        )
        for percent in self.config.rolloff_percents:
            # argmax finds the first bin whose cumulative magnitude reaches the threshold (0 Hz for a silent frame)
            reached = np.argmax(cumulative >= (percent * total)[:, None], axis=1)
            out[_rolloff_name(percent)][rows] = self.freqs[reached]
        norms = np.sqrt(np.einsum("ij,ij->i", magnitude, magnitude))
        unit = magnitude * np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)[:, None]
        before = np.concatenate([unit[:1] if previous_unit is None else previous_unit, unit[:-1]])
        rise = np.maximum(unit - before, 0.0)  # frame 0 is compared with itself: flux 0
        out["flux"][rows] = np.sqrt(np.einsum("ij,ij->i", rise, rise))
        return unit[-1:]


def recording_features(samples: np.ndarray, sample_rate: int, config: SpectralConfig = SpectralConfig()) -> dict:
    """One recording's summary: ``<feature>_mean`` and ``<feature>_median`` over its non-silent frames.

    Also ``duration_s`` (of the input, s), ``analysis_sample_rate`` (Hz), ``n_frames`` and ``n_silent_frames``.
    Flux summaries also skip frame 0 (no predecessor). A recording silent throughout gets NaN summaries.
    """
    samples = _as_mono(samples)
    frames = frame_features(samples, sample_rate, config)
    active = ~frames["silent"]
    flux_active = active.copy()
    flux_active[0] = False
    summary: dict = {
        "duration_s": samples.size / sample_rate,
        "analysis_sample_rate": config.rate_for(sample_rate),
        "n_frames": int(active.size),
        "n_silent_frames": int((~active).sum()),
    }
    for name in config.features:
        values = frames[name][flux_active if name == "flux" else active]
        summary[f"{name}_mean"] = float(values.mean()) if values.size else float("nan")
        summary[f"{name}_median"] = float(np.median(values)) if values.size else float("nan")
    return summary


def _analyse_file(path: str, config: SpectralConfig) -> dict | tuple[str, str]:
    """Decode, resample once (soxr) and summarise one file; a failure comes back as ``(reason, detail)``.

    Same steps as :func:`cough_pipeline.audio.load_mono`, but keeping the native rate for the table.
    """
    try:
        decoded = decode_audio(path)
    except AudioDecodeError as error:
        return error.reason.value, error.detail
    rate = config.rate_for(decoded.sample_rate)
    mono = resample(decoded.mono(), decoded.sample_rate, rate)
    summary = recording_features(mono, rate, config)
    if summary["n_frames"] == summary["n_silent_frames"]:
        return SILENT_REASON, f"all {summary['n_frames']} frames are digital silence"
    summary["duration_s"] = decoded.duration_s  # exact, not rounded through the resampled length
    summary["sample_rate"] = decoded.sample_rate
    return summary


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(table.columns)}")


def spectral_table(
    recordings: pd.DataFrame,
    root: str | Path,
    config: SpectralConfig = SpectralConfig(),
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-recording spectral summaries of every recording with audio, and the recordings that could not be analysed.

    ``recordings``: the ICBHI recordings table (needs :data:`REQUIRED_COLUMNS`; ``audio_path`` is relative to
    ``root``). Rows without audio (``audio_present`` False) are not analysed and appear in neither output, so
    ``len(table) + len(problems)`` equals the number of rows with audio. Returns ``(table, problems)``:

    * ``table``: one row per analysed recording, in input order: :data:`FEATURE_LEADING_COLUMNS` (``sample_rate``
      is the file's native rate) and :attr:`SpectralConfig.summary_columns`.
    * ``problems``: :data:`PROBLEM_COLUMNS`; ``reason`` is the decoder's quarantine code
      (:class:`cough_pipeline.schema.QuarantineReason`) or :data:`SILENT_REASON`.

    ``workers > 1`` analyses files in a spawned process pool (:func:`cough_pipeline.parallel.process_map`; same,
    deterministic output). Starting the pool costs far more than one recording, so it pays off only for hundreds
    of recordings on idle cores (figures: ``make bench BENCH=icbhi_spectral``,
    ``benchmarks/results/icbhi_spectral.json``). ``progress(done, total)`` is called after each recording.
    """
    _check_columns(recordings, REQUIRED_COLUMNS, "recordings")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with_audio = recordings[recordings["audio_present"].fillna(False).astype(bool)]
    jobs, problems = _jobs_and_pathless(with_audio)
    total, done = len(with_audio), len(problems)
    if done:
        notify(progress, done, total)
    rows = []
    paths = [str(Path(root) / str(row.audio_path)) for row in jobs]
    with process_map(min(workers, max(1, len(jobs)))) as mapper:
        chunksize = max(1, len(jobs) // (workers * 8))
        for row, result in zip(jobs, mapper(partial(_analyse_file, config=config), paths, chunksize=chunksize)):
            if isinstance(result, tuple):
                problems.append(_problem(row, *result))
            else:
                rows.append({name: getattr(row, name) for name in _ID_COLUMNS} | result)
            done += 1
            notify(progress, done, total)
    return _features_frame(rows, config), _problems_frame(problems)


#: Columns of :func:`spectral_table` before the summary columns.
FEATURE_LEADING_COLUMNS = (
    "recording_id",
    "lung_label",
    "diagnosis",
    "device",
    "sample_rate",
    "analysis_sample_rate",
    "duration_s",
    "n_frames",
    "n_silent_frames",
)
#: Recordings-table columns copied into each row of :func:`spectral_table`.
_ID_COLUMNS = ("recording_id", "lung_label", "diagnosis", "device")


def _jobs_and_pathless(with_audio: pd.DataFrame) -> tuple[list, list[dict]]:
    """The rows to analyse, and problem rows for those marked ``audio_present`` without an ``audio_path``."""
    jobs, problems = [], []
    for row in with_audio.itertuples(index=False):
        if pd.isna(row.audio_path) or not str(row.audio_path):
            problems.append(_problem(row, QuarantineReason.AUDIO_MISSING.value, "audio_present but no audio_path"))
        else:
            jobs.append(row)
    return jobs, problems


def _features_frame(rows: list[dict], config: SpectralConfig) -> pd.DataFrame:
    """The rows of :func:`spectral_table` with its columns and dtypes (also when empty)."""
    table = pd.DataFrame(rows, columns=[*FEATURE_LEADING_COLUMNS, *config.summary_columns])
    return table.astype(
        {
            "sample_rate": "Int64",
            "analysis_sample_rate": "Int64",
            "n_frames": "int64",
            "n_silent_frames": "int64",
            "duration_s": "float64",
            **{column: "float64" for column in config.summary_columns},
            **{column: "string" for column in _ID_COLUMNS},
        }
    )


def _problems_frame(problems: list[dict]) -> pd.DataFrame:
    """:data:`PROBLEM_COLUMNS`, all strings (also when empty, so the warehouse table has a stable schema)."""
    return pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS)).astype("string")


def _problem(row, reason: str, detail: str) -> dict:
    return {
        "recording_id": row.recording_id,
        "lung_label": row.lung_label,
        "audio_path": row.audio_path,
        "reason": reason,
        "detail": detail,
    }


def _group_order(values: pd.Series, by: str) -> list:
    """Lung labels in :data:`LUNG_LABELS` order (all four, even empty ones, then any unexpected), else sorted."""
    present = [value for value in pd.unique(values.dropna())]
    if by == "lung_label":
        return [*LUNG_LABELS, *sorted(str(v) for v in present if v not in LUNG_LABELS)]
    return sorted(present, key=str)


def median_table(table: pd.DataFrame, by: str = "lung_label", features: Sequence[str] | None = None) -> pd.DataFrame:
    """Median of each feature per group, with ``n`` (recordings in the group; NaN values skipped per feature).

    ``features`` defaults to every ``*_mean``/``*_median`` summary column present. Groups are the
    :data:`LUNG_LABELS` (all four, an empty one with ``n = 0`` and NaN medians) or the sorted values of ``by``.
    """
    _check_columns(table, [by], "table")
    features = (
        list(features)
        if features is not None
        else [c for c in table.columns if c.endswith(("_mean", "_median")) and pd.api.types.is_numeric_dtype(table[c])]
    )
    _check_columns(table, features, "table")
    out = []
    for group in _group_order(table[by], by):
        members = table[table[by] == group]
        out.append(
            {
                by: group,
                "n": len(members),
                **{name: float(members[name].median()) if len(members) else float("nan") for name in features},
            }
        )
    return pd.DataFrame(out, columns=[by, "n", *features]).astype({"n": "int64"})


@dataclass(frozen=True)
class SpectralAnalysis:
    """The acoustic analysis of an ICBHI recordings table (:func:`spectral_analysis`).

    ``features``/``problems``: :func:`spectral_table` (``problems`` also holds the envelope picks that failed to
    decode). ``medians``: :func:`median_table` of the ``summaries`` (the ``<feature>_mean`` columns) per lung-sound
    label; without any analysed recording, the four labels with ``n = 0``. ``envelopes``: :func:`load_envelopes`
    of one recording per label; ``missing_envelopes`` the labels without one. ``recordings_with_audio``: rows of
    the recordings table with ``audio_present``.
    """

    features: pd.DataFrame
    problems: pd.DataFrame
    medians: pd.DataFrame
    summaries: tuple[str, ...]
    envelopes: dict[str, tuple[np.ndarray, np.ndarray, str]]
    missing_envelopes: tuple[str, ...]
    recordings_with_audio: int


def spectral_analysis(
    recordings: pd.DataFrame,
    root: str | Path,
    config: SpectralConfig = SpectralConfig(),
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> SpectralAnalysis:
    """Spectral features of every recording with audio, their medians per lung-sound label and the RMS envelope
    of one recording per label. Arguments as :func:`spectral_table`; without any WAV every table is empty (the
    medians have ``n = 0``) and every label is a missing envelope."""
    features, problems = spectral_table(recordings, root, config, workers=workers, progress=progress)
    summaries = tuple(f"{name}_mean" for name in config.features)
    medians = (
        median_table(features, features=summaries)
        if len(features)
        else pd.DataFrame({"lung_label": pd.Series(LUNG_LABELS, dtype="string"), "n": 0})
    )
    envelopes, envelope_problems = load_envelopes(pick_envelope_recordings(recordings), root)
    return SpectralAnalysis(
        features=features,
        problems=pd.concat([problems, envelope_problems], ignore_index=True),
        medians=medians,
        summaries=summaries,
        envelopes=envelopes,
        missing_envelopes=tuple(label for label in LUNG_LABELS if label not in envelopes),
        recordings_with_audio=int(recordings["audio_present"].sum()),
    )


def rms_envelope(
    samples: np.ndarray, sample_rate: int, frame_s: float = 0.05, hop_s: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """RMS-energy envelope: ``(times_s, rms)``, both ``(n_frames,)``.

    Centred rectangular frames of ``frame_s`` seconds every ``hop_s`` seconds (zero-padded at the ends, as
    librosa's ``feature.rms(center=True)``); ``times_s[i] = i * hop`` is the centre of frame ``i``.
    """
    samples = _as_mono(samples)
    frame, hop = max(1, round(frame_s * sample_rate)), max(1, round(hop_s * sample_rate))
    frames = _frames(samples, frame, hop)
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames) / frame)
    return np.arange(rms.size) * (hop / sample_rate), rms


def pick_envelope_recordings(recordings: pd.DataFrame, by: str = "lung_label") -> pd.DataFrame:
    """One recording with audio per group, chosen deterministically (the smallest ``recording_id``).

    Returns one row per group (:data:`LUNG_LABELS` order for lung labels, else sorted): ``by, recording_id,
    audio_path, n_recordings, n_with_audio, status`` where ``status`` is ``picked``, ``no_audio`` (the group has
    recordings, none with a WAV) or ``no_recordings``; unpicked groups have null ``recording_id``/``audio_path``.
    """
    _check_columns(recordings, [by, "recording_id", "audio_present", "audio_path"], "recordings")
    has_audio = recordings["audio_present"].fillna(False).astype(bool) & recordings["audio_path"].notna()
    rows = []
    for group in _group_order(recordings[by], by):
        members = recordings[recordings[by] == group]
        audible = members[has_audio.loc[members.index]].sort_values("recording_id", kind="stable")
        pick = audible.iloc[0] if len(audible) else None
        rows.append(
            {
                by: group,
                "recording_id": None if pick is None else pick["recording_id"],
                "audio_path": None if pick is None else pick["audio_path"],
                "n_recordings": len(members),
                "n_with_audio": len(audible),
                "status": "picked" if pick is not None else ("no_audio" if len(members) else "no_recordings"),
            }
        )
    picks = pd.DataFrame(rows, columns=[by, "recording_id", "audio_path", "n_recordings", "n_with_audio", "status"])
    return picks.astype(
        {
            "recording_id": "string",
            "audio_path": "string",
            "n_recordings": "int64",
            "n_with_audio": "int64",
            "status": "string",
        }
    )


def load_envelopes(
    picks: pd.DataFrame, root: str | Path, by: str = "lung_label", frame_s: float = 0.05, hop_s: float = 0.01
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, str]], pd.DataFrame]:
    """RMS envelopes of the picked recordings (:func:`pick_envelope_recordings`) at their native rate.

    Returns ``({group: (times_s, rms, recording_id)}, problems)``; a pick that fails to decode is a problems row
    (:data:`PROBLEM_COLUMNS`, ``lung_label`` holding the group) instead of an envelope.
    """
    envelopes, problems = {}, []
    for row in picks[picks["status"] == "picked"].itertuples(index=False):
        group = getattr(row, by)
        try:
            decoded = decode_audio(Path(root) / str(row.audio_path))
        except AudioDecodeError as error:
            problems.append(
                {
                    "recording_id": row.recording_id,
                    "lung_label": group,
                    "audio_path": row.audio_path,
                    "reason": error.reason.value,
                    "detail": error.detail,
                }
            )
            continue
        times, rms = rms_envelope(decoded.mono(), decoded.sample_rate, frame_s, hop_s)
        envelopes[group] = (times, rms, row.recording_id)
    return envelopes, _problems_frame(problems)


def feature_box_plots_png(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    by: str = "lung_label",
    title: str | None = None,
    seed: int = 0,
) -> bytes:
    """Box plots, one subplot per feature column, one box per group with ``n`` in its tick label.

    Groups follow :data:`LUNG_LABELS` for lung labels (an empty group is drawn empty with ``n=0``), else sorted.
    Each recording is also drawn as a point (horizontal jitter from a ``seed``-ed generator, so the PNG is
    reproducible). ``features`` defaults to the ``*_mean`` columns; any numeric column works (e.g. ``duration_s``).
    """
    from cough_pipeline.plots import plt, to_png

    _check_columns(table, [by], "table")
    features = list(features) if features is not None else [c for c in table.columns if c.endswith("_mean")]
    if not features:
        raise ValueError("no feature columns to plot")
    _check_columns(table, features, "table")
    groups = _group_order(table[by], by)
    rng = np.random.default_rng(seed)
    columns = min(3, len(features))
    rows = -(-len(features) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axis, feature in zip(axes.flat, features):
        data = [pd.to_numeric(table.loc[table[by] == g, feature], errors="coerce").dropna().to_numpy() for g in groups]
        axis.boxplot(data, showfliers=False)
        for position, values in enumerate(data, start=1):
            axis.scatter(position + rng.uniform(-0.12, 0.12, values.size), values, s=9, alpha=0.6, color="tab:blue")
        axis.set_xticks(range(1, len(groups) + 1), [f"{g}\nn={len(v)}" for g, v in zip(groups, data)], fontsize=8)
        axis.set_title(feature, fontsize=10)
    for axis in list(axes.flat)[len(features) :]:
        axis.set_visible(False)
    figure.suptitle(title or f"per-recording features by {by}")
    figure.tight_layout()
    return to_png(figure)


def rms_envelopes_png(
    envelopes: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
    missing: Sequence[str] = (),
    title: str = "RMS-energy envelope per lung-sound pattern",
) -> bytes:
    """One row per pattern (:data:`LUNG_LABELS` order first), shared time axis, recording id in each row's title.

    ``envelopes``: ``{label: (times_s, rms, recording_id)}`` (:func:`load_envelopes`); each label in ``missing``
    gets an empty row saying no recording with audio was available, so a gap is visible rather than absent.
    """
    from cough_pipeline.plots import plt, to_png

    labels = [*envelopes, *(m for m in missing if m not in envelopes)]
    labels.sort(key=lambda label: (LUNG_LABELS.index(label) if label in LUNG_LABELS else len(LUNG_LABELS), label))
    if not labels:
        raise ValueError("no envelopes and no missing patterns to plot")
    figure, axes = plt.subplots(len(labels), 1, figsize=(9, 1.9 * len(labels)), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (axis, label) in enumerate(zip(axes[:, 0], labels)):
        # a pattern keeps its colour whichever patterns are present
        colour = colours[(LUNG_LABELS.index(label) if label in LUNG_LABELS else row) % len(colours)]
        if label in envelopes:
            times, rms, recording_id = envelopes[label]
            axis.fill_between(times, rms, color=colour, alpha=0.35, linewidth=0)
            axis.plot(times, rms, color=colour, linewidth=0.8)
            axis.set_title(f"{label}: {recording_id}", fontsize=9, loc="left")
            axis.set_ylim(bottom=0)
        else:
            axis.text(0.5, 0.5, "no recording with audio", transform=axis.transAxes, ha="center", va="center")
            axis.set_title(f"{label}: -", fontsize=9, loc="left")
            axis.set_yticks([])
        axis.set_ylabel("RMS")
    axes[-1, 0].set_xlabel("time (s)")
    figure.suptitle(title)
    figure.tight_layout()
    return to_png(figure)
