"""ICBHI 2017 recording and cycle tables, with a configurable rule from cycle annotations to a lung-sound label.

:func:`build_icbhi_tables` reads the official or the Kaggle layout (:func:`cough_pipeline.datasets.icbhi.
find_layout`) from metadata and annotation files alone; WAVs are optional and only their headers are read.

Outputs (column contract shared with the EDA and preprocessing code):

* ``recordings``: one row per kept annotation file, :data:`RECORDING_COLUMNS`.
* ``cycles``: one row per kept annotation line (a respiratory cycle), :data:`CYCLE_COLUMNS`. ``cycle`` is the
  0-based order of the line among the file's non-blank lines, so a quarantined line leaves a gap.
* ``quarantine``: :func:`cough_pipeline.schema.quarantine_frame` rows. ``source_row`` is the 1-based physical
  line of the annotation file for a line that was not kept, and null for a file-level row.

Bad input is never dropped silently:

* a WAV without an annotation file: ``annotation_missing`` (nothing else of it is kept);
* an annotation line with the wrong field count or non-numbers: ``annotation_unparseable``; negative onset,
  offset <= onset, flags other than 0/1, or an offset beyond the WAV's duration plus
  :data:`DURATION_TOLERANCE_S`: ``annotation_out_of_range``. The recording keeps its other cycles and counts
  the dropped ones in ``cycles_quarantined``; overlapping cycles are allowed (the source has them);
* an annotation file without any valid line: ``no_valid_cycles`` (its bad lines keep their own rows);
* a patient missing from the diagnosis file or a diagnosis outside ``DIAGNOSES``: ``unknown_diagnosis``;
  a file name that is not ``<patient>_<index>_<chest>_<mode>_<device>``: ``invalid_value``. For these two
  file-level reasons every valid line of the file also gets a row with the same reason, so that each
  annotation line is either a cycle or a quarantine row;
* a patient without demographics (no line, or age and sex ``NA`` like patient 223) is KEPT with null age/sex
  and ``demographics_known=False``: the statistics exclude such rows per test and count them;
* a WAV that cannot be read (``audio_unreadable``, ``audio_empty``, ``audio_no_samples``): the recording is
  KEPT for the statistics, because its annotations and metadata are intact, with ``audio_present=False``,
  null ``audio_path``/``sample_rate`` and the duration from the annotations; the quarantine row (``source_row``
  null, ``audio_path`` set) records the file and that its audio was excluded.

:attr:`IcbhiTables.counts` holds the bookkeeping, with the invariants annotation files = recordings kept +
recordings quarantined and annotation lines = cycles kept + cycles quarantined (:attr:`IcbhiTables.accounted`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.audio import declared_frames
from cough_pipeline.datasets.icbhi import (
    DIAGNOSES,
    NAME,
    AnnotationLine,
    IcbhiLayout,
    find_layout,
    parse_annotation,
    read_demographics,
    read_diagnoses,
    read_split,
)
from cough_pipeline.schema import ManifestSchemaError, QuarantineReason, quarantine_frame

DATASET = "icbhi"
#: Lung-sound labels, in the order every table and plot uses.
LUNG_LABELS: tuple[str, ...] = ("normal", "crackles", "wheezes", "both")
#: An annotated offset may pass the WAV's end by this much (seconds) before the cycle is out of range.
DURATION_TOLERANCE_S = 0.5
DURATION_SOURCES = ("wav", "annotations")
#: Quarantine reasons of a kept recording's unreadable WAV (the recording stays, its audio is excluded).
AUDIO_REASONS = (
    QuarantineReason.AUDIO_UNREADABLE.value,
    QuarantineReason.AUDIO_EMPTY.value,
    QuarantineReason.AUDIO_NO_SAMPLES.value,
    QuarantineReason.AUDIO_TRUNCATED.value,
)

#: Column -> pandas dtype of the recordings table, in order.
RECORDING_COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "stem": "string",
    "patient_id": "string",
    "diagnosis": "string",
    "age": "float64",
    "sex": "string",
    "adult_bmi": "float64",
    "child_weight_kg": "float64",
    "child_height_cm": "float64",
    "demographics_known": "bool",
    "recording_index": "string",
    "chest_location": "string",
    "acquisition_mode": "string",
    "device": "string",
    "official_split": "string",
    "audio_path": "string",
    "audio_present": "bool",
    "sample_rate": "Int64",
    "duration_s": "float64",
    "duration_source": "string",
    "n_cycles": "int64",
    "n_normal": "int64",
    "n_crackles_only": "int64",
    "n_wheezes_only": "int64",
    "n_both": "int64",
    "cycles_quarantined": "int64",
    "lung_label": "string",
    "label_rule": "string",
}
#: Column -> pandas dtype of the cycles table, in order.
CYCLE_COLUMNS: dict[str, str] = {
    "recording_id": "string",
    "patient_id": "string",
    "cycle": "int64",
    "onset_s": "float64",
    "offset_s": "float64",
    "duration_s": "float64",
    "crackles": "int64",
    "wheezes": "int64",
    "cycle_label": "string",
    "diagnosis": "string",
    "age": "float64",
    "sex": "string",
    "official_split": "string",
}


@dataclass(frozen=True)
class CycleCounts:
    """How many of a recording's (or patient's) cycles carry each combination of flags."""

    normal: int = 0
    crackles_only: int = 0
    wheezes_only: int = 0
    both: int = 0

    @property
    def total(self) -> int:
        return self.normal + self.crackles_only + self.wheezes_only + self.both

    @property
    def with_crackles(self) -> int:
        """Cycles with crackles, with or without wheezes."""
        return self.crackles_only + self.both

    @property
    def with_wheezes(self) -> int:
        """Cycles with wheezes, with or without crackles."""
        return self.wheezes_only + self.both

    @classmethod
    def from_flags(cls, crackles, wheezes) -> CycleCounts:
        """From per-cycle 0/1 flags, two arrays of shape (cycles,)."""
        c, w = np.asarray(crackles, dtype=bool), np.asarray(wheezes, dtype=bool)
        return cls(int((~c & ~w).sum()), int((c & ~w).sum()), int((~c & w).sum()), int((c & w).sum()))

    def __add__(self, other: CycleCounts) -> CycleCounts:
        return CycleCounts(
            self.normal + other.normal,
            self.crackles_only + other.crackles_only,
            self.wheezes_only + other.wheezes_only,
            self.both + other.both,
        )


def flags_label(crackles: bool, wheezes: bool) -> str:
    """The lung-sound label of a pair of flags: both, crackles, wheezes or normal."""
    return ("both" if wheezes else "crackles") if crackles else ("wheezes" if wheezes else "normal")


def cycle_labels(crackles, wheezes) -> np.ndarray:
    """Per-cycle labels (object array of shape (cycles,)) from 0/1 flag arrays."""
    c, w = np.asarray(crackles, dtype=bool), np.asarray(wheezes, dtype=bool)
    return np.array(LUNG_LABELS, dtype=object)[c.astype(int) + 2 * w.astype(int)]


def label_any(counts: CycleCounts) -> str:
    """ "any": crackles if any cycle has crackles, wheezes if any has wheezes, both if both flags are set.

    This is the convention of the ICBHI literature and SOURCE.md (Crackles 297, Normal 287, Both 202,
    Wheezes 134 on the 920 recordings)."""
    return flags_label(counts.with_crackles > 0, counts.with_wheezes > 0)


def label_majority(counts: CycleCounts) -> str:
    """ "majority": a flag is set when strictly more than half of the cycles carry that sound (a "both" cycle
    counts for crackles and for wheezes); both flags set gives both."""
    return flags_label(2 * counts.with_crackles > counts.total, 2 * counts.with_wheezes > counts.total)


#: Tie-break of :func:`label_dominant`, first wins: "both" spans the tied sounds, and crackles are the more
#: frequent adventitious sound in ICBHI (1864 crackle-only against 886 wheeze-only cycles).
DOMINANT_PRIORITY: tuple[str, ...] = ("both", "crackles", "wheezes")


def label_dominant(counts: CycleCounts) -> str:
    """ "dominant": the most frequent abnormal cycle label among crackles-only, wheezes-only and both cycles;
    normal when no cycle is abnormal. Ties go to the first in :data:`DOMINANT_PRIORITY`."""
    tally = {"both": counts.both, "crackles": counts.crackles_only, "wheezes": counts.wheezes_only}
    if not any(tally.values()):
        return "normal"
    top = max(tally.values())
    return next(label for label in DOMINANT_PRIORITY if tally[label] == top)


#: How a recording's cycle annotations become its lung-sound label (see :data:`LABEL_RULES`).
LabelRule = Literal["any", "majority", "dominant"]
#: Rule name (each :data:`LabelRule` choice) -> function from a recording's :class:`CycleCounts` to its label.
LABEL_RULES: dict[str, Callable[[CycleCounts], str]] = {
    "any": label_any,
    "majority": label_majority,
    "dominant": label_dominant,
}


def lung_label(counts: CycleCounts, rule: LabelRule = "any") -> str:
    """The lung-sound label of a set of cycles under ``rule`` (a key of :data:`LABEL_RULES`)."""
    return _rule(rule)(counts)


def _rule(rule: str) -> Callable[[CycleCounts], str]:
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r}; choose one of {list(LABEL_RULES)}")
    return LABEL_RULES[rule]


@dataclass
class IcbhiTables:
    """The recordings, cycles and quarantine tables of one ICBHI root, plus their bookkeeping ``counts``:

    annotation_files, recordings_kept, recordings_quarantined; annotation_lines, cycles_kept,
    cycles_quarantined; wav_files, wavs_without_annotation, audio_read (durations taken from WAV headers),
    audio_quarantined (unreadable WAVs of kept recordings); patients; recordings_without_demographics.
    """

    recordings: pd.DataFrame
    cycles: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        """Every annotation file is a recording or quarantined, every annotation line a cycle or quarantined,
        and the quarantine table holds one file-level row per quarantined recording and one row per dropped
        line."""
        c, q = self.counts, self.quarantine
        file_rows = q["source_row"].isna() & q["source_file"].notna() & ~q["reason"].isin(AUDIO_REASONS)
        return (
            c["annotation_files"] == len(self.recordings) + c["recordings_quarantined"]
            and c["recordings_quarantined"] == int(file_rows.sum())
            and c["annotation_lines"] == len(self.cycles) + c["cycles_quarantined"]
            and c["cycles_quarantined"] == int(q["source_row"].notna().sum())
        )


#: Bookkeeping counts collected while walking the files (:attr:`IcbhiTables.counts` adds patient counts).
WALK_COUNTS = (
    "annotation_files",
    "recordings_kept",
    "recordings_quarantined",
    "annotation_lines",
    "cycles_kept",
    "cycles_quarantined",
    "wav_files",
    "wavs_without_annotation",
    "audio_read",
    "audio_quarantined",
)


@dataclass(frozen=True)
class _Sources:
    """What every annotation file is read against: the layout, the metadata files and the label rule."""

    layout: IcbhiLayout
    diagnoses: dict[str, str]
    demographics: dict[str, dict]
    splits: dict[str, str]
    label_rule: LabelRule
    read_audio: bool

    @classmethod
    def read(cls, layout: IcbhiLayout, label_rule: LabelRule, read_audio: bool) -> _Sources:
        return cls(
            layout,
            read_diagnoses(layout.diagnosis),
            read_demographics(layout.demographics),
            read_split(layout.split),
            label_rule,
            read_audio,
        )

    def split_of(self, stem: str) -> str | None:
        """The official split of a recording, listed under its stem or under its stem without the device."""
        return self.splits.get(stem) or self.splits.get(stem.rsplit("_", 1)[0])


@dataclass
class _Build:
    """Rows and bookkeeping counts collected while walking the files."""

    folder: str
    recordings: list[dict] = field(default_factory=list)
    cycles: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WALK_COUNTS, 0))

    def reject(
        self,
        stem: str,
        reason: QuarantineReason,
        detail: str,
        *,
        audio_path: str | None,
        annotated: bool,
        line: int | None = None,
    ) -> None:
        self.quarantine.append(
            {
                "dataset": DATASET,
                "recording_id": f"{DATASET}:{stem}",
                "native_id": stem,
                "audio_path": audio_path,
                "reason": reason.value,
                "detail": detail,
                "source_file": f"{self.folder}/{stem}.txt" if annotated else None,
                "source_row": line,
            }
        )

    def reject_line(
        self, stem: str, line: AnnotationLine, reason: QuarantineReason, detail: str, audio_path: str | None
    ) -> None:
        where = f"{self.folder}/{stem}.txt line {line.line}"
        self.reject(
            stem, reason, f"{where}: {detail}: {line.text!r}", audio_path=audio_path, annotated=True, line=line.line
        )


def _probe_wav(path: Path) -> tuple[int, float] | tuple[QuarantineReason, str]:
    """(sample rate, duration in s) from the WAV header, or (quarantine reason, detail)."""
    try:
        info = sf.info(str(path))
    except RuntimeError as error:  # soundfile's LibsndfileError is a RuntimeError
        if path.stat().st_size == 0:
            return QuarantineReason.AUDIO_EMPTY, "zero-byte file"
        return QuarantineReason.AUDIO_UNREADABLE, f"soundfile cannot read the header: {error}"
    declared = declared_frames(path)
    if declared is not None and info.samplerate > 0 and info.frames < declared:  # libsndfile counts what is there
        return QuarantineReason.AUDIO_TRUNCATED, (
            f"header declares {declared} frames "
            f"({declared / info.samplerate:.3f} s), file holds {info.frames} "
            f"({info.frames / info.samplerate:.3f} s)"
        )
    if info.frames <= 0 or info.samplerate <= 0:
        return QuarantineReason.AUDIO_NO_SAMPLES, f"header declares {info.frames} frames at {info.samplerate} Hz"
    return int(info.samplerate), info.frames / info.samplerate


def _person(patient: str, demographics: dict[str, dict], source: str) -> dict:
    """Age, sex, BMI and child measures of a patient (nulls when unknown) plus ``demographics_known``."""
    person = dict(demographics.get(patient) or {})
    sex = person.get("sex")
    if sex is not None:
        sex = sex.upper()
        if sex not in ("M", "F"):
            raise ManifestSchemaError(f"icbhi: {source}: sex {person['sex']!r} for patient {patient} is not M/F/NA")
    return {
        "age": person.get("age"),
        "sex": sex,
        "adult_bmi": person.get("adult_bmi"),
        "child_weight_kg": person.get("child_weight_kg"),
        "child_height_cm": person.get("child_height_cm"),
        # Known means usable by every demographic test: age and sex both present (patient 223 has a line of NAs).
        "demographics_known": person.get("age") is not None and sex is not None,
    }


def build_icbhi_tables(root: str | Path, label_rule: LabelRule = "any", read_audio: bool = True) -> IcbhiTables:
    """Recordings, cycles and quarantine of the ICBHI layout under ``root`` (see the module docstring).

    label_rule: a key of :data:`LABEL_RULES`. read_audio: read WAV headers for sample rate and duration (and
    check cycle offsets against the duration); with ``False`` no WAV is opened, durations come from the
    annotations and ``audio_present``/``audio_path`` still say whether the file exists.
    Durations are in seconds.
    """
    _rule(label_rule)
    root = Path(root)
    layout = find_layout(root)
    sources = _Sources.read(layout, label_rule, read_audio)
    build = _Build(layout.recordings.relative_to(root).as_posix())
    wavs = {path.stem for path in layout.recordings.glob("*.wav")}
    # Other .txt files (the official second release's <name>_events.txt) are not cycle annotations.
    annotated = {path.stem for path in layout.recordings.glob("*.txt") if NAME.match(path.stem) or path.stem in wavs}
    build.counts.update(annotation_files=len(annotated), wav_files=len(wavs))
    for stem in sorted(wavs - annotated):
        _reject_unannotated(build, stem)
    for stem in sorted(annotated):
        _add_recording(build, sources, stem, stem in wavs)
    recordings = _typed(build.recordings, RECORDING_COLUMNS)
    cycles = _typed(build.cycles, CYCLE_COLUMNS)
    quarantine = quarantine_frame(build.quarantine)
    counts = dict(build.counts)
    counts.update(
        recordings_kept=len(recordings),
        cycles_kept=len(cycles),
        cycles_quarantined=int(quarantine["source_row"].notna().sum()),
        patients=int(recordings["patient_id"].nunique()),
        recordings_without_demographics=int((~recordings["demographics_known"]).sum()),
    )
    return IcbhiTables(recordings, cycles, quarantine, counts)


def _reject_unannotated(build: _Build, stem: str) -> None:
    """Quarantine a WAV that has no annotation file."""
    wav = f"{build.folder}/{stem}.wav"
    build.reject(
        stem,
        QuarantineReason.ANNOTATION_MISSING,
        f"{wav} has no annotation file {stem}.txt",
        audio_path=wav,
        annotated=False,
    )
    build.counts["wavs_without_annotation"] += 1


@dataclass(frozen=True)
class _Recording:
    """A recording whose annotation file passed the file-level checks, with the cycles it keeps."""

    stem: str
    name: re.Match
    diagnosis: str
    audio_path: str | None
    sample_rate: int | None
    wav_duration: float | None
    kept: list[AnnotationLine]
    quarantined_lines: int

    @property
    def patient(self) -> str:
        return self.name["patient"]

    @property
    def recording_id(self) -> str:
        return f"{DATASET}:{self.stem}"


def _add_recording(build: _Build, sources: _Sources, stem: str, has_wav: bool) -> None:
    """Parse one annotation file and append its recording and cycles, or its quarantine rows."""
    audio_path = f"{build.folder}/{stem}.wav" if has_wav else None
    lines = parse_annotation((sources.layout.recordings / f"{stem}.txt").read_text())
    build.counts["annotation_lines"] += len(lines)
    name = NAME.match(stem)
    problem = _file_problem(name, sources)
    if problem is not None:
        _reject_file(build, stem, lines, problem, audio_path)
        return
    sample_rate, wav_duration, audio_problem = None, None, None
    if has_wav and sources.read_audio:
        probe = _probe_wav(sources.layout.recordings / f"{stem}.wav")
        if isinstance(probe[0], QuarantineReason):
            audio_problem = probe
        else:
            sample_rate, wav_duration = probe
    kept = _kept_lines(build, stem, lines, wav_duration, audio_path)
    if not kept:
        build.reject(
            stem,
            QuarantineReason.NO_VALID_CYCLES,
            f"{build.folder}/{stem}.txt has no valid cycle ({len(lines)} non-blank lines, all quarantined)",
            audio_path=audio_path,
            annotated=True,
        )
        build.counts["recordings_quarantined"] += 1
        return
    if audio_problem is not None:
        reason, detail = audio_problem
        build.reject(
            stem,
            reason,
            f"{detail}; recording kept for statistics without audio, duration from annotations",
            audio_path=audio_path,
            annotated=True,
        )
        build.counts["audio_quarantined"] += 1
        audio_path = None
    elif wav_duration is not None:
        build.counts["audio_read"] += 1
    diagnosis = sources.diagnoses[name["patient"]]
    recording = _Recording(stem, name, diagnosis, audio_path, sample_rate, wav_duration, kept, len(lines) - len(kept))
    _append_recording(build, sources, recording)


def _file_problem(name: re.Match | None, sources: _Sources) -> tuple[QuarantineReason, str] | None:
    """Why a whole annotation file is unusable (its name, its patient's diagnosis), or ``None``."""
    if name is None:
        return QuarantineReason.INVALID_VALUE, "file name is not <patient>_<index>_<chest>_<sc|mc>_<device>"
    patient = name["patient"]
    diagnosis = sources.diagnoses.get(patient)
    if diagnosis is None:
        return QuarantineReason.UNKNOWN_DIAGNOSIS, f"patient {patient} has no line in {sources.layout.diagnosis.name}"
    if diagnosis not in DIAGNOSES:
        return (
            QuarantineReason.UNKNOWN_DIAGNOSIS,
            f"diagnosis {diagnosis!r} of patient {patient} is not one of {list(DIAGNOSES)}",
        )
    return None


def _reject_file(
    build: _Build,
    stem: str,
    lines: list[AnnotationLine],
    problem: tuple[QuarantineReason, str],
    audio_path: str | None,
) -> None:
    """Quarantine an annotation file and every one of its lines (a bad line keeps its own reason)."""
    reason, detail = problem
    build.reject(
        stem,
        reason,
        f"{detail} ({len(lines)} annotation lines dropped with it)",
        audio_path=audio_path,
        annotated=True,
    )
    for line in lines:
        if line.problem is not None:
            build.reject_line(stem, line, line.problem, line.detail, audio_path)
        else:
            build.reject_line(stem, line, reason, f"dropped with its recording: {detail}", audio_path)
    build.counts["recordings_quarantined"] += 1


def _kept_lines(
    build: _Build, stem: str, lines: list[AnnotationLine], wav_duration: float | None, audio_path: str | None
) -> list[AnnotationLine]:
    """The valid lines of a file within the WAV's duration; the others are quarantined."""
    kept: list[AnnotationLine] = []
    for line in lines:
        if line.problem is not None:
            build.reject_line(stem, line, line.problem, line.detail, audio_path)
        elif wav_duration is not None and line.offset_s > wav_duration + DURATION_TOLERANCE_S:
            build.reject_line(
                stem,
                line,
                QuarantineReason.ANNOTATION_OUT_OF_RANGE,
                f"offset {line.offset_s} s is beyond the WAV's {wav_duration:.3f} s "
                f"(+{DURATION_TOLERANCE_S} s tolerance)",
                audio_path,
            )
        else:
            kept.append(line)
    return kept


def _append_recording(build: _Build, sources: _Sources, recording: _Recording) -> None:
    """Append the recording row and one cycle row per kept line."""
    person = _person(recording.patient, sources.demographics, sources.layout.demographics.name)
    split = sources.split_of(recording.stem)
    kept = recording.kept
    crackles = np.array([line.crackles for line in kept])
    wheezes = np.array([line.wheezes for line in kept])
    for line, label in zip(kept, cycle_labels(crackles, wheezes)):
        build.cycles.append(
            {
                "recording_id": recording.recording_id,
                "patient_id": recording.patient,
                "cycle": line.cycle,
                "onset_s": line.onset_s,
                "offset_s": line.offset_s,
                "duration_s": line.offset_s - line.onset_s,
                "crackles": line.crackles,
                "wheezes": line.wheezes,
                "cycle_label": label,
                "diagnosis": recording.diagnosis,
                "age": person["age"],
                "sex": person["sex"],
                "official_split": split,
            }
        )
    tally = CycleCounts.from_flags(crackles, wheezes)
    build.recordings.append(_recording_row(recording, person, split, tally, sources.label_rule))


def _recording_row(recording: _Recording, person: dict, split: str | None, tally: CycleCounts, rule: str) -> dict:
    """One row of the recordings table (:data:`RECORDING_COLUMNS`)."""
    name, wav_duration = recording.name, recording.wav_duration
    return {
        "recording_id": recording.recording_id,
        "stem": recording.stem,
        "patient_id": recording.patient,
        "diagnosis": recording.diagnosis,
        **person,
        "recording_index": name["index"],
        "chest_location": name["chest"],
        "acquisition_mode": name["mode"],
        "device": name["device"],
        "official_split": split,
        "audio_path": recording.audio_path,
        "audio_present": recording.audio_path is not None,
        "sample_rate": recording.sample_rate,
        # Without a readable WAV the last annotated offset is the best lower bound of the recording's length.
        "duration_s": wav_duration if wav_duration is not None else max(line.offset_s for line in recording.kept),
        "duration_source": "wav" if wav_duration is not None else "annotations",
        "n_cycles": tally.total,
        "n_normal": tally.normal,
        "n_crackles_only": tally.crackles_only,
        "n_wheezes_only": tally.wheezes_only,
        "n_both": tally.both,
        "cycles_quarantined": recording.quarantined_lines,
        "lung_label": LABEL_RULES[rule](tally),
        "label_rule": rule,
    }


def _typed(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly ``columns`` in order and their dtypes (``None`` stays missing)."""
    frame = pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))
    for column, dtype in columns.items():
        values = frame[column].astype(object)
        if dtype == "float64":
            frame[column] = pd.to_numeric(values, errors="raise").astype(np.float64)
        else:
            frame[column] = values.where(values.notna(), None).astype(dtype)
    return frame
