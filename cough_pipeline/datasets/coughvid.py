"""COUGHVID (EPFL, Zenodo): ``metadata_compiled.csv`` beside ``<uuid>.webm|.ogg`` files and ``<uuid>.json`` sidecars.

Columns are selected by name, because copies differ (``SNR`` is present in some v3 copies only, and third-party
copies drop columns). ``status_SSL`` (a model's label) and the experts' ``diagnosis_k`` (a physician's impression
from audio) are kept in ``extra``, never used as the label.
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
    join_tokens,
    list_audio,
    manifest_row,
    map_value,
    parse_float,
    read_table,
    rejection_reason,
)
from cough_pipeline.schema import QuarantineReason

REQUIRED_COLUMNS = ("uuid", "cough_detected", "status")
STATUS = {
    "COVID-19": ("positive", None),
    "healthy": ("negative", None),
    "symptomatic": ("unknown", "ambiguous_status"),
    None: ("unknown", "no_label"),
}
GENDERS = {"male": "male", "female": "female", "other": "other", None: "unknown"}
LAYOUTS = ("public_dataset_v3/coughvid_20211012", "public_dataset", "coughvid_20211012", ".")
EXPERTS = (1, 2, 3, 4)
#: Columns that become manifest columns; every other one (bar pandas' ``Unnamed`` index columns) goes to ``extra``.
USED_COLUMNS = frozenset(
    {
        "uuid",
        "status",
        "gender",
        "age",
        "cough_detected",
        "datetime",
        "source_row",
        "respiratory_condition",
        "fever_muscle_pain",
        "",
    }
)


def _flag(record: dict, column: str) -> str | None:
    """``column`` as a token when the record marks it true."""
    return join_tokens([column] if clean(record.get(column)) in ("True", "TRUE") else [])


@dataclass
class CoughvidLoader:
    name = "coughvid"
    #: Recordings whose ``cough_detected`` is below this are kept but excluded as ``not_cough``.
    cough_threshold: float = 0.8
    #: What ``symptomatic`` means: ``"unknown"`` (default, excluded as ambiguous) or ``"positive"``/``"negative"``.
    symptomatic_as: str = "unknown"

    def read_metadata(self, root: Path) -> MetadataRead:
        folder = next((root / p for p in LAYOUTS if (root / p / "metadata_compiled.csv").is_file()), None)
        if folder is None:
            raise LayoutError(
                self.name, root, [f"{p}/metadata_compiled.csv with <uuid>.webm|.ogg and <uuid>.json" for p in LAYOUTS]
            )
        table = read_table(folder / "metadata_compiled.csv", REQUIRED_COLUMNS, dataset=self.name)
        read = MetadataRead(audio_files=list_audio(root, folder, (".webm", ".ogg")))
        audio_by_uuid = {Path(p).stem: p for p in read.audio_files}
        source_file = (folder / "metadata_compiled.csv").relative_to(root).as_posix()
        prefix = folder.relative_to(root).as_posix()
        for record in table.to_dict("records"):
            uuid = record["uuid"]
            if not uuid:
                read.reject(
                    QuarantineReason.MISSING_ID,
                    "blank uuid",
                    dataset=self.name,
                    native_id=None,
                    source_file=source_file,
                    source_row=record["source_row"],
                )
                continue
            fallback = f"{uuid}.webm" if prefix == "." else f"{prefix}/{uuid}.webm"
            self._add_row(read, record, audio_by_uuid.get(uuid, fallback), source_file)
        return read

    def _add_row(self, read: MetadataRead, record: dict, audio_path: str, source_file: str) -> None:
        uuid = record["uuid"]
        try:
            label, exclude = map_value(record["status"], STATUS, field_name="status", case_insensitive=False)
            gender = map_value(record.get("gender"), GENDERS, field_name="gender")
        except UnknownValueError as error:
            read.reject(
                rejection_reason(error, "status"),
                str(error),
                dataset=self.name,
                native_id=uuid,
                recording_id=f"{self.name}:{uuid}",
                audio_path=audio_path,
                source_file=source_file,
                source_row=record["source_row"],
            )
            return
        if record["status"] == "symptomatic" and self.symptomatic_as != "unknown":
            label, exclude = self.symptomatic_as, None
        cough_detected = parse_float(record["cough_detected"])
        if cough_detected is not None and cough_detected < self.cough_threshold:
            exclude = "not_cough"
        qualities = [clean(record.get(f"quality_{k}")) for k in EXPERTS]
        datetime = clean(record.get("datetime"))
        read.rows.append(
            manifest_row(
                self.name,
                uuid,
                audio_path=audio_path,
                sound_type="cough",
                cough_type="unspecified",
                covid_label=label,
                covid_label_raw=record["status"],
                label_source="self_report",
                exclude_reason=exclude,
                age=parse_float(record.get("age")),
                gender=gender,
                recording_date=datetime[:10] if datetime else None,
                cough_detected=cough_detected,
                symptoms=_flag(record, "fever_muscle_pain"),
                respiratory_conditions=_flag(record, "respiratory_condition"),
                quality=";".join(q for q in qualities if q) or None,
                extra=extra_json(
                    {k: v for k, v in record.items() if k not in USED_COLUMNS and not k.startswith("Unnamed")}
                ),
                _source_file=source_file,
                _source_row=record["source_row"],
            )
        )
