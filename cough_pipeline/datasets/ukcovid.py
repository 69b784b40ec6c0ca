"""UK COVID-19 Vocal Audio Dataset (open edition): participant, audio and split tables plus ``audio/``.

Each participant gives a ``cough`` (one cough) and a ``three_cough`` recording; ``exhalation`` is listed as a
breath row when asked for. A modality whose ``m_size`` is 44 bytes or less (a header-only wav) or blank is not
silently skipped as in the official code: it becomes a quarantine row with reason ``audio_not_provided``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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

PARTICIPANT_COLUMNS = ("participant_identifier", "covid_test_result", "covid_test_method")
AUDIO_COLUMNS = ("participant_identifier", "cough_file_name", "three_cough_file_name")
SPLIT_COLUMNS = ("participant_identifier", "splits")
RESULTS = {
    "positive": "positive",
    "negative": "negative",
    "unknown/void": "unknown",
    "unknown": "unknown",
    "void": "unknown",
    "prefer not to say": "unknown",
    None: "unknown",
}
GENDERS = {
    "male": "male",
    "female": "female",
    "other": "other",
    "unknown": "unknown",
    "prefer not to say": "unknown",
    None: "unknown",
}
SPLITS = {"train": "train", "val": "dev", "test": "test", "long": "long_test", None: None}
MODALITIES = {"cough": ("cough", "single"), "three_cough": ("cough", "three"), "exhalation": ("breath", None)}
TRUE_VALUES = {"1", "1.0", "true", "yes", "y"}
#: Flag columns that are not a symptom or a condition themselves.
NOT_SYMPTOMS = ("symptom_none", "symptom_onset", "symptom_prefer_not_to_say")
NOT_CONDITIONS = ("respiratory_condition_none", "respiratory_condition_prefer_not_to_say")
#: Size (bytes) at or below which a file holds no more than a WAV header.
HEADER_ONLY_BYTES = 44


def label_source(method: str | None) -> str:
    """``covid_test_method`` -> label source: PCR, LFT (antigen), LAMP, else unknown."""
    text = (method or "").upper()
    for token, source in (("PCR", "pcr"), ("LFT", "antigen"), ("LAMP", "lamp")):
        if token in text:
            return source
    return "unknown"


def _true_flags(meta: dict, prefix: str, ignored: tuple[str, ...]) -> str | None:
    """The ``<prefix><name>`` columns marked true (other than ``ignored``), as joined ``<name>`` tokens."""
    return join_tokens(
        k.removeprefix(prefix)
        for k, v in meta.items()
        if k.startswith(prefix) and k not in ignored and (clean(v) or "").lower() in TRUE_VALUES
    )


def _rejection(
    record: dict, modality: str, file_name: str | None, problem: UnknownValueError | None
) -> tuple[QuarantineReason, str] | None:
    """Why one modality of a participant goes to quarantine: no audio (no file name, or a header-only file), or
    else a participant value outside its vocabulary; ``None`` when it is a manifest row."""
    size = parse_float(record.get(f"{modality}_size"))
    if file_name is None or (size is not None and size <= HEADER_ONLY_BYTES):
        return (
            QuarantineReason.AUDIO_NOT_PROVIDED,
            f"{modality}: {'no file name' if file_name is None else f'm_size={size:g} bytes'}",
        )
    if problem is not None:
        return rejection_reason(problem, "covid_test_result"), str(problem)
    return None


@dataclass
class UkcovidLoader:
    name = "ukcovid"
    #: Also list each participant's exhalation recording (as ``sound_type=breath``).
    include_non_cough: bool = False

    def read_metadata(self, root: Path) -> MetadataRead:
        expected = ["participant_metadata.csv", "audio_metadata.csv", "train_test_splits.csv", "audio/"]
        if not all((root / name.rstrip("/")).exists() for name in expected):
            raise LayoutError(self.name, root, [" + ".join(expected)])
        participants = read_table(root / "participant_metadata.csv", PARTICIPANT_COLUMNS, dataset=self.name)
        audio = read_table(root / "audio_metadata.csv", AUDIO_COLUMNS, dataset=self.name)
        splits = read_table(root / "train_test_splits.csv", SPLIT_COLUMNS, dataset=self.name)
        by_participant = {r["participant_identifier"]: r for r in participants.to_dict("records")}
        split_by_participant = {r["participant_identifier"]: r for r in splits.to_dict("records")}
        modalities = {m: v for m, v in MODALITIES.items() if self.include_non_cough or v[0] == "cough"}
        # Files of modalities left out on purpose (exhalation by default) are out of scope, not "unlisted".
        skipped = {
            f"audio/{name}"
            for m in MODALITIES
            if m not in modalities
            for name in audio.get(f"{m}_file_name", pd.Series(dtype=str)).dropna()
        }
        read = MetadataRead(audio_files=[p for p in list_audio(root, root / "audio") if p not in skipped])
        if skipped:
            read.notes.append(f"{len(skipped)} breath recordings left out (include_non_cough=False)")
        for record in audio.to_dict("records"):
            self._add_participant(read, record, by_participant, split_by_participant, modalities)
        return read

    def _add_participant(
        self,
        read: MetadataRead,
        record: dict,
        by_participant: dict[str, dict],
        split_by_participant: dict[str, dict],
        modalities: dict[str, tuple],
    ) -> None:
        """One row of ``audio_metadata.csv``: a manifest or quarantine row per modality."""
        participant = record["participant_identifier"]
        source = {"source_file": "audio_metadata.csv", "source_row": record["source_row"]}
        if not participant:
            read.reject(
                QuarantineReason.MISSING_ID, "blank participant_identifier", dataset=self.name, native_id=None, **source
            )
            return
        try:
            values = self._participant_values(
                by_participant.get(participant), split_by_participant.get(participant, {})
            )
            problem = None
        except UnknownValueError as error:
            values, problem = {}, error
        for modality in modalities:
            file_name = clean(record.get(f"{modality}_file_name"))
            audio_path = f"audio/{file_name}" if file_name else None
            rejection = _rejection(record, modality, file_name, problem)
            if rejection is None:
                read.rows.append(self._row(record, modality, audio_path, values))
                continue
            read.reject(
                *rejection,
                dataset=self.name,
                native_id=participant,
                recording_id=f"{self.name}:{participant}:{modality}",
                audio_path=audio_path,
                **source,
            )

    def _row(self, record: dict, modality: str, audio_path: str, values: dict) -> dict:
        """The manifest row of one modality; ``values`` are the participant's, from :meth:`_participant_values`."""
        participant = record["participant_identifier"]
        sound_type, cough_type = MODALITIES[modality]
        extra_fields = {**values["extra_fields"], **{k: v for k, v in record.items() if k.startswith(modality + "_")}}
        return manifest_row(
            self.name,
            participant,
            id_suffix=modality,
            participant=participant,
            audio_path=audio_path,
            sound_type=sound_type,
            cough_type=cough_type,
            extra=extra_json(extra_fields),
            **{k: v for k, v in values.items() if k != "extra_fields"},
            _source_file="audio_metadata.csv",
            _source_row=record["source_row"],
        )

    @staticmethod
    def _participant_values(meta: dict | None, split_row: dict) -> dict:
        """Label, demographics and split for one participant; raises on values outside the vocabulary."""
        official_split = map_value(split_row.get("splits"), SPLITS, field_name="splits")
        split_extra = {
            k: v for k, v in split_row.items() if k not in ("participant_identifier", "splits", "source_row")
        }
        if meta is None:
            return {
                "covid_label": "unknown",
                "exclude_reason": "no_label",
                "official_split": official_split,
                "split_scheme": "ukhsa_standard" if official_split else None,
                "extra_fields": {"metadata": "participant absent from participant_metadata.csv", **split_extra},
            }
        label = map_value(meta["covid_test_result"], RESULTS, field_name="covid_test_result")
        age = clean(meta.get("age"))
        used = {"participant_identifier", "covid_test_result", "age", "gender", "submission_date", "source_row"}
        return {
            "covid_label": label,
            "covid_label_raw": meta["covid_test_result"],
            "label_source": label_source(meta["covid_test_method"]),
            "exclude_reason": "no_label" if label == "unknown" else None,
            "age": parse_float(age) if age and age.replace(".", "", 1).isdigit() else None,
            "age_group": age if age and not age.replace(".", "", 1).isdigit() else None,
            "gender": map_value(meta.get("gender"), GENDERS, field_name="gender"),
            "recording_date": clean(meta.get("submission_date")),
            "official_split": official_split,
            "split_scheme": "ukhsa_standard" if official_split else None,
            "symptoms": _true_flags(meta, "symptom_", NOT_SYMPTOMS),
            "respiratory_conditions": _true_flags(meta, "respiratory_condition_", NOT_CONDITIONS),
            "extra_fields": {
                **{
                    k: v
                    for k, v in meta.items()
                    if k not in used and not k.startswith("symptom_") and not k.startswith("respiratory_condition_")
                },
                **split_extra,
            },
        }
