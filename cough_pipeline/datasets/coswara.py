"""Coswara (iiscleap/Coswara-Data): ``combined_data.csv`` plus per-date split tarballs of per-participant wavs.

The audio ships as ``<date>/<date>.tar.gz.aa, .ab, …``; like the official ``extract_data.py`` the loader extracts
them once into ``<root>/Extracted_data/<date>/<participant>/<task>.wav`` (atomically, via a temporary folder).
An already extracted ``Extracted_data/`` or ``extracted_data/`` is used as it is.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
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
from cough_pipeline.schema import ManifestSchemaError, QuarantineReason

REQUIRED_COLUMNS = ("id", "covid_status", "record_date", "a", "g", "l_c")
COUGH_TASKS = {"cough-heavy": "heavy", "cough-shallow": "shallow"}
OTHER_TASKS = {
    "breathing-deep": "breath",
    "breathing-shallow": "breath",
    "counting-fast": "speech",
    "counting-normal": "speech",
    "vowel-a": "speech",
    "vowel-e": "speech",
    "vowel-o": "speech",
}
#: covid_status -> (covid_label, exclude_reason); the two exposed/unidentified states are switchable to negative.
STATUS = {
    "healthy": ("negative", None),
    "positive_mild": ("positive", None),
    "positive_moderate": ("positive", None),
    "positive_asymp": ("positive", None),
    "no_resp_illness_exposed": ("unknown", "ambiguous_status"),
    "resp_illness_not_identified": ("unknown", "ambiguous_status"),
    "recovered_full": ("unknown", "recovered"),
    "under_validation": ("unknown", "no_label"),
    None: ("unknown", "no_label"),
}
GENDERS = {"male": "male", "female": "female", "other": "other", None: "unknown"}
TEST_TYPES = {"rtpcr": "pcr", "rat": "antigen"}
SYMPTOM_FLAGS = ("cough", "fever", "cold", "st", "bd", "ftg", "mp", "loss_of_smell", "diarrhoea")
RESPIRATORY_FLAGS = ("asthma", "cld", "pneumonia", "others_resp")
QUALITY_CODES = {"2": "excellent", "1": "good", "0": "bad"}
#: Columns of ``combined_data.csv`` that become manifest columns; every other one goes to ``extra``.
USED_COLUMNS = frozenset(
    {"id", "covid_status", "a", "g", "record_date", "l_c", "source_row", *SYMPTOM_FLAGS, *RESPIRATORY_FLAGS}
)


@dataclass
class CoswaraLoader:
    name = "coswara"
    #: Treat ``no_resp_illness_exposed`` / ``resp_illness_not_identified`` as negative (as some papers do).
    ambiguous_as_negative: bool = False
    #: Also list the seven breathing/speech recordings of each participant.
    include_non_cough: bool = False

    def read_metadata(self, root: Path) -> MetadataRead:
        table_path = root / "combined_data.csv"
        if not table_path.is_file():
            raise LayoutError(self.name, root, ["combined_data.csv with <YYYYMMDD>/ date folders (Coswara-Data)"])
        table = read_table(table_path, REQUIRED_COLUMNS, dataset=self.name)
        audio_root, notes = self._audio_root(root)
        tasks = {**COUGH_TASKS, **(OTHER_TASKS if self.include_non_cough else {})}
        read = MetadataRead(notes=notes)
        if audio_root is not None:
            read.audio_files = [p for p in list_audio(root, audio_root, (".wav",)) if Path(p).stem in tasks]
        folders = self._participant_folders(read.audio_files)
        qualities = self._qualities(root)
        for record in table.to_dict("records"):
            self._add_participant(read, record, tasks, folders, qualities)
        return read

    def _add_participant(
        self, read: MetadataRead, record: dict, tasks: dict[str, str], folders: dict[str, str], qualities: dict
    ) -> None:
        """One row of ``combined_data.csv``: a manifest row per task, or quarantine rows when a value is unknown."""
        participant = record["id"]
        if not participant:
            read.reject(
                QuarantineReason.MISSING_ID,
                "blank id",
                dataset=self.name,
                native_id=None,
                source_file="combined_data.csv",
                source_row=record["source_row"],
            )
            return
        default_folder = f"Extracted_data/{(record['record_date'] or 'unknown').replace('-', '')}/{participant}"
        folder = folders.get(participant, default_folder)
        try:
            shared, exclude = self._participant_values(record)
        except UnknownValueError as error:
            for task in tasks:
                read.reject(
                    rejection_reason(error, "covid_status"),
                    str(error),
                    dataset=self.name,
                    native_id=participant,
                    recording_id=f"{self.name}:{participant}:{task}",
                    audio_path=f"{folder}/{task}.wav",
                    source_file="combined_data.csv",
                    source_row=record["source_row"],
                )
            return
        native_extra = {k: v for k, v in record.items() if k not in USED_COLUMNS}
        for task, kind in tasks.items():
            quality = qualities.get(f"{participant}_{task}")
            read.rows.append(
                manifest_row(
                    self.name,
                    participant,
                    id_suffix=task,
                    audio_path=f"{folder}/{task}.wav",
                    sound_type="cough" if task in COUGH_TASKS else kind,
                    cough_type=COUGH_TASKS.get(task),
                    exclude_reason=exclude or ("low_quality" if quality == "0" else None),
                    quality=QUALITY_CODES.get(quality) if quality is not None else None,
                    extra=extra_json({**native_extra, "task": task, "date_folder": Path(folder).parent.name}),
                    _source_file="combined_data.csv",
                    _source_row=record["source_row"],
                    **shared,
                )
            )

    def _participant_values(self, record: dict) -> tuple[dict, str | None]:
        """What every recording of one participant shares (label, demographics, symptoms), and the participant's
        exclude reason; raises :class:`UnknownValueError` for a status or gender outside the vocabulary."""
        label, exclude = map_value(record["covid_status"], STATUS, field_name="covid_status")
        gender = map_value(record["g"], GENDERS, field_name="g")
        if exclude == "ambiguous_status" and self.ambiguous_as_negative:
            label, exclude = "negative", None
        shared = {
            "participant": record["id"],
            "covid_label": label,
            "covid_label_raw": record["covid_status"],
            "label_source": TEST_TYPES.get((clean(record.get("testType")) or "").lower(), "self_report"),
            "age": parse_float(record["a"]),
            "gender": gender,
            "recording_date": record["record_date"],
            "country": record["l_c"],
            "symptoms": join_tokens(f for f in SYMPTOM_FLAGS if clean(record.get(f)) == "True"),
            "respiratory_conditions": join_tokens(f for f in RESPIRATORY_FLAGS if clean(record.get(f)) == "True"),
        }
        return shared, exclude

    def _audio_root(self, root: Path) -> tuple[Path | None, list[str]]:
        """The folder holding ``<date>/<id>/<task>.wav``, extracting the split tarballs when needed."""
        for name in ("Extracted_data", "extracted_data"):
            if (root / name).is_dir():
                return root / name, []
        archives = sorted(root.glob("2*/2*.tar.gz.*"))
        if not archives:
            return None, [
                "no audio: neither Extracted_data/ nor <date>/<date>.tar.gz.* parts found; "
                "every recording is reported as audio_missing"
            ]
        return extract_archives(root), [f"extracted {len(archives)} tarball parts into Extracted_data/"]

    @staticmethod
    def _participant_folders(audio_files: list[str]) -> dict[str, str]:
        """participant id -> ``Extracted_data/<date>/<id>`` as found on disk."""
        return {Path(p).parent.name: Path(p).parent.as_posix() for p in audio_files}

    @staticmethod
    def _qualities(root: Path) -> dict[str, str]:
        """``<id>_<task>`` -> quality code from ``annotations/<task>_labels.csv`` (header ``FILENAME, QUALITY``)."""
        qualities: dict[str, str] = {}
        for path in sorted((root / "annotations").glob("*_labels.csv")):
            table = read_table(path, ["FILENAME", "QUALITY"], dataset="coswara", strip_header=True)
            qualities.update({r["FILENAME"]: r["QUALITY"] for r in table.to_dict("records") if r["FILENAME"]})
        return qualities


class _ConcatenatedParts(io.RawIOBase):
    """The split ``.tar.gz.aa, .ab, …`` parts read as one stream, without joining them on disk."""

    def __init__(self, parts: list[Path]):
        self._parts = iter(parts)
        self._current = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._current is None:
                part = next(self._parts, None)
                if part is None:
                    return 0
                self._current = part.open("rb")
            count = self._current.readinto(buffer)
            if count:
                return count
            self._current.close()
            self._current = None


def extract_archives(root: Path) -> Path:
    """Extract every ``<date>/<date>.tar.gz.*`` into ``root/Extracted_data`` (atomic rename when complete)."""
    target = root / "Extracted_data"
    try:
        staging = Path(tempfile.mkdtemp(prefix=".Extracted_data.", dir=root))
    except OSError as error:
        raise ManifestSchemaError(
            f"coswara: cannot extract the audio tarballs into {root} ({error}); extract them once with "
            f"`cat <date>/<date>.tar.gz.* | tar -xz -C Extracted_data` or make the folder writable"
        ) from error
    try:
        for date_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
            parts = sorted(date_dir.glob(f"{date_dir.name}.tar.gz.*"))
            if not parts:
                continue
            stream = io.BufferedReader(_ConcatenatedParts(parts), buffer_size=1 << 20)
            with tarfile.open(fileobj=stream, mode="r|gz") as archive:
                archive.extractall(staging, filter="data")
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # a concurrent run that finished first is fine; anything else is not
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
