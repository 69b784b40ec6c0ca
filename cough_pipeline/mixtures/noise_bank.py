"""The background-noise bank: which noise files exist, where they came from, and which split each belongs to.

A bank is a table with one row per noise file::

    path (absolute)  category  duration_s  sample_rate  source (provenance)  group (source recording)

Three ways to build one:

* :func:`load_noise_bank` on a folder with ``noise_bank.csv`` (the demo corpus writes one, with the generator and
  seed that reproduce each file);
* :func:`load_noise_bank` on a plain folder ``<folder>/<category>/**/<audio file>`` (category = subfolder name);
* :func:`esc50_noise_bank` on an ESC-50 download (``meta/esc50.csv`` + ``audio/``), minus the cough class.

:func:`split_noise_bank` assigns every file to train/validation/test **by file**, so a noise heard in testing was
never heard in training; files that share a ``group`` (two ESC-50 takes cut from one Freesound recording) stay in
the same split. The split is stratified by category: within a category the groups are shuffled with
``numpy.random.default_rng([seed, crc32(category)])`` and cut into consecutive runs whose sizes are

* largest-remainder rounding of ``n_groups * fraction`` (ties go to train, then test, then the other splits in
  the order given), after which a split left with nothing takes one group from the largest split, so that **every
  split has every category whenever the category has at least as many groups as there are splits**;
* with fewer groups than splits, one group each to **train first, then test**, then the others in the order given
  (a category with 2 files has one in train and one in test, none in validation).

The classification subset's separated clips must be mixed with noise the separator never trained on:
:func:`held_out_noise` returns the test split for that.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError, decode_audio
from cough_pipeline.mixtures.errors import MixtureError

NOISE_BANK_CSV = "noise_bank.csv"
NOISE_BANK_COLUMNS = ["path", "category", "duration_s", "sample_rate", "source", "group"]
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".webm"})
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.70, "validation": 0.15, "test": 0.15}
#: Splits served first when a category has too few groups to give every split one.
PRIORITY_SPLITS = ("train", "test")
HELD_OUT_SPLIT = "test"
ESC50_COUGH_CATEGORY = "coughing"


@dataclass(frozen=True)
class NoiseFile:
    """One noise file: where it is, its category (the scaper background label) and where it came from.

    ``group`` names the source recording; files of one group are never split apart (defaults to the path).
    """

    path: Path
    category: str
    source: str
    group: str | None = None


def _probe_duration(path: Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) from the file header, decoding only when libsndfile cannot read it."""
    try:
        info = sf.info(str(path))
        return float(info.duration), int(info.samplerate)
    except (sf.LibsndfileError, RuntimeError):
        decoded = decode_audio(path)
        return float(decoded.duration_s), int(decoded.sample_rate)


def noise_bank_frame(files: Iterable[NoiseFile]) -> pd.DataFrame:
    """The bank table for ``files``, probing each file for its duration and sample rate.

    Raises :class:`MixtureError` when a file is missing or cannot be decoded: a bank entry must be playable.
    """
    rows = []
    for noise in files:
        path = Path(noise.path).resolve()
        if not path.is_file():
            raise MixtureError(f"noise file not found: {path}")
        try:
            duration_s, sample_rate = _probe_duration(path)
        except AudioDecodeError as error:
            raise MixtureError(f"noise file {path} cannot be decoded: {error}") from None
        rows.append(
            {
                "path": str(path),
                "category": noise.category,
                "duration_s": duration_s,
                "sample_rate": sample_rate,
                "source": noise.source,
                "group": noise.group or str(path),
            }
        )
    return _as_bank(pd.DataFrame(rows, columns=NOISE_BANK_COLUMNS))


def _as_bank(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the bank's column order and dtypes, sorted by path (a stable order for seeded splits)."""
    typed = frame[NOISE_BANK_COLUMNS].astype(
        {
            "path": "string",
            "category": "string",
            "duration_s": "float64",
            "sample_rate": "int64",
            "source": "string",
            "group": "string",
        }
    )
    return typed.sort_values("path", kind="stable").reset_index(drop=True)


def _bank_from_csv(folder: Path) -> pd.DataFrame:
    """The demo corpus catalogue: ``path,category,duration_s,sample_rate,generator,seed`` (paths relative)."""
    catalogue = pd.read_csv(folder / NOISE_BANK_CSV, dtype={"path": str, "category": str, "generator": str})
    missing = {"path", "category", "duration_s", "sample_rate"} - set(catalogue.columns)
    if missing:
        raise MixtureError(f"{folder / NOISE_BANK_CSV} lacks the columns {sorted(missing)}")
    paths = [(folder / relative).resolve() for relative in catalogue["path"]]
    absent = [str(path) for path in paths if not path.is_file()]
    if absent:
        raise MixtureError(f"{len(absent)} file(s) listed in {NOISE_BANK_CSV} are missing, e.g. {absent[0]}")
    if {"generator", "seed"} <= set(catalogue.columns):
        source = [f"{generator} seed={seed}" for generator, seed in zip(catalogue["generator"], catalogue["seed"])]
    else:
        source = [f"{NOISE_BANK_CSV} in {folder}"] * len(catalogue)
    frame = catalogue.assign(path=[str(path) for path in paths], source=source, group=[str(path) for path in paths])
    return _as_bank(frame)


def _files_in_category_folders(folder: Path) -> list[NoiseFile]:
    """Every audio file under ``<folder>/<category>/`` (hidden files and folders skipped)."""
    files = []
    for category_folder in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(category_folder.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if path.is_file() and not hidden and path.suffix.lower() in AUDIO_SUFFIXES:
                source = f"folder {folder.name}/{category_folder.name}"
                files.append(NoiseFile(path, category_folder.name, source=source))
    return files


def load_noise_bank(folder: str | Path) -> pd.DataFrame:
    """The bank of ``folder``: from its ``noise_bank.csv`` when present, else from its category subfolders.

    Raises :class:`MixtureError` when the folder is missing, lists missing files, or holds no audio.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MixtureError(f"noise folder not found: {folder}")
    bank = (
        _bank_from_csv(folder)
        if (folder / NOISE_BANK_CSV).is_file()
        else noise_bank_frame(_files_in_category_folders(folder))
    )
    if bank.empty:
        raise MixtureError(f"no noise audio in {folder}: expected {NOISE_BANK_CSV} or <category>/<file> audio files")
    return bank


def esc50_noise_bank(root: str | Path, exclude_categories: Iterable[str] = (ESC50_COUGH_CATEGORY,)) -> pd.DataFrame:
    """An ESC-50 download as a noise bank: ``meta/esc50.csv`` rows whose ``audio/<filename>`` exists.

    The category is ESC-50's; the cough class is excluded by default (a cough is the foreground here, never the
    noise). Rows whose clip is absent are skipped, so a partial copy of ESC-50 works; clips cut from one Freesound
    recording (``src_file``) share a ``group`` and therefore a split.
    """
    root = Path(root)
    meta_path = root / "meta" / "esc50.csv"
    if not meta_path.is_file():
        raise MixtureError(f"not an ESC-50 folder: {meta_path} is missing")
    meta = pd.read_csv(meta_path, dtype=str)
    excluded = set(exclude_categories)
    files = [
        NoiseFile(
            root / "audio" / row["filename"],
            row["category"],
            source=f"ESC-50 fold {row['fold']}, Freesound {row['src_file']} take {row['take']}",
            group=f"esc50:{row['src_file']}",
        )
        for row in meta.to_dict("records")
        if row["category"] not in excluded and (root / "audio" / row["filename"]).is_file()
    ]
    if not files:
        raise MixtureError(f"no ESC-50 clips outside {sorted(excluded)} under {root / 'audio'}")
    return noise_bank_frame(files)


def _priority_order(fractions: Mapping[str, float]) -> list[str]:
    """Split names with train and test first, then the rest in the order given."""
    first = [name for name in PRIORITY_SPLITS if name in fractions]
    return first + [name for name in fractions if name not in first]


def _validate_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """The fractions of splits that get files, in priority order; raises for negative or not-summing-to-1 values."""
    if not fractions:
        raise MixtureError("fractions must name at least one split")
    if any(not isinstance(value, (int, float)) or value < 0 for value in fractions.values()):
        raise MixtureError(f"fractions must be non-negative numbers, got {dict(fractions)}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise MixtureError(f"fractions must sum to 1, got {sum(fractions.values())} from {dict(fractions)}")
    return {name: float(fractions[name]) for name in _priority_order(fractions) if fractions[name] > 0}


def split_counts(n_groups: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """How many groups of one category each split gets (rule in the module docstring).

    ``fractions`` must be positive and in priority order (as :func:`_validate_fractions` returns them).
    """
    names = list(fractions)
    if n_groups < len(names):
        return {name: int(rank < n_groups) for rank, name in enumerate(names)}
    quotas = np.array([n_groups * fractions[name] for name in names])
    counts = np.floor(quotas).astype(int)
    by_remainder = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n_groups - int(counts.sum())]:
        counts[i] += 1
    for i in range(len(names)):
        if counts[i] == 0:
            donor = max(range(len(names)), key=lambda j: (counts[j], j))
            counts[donor] -= 1
            counts[i] += 1
    return dict(zip(names, counts.tolist()))


def split_noise_bank(
    bank: pd.DataFrame, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> pd.DataFrame:
    """``bank`` plus a ``split`` column: disjoint by file (and by ``group``), stratified by category, seeded."""
    missing = {"path", "category"} - set(bank.columns)
    if missing:
        raise MixtureError(f"noise bank lacks the columns {sorted(missing)}")
    if bank.empty:
        raise MixtureError("noise bank is empty")
    if bank["path"].duplicated().any():
        raise MixtureError("noise bank lists a file twice; each file must land in exactly one split")
    ordered = _validate_fractions(fractions)
    groups = bank["group"] if "group" in bank.columns else bank["path"]
    split_of_group: dict[str, str] = {}
    for category in sorted(bank["category"].astype(str).unique()):
        in_category = sorted(groups[bank["category"] == category].astype(str).unique())
        rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))])
        shuffled = rng.permutation(np.array(in_category, dtype=object))
        start = 0
        for name, count in split_counts(len(shuffled), ordered).items():
            split_of_group.update(dict.fromkeys(shuffled[start : start + count], name))
            start += count
    return bank.assign(split=groups.astype(str).map(split_of_group).astype("string"))


def held_out_noise(split_bank: pd.DataFrame, split: str = HELD_OUT_SPLIT) -> pd.DataFrame:
    """Noise never used to train the separator (the test split), for mixing the classification subset's clips."""
    if "split" not in split_bank.columns:
        raise MixtureError("the bank has no 'split' column; run split_noise_bank first")
    held_out = split_bank[split_bank["split"] == split].reset_index(drop=True)
    if held_out.empty:
        raise MixtureError(f"the noise bank has no {split!r} files")
    return held_out
