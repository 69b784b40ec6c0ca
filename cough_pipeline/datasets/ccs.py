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


@dataclass(frozen=True)
class _LabelFile:
    """One ``lab/<split>.csv`` of the package, and where its wavs are."""

    root: Path
    wav_dir: Path
    #: The package's split name (``train``, ``devel``, ``test``) and the manifest's (``train``, ``dev``, ``test``).
    split: str
    official_split: str
    #: The label file, relative to the root.
    source_file: Path

    def audio_path(self, filename: str) -> str:
        """A listed wav's path relative to the root."""
        return (self.wav_dir / filename).relative_to(self.root).as_posix()


def _file_index(stem: str) -> int | None:
    """The number at the end of ``<split>_<number>``, as MuSAELab's list of upsampled files counts them."""
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


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
            labels = _LabelFile(root, wav_dir, split, official_split, label_file.relative_to(root))
            for record in read_table(label_file, ["filename", "label"], dataset=self.name).to_dict("records"):
                self._add_row(read, record, labels)
        return read

    def _add_row(self, read: MetadataRead, record: dict, labels: _LabelFile) -> None:
        """One label-file row: a manifest row, or a quarantine row for a blank file name or an unknown label."""
        filename = record["filename"]
        source = {"source_file": labels.source_file.as_posix(), "source_row": record["source_row"]}
        if not filename:
            read.reject(QuarantineReason.MISSING_ID, "blank filename", dataset=self.name, native_id=None, **source)
            return
        stem = Path(filename).stem
        audio_path = labels.audio_path(filename)
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
                **source,
            )
            return
        upsampled = _file_index(stem) in UPSAMPLED[labels.split]
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
                exclude_reason="upsampled" if upsampled else ("no_label" if label == "unknown" else None),
                official_split=labels.official_split,
                split_scheme="compare2021",
                extra=extra_json({"lab_file": labels.source_file.name}),
                _source_file=source["source_file"],
                _source_row=record["source_row"],
            )
        )
