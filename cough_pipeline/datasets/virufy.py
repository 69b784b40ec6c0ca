"""Virufy clinical subset: ``clinical/labels.csv``, 16 original mp3s and Virufy's manual single-cough segments.

``unit="original"`` lists the unsegmented recordings (``cough_type=unspecified``); ``unit="segment"`` lists the
manual segments ``<stem>-<k>.mp3`` (``cough_type=segment``). Never both in one manifest: they are the same coughs.
The patient is the original file stem, so segments of one patient share a participant id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cough_pipeline.datasets.base import (
    LayoutError,
    MetadataRead,
    UnknownValueError,
    extra_json,
    join_tokens,
    list_audio,
    manifest_row,
    map_value,
    parse_float,
    read_table,
    rejection_reason,
)
from cough_pipeline.schema import QuarantineReason

REQUIRED_COLUMNS = ("date", "corona_test", "age", "gender", "cough_filename")
LABELS = {"positive": "positive", "negative": "negative"}
GENDERS = {"male": "male", "female": "female", "other": "other", None: "unknown"}
UNITS = {"original": ("original", "unspecified"), "segment": ("segmented", "segment")}
STEM = re.compile(r"^(?P<label>pos|neg)-(?P<mmdd>\d{4})-(?P<number>\d+)-cough-(?P<sex>[mf])-(?P<age>\d+)$")


def _tokens(raw: str | None) -> list[str]:
    """``"Asthma,Shortness of breath,"`` -> tokens, with ``none`` meaning empty."""
    return [t for t in (raw or "").split(",") if t.strip() and t.strip().lower() != "none"]


@dataclass(frozen=True)
class _Unit:
    """Where the listed unit's audio and labels are, relative to the dataset root."""

    #: The ``clinical/`` folder (``.`` when the root is that folder).
    clinical: str
    #: ``original`` or ``segmented``.
    folder: str
    cough_type: str
    #: ``labels.csv``.
    source_file: str


@dataclass
class VirufyLoader:
    name = "virufy"
    unit: str = "original"

    def read_metadata(self, root: Path) -> MetadataRead:
        if self.unit not in UNITS:
            raise ValueError(f"virufy: unit must be one of {sorted(UNITS)}, not {self.unit!r}")
        clinical = root / "clinical" if (root / "clinical").is_dir() else root
        if not (clinical / "labels.csv").is_file():
            raise LayoutError(
                self.name,
                root,
                ["clinical/labels.csv with clinical/original/{pos,neg}/*.mp3 and clinical/segmented/{pos,neg}/*.mp3"],
            )
        folder, cough_type = UNITS[self.unit]
        unit = _Unit(
            clinical.relative_to(root).as_posix(),
            folder,
            cough_type,
            (clinical / "labels.csv").relative_to(root).as_posix(),
        )
        table = read_table(clinical / "labels.csv", REQUIRED_COLUMNS, dataset=self.name)
        read = MetadataRead(audio_files=list_audio(root, clinical / folder, (".mp3",)))
        for record in table.to_dict("records"):
            self._add_patient(read, record, unit)
        return read

    def _add_patient(self, read: MetadataRead, record: dict, unit: _Unit) -> None:
        """One row of ``labels.csv``: a manifest row per audio file of the patient, or quarantine rows."""
        stem = Path(record["cough_filename"] or "").stem
        source = {"source_file": unit.source_file, "source_row": record["source_row"]}
        if not stem:
            read.reject(
                QuarantineReason.MISSING_ID, "blank cough_filename", dataset=self.name, native_id=None, **source
            )
            return
        files = self._files_for(read.audio_files, stem, unit.folder)
        if not files:
            read.reject(
                QuarantineReason.AUDIO_MISSING,
                f"no {unit.folder} audio for patient {stem}",
                dataset=self.name,
                native_id=stem,
                recording_id=f"{self.name}:{stem}",
                audio_path=f"{unit.clinical}/{unit.folder}/{stem}.mp3",
                **source,
            )
            return
        try:
            shared = self._patient_values(record, stem)
        except UnknownValueError as error:
            for path in files:
                read.reject(
                    rejection_reason(error, "corona_test"),
                    str(error),
                    dataset=self.name,
                    native_id=Path(path).stem,
                    recording_id=f"{self.name}:{Path(path).stem}",
                    audio_path=path,
                    **source,
                )
            return
        for path in files:
            read.rows.append(
                manifest_row(
                    self.name,
                    Path(path).stem,
                    participant=stem,
                    audio_path=path,
                    cough_type=unit.cough_type,
                    _source_file=unit.source_file,
                    _source_row=record["source_row"],
                    **shared,
                )
            )

    @staticmethod
    def _files_for(audio_files: list[str], stem: str, folder: str) -> list[str]:
        """Patient ``stem``'s files in ``folder``: ``<stem>.mp3``, or its segments ``<stem>-<k>.mp3``."""
        pattern = re.compile(
            rf"/{folder}/(pos|neg)/{re.escape(stem)}(-\d+)?\.mp3$"
            if folder == "segmented"
            else rf"/{folder}/(pos|neg)/{re.escape(stem)}\.mp3$"
        )
        return [p for p in audio_files if pattern.search("/" + p)]

    @staticmethod
    def _patient_values(record: dict, stem: str) -> dict:
        """What every file of one patient shares; raises :class:`UnknownValueError` for a label or gender outside
        the vocabulary. ``quality`` flags a file name whose label, sex or age disagree with ``labels.csv``."""
        label = map_value(record["corona_test"], LABELS, field_name="corona_test")
        gender = map_value(record["gender"], GENDERS, field_name="gender")
        month, day = (record["date"] or "").split("/") if "/" in (record["date"] or "") else (None, None)
        name = STEM.match(stem)
        age = parse_float(record["age"])
        consistent = (
            bool(name) and name["label"] == label[:3] and name["sex"] == gender[:1] and age == float(name["age"])
        )
        return {
            "sound_type": "cough",
            "covid_label": label,
            "covid_label_raw": record["corona_test"],
            "label_source": "pcr",
            "age": age,
            "gender": gender,
            # The date has no year; the clinical collection was in April 2020.
            "recording_date": f"2020-{int(month):02d}-{int(day):02d}" if month else None,
            "symptoms": join_tokens(_tokens(record.get("patient_reported_symptoms"))),
            "respiratory_conditions": join_tokens(_tokens(record.get("medical_history"))),
            "quality": None if consistent else "file_name_disagrees_with_labels_csv",
            "extra": extra_json(
                {
                    "smoker": record.get("smoker"),
                    "date_raw": record["date"],
                    "medical_history": record.get("medical_history"),
                }
            ),
        }
