"""ICBHI 2017 Respiratory Sound Database, in its official layout or the Kaggle repackaging.

Official: ``ICBHI_final_database/<name>.wav|.txt``, ``ICBHI_Challenge_diagnosis.txt`` (tab-separated) and
``ICBHI_Challenge_demographic_information.txt``. Kaggle: ``audio_and_txt_files/``, ``patient_diagnosis.csv`` and
``demographic_info.txt`` (space-separated, a blank first line). Both may carry ``ICBHI_challenge_train_test.txt``.

Lung auscultation is not cough: rows get ``covid_label=negative``, ``label_source=pre_pandemic`` and
``exclude_reason=not_cough`` so they can serve as controls but never slip into cough training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cough_pipeline.datasets.base import LayoutError, MetadataRead, extra_json, manifest_row
from cough_pipeline.schema import ManifestSchemaError, QuarantineReason

NAME = re.compile(
    r"^(?P<patient>\d{3})_(?P<index>\w+?)_(?P<chest>Tc|Al|Ar|Pl|Pr|Ll|Lr)_(?P<mode>sc|mc)_"
    r"(?P<device>AKGC417L|LittC2SE|Litt3200|Meditron)$"
)
DIAGNOSES = ("URTI", "Healthy", "Asthma", "COPD", "LRTI", "Bronchiectasis", "Pneumonia", "Bronchiolitis")
LAYOUTS = {
    "official": (
        "ICBHI_final_database",
        "ICBHI_Challenge_diagnosis.txt",
        "ICBHI_Challenge_demographic_information.txt",
    ),
    "kaggle": ("audio_and_txt_files", "patient_diagnosis.csv", "demographic_info.txt"),
}
CYCLE_COLUMNS = ("recording", "cycle", "onset_s", "offset_s", "crackles", "wheezes")


@dataclass(frozen=True)
class IcbhiLayout:
    """Where one copy keeps its recordings folder, diagnosis, demographics and (optional) split files."""

    root: Path
    recordings: Path
    diagnosis: Path
    demographics: Path
    split: Path | None


def find_layout(root: Path) -> IcbhiLayout:
    """The official or Kaggle layout under ``root`` (or its ``Respiratory_Sound_Database/``)."""
    for base in (root, root / "Respiratory_Sound_Database"):
        for folder, diagnosis, demographics in LAYOUTS.values():
            if (base / folder).is_dir() and (base / diagnosis).is_file() and (base / demographics).is_file():
                split = base / "ICBHI_challenge_train_test.txt"
                return IcbhiLayout(
                    root, base / folder, base / diagnosis, base / demographics, split if split.is_file() else None
                )
    raise LayoutError("icbhi", root, [" + ".join(files) for files in LAYOUTS.values()])


def read_diagnoses(path: Path) -> dict[str, str]:
    """patient id -> diagnosis, from either the tab- or the comma-separated file (no header)."""
    diagnoses = {}
    for line in path.read_text().splitlines():
        fields = re.split(r"[\t,]", line.strip())
        if len(fields) >= 2 and fields[0]:
            diagnoses[fields[0].strip()] = fields[1].strip()
    return diagnoses


def read_demographics(path: Path) -> dict[str, dict]:
    """patient id -> age, sex, adult BMI, child weight and height (``NA`` -> None); blank lines are skipped."""
    demographics = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise ManifestSchemaError(
                f"icbhi: {path.name} line {line!r} has {len(fields)} fields, expected 6 "
                "(patient, age, sex, adult BMI, child weight, child height)"
            )
        values = [None if f == "NA" else f for f in fields]
        demographics[values[0]] = {
            "age": float(values[1]) if values[1] else None,
            "sex": values[2],
            "adult_bmi": float(values[3]) if values[3] else None,
            "child_weight_kg": float(values[4]) if values[4] else None,
            "child_height_cm": float(values[5]) if values[5] else None,
        }
    return demographics


def read_split(path: Path | None) -> dict[str, str]:
    """recording name -> ``train``/``test``; each name is also indexed without its device field, because the
    Kaggle copy renamed recordings whose device was wrong (``filename_differences.txt``) while the split file
    kept the old names (e.g. ``226_1b1_Pl_sc_Meditron`` is ``226_1b1_Pl_sc_LittC2SE`` on disk)."""
    if path is None:
        return {}
    pairs = [line.split() for line in path.read_text().splitlines() if line.strip()]
    splits = {fields[0]: fields[1] for fields in pairs if len(fields) == 2}
    without_device: dict[str, list[str]] = {}
    for name, split in splits.items():
        without_device.setdefault(name.rsplit("_", 1)[0], []).append(split)
    splits.update({key: values[0] for key, values in without_device.items() if len(values) == 1})
    return splits


@dataclass(frozen=True)
class AnnotationLine:
    """One non-blank line of an annotation file: ``cycle`` is its 0-based order among non-blank lines (the
    cycle number), ``line`` its 1-based physical line number. ``problem`` is ``None`` for a valid cycle; else
    the values that could not be read are ``None`` and ``detail`` says what is wrong."""

    cycle: int
    line: int
    text: str
    onset_s: float | None = None
    offset_s: float | None = None
    crackles: int | None = None
    wheezes: int | None = None
    problem: QuarantineReason | None = None
    detail: str | None = None


def _parse_line(cycle: int, line: int, text: str) -> AnnotationLine:
    fields = text.split()
    if len(fields) != 4:
        return AnnotationLine(
            cycle,
            line,
            text,
            problem=QuarantineReason.ANNOTATION_UNPARSEABLE,
            detail=f"{len(fields)} fields, expected 4 (onset offset crackles wheezes)",
        )
    try:
        onset, offset = float(fields[0]), float(fields[1])
        crackles, wheezes = int(fields[2]), int(fields[3])
    except ValueError:
        return AnnotationLine(
            cycle,
            line,
            text,
            problem=QuarantineReason.ANNOTATION_UNPARSEABLE,
            detail="onset/offset are not numbers or the flags are not integers",
        )
    if not (math.isfinite(onset) and math.isfinite(offset)):
        return AnnotationLine(
            cycle,
            line,
            text,
            problem=QuarantineReason.ANNOTATION_UNPARSEABLE,
            detail="onset/offset are not finite numbers",
        )
    reasons = []
    if onset < 0:
        reasons.append(f"negative onset {onset}")
    if offset <= onset:
        reasons.append(f"offset {offset} <= onset {onset}")
    if crackles not in (0, 1) or wheezes not in (0, 1):
        reasons.append(f"flags crackles={crackles} wheezes={wheezes} are not 0/1")
    if reasons:
        return AnnotationLine(
            cycle, line, text, problem=QuarantineReason.ANNOTATION_OUT_OF_RANGE, detail="; ".join(reasons)
        )
    return AnnotationLine(cycle, line, text, onset, offset, crackles, wheezes)


def parse_annotation(text: str) -> list[AnnotationLine]:
    """Every non-blank line of an annotation file's text, each either a valid cycle or a described problem
    (wrong field count or non-numbers: ``annotation_unparseable``; negative onset, offset <= onset or flags
    other than 0/1: ``annotation_out_of_range``). Fields split on any whitespace; overlaps are allowed."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            lines.append(_parse_line(len(lines), number, line.strip()))
    return lines


def read_cycles(annotation: Path) -> pd.DataFrame:
    """One row per respiratory cycle of one annotation file (whitespace-separated, blank lines ignored).

    Strict: a line that :func:`parse_annotation` rejects raises :class:`ManifestSchemaError` naming the file and
    line (``cough_pipeline.icbhi.tables`` quarantines such lines instead)."""
    rows = []
    for line in parse_annotation(annotation.read_text()):
        if line.problem is not None:
            raise ManifestSchemaError(f"icbhi: {annotation.name} line {line.line} {line.text!r}: {line.detail}")
        rows.append((annotation.stem, line.cycle, line.onset_s, line.offset_s, line.crackles, line.wheezes))
    return pd.DataFrame(rows, columns=list(CYCLE_COLUMNS))


def read_all_cycles(root: Path) -> pd.DataFrame:
    """Every cycle of every annotation file in the layout."""
    layout = find_layout(root)
    frames = [read_cycles(path) for path in sorted(layout.recordings.glob("*.txt")) if NAME.match(path.stem)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CYCLE_COLUMNS))


@dataclass(frozen=True)
class _PatientTables:
    """The per-patient tables of one layout, read once for all of its recordings."""

    layout: IcbhiLayout
    #: The recordings folder, relative to the dataset root.
    folder: str
    diagnoses: dict[str, str]
    demographics: dict[str, dict]
    splits: dict[str, str]


def _cycle_stats(cycles: pd.DataFrame | None) -> dict:
    """Cycle and crackle/wheeze counts of an annotated recording, for ``extra``; nothing when unannotated."""
    if cycles is None:
        return {}
    return {
        "cycles": len(cycles),
        "cycles_crackles": int(cycles.crackles.sum()),
        "cycles_wheezes": int(cycles.wheezes.sum()),
        "annotated_duration_s": float(cycles.offset_s.max()) if len(cycles) else 0.0,
    }


@dataclass
class IcbhiLoader:
    name = "icbhi"

    def read_metadata(self, root: Path) -> MetadataRead:
        layout = find_layout(root)
        tables = _PatientTables(
            layout,
            layout.recordings.relative_to(root).as_posix(),
            read_diagnoses(layout.diagnosis),
            read_demographics(layout.demographics),
            read_split(layout.split),
        )
        wavs = {p.stem for p in layout.recordings.glob("*.wav")}
        annotations = {p.stem for p in layout.recordings.glob("*.txt") if NAME.match(p.stem) or p.stem in wavs}
        read = MetadataRead(audio_files=sorted(f"{tables.folder}/{s}.wav" for s in wavs))
        for stem in sorted(annotations | wavs):
            self._add_row(read, tables, stem, stem in annotations)
        return read

    def _add_row(self, read: MetadataRead, tables: _PatientTables, stem: str, annotated: bool) -> None:
        """One recording: a manifest row, or a quarantine row when its name or its patient's diagnosis is invalid."""
        audio_path = f"{tables.folder}/{stem}.wav"
        source_file = f"{tables.folder}/{stem}.txt" if annotated else None
        name = NAME.match(stem)
        if name is None:
            problem = "file name is not <patient>_<index>_<chest>_<sc|mc>_<device>"
        else:
            diagnosis = tables.diagnoses.get(name["patient"])
            problem = (
                None
                if diagnosis in DIAGNOSES
                else f"diagnosis={diagnosis!r} for patient {name['patient']} is not one of {list(DIAGNOSES)}"
            )
        if problem is not None:
            read.reject(
                QuarantineReason.INVALID_VALUE,
                problem,
                dataset=self.name,
                native_id=stem,
                recording_id=f"{self.name}:{stem}",
                audio_path=audio_path,
                source_file=source_file,
                source_row=None,
            )
            return
        read.rows.append(self._row(tables, stem, name, diagnosis, annotated, source_file))

    def _row(
        self,
        tables: _PatientTables,
        stem: str,
        name: re.Match,
        diagnosis: str,
        annotated: bool,
        source_file: str | None,
    ) -> dict:
        """The manifest row of a validly named recording of a patient with a known diagnosis."""
        patient = name["patient"]
        person = tables.demographics.get(patient, {})
        split = tables.splits.get(stem) or tables.splits.get(stem.rsplit("_", 1)[0])
        cycles = read_cycles(tables.layout.recordings / f"{stem}.txt") if annotated else None
        native = {
            "diagnosis": diagnosis,
            "recording_index": name["index"],
            "chest_location": name["chest"],
            "acquisition_mode": name["mode"],
            "device": name["device"],
            "annotated": annotated,
            "demographics_known": patient in tables.demographics,
            **{k: v for k, v in person.items() if k not in ("age", "sex")},
            **_cycle_stats(cycles),
        }
        return manifest_row(
            self.name,
            stem,
            participant=patient,
            audio_path=f"{tables.folder}/{stem}.wav",
            sound_type="lung_auscultation",
            covid_label="negative",
            covid_label_raw=None,
            label_source="pre_pandemic",
            exclude_reason="not_cough",
            age=person.get("age"),
            gender={"M": "male", "F": "female"}.get(person.get("sex"), "unknown"),
            respiratory_conditions=None if diagnosis == "Healthy" else diagnosis.lower(),
            official_split=split,
            split_scheme="icbhi2017" if split else None,
            extra=extra_json(native),
            _source_file=source_file,
            _source_row=None,
        )
