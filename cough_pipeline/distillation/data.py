"""The clips of the distillation tasks, their folds, and the paired data set the generations train on.

Two tasks share one table layout, :data:`CLIP_COLUMNS` (``task, clip_id, audio_path, label, class_name, group,
fold``):

* ``esc50``: an ESC-50 folder (``meta/*.csv`` with ``filename, fold, target, category, src_file``, clips under
  ``audio/`` as ``.wav`` or, as in a converted copy, the same stem with another audio extension). With several
  official folds they are kept (renumbered from 0); a folder holding one fold is cut into ``n_folds`` folds,
  stratified by class and grouped by ``src_file`` (clips cut from one Freesound recording never straddle folds).
* ``coughs``: the classification subset's recordings (original variant) with the participant-grouped CV folds of
  ``classification_folds``; the holdout is not used here.

A clip whose audio is missing or unreadable becomes a quarantine row (``task, clip_id, reason, detail``) instead of
disappearing. :class:`PairedClips` holds every clip's log-mel patch at 16 kHz and at each low rate, in the order
of the table, and gives a fold's training arrays: the student's input (``logmel``) and, for cross-rate
distillation, the teacher's 16 kHz view of the same clips (``teacher_logmel``) that only the teacher reads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from cough_pipeline.audio import AudioDecodeError, load_mono
from cough_pipeline.classification.neural import InputArrays
from cough_pipeline.distillation.frontend import LogMelConfig, low_rate_direct_log_mels, paired_log_mels
from cough_pipeline.icbhi.windows import loop_pad

CLIP_COLUMNS = ("task", "clip_id", "audio_path", "label", "class_name", "group", "fold")
QUARANTINE_COLUMNS = ("task", "clip_id", "reason", "detail")
ESC50_COLUMNS = ("filename", "fold", "target", "category", "src_file")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: The input key of the teacher's view of a clip (the student's is ``logmel``).
TEACHER_INPUT = "teacher_logmel"


class DistillationDataError(ValueError):
    """A task folder or table the stage cannot read: missing metadata or columns, labels it cannot map, too few
    groups for the folds."""


def _quarantine(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS))


def _esc50_meta(root: Path) -> pd.DataFrame:
    meta_dir = root / "meta"
    official = meta_dir / "esc50.csv"
    found = [official] if official.is_file() else sorted(meta_dir.glob("*.csv"))
    if len(found) != 1:
        raise DistillationDataError(f"{meta_dir}: expected esc50.csv or one metadata CSV, found {len(found)}")
    meta = pd.read_csv(found[0])
    missing = [column for column in ESC50_COLUMNS if column not in meta.columns]
    if missing:
        raise DistillationDataError(f"{found[0]} lacks the columns {missing}")
    duplicated = meta["filename"].duplicated()
    if duplicated.any():
        raise DistillationDataError(f"{found[0]} lists {sorted(meta.loc[duplicated, 'filename'])[:3]} twice")
    return meta


def _audio_file(folder: Path, filename: str) -> Path | None:
    stem = Path(filename).stem
    for suffix in (Path(filename).suffix, *AUDIO_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if suffix and candidate.is_file():
            return candidate
    return None


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold numbers ``0..n_folds-1``: stratified by label, no group in two folds, shuffled by ``seed``."""
    if len(np.unique(groups)) < n_folds:
        raise DistillationDataError(f"{len(np.unique(groups))} groups cannot fill {n_folds} folds")
    folds = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[test] = fold
    return folds


def esc50_clips(root: str | Path, n_folds: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ESC-50 clips of ``root`` (:data:`CLIP_COLUMNS`; ``label`` = the class's rank among the folder's
    targets) and a quarantine row per listed clip without an audio file."""
    root = Path(root)
    meta = _esc50_meta(root)
    paths = [_audio_file(root / "audio", name) for name in meta["filename"]]
    missing = [name for name, path in zip(meta["filename"], paths) if path is None]
    quarantine = _quarantine([("esc50", Path(n).stem, "audio_missing", f"no audio file for {n}") for n in missing])
    found = np.array([path is not None for path in paths])
    meta = meta[found].reset_index(drop=True)
    targets = sorted(meta["target"].unique())
    clips = pd.DataFrame(
        {
            "task": "esc50",
            "clip_id": [Path(name).stem for name in meta["filename"]],
            "audio_path": [str(path) for path in paths if path is not None],
            "label": meta["target"].map({target: rank for rank, target in enumerate(targets)}).astype(np.int64),
            "class_name": meta["category"].astype(str),
            "group": meta["src_file"].astype(str),
        }
    )
    official = sorted(meta["fold"].unique())
    if len(official) >= n_folds:
        clips["fold"] = meta["fold"].map({fold: rank for rank, fold in enumerate(official)}).astype(np.int64)
    else:
        clips["fold"] = grouped_folds(clips["label"].to_numpy(), clips["group"].to_numpy(), n_folds, seed)
    return clips[list(CLIP_COLUMNS)], quarantine


def cough_clips(recordings: pd.DataFrame, folds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The classification subset's CV recordings as clips: ``recordings`` has ``recording_id, variant,
    audio_path`` (absolute), ``folds`` the ``classification_folds`` table (``split, fold, group_id, label,
    covid_label``). Holdout rows and the separated variant are left out; a CV recording without an original-variant
    file is a quarantine row (``no_original_audio``)."""
    for name, table, columns in (
        ("recordings", recordings, ("recording_id", "variant", "audio_path")),
        ("folds", folds, ("recording_id", "split", "fold", "group_id", "label", "covid_label")),
    ):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise DistillationDataError(f"the {name} table lacks the columns {missing}")
    original = recordings[recordings["variant"] == "original"][["recording_id", "audio_path"]]
    cv = folds[folds["split"] == "cv"].merge(original.drop_duplicates("recording_id"), on="recording_id", how="left")
    absent = cv["audio_path"].isna()
    quarantine = _quarantine(
        [
            ("coughs", str(r), "no_original_audio", "no original-variant audio row")
            for r in cv.loc[absent, "recording_id"]
        ]
    )
    cv = cv[~absent]
    clips = pd.DataFrame(
        {
            "task": "coughs",
            "clip_id": cv["recording_id"].astype(str),
            "audio_path": cv["audio_path"].astype(str),
            "label": cv["label"].astype(np.int64),
            "class_name": cv["covid_label"].astype(str),
            "group": cv["group_id"].astype(str),
            "fold": cv["fold"].astype(np.int64),
        }
    )
    clips = clips.sort_values(["fold", "clip_id"], kind="stable").reset_index(drop=True)[list(CLIP_COLUMNS)]
    return clips, quarantine


def load_clip_audio(
    clips: pd.DataFrame, sample_rate: int, seconds: float, workers: int = 2
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Every clip's audio, mono at ``sample_rate``, cut or looped to ``seconds``.

    Returns:
        ``(audio (kept clips, samples), kept clips, quarantine)``: unreadable or silent-empty files become
        quarantine rows (``audio_unreadable``, ``audio_empty``) and leave the kept table.
    """
    length = int(round(seconds * sample_rate))

    def read(path: str):
        try:
            samples, _ = load_mono(path, sample_rate)
        except (AudioDecodeError, OSError) as error:
            return "audio_unreadable", str(error)
        if samples.size == 0:
            return "audio_empty", "the file decodes to 0 samples"
        # a short cough is looped, not padded with silence a low rate would make indistinguishable from the lost band
        return loop_pad(samples, length), ""

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(read, clips["audio_path"]))
    kept = np.array([not isinstance(result[0], str) for result in results], dtype=bool)
    quarantine = _quarantine(
        [(row.task, row.clip_id, r[0], r[1]) for row, r, ok in zip(clips.itertuples(), results, kept) if not ok]
    )
    audio = np.stack([r[0] for r, ok in zip(results, kept) if ok]) if kept.any() else np.zeros((0, length))
    return audio.astype(np.float32, copy=False), clips[kept].reset_index(drop=True), quarantine


@dataclass
class PairedClips:
    """One task's clips with their log-mel patches at the front end's rate and at each low rate.

    Args:
        clips: the task's kept clips (:data:`CLIP_COLUMNS`), in the order of the patches.
        log_mels: ``{rate: (clips, 1, mels, frames)}``, the key ``sample_rate`` holding the clips as they are.
        sample_rate: the front end's rate.
        classes: the class names by label.
        direct: ``{rate: patches}`` computed at the low rate without up-sampling (:func:`log_mel_direct`), for
            evaluation only.
    """

    clips: pd.DataFrame
    log_mels: dict[int, torch.Tensor]
    sample_rate: int
    classes: list[str]
    direct: dict[int, torch.Tensor]

    @classmethod
    def build(
        cls, clips: pd.DataFrame, audio: np.ndarray, rates: tuple[int, ...], frontend: LogMelConfig
    ) -> PairedClips:
        """The patches of ``audio`` (rows of ``clips``, at ``frontend.sample_rate``) at every rate."""

        def tensors(arrays: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
            return {rate: torch.from_numpy(array).unsqueeze(1) for rate, array in arrays.items()}

        names = clips.drop_duplicates("label").sort_values("label")
        if names["label"].tolist() != list(range(len(names))):
            raise DistillationDataError(f"labels must be 0..classes-1, got {sorted(clips['label'].unique())}")
        return cls(
            clips=clips.reset_index(drop=True),
            log_mels=tensors(paired_log_mels(audio, rates, frontend)),
            sample_rate=frontend.sample_rate,
            classes=names["class_name"].tolist(),
            direct=tensors(low_rate_direct_log_mels(audio, rates, frontend)),
        )

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.clips["label"].to_numpy(np.float32))

    @property
    def folds(self) -> list[int]:
        return sorted(int(fold) for fold in self.clips["fold"].unique())

    def split(self, fold: int) -> dict[str, np.ndarray]:
        """Boolean masks of outer ``fold``: ``test`` (its clips), ``validation`` (the next fold's, for early
        stopping and the loss weights' grid search) and ``train`` (the others)."""
        numbers = self.folds
        if fold not in numbers or len(numbers) < 3:
            raise DistillationDataError(f"fold {fold} of {numbers}: need it and at least 3 folds")
        following = numbers[(numbers.index(fold) + 1) % len(numbers)]
        fold_of = self.clips["fold"].to_numpy()
        test, validation = fold_of == fold, fold_of == following
        return {"train": ~(test | validation), "validation": validation, "test": test}

    def arrays(self, student_rate: int, teacher_rate: int | None = None, direct: bool = False) -> InputArrays:
        """The student's patches at ``student_rate`` as ``logmel`` (from :attr:`direct` when ``direct``) and,
        when ``teacher_rate`` is given, the teacher's view at that rate as :data:`TEACHER_INPUT`."""
        source = self.direct if direct else self.log_mels
        tensors = {"logmel": source[student_rate]}
        if teacher_rate is not None:
            tensors[TEACHER_INPUT] = self.log_mels[teacher_rate]
        return InputArrays.from_tensors(tensors, self.labels)


def task_paired_clips(
    clips: pd.DataFrame,
    rates: tuple[int, ...],
    seconds: float,
    workers: int = 2,
    frontend: LogMelConfig | None = None,
) -> tuple[dict[str, PairedClips], pd.DataFrame]:
    """Per task of ``clips`` (:data:`CLIP_COLUMNS`), its clips read (:func:`load_clip_audio`) and paired at the
    front end's rate (``frontend``, the PANNs settings by default) and each of ``rates``; and the quarantine rows of
    the clips whose audio did not decode."""
    frontend = frontend or LogMelConfig()
    paired, quarantines = {}, []
    for task, rows in clips.groupby("task", sort=False):
        audio, kept, unreadable = load_clip_audio(rows.reset_index(drop=True), frontend.sample_rate, seconds, workers)
        paired[str(task)] = PairedClips.build(kept, audio, rates, frontend)
        quarantines.append(unreadable)
    return paired, pd.concat(quarantines, ignore_index=True) if quarantines else _quarantine([])
