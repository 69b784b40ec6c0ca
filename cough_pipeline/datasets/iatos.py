"""IATos (Buenos Aires, RT-PCR-labelled WhatsApp coughs). The published layout is unverified, so this loader
accepts the documented variants and nothing else:

* one metadata table (``*.csv``, comma or semicolon separated, UTF-8 or Latin-1) in the root;
* an audio folder named ``audios/``, ``audio/``, ``wav/`` or ``ogg/`` (or the root itself) with
  ``<id>.ogg|.opus|.wav|.mp3`` files;
* columns found by name (Spanish or English headers, below) or given explicitly as ``columns={...}`` after
  inspecting the real file.

Any mismatch raises an error that lists what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cough_pipeline.datasets.base import (
    LayoutError,
    MetadataRead,
    UnknownValueError,
    clean,
    extra_json,
    list_audio,
    manifest_row,
    map_value,
    parse_float,
    read_table,
    rejection_reason,
    sniff_delimiter,
)
from cough_pipeline.schema import ManifestSchemaError, QuarantineReason

AUDIO_FOLDERS = ("audios", "audio", "wav", "ogg", ".")
AUDIO_SUFFIXES = (".ogg", ".opus", ".wav", ".mp3")
#: role -> accepted header names (compared case-insensitively).
COLUMN_CANDIDATES = {
    "id": ("id_audio", "id", "audio", "archivo", "filename", "file", "nombre_archivo"),
    "label": ("resultado_pcr", "resultado", "pcr", "diagnostico", "result", "label", "covid"),
    "gender": ("sexo", "genero", "sex", "gender"),
    "age": ("edad", "rango_edad", "age", "age_group"),
}
LABELS = {
    "positivo": "positive",
    "negativo": "negative",
    "positive": "positive",
    "negative": "negative",
    "1": "positive",
    "0": "negative",
    "detectable": "positive",
    "no detectable": "negative",
    None: "unknown",
}
GENDERS = {
    "masculino": "male",
    "femenino": "female",
    "m": "male",
    "f": "female",
    "hombre": "male",
    "mujer": "female",
    "male": "male",
    "female": "female",
    "otro": "other",
    "other": "other",
    "x": "other",
    None: "unknown",
}


@dataclass(frozen=True)
class _Listing:
    """The metadata table as read: its columns by role, and the audio files its rows refer to."""

    roles: dict[str, str]
    #: Audio file stem -> path relative to the root.
    by_stem: dict[str, str]
    #: The audio folder, relative to the root.
    audio_dir: Path
    #: The table's file name.
    source_file: str

    def audio_path(self, native_id: str) -> str:
        """The recording's file; an ``.ogg`` in the audio folder when none is there (reported missing later)."""
        return self.by_stem.get(native_id, (self.audio_dir / f"{native_id}.ogg").as_posix())


@dataclass
class IatosLoader:
    name = "iatos"
    #: Explicit role -> header mapping (roles: id, label, gender, age); overrides the candidates above.
    columns: dict[str, str] = field(default_factory=dict)

    def read_metadata(self, root: Path) -> MetadataRead:
        tables = sorted(root.glob("*.csv")) if root.is_dir() else []
        audio_dir = next((root / f for f in AUDIO_FOLDERS if list_audio(root, root / f, AUDIO_SUFFIXES)), None)
        expected = [
            f"exactly one metadata table <root>/*.csv (found {len(tables)})",
            f"an audio folder {', '.join(f + '/' for f in AUDIO_FOLDERS[:-1])} or the root, holding "
            f"<id>{'|'.join(AUDIO_SUFFIXES)}",
        ]
        if len(tables) != 1 or audio_dir is None:
            raise LayoutError(
                self.name,
                root,
                expected,
                hint="The IATos layout is unverified: inspect the download and pass `columns=` "
                "or rename files to one of the variants above.",
            )
        table_path = tables[0]
        encoding = _encoding(table_path)
        table = read_table(
            table_path,
            [],
            dataset=self.name,
            sep=sniff_delimiter(table_path, encoding),
            encoding=encoding,
            strip_header=True,
        )
        roles = self._resolve_columns(table, table_path)
        read = MetadataRead(
            audio_files=list_audio(root, audio_dir, AUDIO_SUFFIXES),
            notes=[f"read {table_path.name} as {encoding}; columns {roles}"],
        )
        listing = _Listing(
            roles, {Path(p).stem: p for p in read.audio_files}, audio_dir.relative_to(root), table_path.name
        )
        for record in table.to_dict("records"):
            self._add_row(read, record, listing)
        return read

    def _resolve_columns(self, table: pd.DataFrame, table_path: Path) -> dict[str, str]:
        headers = {c.lower(): c for c in table.columns if c != "source_row"}
        if self.columns:
            missing = {role: col for role, col in self.columns.items() if col not in table.columns}
            if missing or not {"id", "label"} <= set(self.columns):
                raise ManifestSchemaError(
                    f"iatos: configured columns {self.columns} need roles 'id' and 'label' present in "
                    f"{table_path.name}; missing {missing or 'roles'}; found columns {list(headers.values())}"
                )
            return dict(self.columns)
        roles = {
            role: next((headers[c] for c in names if c in headers), None) for role, names in COLUMN_CANDIDATES.items()
        }
        if roles["id"] is None or roles["label"] is None:
            raise ManifestSchemaError(
                f"iatos: {table_path.name} has no recognisable id/label columns. Expected an id column among "
                f"{COLUMN_CANDIDATES['id']} and a label column among {COLUMN_CANDIDATES['label']}; found columns "
                f"{list(headers.values())}. Pass columns={{'id': ..., 'label': ...}} after inspecting the file."
            )
        return {role: column for role, column in roles.items() if column is not None}

    def _add_row(self, read: MetadataRead, record: dict, listing: _Listing) -> None:
        """One table row: a manifest row, or a quarantine row for a blank id or a value outside the vocabulary."""
        roles = listing.roles
        raw_id = record[roles["id"]]
        source = {"source_file": listing.source_file, "source_row": record["source_row"]}
        if not raw_id:
            read.reject(
                QuarantineReason.MISSING_ID, f"blank {roles['id']}", dataset=self.name, native_id=None, **source
            )
            return
        native_id = Path(raw_id).stem if Path(raw_id).suffix.lower() in AUDIO_SUFFIXES else raw_id
        audio_path = listing.audio_path(native_id)
        try:
            label = map_value(record[roles["label"]], LABELS, field_name=roles["label"])
            gender = map_value(record.get(roles.get("gender", "")), GENDERS, field_name=roles.get("gender", "sex"))
        except UnknownValueError as error:
            read.reject(
                rejection_reason(error, roles["label"]),
                str(error),
                dataset=self.name,
                native_id=native_id,
                recording_id=f"{self.name}:{native_id}",
                audio_path=audio_path,
                **source,
            )
            return
        age_raw = clean(record.get(roles.get("age", "")))
        age = parse_float(age_raw)
        read.rows.append(
            manifest_row(
                self.name,
                native_id,
                audio_path=audio_path,
                sound_type="cough",
                cough_type="unspecified",
                covid_label=label,
                covid_label_raw=record[roles["label"]],
                label_source="pcr",
                exclude_reason="no_label" if label == "unknown" else None,
                gender=gender,
                age=age,
                age_group=age_raw if age is None else None,
                extra=extra_json({k: v for k, v in record.items() if k not in (*roles.values(), "source_row")}),
                _source_file=listing.source_file,
                _source_row=record["source_row"],
            )
        )


def _encoding(path: Path) -> str:
    """UTF-8 when the bytes decode as such, else Latin-1 (the city's exports may use either)."""
    try:
        path.read_bytes().decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "latin-1"
