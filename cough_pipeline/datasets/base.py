"""What every dataset loader shares: reading metadata tables strictly, building manifest rows, and reporting
layout mismatches with what was expected and what was found."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cough_pipeline.schema import ManifestSchemaError, QuarantineReason

AUDIO_SUFFIXES = (".wav", ".webm", ".ogg", ".mp3", ".opus", ".flac")


class LayoutError(ManifestSchemaError):
    """The folder does not look like the dataset's native layout."""

    def __init__(self, dataset: str, root: Path, expected: Iterable[str], hint: str = ""):
        found = describe_folder(root)
        expected_text = "\n".join(f"  - {item}" for item in expected)
        message = (
            f"{dataset}: {root} does not match any documented layout.\nExpected one of:\n{expected_text}\n"
            f"Found:\n{found}"
        )
        super().__init__(message + (f"\n{hint}" if hint else ""))


class UnknownValueError(ValueError):
    """A metadata value outside its documented vocabulary."""


def rejection_reason(error: UnknownValueError, label_field: str) -> QuarantineReason:
    """``unknown_label`` when the value outside its vocabulary is the label's (``label_field``), else
    ``invalid_value`` (a gender, split, … outside theirs)."""
    return QuarantineReason.UNKNOWN_LABEL if label_field in str(error) else QuarantineReason.INVALID_VALUE


def describe_folder(root: Path, limit: int = 25) -> str:
    """A short listing of ``root`` (two levels) for error messages."""
    if not root.exists():
        return f"  (nothing: {root} does not exist)"
    if not root.is_dir():
        return f"  (not a folder: {root})"
    entries: list[str] = []
    for child in sorted(root.iterdir()):
        entries.append(f"  {child.name}{'/' if child.is_dir() else ''}")
        if child.is_dir():
            grandchildren = sorted(child.iterdir())
            entries.extend(f"    {g.name}{'/' if g.is_dir() else ''}" for g in grandchildren[:5])
            if len(grandchildren) > 5:
                entries.append(f"    … {len(grandchildren) - 5} more")
        if len(entries) >= limit:
            entries.append("  …")
            break
    return "\n".join(entries) or "  (empty folder)"


@dataclass
class MetadataRead:
    """What a loader read from a dataset's metadata, before any audio is opened.

    ``rows`` are candidate manifest rows (``_source_file``/``_source_row`` say where each came from);
    ``quarantine`` holds rows rejected while reading metadata; ``audio_files`` lists every audio file in the
    layout's audio folders (relative to the root), so files that no row refers to can be reported.
    """

    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    audio_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def reject(
        self,
        reason: QuarantineReason,
        detail: str,
        *,
        dataset: str,
        native_id: str | None,
        recording_id: str | None = None,
        audio_path: str | None = None,
        source_file: str | None = None,
        source_row: int | None = None,
    ) -> None:
        """Quarantine a metadata row (or one recording of it) with a reason and where it came from."""
        self.quarantine.append(
            {
                "dataset": dataset,
                "recording_id": recording_id,
                "native_id": native_id,
                "audio_path": audio_path,
                "reason": reason.value,
                "detail": detail,
                "source_file": source_file,
                "source_row": source_row,
            }
        )


def read_table(
    path: Path,
    required: Iterable[str],
    *,
    dataset: str,
    sep: str | None = ",",
    encoding: str = "utf-8",
    strip_header: bool = False,
) -> pd.DataFrame:
    """Read a metadata CSV as strings (blank -> None), failing clearly when required columns are missing.

    ``source_row`` (the 1-based data-line number) is added so quarantine rows point back to the file.
    """
    if not path.is_file():
        raise ManifestSchemaError(f"{dataset}: metadata file {path} is missing")
    frame = pd.read_csv(
        path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding, engine="python" if sep is None else "c"
    )
    if strip_header:
        frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestSchemaError(
            f"{dataset}: {path.name} lacks required column(s) {missing}; found columns {list(frame.columns)}"
        )
    frame = frame.apply(lambda column: column.str.strip()).astype(object)
    # On pandas' string dtype ``where(..., None)`` stores NaN, which is truthy; object columns keep the None.
    frame = frame.where(frame != "", None)
    frame.insert(0, "source_row", range(1, len(frame) + 1))
    return frame


def clean(value: Any) -> str | None:
    """Strip a raw value; blank, ``None`` and NaN become ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def map_value(raw: Any, mapping: Mapping[str, Any], *, field_name: str, case_insensitive: bool = True) -> Any:
    """Look a raw value up in a documented vocabulary; ``None`` maps through ``mapping[None]`` when present.

    Raises :class:`UnknownValueError` for anything outside the vocabulary, so new values are never guessed.
    """
    value = clean(raw)
    key = value.lower() if (value is not None and case_insensitive) else value
    table = {(k.lower() if isinstance(k, str) and case_insensitive else k): v for k, v in mapping.items()}
    if key in table:
        return table[key]
    allowed = sorted(str(k) for k in mapping if k is not None)
    raise UnknownValueError(f"{field_name}={value!r} is not one of {allowed}")


def parse_float(raw: Any) -> float | None:
    """A number, accepting a decimal comma; ``None`` for blanks and non-numbers (kept raw in ``extra``)."""
    value = clean(raw)
    if value is None:
        return None
    try:
        number = float(value.replace(",", "."))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def join_tokens(tokens: Iterable[str]) -> str | None:
    """Normalised ``;``-joined tokens, or ``None`` for none."""
    cleaned = sorted({t.strip().lower().replace(" ", "_") for t in tokens if t and t.strip()})
    return ";".join(cleaned) or None


def extra_json(values: Mapping[str, Any]) -> str:
    """Every other native field, as sorted JSON with blanks dropped."""
    kept = {k: v for k, v in values.items() if clean(v) is not None}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False, default=str)


def list_audio(root: Path, folder: Path, suffixes: Iterable[str] = AUDIO_SUFFIXES) -> list[str]:
    """Audio files under ``folder`` (recursively, skipping macOS ``__MACOSX``/``._*`` junk), relative to ``root``.

    Anything named like an audio file is listed, a directory too: the decoder then reports it as unreadable,
    rather than the recording being called missing when something does stand at its path.
    """
    if not folder.is_dir():
        return []
    wanted = tuple(s.lower() for s in suffixes)
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(root)
        if "__MACOSX" in relative.parts or path.name.startswith("._"):
            continue
        if path.suffix.lower() in wanted and (path.is_file() or path.is_dir()):
            found.append(relative.as_posix())
    return sorted(found)


def manifest_row(dataset: str, native_id: str, **values: Any) -> dict:
    """A candidate manifest row with the pipeline's id conventions.

    ``recording_id`` defaults to ``"{dataset}:{native_id}"`` (plus ``:{cough_type}`` when ``id_suffix`` is
    given); without a participant the recording stands in for it and ``participant_id_is_proxy`` is True.
    """
    suffix = values.pop("id_suffix", None)
    recording_id = f"{dataset}:{native_id}" + (f":{suffix}" if suffix else "")
    participant = values.pop("participant", None)
    row = {
        "dataset": dataset,
        "native_id": native_id,
        "recording_id": recording_id,
        "participant_id": f"{dataset}:{participant}" if participant else recording_id,
        "participant_id_is_proxy": participant is None,
        "gender": "unknown",
        "covid_label": "unknown",
        "label_source": "unknown",
    }
    row.update(values)
    return row


def sniff_delimiter(path: Path, encoding: str) -> str:
    """``,`` or ``;`` (or tab), from the header line."""
    with path.open(encoding=encoding, newline="") as handle:
        sample = handle.read(4096)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","
