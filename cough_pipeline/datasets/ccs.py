"""CCS: the ComParE 2021 COVID-19 Cough Sub-Challenge package (``dist/wav``, ``dist/lab/{train,devel,test}.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cough_pipeline.datasets.base import (
    LayoutError,
    MetadataRead,
    UnknownValueError,
    extra_json,
    list_audio,
    manifest_row,
    map_value,
    read_table,
)
from cough_pipeline.schema import QuarantineReason

LABELS = {"positive": "positive", "negative": "negative", "?": "unknown", "unknown": "unknown", None: "unknown"}
SPLITS = {"train": "train", "devel": "dev", "test": "test"}
#: Files MuSAELab found upsampled to 16 kHz: flagged ``exclude_reason=upsampled``, never deleted.
UPSAMPLED = {
    "train": {29, 33, 56, 80, 84, 111, 118, 127, 176, 228, 260, 279, 285},
    "devel": {14, 17, 33, 118, 122, 141, 191, 225, 230},
    "test": {36, 41, 52, 64, 106, 127, 188, 197},
}


@dataclass
class CcsLoader:
    name = "ccs"

    def read_metadata(self, root: Path) -> MetadataRead:
        dist = root / "dist" if (root / "dist").is_dir() else root
        wav_dir, lab_dir = dist / "wav", dist / "lab"
        if not (wav_dir.is_dir() and (lab_dir / "train.csv").is_file()):
            raise LayoutError(
                self.name,
                root,
                ["dist/wav/*.wav with dist/lab/{train,devel,test}.csv", "wav/ and lab/ directly under the root"],
            )
        read = MetadataRead(audio_files=list_audio(root, wav_dir, (".wav",)))
        for split, official_split in SPLITS.items():
            label_file = lab_dir / f"{split}.csv"
            if not label_file.is_file():
                read.notes.append(f"{label_file.relative_to(root)} absent: its wavs are reported as unlisted")
                continue
            for record in read_table(label_file, ["filename", "label"], dataset=self.name).to_dict("records"):
                self._add_row(read, root, wav_dir, split, official_split, record, label_file.relative_to(root))
        return read

    def _add_row(
        self,
        read: MetadataRead,
        root: Path,
        wav_dir: Path,
        split: str,
        official_split: str,
        record: dict,
        source_file: Path,
    ) -> None:
        filename = record["filename"]
        provenance = {"_source_file": source_file.as_posix(), "_source_row": record["source_row"]}
        if not filename:
            read.reject(
                QuarantineReason.MISSING_ID,
                "blank filename",
                dataset=self.name,
                native_id=None,
                source_file=source_file.as_posix(),
                source_row=record["source_row"],
            )
            return
        stem = Path(filename).stem
        audio_path = (wav_dir / filename).relative_to(root).as_posix()
        try:
            label = map_value(record["label"], LABELS, field_name="label")
        except UnknownValueError as error:
            read.reject(
                QuarantineReason.UNKNOWN_LABEL,
                str(error),
                dataset=self.name,
                native_id=stem,
                recording_id=f"{self.name}:{stem}",
                audio_path=audio_path,
                source_file=source_file.as_posix(),
                source_row=record["source_row"],
            )
            return
        index = int(stem.rsplit("_", 1)[-1]) if stem.rsplit("_", 1)[-1].isdigit() else None
        exclude = "upsampled" if index in UPSAMPLED[split] else ("no_label" if label == "unknown" else None)
        read.rows.append(
            manifest_row(
                self.name,
                stem,
                audio_path=audio_path,
                sound_type="cough",
                cough_type="unspecified",
                covid_label=label,
                covid_label_raw=record["label"],
                label_source="self_report",
                exclude_reason=exclude,
                official_split=official_split,
                split_scheme="compare2021",
                extra=extra_json({"lab_file": source_file.name}),
                **provenance,
            )
        )
