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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.audio import declared_frames
from cough_pipeline.datasets.icbhi import (
    DIAGNOSES,
    NAME,
    AnnotationLine,
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


#: Rule name -> function from a recording's :class:`CycleCounts` to its lung-sound label.
LABEL_RULES: dict[str, Callable[[CycleCounts], str]] = {
    "any": label_any,
    "majority": label_majority,
    "dominant": label_dominant,
}


def lung_label(counts: CycleCounts, rule: str = "any") -> str:
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


@dataclass
class _Build:
    """Rows collected while walking the files."""

    folder: str
    recordings: list[dict] = field(default_factory=list)
    cycles: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)

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


def build_icbhi_tables(root: str | Path, label_rule: str = "any", read_audio: bool = True) -> IcbhiTables:
    """Recordings, cycles and quarantine of the ICBHI layout under ``root`` (see the module docstring).

    label_rule: a key of :data:`LABEL_RULES`. read_audio: read WAV headers for sample rate and duration (and
    check cycle offsets against the duration); with ``False`` no WAV is opened, durations come from the
    annotations and ``audio_present``/``audio_path`` still say whether the file exists.
    Durations are in seconds.
    """
    rule = _rule(label_rule)
    root = Path(root)
    layout = find_layout(root)
    diagnoses = read_diagnoses(layout.diagnosis)
    demographics = read_demographics(layout.demographics)
    splits = read_split(layout.split)
    build = _Build(layout.recordings.relative_to(root).as_posix())
    wavs = {path.stem for path in layout.recordings.glob("*.wav")}
    # Other .txt files (the official second release's <name>_events.txt) are not cycle annotations.
    annotated = {path.stem for path in layout.recordings.glob("*.txt") if NAME.match(path.stem) or path.stem in wavs}
    counts = dict.fromkeys(
        (
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
        ),
        0,
    )
    counts.update(annotation_files=len(annotated), wav_files=len(wavs))
    for stem in sorted(wavs - annotated):
        wav = f"{build.folder}/{stem}.wav"
        build.reject(
            stem,
            QuarantineReason.ANNOTATION_MISSING,
            f"{wav} has no annotation file {stem}.txt",
            audio_path=wav,
            annotated=False,
        )
        counts["wavs_without_annotation"] += 1
    for stem in sorted(annotated):
        _add_recording(
            build, layout, stem, stem in wavs, read_audio, rule, label_rule, diagnoses, demographics, splits, counts
        )
    recordings = _typed(build.recordings, RECORDING_COLUMNS)
    cycles = _typed(build.cycles, CYCLE_COLUMNS)
    quarantine = quarantine_frame(build.quarantine)
    counts.update(
        recordings_kept=len(recordings),
        cycles_kept=len(cycles),
        cycles_quarantined=int(quarantine["source_row"].notna().sum()),
        patients=int(recordings["patient_id"].nunique()),
        recordings_without_demographics=int((~recordings["demographics_known"]).sum()),
    )
    return IcbhiTables(recordings, cycles, quarantine, counts)


def _add_recording(
    build: _Build,
    layout,
    stem: str,
    has_wav: bool,
    read_audio: bool,
    rule,
    label_rule: str,
    diagnoses: dict[str, str],
    demographics: dict[str, dict],
    splits: dict[str, str],
    counts: dict[str, int],
) -> None:
    """Parse one annotation file and append its recording and cycles, or its quarantine rows."""
    audio_path = f"{build.folder}/{stem}.wav" if has_wav else None
    lines = parse_annotation((layout.recordings / f"{stem}.txt").read_text())
    counts["annotation_lines"] += len(lines)
    name = NAME.match(stem)
    patient = name["patient"] if name else None
    diagnosis = diagnoses.get(patient) if name else None
    if name is None:
        file_problem = (QuarantineReason.INVALID_VALUE, "file name is not <patient>_<index>_<chest>_<sc|mc>_<device>")
    elif diagnosis is None:
        file_problem = (QuarantineReason.UNKNOWN_DIAGNOSIS, f"patient {patient} has no line in {layout.diagnosis.name}")
    elif diagnosis not in DIAGNOSES:
        file_problem = (
            QuarantineReason.UNKNOWN_DIAGNOSIS,
            f"diagnosis {diagnosis!r} of patient {patient} is not one of {list(DIAGNOSES)}",
        )
    else:
        file_problem = None
    if file_problem is not None:
        reason, detail = file_problem
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
        counts["recordings_quarantined"] += 1
        return

    sample_rate, wav_duration, audio_problem = None, None, None
    if has_wav and read_audio:
        probe = _probe_wav(layout.recordings / f"{stem}.wav")
        if isinstance(probe[0], QuarantineReason):
            audio_problem = probe
        else:
            sample_rate, wav_duration = probe

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
    if not kept:
        build.reject(
            stem,
            QuarantineReason.NO_VALID_CYCLES,
            f"{build.folder}/{stem}.txt has no valid cycle ({len(lines)} non-blank lines, all quarantined)",
            audio_path=audio_path,
            annotated=True,
        )
        counts["recordings_quarantined"] += 1
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
        counts["audio_quarantined"] += 1
        audio_path = None
    elif wav_duration is not None:
        counts["audio_read"] += 1

    person = _person(patient, demographics, layout.demographics.name)
    split = splits.get(stem) or splits.get(stem.rsplit("_", 1)[0])
    recording_id = f"{DATASET}:{stem}"
    crackles = np.array([line.crackles for line in kept])
    wheezes = np.array([line.wheezes for line in kept])
    labels = cycle_labels(crackles, wheezes)
    tally = CycleCounts.from_flags(crackles, wheezes)
    for line, label in zip(kept, labels):
        build.cycles.append(
            {
                "recording_id": recording_id,
                "patient_id": patient,
                "cycle": line.cycle,
                "onset_s": line.onset_s,
                "offset_s": line.offset_s,
                "duration_s": line.offset_s - line.onset_s,
                "crackles": line.crackles,
                "wheezes": line.wheezes,
                "cycle_label": label,
                "diagnosis": diagnosis,
                "age": person["age"],
                "sex": person["sex"],
                "official_split": split,
            }
        )
    build.recordings.append(
        {
            "recording_id": recording_id,
            "stem": stem,
            "patient_id": patient,
            "diagnosis": diagnosis,
            **person,
            "recording_index": name["index"],
            "chest_location": name["chest"],
            "acquisition_mode": name["mode"],
            "device": name["device"],
            "official_split": split,
            "audio_path": audio_path,
            "audio_present": audio_path is not None,
            "sample_rate": sample_rate,
            # Without a readable WAV the last annotated offset is the best lower bound of the recording's length.
            "duration_s": wav_duration if wav_duration is not None else max(line.offset_s for line in kept),
            "duration_source": "wav" if wav_duration is not None else "annotations",
            "n_cycles": tally.total,
            "n_normal": tally.normal,
            "n_crackles_only": tally.crackles_only,
            "n_wheezes_only": tally.wheezes_only,
            "n_both": tally.both,
            "cycles_quarantined": len(lines) - len(kept),
            "lung_label": rule(tally),
            "label_rule": label_rule,
        }
    )


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
