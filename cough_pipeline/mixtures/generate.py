"""Controlled cough-in-noise mixtures with scaper, for training and testing the cough separator.

A mixture is ``duration_s`` (5 s) of one background noise file plus one or more cough events, at 44.1 kHz mono.
For every mixture this module writes, under ``<out_dir>/<split>/``::

    mixture/<id>.wav   the soundscape scaper returns (PCM_32, as scaper writes it)
    cough/<id>.wav     the isolated cough source (sum of the cough events as mixed, PCM_32)
    noise/<id>.wav     the isolated noise source (the background as mixed, PCM_32)
    jams/<id>.jams     scaper's JAMS annotation, plus a ``cough_pipeline`` sandbox with ids, seed and files

so ``mixture == cough + noise`` up to PCM_32 rounding (no reverb, no clipping fix, no peak normalisation).

**Who samples what.** scaper's distribution tuples cannot say "apply pitch shift with probability 0.5", so this
module samples every parameter itself, from ``numpy.random.default_rng(mixture_seed)``, and hands scaper
``("const", value)`` tuples; scaper then does what it is good at: sox pitch shift and time stretch, LUFS loudness
normalisation, fades, summing and the JAMS file. Every sampled value lands in the returned tables.

* ``mixture_seed`` derives from ``(seed, split, index)`` alone (:func:`mixture_seed`), so the mixtures do not
  depend on worker count or scheduling, and one mixture can be regenerated on its own.
* Background loudness: scaper normalises the background to ``ref_db`` LUFS; ``ref_db`` is drawn uniformly from
  ``MixtureSpec.ref_db`` (-53 to -47 LUFS, i.e. -50 +/- 3 dB) per mixture, so the model does not see one fixed
  noise level. Event SNR is scaper's: cough LUFS minus background LUFS, uniform in [-5, 5] dB. It is measured
  while the cough sounds: over the whole 5-second clip the energy ratio is about ``10 log10(event_s / 5)`` lower
  (-10.6 dB for the demo's 0.44 s median cough; measured: event-window energy SNR - scaper SNR = -0.5 dB median,
  whole-clip energy SNR - scaper SNR = -10.9 dB), which is why the unprocessed mixture's SDR against the cough
  (-6 to -13 dB median) lies below the SNR range.
* Pitch shift (uniform [-2, 2] semitones) and time stretch (uniform factor [0.9, 1.1], >1 = longer) are each
  applied with probability 0.5; the draws are made either way, so the random stream has a fixed layout.
* The whole cough must fit: the onset is uniform in ``[0, duration_s - stretched cough length]``. Coughs longer
  than ``duration_s / max stretch factor`` are **rejected** (never trimmed, never silently dropped): they come
  back in ``MixtureSet.rejected`` with reason ``cough_longer_than_mixture``. Noise files shorter than the mixture
  are rejected likewise (``noise_shorter_than_mixture``); files that fail to decode carry the decoder's reason.
* With ``events_per_mixture`` above 1, the events are placed independently and may overlap.

Sources are converted once to 44.1 kHz mono wav, coughs with their digital-silence padding cut
(:mod:`cough_pipeline.mixtures.sources`); ``cough_duration_s`` is that trimmed length. The mixtures are synthesised
over :func:`cough_pipeline.parallel.process_map` (spawned workers, so no forked locks from a threaded parent such
as a Dagster step; a script calling with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard),
each worker streaming its files to disk, so memory does not grow with the number of mixtures. The wavs are
written through a memory buffer because libsndfile fsyncs every file it closes (:func:`write_wav`).
Any scaper warning (an adjusted onset, a trimmed event, clipping) is raised as :class:`MixtureError` instead of
being let through, because it would make the tables disagree with the audio.
"""

from __future__ import annotations

import io
import re
import shutil
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jams
import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError
from cough_pipeline.bounds import PositiveFloat, PositiveInt, Probability, check_fields
from cough_pipeline.compat import import_scaper
from cough_pipeline.mixtures.errors import MixtureError
from cough_pipeline.mixtures.sources import PreparedSource, prepare_source, stage_for_scaper
from cough_pipeline.parallel import ProgressCallback, notify, process_map

SPLITS = ("train", "validation", "test")
COUGH_COLUMNS = ("path", "recording_id", "participant_id")
#: Cough-table columns copied into the events table when present (provenance of each event).
COUGH_PROVENANCE_COLUMNS = ("recording_id", "participant_id", "dataset")
NOISE_COLUMNS = ("path", "category")
#: Kept free between the end of a (stretched) cough and the end of the mixture, so float rounding can never push
#: an event past the end and make scaper move it.
END_MARGIN_S = 1e-3
COUGH_TOO_LONG = "cough_longer_than_mixture"
NOISE_TOO_SHORT = "noise_shorter_than_mixture"
#: Marks a split folder as written by this module, so it may be replaced on the next run.
OWNER_MARKER = ".cough_pipeline_mixtures"
REJECTED_COLUMNS = ["role", "path", "recording_id", "participant_id", "reason", "detail"]
MIXTURE_COLUMNS = [
    "mixture_id",
    "split",
    "mixture_index",
    "mixture_seed",
    "mixture_path",
    "cough_path",
    "noise_path",
    "jams_path",
    "duration_s",
    "sample_rate",
    "n_events",
    "noise_file",
    "noise_category",
    "noise_source",
    "noise_offset_s",
    "ref_db",
]
EVENT_COLUMNS = [
    "mixture_id",
    "event_index",
    "cough_file",
    "recording_id",
    "participant_id",
    "dataset",
    "cough_duration_s",
    "onset_s",
    "event_duration_s",
    "snr_db",
    "pitch_shift_applied",
    "pitch_shift_semitones",
    "time_stretch_applied",
    "time_stretch_factor",
]
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class MixtureProfile:
    """How many mixtures each split gets; :data:`PROFILES` holds the named ones."""

    train: int
    validation: int
    test: int

    def __post_init__(self) -> None:
        for split in SPLITS:
            value = getattr(self, split)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MixtureError(f"profile {split} count must be a non-negative integer, got {value!r}")

    def count(self, split: str) -> int:
        """The number of mixtures for ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise MixtureError(f"unknown split {split!r}; choose from {SPLITS}")
        return getattr(self, split)


#: demo: minutes on a laptop; modest: a real but quick run; paper: the published sizes (12,000 / 1,500 / 1,000).
PROFILES: dict[str, MixtureProfile] = {
    "demo": MixtureProfile(train=48, validation=12, test=12),
    "modest": MixtureProfile(train=600, validation=100, test=100),
    "paper": MixtureProfile(train=12_000, validation=1_500, test=1_000),
}


def _check_range(name: str, bounds: tuple[float, float], lowest: float = -np.inf, highest: float = np.inf) -> None:
    """Raise :class:`MixtureError` unless ``bounds`` is ``(low, high)`` with ``lowest <= low <= high <= highest``."""
    if (
        not isinstance(bounds, tuple)
        or len(bounds) != 2
        or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bounds)
    ):
        raise MixtureError(f"{name} must be a (low, high) tuple of finite numbers, got {bounds!r}")
    if not lowest <= bounds[0] <= bounds[1] <= highest:
        raise MixtureError(f"{name} must satisfy {lowest} <= low <= high <= {highest}, got {bounds!r}")


@dataclass(frozen=True)
class MixtureSpec:
    """What one mixture looks like; the defaults are the paper's settings. Ranges are uniform ``(low, high)``."""

    duration_s: PositiveFloat = 5.0
    sample_rate: PositiveInt = 44_100
    label: str = "cough"
    snr_db: tuple[float, float] = (-5.0, 5.0)
    pitch_shift_semitones: tuple[float, float] = (-2.0, 2.0)
    pitch_shift_probability: Probability = 0.5
    time_stretch_factor: tuple[float, float] = (0.9, 1.1)
    time_stretch_probability: Probability = 0.5
    #: Background loudness in LUFS (scaper's ``ref_db``), drawn per mixture: -50 dB +/- 3 dB.
    ref_db: tuple[float, float] = (-53.0, -47.0)
    #: Inclusive range of cough events per mixture.
    events_per_mixture: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        for name in ("duration_s", "sample_rate", "pitch_shift_probability", "time_stretch_probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise MixtureError(f"{name} must be a finite number, got {value!r}")
        if not isinstance(self.sample_rate, int):
            raise MixtureError(f"sample_rate must be an integer, got {self.sample_rate!r}")
        try:
            check_fields(self)
        except ValueError as error:
            raise MixtureError(str(error)) from None
        if not isinstance(self.label, str) or not _FOLDER_NAME.match(self.label):
            raise MixtureError(f"label must be a plain folder name such as 'cough', got {self.label!r}")
        _check_range("snr_db", self.snr_db)
        _check_range("pitch_shift_semitones", self.pitch_shift_semitones, -12.0, 12.0)
        _check_range("time_stretch_factor", self.time_stretch_factor, 1e-3)
        _check_range("ref_db", self.ref_db, highest=0.0)
        events = self.events_per_mixture
        if (
            not isinstance(events, tuple)
            or len(events) != 2
            or not all(isinstance(v, int) for v in events)
            or not 1 <= events[0] <= events[1]
        ):
            raise MixtureError(
                f"events_per_mixture must be (low, high) integers with 1 <= low <= high, "
                f"got {self.events_per_mixture!r}"
            )

    @property
    def longest_cough_s(self) -> float:
        """The longest cough that fits whole even at the largest time-stretch factor."""
        stretch = self.time_stretch_factor[1] if self.time_stretch_probability > 0 else 1.0
        return (self.duration_s - END_MARGIN_S) / max(stretch, 1.0)


@dataclass(frozen=True)
class CoughEventPlan:
    """One cough event, fully decided: which cough (index into the usable coughs) and how it is placed."""

    cough: int
    snr_db: float
    pitch_shift_semitones: float | None
    time_stretch_factor: float | None
    onset_s: float


@dataclass(frozen=True)
class MixturePlan:
    """One mixture, fully decided before any audio work; ``noise`` indexes the usable noise files."""

    mixture_id: str
    split: str
    index: int
    seed: int
    noise: int
    noise_offset_s: float
    ref_db: float
    events: tuple[CoughEventPlan, ...]


def mixture_seed(seed: int, split: str, index: int) -> int:
    """The 32-bit seed of mixture ``index`` of ``split``: a function of these three values only."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(split.encode("utf-8")), index])
    return int(sequence.generate_state(1)[0])


def _plan_event(
    rng: np.random.Generator, cough_durations: Sequence[float], spec: MixtureSpec, cough: int | None = None
) -> CoughEventPlan:
    """Draw one cough event: cough (unless given), SNR, pitch shift, time stretch, onset (always the same six
    draws, so fixing the cough leaves every other draw as it was)."""
    drawn = int(rng.integers(len(cough_durations)))
    cough = drawn if cough is None else cough
    snr_db = float(rng.uniform(*spec.snr_db))
    pitch_applied = bool(rng.random() < spec.pitch_shift_probability)
    semitones = float(rng.uniform(*spec.pitch_shift_semitones))
    stretch_applied = bool(rng.random() < spec.time_stretch_probability)
    factor = float(rng.uniform(*spec.time_stretch_factor))
    stretched_s = cough_durations[cough] * (factor if stretch_applied else 1.0)
    onset_s = float(rng.uniform(0.0, max(spec.duration_s - END_MARGIN_S - stretched_s, 0.0)))
    return CoughEventPlan(
        cough, snr_db, semitones if pitch_applied else None, factor if stretch_applied else None, onset_s
    )


def plan_mixture(
    split: str,
    index: int,
    seed: int,
    mixture_id: str,
    cough_durations: Sequence[float],
    noise_durations: Sequence[float],
    spec: MixtureSpec,
    cough: int | None = None,
) -> MixturePlan:
    """Every random choice of one mixture, from its own generator (noise, offset, level, event count, events);
    ``cough`` fixes the first event's cough (one mixture per cough)."""
    this_seed = mixture_seed(seed, split, index)
    rng = np.random.default_rng(this_seed)
    noise = int(rng.integers(len(noise_durations)))
    noise_offset_s = float(rng.uniform(0.0, max(noise_durations[noise] - spec.duration_s - END_MARGIN_S, 0.0)))
    ref_db = float(rng.uniform(*spec.ref_db))
    n_events = int(rng.integers(spec.events_per_mixture[0], spec.events_per_mixture[1] + 1))
    events = tuple(
        _plan_event(rng, cough_durations, spec, cough if number == 0 else None) for number in range(n_events)
    )
    return MixturePlan(mixture_id, split, index, this_seed, noise, noise_offset_s, ref_db, events)


@dataclass(frozen=True)
class SynthesisJob:
    """Everything a worker needs to render one planned mixture, as plain picklable values.

    ``events[i].cough`` indexes this job's ``cough_links``/``cough_durations`` (only the coughs this mixture
    uses travel to the worker, not the whole cough list).
    """

    mixture_id: str
    split: str
    seed: int
    noise_offset_s: float
    ref_db: float
    events: tuple[CoughEventPlan, ...]
    spec: MixtureSpec
    out_dir: str
    foreground_root: str
    background_root: str
    noise_label: str
    noise_link: str
    cough_links: tuple[str, ...]
    cough_durations: tuple[float, ...]
    provenance: dict


def output_paths(split: str, mixture_id: str) -> dict[str, str]:
    """The four files of a mixture, relative to ``out_dir``."""
    return {
        "mixture_path": f"{split}/mixture/{mixture_id}.wav",
        "cough_path": f"{split}/cough/{mixture_id}.wav",
        "noise_path": f"{split}/noise/{mixture_id}.wav",
        "jams_path": f"{split}/jams/{mixture_id}.jams",
    }


def _scaper_for(job: SynthesisJob):
    """A Scaper object holding the job's background and cough events as ``const`` tuples."""
    scaper = import_scaper()
    spec = job.spec
    soundscape = scaper.Scaper(
        spec.duration_s, job.foreground_root, job.background_root, protected_labels=[spec.label], random_state=job.seed
    )
    soundscape.sr = spec.sample_rate
    soundscape.n_channels = 1
    soundscape.ref_db = job.ref_db
    soundscape.add_background(
        label=("const", job.noise_label),
        source_file=("const", job.noise_link),
        source_time=("const", job.noise_offset_s),
    )
    for event in job.events:
        soundscape.add_event(
            label=("const", spec.label),
            source_file=("const", job.cough_links[event.cough]),
            source_time=("const", 0.0),
            event_time=("const", event.onset_s),
            event_duration=("const", job.cough_durations[event.cough]),
            snr=("const", event.snr_db),
            pitch_shift=None if event.pitch_shift_semitones is None else ("const", event.pitch_shift_semitones),
            time_stretch=None if event.time_stretch_factor is None else ("const", event.time_stretch_factor),
        )
    return scaper, soundscape


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write a PCM_32 wav (the subtype scaper uses) through an in-memory buffer.

    Same bytes as ``soundfile.write(path, ...)``, but libsndfile fsyncs every file it closes, which would make each
    mixture wait three times for the disk; a regenerable dataset does not need that.
    """
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, subtype="PCM_32", format="WAV")
    path.write_bytes(buffer.getbuffer())


def synthesise(job: SynthesisJob) -> None:
    """Render one mixture and write its mixture, cough, noise and JAMS files (see the module docstring)."""
    spec, root = job.spec, Path(job.out_dir)
    paths = output_paths(job.split, job.mixture_id)
    scaper, soundscape = _scaper_for(job)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scaper.scaper_warnings.ScaperWarning)
            mixture, jam, _, event_audio = soundscape.generate(audio_path=None, jams_path=None, fix_clipping=False)
    except (scaper.scaper_warnings.ScaperWarning, scaper.scaper_exceptions.ScaperError) as problem:
        raise MixtureError(f"scaper could not render {job.mixture_id} as planned: {problem}") from None
    annotation = jam.annotations.search(namespace="scaper")[0]
    roles = [observation.value["role"] for observation in annotation.data]
    sources = {
        "mixture_path": mixture,
        "cough_path": sum(audio for role, audio in zip(roles, event_audio) if role == "foreground"),
        "noise_path": sum(audio for role, audio in zip(roles, event_audio) if role == "background"),
    }
    for column, samples in sources.items():
        write_wav(root / paths[column], samples, spec.sample_rate)
    # scaper records the paths it wrote; the mixture was written here instead, so record it the same way.
    annotation.sandbox.scaper.audio_path = annotation.sandbox.scaper.soundscape_audio_path = str(
        root / paths["mixture_path"]
    )
    annotation.sandbox.cough_pipeline = jams.Sandbox(
        mixture_id=job.mixture_id, mixture_seed=job.seed, **paths, **job.provenance
    )
    with warnings.catch_warnings():
        # jams validates through a jsonschema call that jsonschema itself deprecates; nothing for us to act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="jsonschema")
        jam.save(str(root / paths["jams_path"]))


@dataclass(frozen=True)
class MixtureSet:
    """What :func:`generate_mixtures` returns.

    ``mixtures``: one row per mixture (files relative to ``out_dir``, noise file, offset, level, seed);
    ``events``: one row per cough event (source cough and its recording/participant, onset, durations, SNR, pitch
    shift and time stretch, applied or not); ``rejected``: coughs and noise files not used, with a reason.
    """

    mixtures: pd.DataFrame
    events: pd.DataFrame
    rejected: pd.DataFrame


def mixture_table(mixtures: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per mixture: ``mixtures`` plus a summary of its cough events.

    Args:
        mixtures: :attr:`MixtureSet.mixtures` rows (of one or several splits).
        events: the matching :attr:`MixtureSet.events` rows.

    Returns:
        ``mixtures`` (mixtures without events dropped) with ``recording_ids`` and ``participant_ids`` (the
        events' ids joined by ``;``, in event order) and the first event's ``snr_db``, ``pitch_shift_semitones``,
        ``time_stretch_factor`` and ``onset_s``.
    """
    first = ("snr_db", "pitch_shift_semitones", "time_stretch_factor", "onset_s")
    summary = events.groupby("mixture_id").agg(
        recording_ids=("recording_id", lambda s: ";".join(s)),
        participant_ids=("participant_id", lambda s: ";".join(s)),
        **{column: (column, "first") for column in first},
    )
    return mixtures.merge(summary.reset_index(), on="mixture_id")


def _validate_table(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    """Raise :class:`MixtureError` when ``table`` is empty, lacks columns, or names files that do not exist."""
    if not isinstance(table, pd.DataFrame):
        raise MixtureError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise MixtureError(f"{what} table lacks the columns {missing}; need {list(required)}")
    if table.empty:
        raise MixtureError(f"no {what} given: the {what} table is empty")
    if table["path"].isna().any():
        raise MixtureError(f"{what} table has rows without a path")
    absent = [str(path) for path in table["path"] if not Path(path).is_file()]
    if absent:
        raise MixtureError(f"{len(absent)} {what} file(s) not found, e.g. {absent[:3]}")


def _validate_request(
    coughs: pd.DataFrame, noise: pd.DataFrame, count: int, split: str, seed: int, spec: MixtureSpec, workers: int
) -> None:
    """Check every argument of :func:`generate_mixtures` before any work is done."""
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise MixtureError(f"count must be a non-negative integer, got {count!r}")
    if not isinstance(split, str) or not _FOLDER_NAME.match(split):
        raise MixtureError(f"split must be a plain folder name such as 'train', got {split!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise MixtureError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(spec, MixtureSpec):
        raise MixtureError(f"spec must be a MixtureSpec, got {type(spec).__name__}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise MixtureError(f"workers must be a positive integer, got {workers!r}")
    _validate_table(coughs, COUGH_COLUMNS, "cough")
    _validate_table(noise, NOISE_COLUMNS, "noise")
    labels = noise["category"].astype(str)
    if not labels.map(lambda label: bool(_FOLDER_NAME.match(label))).all():
        raise MixtureError(f"noise categories must be plain folder names, got {sorted(labels.unique())}")


def _fresh_split_folder(out_dir: Path, split: str) -> Path:
    """An empty ``<out_dir>/<split>/``; an earlier run's folder (with the owner marker) is replaced.

    A non-empty folder this module did not write is never deleted: that raises :class:`MixtureError`.
    """
    folder = out_dir / split
    if folder.exists():
        if not (folder / OWNER_MARKER).is_file() and any(folder.iterdir()):
            raise MixtureError(
                f"{folder} exists and was not written by cough_pipeline.mixtures; refusing to replace it"
            )
        shutil.rmtree(folder)
    for kind in ("mixture", "cough", "noise", "jams"):
        (folder / kind).mkdir(parents=True)
    (folder / OWNER_MARKER).write_text("written by cough_pipeline.mixtures.generate_mixtures\n", encoding="utf-8")
    return folder


def _prepare_or_reason(
    path: str, cache_dir: Path, sample_rate: int, trim_silence: bool
) -> PreparedSource | tuple[str, str]:
    """:func:`prepare_source`, or ``(reason, detail)`` when the file cannot be decoded (picklable either way)."""
    try:
        return prepare_source(path, cache_dir, sample_rate, trim_silence)
    except AudioDecodeError as error:
        return error.reason.value, error.detail


def _prepare_all(
    mapper: Callable, table: pd.DataFrame, cache_dir: Path, sample_rate: int, trim_silence: bool
) -> dict[str, PreparedSource | tuple[str, str]]:
    """Each distinct path of ``table`` -> its prepared source or rejection, converted in the worker pool."""
    paths = sorted(set(map(str, table["path"])))
    prepare = partial(_prepare_or_reason, cache_dir=cache_dir, sample_rate=sample_rate, trim_silence=trim_silence)
    return dict(zip(paths, mapper(prepare, paths, chunksize=8)))


def _rejection(role: str, row: dict, reason: str, detail: str) -> dict:
    """One row of the rejected table."""
    return {
        "role": role,
        "path": str(row["path"]),
        "recording_id": row.get("recording_id"),
        "participant_id": row.get("participant_id"),
        "reason": reason,
        "detail": detail,
    }


def _usable_sources(
    table: pd.DataFrame,
    role: str,
    prepared: dict[str, PreparedSource | tuple[str, str]],
    fits: Callable[[float], bool],
    misfit_reason: str,
    misfit_detail: str,
) -> tuple[list[tuple[dict, PreparedSource]], list[dict]]:
    """Split ``table`` rows into (row, prepared source) pairs that can be used, and rejected rows."""
    usable, rejected = [], []
    for row in table.to_dict("records"):
        outcome = prepared[str(row["path"])]
        if isinstance(outcome, tuple):
            rejected.append(_rejection(role, row, *outcome))
        elif not fits(outcome.duration_s):
            rejected.append(_rejection(role, row, misfit_reason, misfit_detail.format(outcome.duration_s)))
        else:
            usable.append((row, outcome))
    return usable, rejected


def _usable_and_rejected(
    mapper: Callable, coughs: pd.DataFrame, noise: pd.DataFrame, cache_dir: Path, spec: MixtureSpec
) -> tuple[list, list, pd.DataFrame]:
    """Prepare every source; return the usable (row, source) coughs and noise files and the rejected table.

    Raises :class:`MixtureError` when no cough or no noise file is usable.
    """
    usable_coughs, rejected_coughs = _usable_sources(
        coughs,
        "cough",
        _prepare_all(mapper, coughs, cache_dir, spec.sample_rate, trim_silence=True),
        lambda duration: duration <= spec.longest_cough_s,
        COUGH_TOO_LONG,
        "{:.3f} s does not fit whole in the mixture at the largest time stretch "
        f"(at most {spec.longest_cough_s:.3f} s)",
    )
    usable_noise, rejected_noise = _usable_sources(
        noise,
        "noise",
        _prepare_all(mapper, noise, cache_dir, spec.sample_rate, trim_silence=False),
        lambda duration: duration >= spec.duration_s,
        NOISE_TOO_SHORT,
        "{:.3f} s is shorter than the " + f"{spec.duration_s} s mixture",
    )
    rejected = pd.DataFrame(rejected_coughs + rejected_noise, columns=REJECTED_COLUMNS)
    for role, usable in (("cough", usable_coughs), ("noise", usable_noise)):
        if not usable:
            reasons = rejected[rejected["role"] == role]["reason"].value_counts().to_dict()
            raise MixtureError(f"no usable {role} file: all were rejected ({reasons})")
    return usable_coughs, usable_noise, rejected


def _stage_noise(root: Path, noise: list[tuple[dict, PreparedSource]]) -> list[str]:
    """Symlink the usable noise files by category for scaper; returns each file's link, in input order."""
    links: list[str] = [""] * len(noise)
    categories = sorted({str(row["category"]) for row, _ in noise})
    for category in categories:
        positions = [i for i, (row, _) in enumerate(noise) if str(row["category"]) == category]
        staged = stage_for_scaper(root, category, [noise[i][1].prepared for i in positions])
        for position, link in zip(positions, staged):
            links[position] = link
    return links


def _mixture_row(plan: MixturePlan, spec: MixtureSpec, noise_row: dict) -> dict:
    """The mixtures-table row of ``plan``."""
    return {
        "mixture_id": plan.mixture_id,
        "split": plan.split,
        "mixture_index": plan.index,
        "mixture_seed": plan.seed,
        **output_paths(plan.split, plan.mixture_id),
        "duration_s": spec.duration_s,
        "sample_rate": spec.sample_rate,
        "n_events": len(plan.events),
        "noise_file": str(noise_row["path"]),
        "noise_category": str(noise_row["category"]),
        "noise_source": noise_row.get("source"),
        "noise_offset_s": plan.noise_offset_s,
        "ref_db": plan.ref_db,
    }


def _event_rows(plan: MixturePlan, coughs: list[tuple[dict, PreparedSource]]) -> list[dict]:
    """The events-table rows of ``plan``, one per cough event."""
    rows = []
    for number, event in enumerate(plan.events):
        row, source = coughs[event.cough]
        factor = event.time_stretch_factor
        rows.append(
            {
                "mixture_id": plan.mixture_id,
                "event_index": number,
                "cough_file": str(row["path"]),
                **{column: row.get(column) for column in COUGH_PROVENANCE_COLUMNS},
                "cough_duration_s": source.duration_s,
                "onset_s": event.onset_s,
                "event_duration_s": source.duration_s * (factor or 1.0),
                "snr_db": event.snr_db,
                "pitch_shift_applied": event.pitch_shift_semitones is not None,
                "pitch_shift_semitones": event.pitch_shift_semitones,
                "time_stretch_applied": factor is not None,
                "time_stretch_factor": factor,
            }
        )
    return rows


def _jobs(
    plans: list[MixturePlan],
    spec: MixtureSpec,
    out_dir: Path,
    split_dir: Path,
    coughs: list[tuple[dict, PreparedSource]],
    cough_links: list[str],
    noise: list[tuple[dict, PreparedSource]],
    noise_links: list[str],
) -> Iterator[SynthesisJob]:
    """One :class:`SynthesisJob` per plan, each carrying only the cough links its mixture uses."""
    for plan in plans:
        used = sorted({event.cough for event in plan.events})
        position = {cough: number for number, cough in enumerate(used)}
        events = tuple(
            CoughEventPlan(position[e.cough], e.snr_db, e.pitch_shift_semitones, e.time_stretch_factor, e.onset_s)
            for e in plan.events
        )
        noise_row = noise[plan.noise][0]
        provenance = {
            "noise_file": str(noise_row["path"]),
            "cough_files": [str(coughs[e.cough][0]["path"]) for e in plan.events],
            "cough_recording_ids": [str(coughs[e.cough][0]["recording_id"]) for e in plan.events],
        }
        yield SynthesisJob(
            mixture_id=plan.mixture_id,
            split=plan.split,
            seed=plan.seed,
            noise_offset_s=plan.noise_offset_s,
            ref_db=plan.ref_db,
            events=events,
            spec=spec,
            out_dir=str(out_dir),
            foreground_root=str(split_dir / "scaper_sources" / "foreground"),
            background_root=str(split_dir / "scaper_sources" / "background"),
            noise_label=str(noise_row["category"]),
            noise_link=noise_links[plan.noise],
            cough_links=tuple(cough_links[c] for c in used),
            cough_durations=tuple(coughs[c][1].duration_s for c in used),
            provenance=provenance,
        )


def _plans(
    split: str,
    count: int,
    seed: int,
    coughs: list[tuple[dict, PreparedSource]],
    noise: list[tuple[dict, PreparedSource]],
    spec: MixtureSpec,
    one_per_cough: bool,
) -> list[MixturePlan]:
    """The ``count`` mixture plans of ``split`` (mixture ``index`` on cough ``index`` with ``one_per_cough``)."""
    width = max(5, len(str(max(count - 1, 0))))
    cough_durations = [source.duration_s for _, source in coughs]
    noise_durations = [source.duration_s for _, source in noise]
    return [
        plan_mixture(
            split,
            index,
            seed,
            f"{split}-{index:0{width}d}",
            cough_durations,
            noise_durations,
            spec,
            cough=index if one_per_cough else None,
        )
        for index in range(count)
    ]


def generate_mixtures(
    coughs: pd.DataFrame,
    noise: pd.DataFrame,
    count: int,
    split: str,
    out_dir: str | Path,
    seed: int = 0,
    spec: MixtureSpec | None = None,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
    one_per_cough: bool = False,
) -> MixtureSet:
    """Write ``count`` mixtures of ``coughs`` over ``noise`` (one split of the noise bank) under ``out_dir/split``.

    ``coughs`` needs ``path``, ``recording_id`` and ``participant_id`` (``dataset`` is carried along when present);
    ``noise`` needs ``path`` and ``category`` (a :func:`~cough_pipeline.mixtures.noise_bank.load_noise_bank` table).
    Converted sources are cached in ``cache_dir`` (default ``out_dir/source_cache``) and reused across splits and
    runs. With ``one_per_cough`` every usable cough gets exactly one mixture (``count`` is then ignored): the way
    the classification subset's coughs are mixed. ``<out_dir>/<split>/`` is replaced when an earlier run wrote it.
    ``on_progress(done, total)`` is called after every mixture written. Raises :class:`MixtureError` for any
    invalid input, before writing anything, and when no cough or no noise file is usable after decoding.
    """
    spec = MixtureSpec() if spec is None else spec
    _validate_request(coughs, noise, count, split, seed, spec, workers)
    out_dir = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir is not None else out_dir / "source_cache"
    split_dir = _fresh_split_folder(out_dir, split)
    with process_map(workers) as mapper:
        usable_coughs, usable_noise, rejected = _usable_and_rejected(mapper, coughs, noise, cache, spec)
        cough_links = stage_for_scaper(
            split_dir / "scaper_sources" / "foreground", spec.label, [source.prepared for _, source in usable_coughs]
        )
        noise_links = _stage_noise(split_dir / "scaper_sources" / "background", usable_noise)
        count = len(usable_coughs) if one_per_cough else count
        plans = _plans(split, count, seed, usable_coughs, usable_noise, spec, one_per_cough)
        jobs = _jobs(plans, spec, out_dir, split_dir, usable_coughs, cough_links, usable_noise, noise_links)
        chunksize = max(1, min(16, count // (8 * workers)))
        for done, _ in enumerate(mapper(synthesise, jobs, chunksize=chunksize), start=1):
            notify(on_progress, done, count)
    mixtures = pd.DataFrame(
        [_mixture_row(plan, spec, usable_noise[plan.noise][0]) for plan in plans], columns=MIXTURE_COLUMNS
    )
    events = pd.DataFrame([row for plan in plans for row in _event_rows(plan, usable_coughs)], columns=EVENT_COLUMNS)
    events = events.astype({"pitch_shift_semitones": "float64", "time_stretch_factor": "float64"})
    return MixtureSet(mixtures=mixtures, events=events, rejected=rejected)
