"""AICovidVN 115M challenge: one folder per released zip, each with its metadata CSV and audio folder.

Warm-up audio was pre-resampled to 8 kHz; final-round rates vary (probed). ``__MACOSX`` junk is skipped. A uuid
that appears in two subsets is quarantined as ``duplicate_id`` (the warm-up and final sets may overlap), and
identical audio under different uuids is marked ``duplicate`` by the manifest builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cough_pipeline.datasets.base import (
    LayoutError,
    MetadataRead,
    UnknownValueError,
    clean,
    extra_json,
    list_audio,
    manifest_row,
    map_value,
    read_table,
    rejection_reason,
)
from cough_pipeline.schema import QuarantineReason


@dataclass(frozen=True)
class Subset:
    """One released zip: its folder, metadata table, audio folder, official split, whether it is labelled, and an
    optional medical-condition table."""

    folder: str
    metadata: str
    audio: str
    official_split: str
    labelled: bool
    medical: str | None = None


SUBSETS = (
    Subset("aicv115m_public_train", "metadata_train_challenge.csv", "train_audio_files_8k", "train", True),
    Subset("aicv115m_public_test", "metadata_public_test.csv", "public_test_audio_files_8k", "test", False),
    Subset(
        "aicv115m_final_public_train",
        "public_train_metadata.csv",
        "public_train_audio_files",
        "train",
        True,
        medical="public_train_medical_condition.csv",
    ),
    Subset(
        "aicv115m_extra_public_1235samples", "extra_public_train_1235samples.csv", "new_1235_audio_files", "train", True
    ),
)
LABELS = {"1": "positive", "0": "negative", "1.0": "positive", "0.0": "negative", "unknown": "unknown", None: "unknown"}
GENDERS = {"male": "male", "female": "female", "other": "other", None: "unknown"}
#: Columns of a subset's metadata that become manifest columns; every other one goes to ``extra``.
USED_COLUMNS = frozenset(
    {"uuid", "assessment_result", "subject_gender", "subject_age", "audio_noise_note", "source_row"}
)


@dataclass
class AicovidvnLoader:
    name = "aicovidvn"

    def read_metadata(self, root: Path) -> MetadataRead:
        present = [s for s in SUBSETS if (root / s.folder / s.metadata).is_file()]
        if not present:
            raise LayoutError(
                self.name, root, [f"{s.folder}/{s.metadata} with {s.folder}/{s.audio}/<uuid>.wav" for s in SUBSETS]
            )
        read = MetadataRead()
        for subset in present:
            read.audio_files += list_audio(root, root / subset.folder / subset.audio)
            self._read_subset(read, root, subset)
        return read

    def _read_subset(self, read: MetadataRead, root: Path, subset: Subset) -> None:
        """Every row of one subset's metadata table, with its medical-condition table where one ships."""
        required = ["uuid", "assessment_result"] if subset.labelled else ["uuid"]
        table = read_table(root / subset.folder / subset.metadata, required, dataset=self.name)
        medical = {}
        if subset.medical and (root / subset.folder / subset.medical).is_file():
            medical_table = read_table(root / subset.folder / subset.medical, ["uuid"], dataset=self.name)
            medical = {r["uuid"]: r for r in medical_table.to_dict("records")}
        for record in table.to_dict("records"):
            self._add_row(read, record, subset, medical.get(record["uuid"], {}))

    def _add_row(self, read: MetadataRead, record: dict, subset: Subset, medical: dict) -> None:
        """One metadata row: a manifest row, or a quarantine row for a blank uuid or a value outside the vocabulary.

        ``medical`` is the recording's row of the subset's medical-condition table (empty when none)."""
        uuid = record["uuid"]
        source_file = f"{subset.folder}/{subset.metadata}"
        source = {"source_file": source_file, "source_row": record["source_row"]}
        if not uuid:
            read.reject(QuarantineReason.MISSING_ID, "blank uuid", dataset=self.name, native_id=None, **source)
            return
        audio_path = f"{subset.folder}/{subset.audio}/{uuid}.wav"
        try:
            label = map_value(record.get("assessment_result"), LABELS, field_name="assessment_result")
            gender = map_value(record.get("subject_gender"), GENDERS, field_name="subject_gender")
        except UnknownValueError as error:
            read.reject(
                rejection_reason(error, "assessment_result"),
                str(error),
                dataset=self.name,
                native_id=uuid,
                recording_id=f"{self.name}:{uuid}",
                audio_path=audio_path,
                **source,
            )
            return
        noise_note = clean(record.get("audio_noise_note"))
        extra = {k: v for k, v in record.items() if k not in USED_COLUMNS}
        extra.update({k: v for k, v in medical.items() if k not in ("uuid", "source_row")})
        read.rows.append(
            manifest_row(
                self.name,
                uuid,
                audio_path=audio_path,
                sound_type="cough",
                cough_type="unspecified",
                covid_label=label,
                covid_label_raw=record.get("assessment_result"),
                label_source="unknown",
                exclude_reason="low_quality" if noise_note else ("no_label" if label == "unknown" else None),
                age_group=clean(record.get("subject_age")),
                gender=gender,
                quality=noise_note,
                official_split=subset.official_split,
                split_scheme="aicv115m",
                extra=extra_json({**extra, "subset": subset.folder}),
                _source_file=source_file,
                _source_row=record["source_row"],
            )
        )
