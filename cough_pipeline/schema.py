"""The harmonised manifest schema and the quarantine schema.

Every loader returns rows in this schema (the harmonised manifest the README describes). Column order, dtypes and the
allowed vocabularies live here, once, so loaders, asset checks and tests all agree on them.
"""

from __future__ import annotations

from enum import Enum

import pandas as pd

#: The six COVID-19 cough datasets: the static partitions of the manifest.
COVID_DATASETS: tuple[str, ...] = ("ccs", "iatos", "coswara", "aicovidvn", "coughvid", "ukcovid")
#: Every source a loader exists for (Virufy and ICBHI feed segmentation and the ICBHI branch).
ALL_DATASETS: tuple[str, ...] = COVID_DATASETS + ("icbhi", "virufy")

COVID_LABELS = ("positive", "negative", "unknown")
LABEL_SOURCES = ("pcr", "antigen", "lamp", "self_report", "physician", "pre_pandemic", "unknown")
GENDERS = ("female", "male", "other", "unknown")
SOUND_TYPES = ("cough", "lung_auscultation", "breath", "speech")
COUGH_TYPES = ("heavy", "shallow", "single", "three", "segment", "unspecified")
AUDIO_FORMATS = ("wav", "webm", "ogg", "mp3", "opus", "flac")
OFFICIAL_SPLITS = ("train", "dev", "test", "long_test")
#: ``exclude_reason`` values: the row is valid and kept, but not used for training by default.
EXCLUDE_REASONS = (
    "ambiguous_status",
    "recovered",
    "no_label",
    "not_cough",
    "low_quality",
    "duplicate",
    "upsampled",
)

#: Column name -> pandas dtype, in output order.
MANIFEST_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "recording_id": "string",
    "native_id": "string",
    "participant_id": "string",
    "participant_id_is_proxy": "boolean",
    "audio_path": "string",
    "audio_format": "string",
    "sound_type": "string",
    "cough_type": "string",
    "covid_label": "string",
    "covid_label_raw": "string",
    "label_source": "string",
    "exclude_reason": "string",
    "age": "Float64",
    "age_group": "string",
    "gender": "string",
    "recording_date": "string",
    "country": "string",
    "sample_rate": "Int64",
    "channels": "Int64",
    "duration_s": "Float64",
    "official_split": "string",
    "split_scheme": "string",
    "symptoms": "string",
    "respiratory_conditions": "string",
    "cough_detected": "Float64",
    "quality": "string",
    "content_hash": "string",
    "extra": "string",
}

#: Allowed values per enum column; ``None`` in a column is always allowed except where noted.
MANIFEST_DOMAINS: dict[str, tuple[str, ...]] = {
    "covid_label": COVID_LABELS,
    "label_source": LABEL_SOURCES,
    "gender": GENDERS,
    "sound_type": SOUND_TYPES,
    "cough_type": COUGH_TYPES,
    "audio_format": AUDIO_FORMATS,
    "official_split": OFFICIAL_SPLITS,
    "exclude_reason": EXCLUDE_REASONS,
    "dataset": ALL_DATASETS,
}
#: Columns that must never be null in a kept manifest row.
MANIFEST_REQUIRED = (
    "dataset",
    "recording_id",
    "native_id",
    "participant_id",
    "participant_id_is_proxy",
    "audio_path",
    "audio_format",
    "sound_type",
    "covid_label",
    "label_source",
    "gender",
    "sample_rate",
    "channels",
    "duration_s",
    "content_hash",
)


class QuarantineReason(str, Enum):
    """Why an input row could not enter the manifest. The value is the machine-readable code."""

    AUDIO_MISSING = "audio_missing"  # listed in metadata, no file on disk
    AUDIO_EMPTY = "audio_empty"  # zero-byte file
    AUDIO_NO_SAMPLES = "audio_no_samples"  # decodes, but holds no samples (e.g. a 44-byte header-only wav)
    AUDIO_UNREADABLE = "audio_unreadable"  # no decoder can read it (corrupt, wrong format, a directory)
    AUDIO_TRUNCATED = "audio_truncated"  # decodes to fewer frames than its header declares (a cut-off file)
    AUDIO_NOT_PROVIDED = "audio_not_provided"  # metadata says the modality is absent (UK: m_size <= 44 or NaN)
    UNLISTED_FILE = "unlisted_file"  # audio on disk that no metadata row refers to
    UNKNOWN_LABEL = "unknown_label"  # a label value outside the source's documented vocabulary
    INVALID_VALUE = "invalid_value"  # another field outside its documented vocabulary
    DUPLICATE_ID = "duplicate_id"  # a second metadata row with a recording id already seen
    MISSING_ID = "missing_id"  # a metadata row without an id
    ANNOTATION_MISSING = "annotation_missing"  # audio whose annotation file is absent (ICBHI cycles)
    ANNOTATION_UNPARSEABLE = "annotation_unparseable"  # an annotation line that cannot be read as numbers
    ANNOTATION_OUT_OF_RANGE = "annotation_out_of_range"  # parses, but a value is impossible (offset <= onset...)
    NO_VALID_CYCLES = "no_valid_cycles"  # an annotation file with no usable line (empty, or every line bad)
    UNKNOWN_DIAGNOSIS = "unknown_diagnosis"  # a diagnosis outside the vocabulary, or a patient without one


QUARANTINE_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "recording_id": "string",
    "native_id": "string",
    "audio_path": "string",
    "reason": "string",
    "detail": "string",
    "source_file": "string",
    "source_row": "Int64",
}


class ManifestSchemaError(ValueError):
    """Raised when a dataset's metadata cannot be read as documented (missing columns, unknown layout)."""


def _typed_frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))
    # ``None`` must stay missing: cast through object so pandas does not stringify it.
    for column, dtype in columns.items():
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None).astype(dtype)
    return frame


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts keyed by manifest columns; absent keys become null) as a typed manifest DataFrame."""
    return _typed_frame(rows, MANIFEST_COLUMNS)


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a typed quarantine DataFrame."""
    return _typed_frame(rows, QUARANTINE_COLUMNS)


def domain_violations(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Values outside :data:`MANIFEST_DOMAINS`, per column (empty when the manifest is clean)."""
    violations: dict[str, list[str]] = {}
    for column, allowed in MANIFEST_DOMAINS.items():
        values = manifest[column].dropna().unique()
        bad = sorted(str(v) for v in values if v not in allowed)
        if bad:
            violations[column] = bad
    return violations
