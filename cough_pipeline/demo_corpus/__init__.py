"""Deterministic synthetic corpus written in each dataset's native layout.

The real cough datasets cannot be redistributed, so tests, demos and CI run the
loaders against this stand-in: same folder trees, file names, CSV dialects,
encodings and audio containers, filled with synthetic sounds whose
COVID-positive/negative difference is documented in :mod:`.synth` and README.md.

``generate_demo_corpus(root)`` writes ``<root>/<dataset>/`` for each dataset plus
``<root>/noise/``. Each folder is built in a hidden staging folder and renamed into
place, and carries a ``.complete`` marker; a later call with the same size, seed and
:data:`CORPUS_VERSION` leaves it untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus.layouts import WRITERS
from cough_pipeline.demo_corpus.sizes import SIZES, CorpusSize

__all__ = [
    "CORPUS_VERSION",
    "DEMO_DATASETS",
    "NOISE_FOLDER",
    "PLANTED_DEFECTS",
    "SIZES",
    "CorpusSize",
    "generate_demo_corpus",
]

CORPUS_VERSION = 5
DEMO_DATASETS = ("ccs", "iatos", "coswara", "aicovidvn", "coughvid", "ukcovid", "virufy", "icbhi", "esc50")
NOISE_FOLDER = "noise"
#: Bad inputs planted on purpose, as real downloads have them, so the quarantine is exercised end to end:
#: dataset -> {quarantine reason: count}. Everything else in the corpus is clean.
PLANTED_DEFECTS = {"ccs": {"unlisted_file": 1}, "coughvid": {"audio_unreadable": 1}}
COMPLETE_MARKER = ".complete"
DEMO_NOTE_FILE = "DEMO.md"
DEMO_NOTE = (
    "Synthetic demo data written by cough_pipeline.demo_corpus (not real recordings); "
    "it only mimics the native layout of `{name}`.\n"
)


def _dataset_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the folder name (stable across runs and Pythons)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("ascii"))])


def _marker(size: str, seed: int) -> dict[str, object]:
    """The ``.complete`` content identifying what a folder was generated from."""
    return {"corpus_version": CORPUS_VERSION, "seed": seed, "size": size}


def _is_complete(folder: Path, marker: dict[str, object]) -> bool:
    """Whether ``folder`` already holds a finished build with this exact marker."""
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def _replace_folder(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, first moving any stale ``target`` aside and deleting it."""
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / target.name)
        os.replace(staging, target)
        shutil.rmtree(stale)
    else:
        os.replace(staging, target)


def _build_folder(root: Path, name: str, size: str, seed: int) -> Path:
    """Write ``<root>/<name>`` atomically unless an identical build is already there.

    An existing folder is only ever replaced when it is itself a demo folder (it has
    ``DEMO.md``), so pointing ``root`` at real data cannot delete that data.
    """
    target = root / name
    marker = _marker(size, seed)
    if _is_complete(target, marker):
        return target
    if target.exists() and not (target / DEMO_NOTE_FILE).is_file():
        raise FileExistsError(f"{target} exists and is not a demo corpus folder; refusing to replace it")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        staging.chmod(0o755)
        WRITERS[name](staging, _dataset_rng(seed, name), SIZES[size])
        (staging / DEMO_NOTE_FILE).write_text(DEMO_NOTE.format(name=name), encoding="utf-8")
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        if _is_complete(target, marker):
            # A concurrent run (another partition's process) finished the same build first and may be reading
            # it: keep theirs rather than swapping the folder underneath them. Same inputs, same bytes.
            shutil.rmtree(staging)
        else:
            _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def generate_demo_corpus(
    root: Path, size: str = "small", seed: int = 0, datasets: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write ``<root>/<dataset>/...`` for each dataset plus ``<root>/noise/``; return {name: folder}.

    ``datasets`` defaults to :data:`DEMO_DATASETS`; the noise bank is always written.
    Idempotent: a folder whose ``.complete`` matches (size, seed, CORPUS_VERSION) is
    skipped; otherwise it is built in a staging folder and renamed into place, so a
    crashed run never leaves half a dataset. Same (size, seed) gives byte-identical files.
    Folders are built in parallel threads (ffmpeg and most numpy work release the GIL);
    each has its own random generator, so the thread schedule cannot change any byte.
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo corpus size {size!r}; choose one of {sorted(SIZES)}")
    names = tuple(DEMO_DATASETS if datasets is None else datasets)
    unknown = sorted(set(names) - set(DEMO_DATASETS))
    if unknown:
        raise ValueError(f"unknown demo datasets {unknown}; choose from {DEMO_DATASETS}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folders = (*names, NOISE_FOLDER)
    with ThreadPoolExecutor(max_workers=min(len(folders), os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(_build_folder, root, name, size, seed) for name in folders}
        return {name: future.result() for name, future in futures.items()}
