"""Class balancing of the training windows: a plan (which windows, which augmented copies) and its rendering.

Strategies, applied to the rows of the training split only (``split_column == train_split``); every other row
(test, validation, no split) passes through unchanged: its original window, ``copy_index`` 0, never augmented.
Let ``n_c`` be the number of training windows of class ``c`` and ``C`` the classes with ``n_c > 0``:

* ``original``: nothing changes.
* ``undersample``: every class randomly reduced (without replacement) to ``min_{c in C} n_c``.
* ``oversample``: every class brought up to ``max_{c in C} n_c`` with augmented copies of its own windows.
* ``hybrid_anchor``: every class brought to the mean class size ``round(mean_{c in C} n_c)`` (halves round up):
  classes above it are undersampled, classes below it get augmented copies.

Augmented copies cycle through a class's windows in a seeded random order, so each window gets ``k`` or ``k + 1``
copies (``copy_index`` 1, 2, ...) before any gets ``k + 2``. A copy's ``augment_seed`` is a hash of
``(seed, window_id, copy_index)``: the same copy gets the same augmentation under every strategy, and the plan does
not change when other classes do.

**Empty classes.** A class with no training window (but present in another split, or listed in ``classes``)
cannot be balanced: it is kept at 0, left out of the min/max/mean, named in ``plan.attrs["empty_train_classes"]``,
flagged ``warning="empty_in_train"`` by :func:`class_counts`, and a :class:`BalancingWarning` is emitted.
A training split with no labelled row at all is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import soundfile as sf

from cough_pipeline.icbhi.augmentation import AugmentConfig, augment_with_seed
from cough_pipeline.icbhi.windows import write_wav
from cough_pipeline.naming import artefact_stem
from cough_pipeline.parallel import ProgressCallback, notify, ordered_bounded_map

#: Class-balancing strategies (see the module docstring); one partition of the training set each.
Strategy = Literal["original", "undersample", "oversample", "hybrid_anchor"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PLAN_COLUMNS = [
    "window_id",
    "copy_index",
    "augmented",
    "augment_seed",
    "split",
    "label",
    "strategy",
    "class_size_before",
    "class_size_after",
]
COUNT_COLUMNS = ["split", "label", "before", "after", "augmented", "warning"]
#: Order used for labels when no ``classes`` are given (ICBHI lung-sound labels first, then any other, sorted).
PREFERRED_ORDER = ("normal", "crackles", "wheezes", "both")


class BalancingError(ValueError):
    """A table or request that cannot be balanced."""


class BalancingWarning(UserWarning):
    """A training class is empty and stays at 0."""


def augment_seed(seed: int, window_id: str, copy_index: int) -> int:
    """Seed of one augmented copy: stable across strategies, runs and machines (a 63-bit BLAKE2b hash)."""
    digest = hashlib.blake2b(f"{seed}:{window_id}:{copy_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def ordered_classes(labels) -> list[str]:
    """Distinct non-null labels, :data:`PREFERRED_ORDER` first, then the rest sorted."""
    present = {str(label) for label in labels if label is not None and not pd.isna(label)}
    return [c for c in PREFERRED_ORDER if c in present] + sorted(present - set(PREFERRED_ORDER))


def _targets(counts: dict[str, int], strategy: Strategy) -> dict[str, int]:
    sizes = [n for n in counts.values() if n > 0]
    if strategy == "original":
        return dict(counts)
    target = {
        "undersample": min(sizes),
        "oversample": max(sizes),
        "hybrid_anchor": int(np.floor(np.mean(sizes) + 0.5)),
    }[strategy]
    return {label: (target if n > 0 else 0) for label, n in counts.items()}


def balance_plan(
    windows: pd.DataFrame,
    strategy: Strategy,
    seed: int,
    label_column: str = "lung_label",
    split_column: str = "official_split",
    train_split: str = "train",
    classes: list[str] | tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """One row per output example (columns :data:`PLAN_COLUMNS`) for ``strategy`` (see the module docstring).

    Rows keep the table order; a window's augmented copies follow it. ``class_size_before`` /
    ``class_size_after`` are the training counts of the row's class (null outside the training split).
    ``classes`` (default: every label in the table) fixes the class list and order; a training label outside it
    is an error. Deterministic for a ``seed``.
    """
    if strategy not in STRATEGIES:
        raise BalancingError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    training = _Training.of(windows, label_column, split_column, train_split, classes)
    empty = [label for label, n in training.counts.items() if n == 0]
    if empty:
        warnings.warn(f"classes {empty} have no {train_split} windows and stay at 0", BalancingWarning, stacklevel=2)
    targets = _targets(training.counts, strategy)
    kept, copies = training.select(targets, seed)
    rows = training.plan_rows(kept, copies, targets, strategy, seed)
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS).astype(
        {
            "copy_index": "int64",
            "augmented": "bool",
            "augment_seed": "Int64",
            "class_size_before": "Int64",
            "class_size_after": "Int64",
        }
    )
    plan.attrs.update(classes=training.classes, empty_train_classes=empty, train_split=train_split, seed=int(seed))
    return plan


@dataclass(frozen=True)
class _Training:
    """A windows table with string labels, which of its rows are in the training split, and the class sizes there."""

    table: pd.DataFrame
    label_column: str
    split_column: str
    train: np.ndarray
    classes: list[str]
    counts: dict[str, int]

    @classmethod
    def of(
        cls,
        windows: pd.DataFrame,
        label_column: str,
        split_column: str,
        train_split: str,
        classes: list[str] | tuple[str, ...] | None,
    ) -> _Training:
        """Check the table and count the training windows of each class."""
        missing = sorted({"window_id", label_column, split_column} - set(windows.columns))
        if missing:
            raise BalancingError(f"windows table lacks columns {missing}")
        if windows["window_id"].duplicated().any():
            duplicated = windows.loc[windows["window_id"].duplicated(), "window_id"].head(3).tolist()
            raise BalancingError(f"window_id must be unique; repeated: {duplicated}")
        table = windows.reset_index(drop=True)
        # Labels are compared as strings, so classes given as strings match integer-coded label columns too.
        table[label_column] = table[label_column].map(lambda value: None if pd.isna(value) else str(value))
        train = (table[split_column] == train_split).fillna(False).to_numpy(dtype=bool)
        if not train.any():
            raise BalancingError(f"no row has {split_column} == {train_split!r}: nothing to balance")
        train_labels = table.loc[train, label_column]
        if train_labels.isna().any():
            raise BalancingError(f"{int(train_labels.isna().sum())} training rows have no {label_column}")
        classes = list(classes) if classes is not None else ordered_classes(table[label_column])
        unknown = sorted(set(map(str, train_labels)) - set(classes))
        if unknown:
            raise BalancingError(f"training labels {unknown} are not in classes {classes}")
        counts = {label: int((train_labels == label).sum()) for label in classes}
        return cls(table, label_column, split_column, train, classes, counts)

    def select(self, targets: dict[str, int], seed: int) -> tuple[np.ndarray, dict[int, list[int]]]:
        """Which rows stay (bool per row) and, per row position, the copy indices of its augmented copies."""
        kept = np.ones(len(self.table), dtype=bool)
        copies: dict[int, list[int]] = {}
        labels = self.table[self.label_column]
        for label in self.classes:
            positions = np.flatnonzero(self.train & (labels == label).to_numpy(dtype=bool))
            n, target = positions.size, targets[label]
            # One generator per class, so a class's choice does not depend on the other classes.
            rng = np.random.default_rng([seed, zlib.crc32(str(label).encode())])
            if target < n:
                kept[positions] = False
                kept[np.sort(rng.choice(positions, size=target, replace=False))] = True
            elif target > n:
                order = positions[rng.permutation(n)]
                for extra in range(target - n):
                    copies.setdefault(int(order[extra % n]), []).append(1 + extra // n)
        return kept, copies

    def plan_rows(
        self, kept: np.ndarray, copies: dict[int, list[int]], targets: dict[str, int], strategy: str, seed: int
    ) -> list[dict]:
        """Plan rows in table order: each kept window, then its augmented copies."""
        ids = self.table["window_id"].tolist()
        labels = self.table[self.label_column].tolist()
        splits = self.table[self.split_column].tolist()
        rows = []
        for position in np.flatnonzero(kept):
            is_train, label = bool(self.train[position]), labels[position]
            base = {
                "window_id": ids[position],
                "split": splits[position],
                "label": label,
                "strategy": strategy,
                "class_size_before": self.counts[str(label)] if is_train else None,
                "class_size_after": targets[str(label)] if is_train else None,
            }
            rows.append({**base, "copy_index": 0, "augmented": False, "augment_seed": None})
            for copy_index in sorted(copies.get(int(position), [])):
                seed_of_copy = augment_seed(seed, ids[position], copy_index)
                rows.append({**base, "copy_index": copy_index, "augmented": True, "augment_seed": seed_of_copy})
        return rows


def class_counts(
    plan: pd.DataFrame, classes: list[str] | tuple[str, ...] | None = None, train_split: str | None = None
) -> pd.DataFrame:
    """Examples per (split, class) before and after balancing (columns :data:`COUNT_COLUMNS`).

    ``before`` is the training class size from the plan (for other splits: their unchanged count), ``after`` the
    rows in the plan, ``augmented`` how many of those are augmented copies. ``classes`` defaults to the plan's
    ``attrs["classes"]`` (set by :func:`balance_plan`), else the labels present; a training class with no row
    appears with zeros and ``warning="empty_in_train"``.
    """
    classes = list(classes) if classes is not None else plan.attrs.get("classes") or ordered_classes(plan["label"])
    train_split = train_split or plan.attrs.get("train_split", "train")
    rows = []
    splits = [s for s in pd.unique(plan["split"].dropna())]
    if train_split not in splits:
        splits.insert(0, train_split)
    splits.sort(key=lambda s: (s != train_split, str(s)))
    for split in splits:
        in_split = plan[plan["split"] == split]
        for label in classes:
            subset = in_split[in_split["label"] == label]
            after, augmented = len(subset), int(subset["augmented"].sum())
            if split == train_split:
                before = int(subset["class_size_before"].iloc[0]) if after else 0
                warning = "empty_in_train" if before == 0 else None
            else:
                before, warning = after, None
            rows.append(
                {
                    "split": split,
                    "label": label,
                    "before": before,
                    "after": after,
                    "augmented": augmented,
                    "warning": warning,
                }
            )
    return pd.DataFrame(rows, columns=COUNT_COLUMNS).astype(
        {"before": "int64", "after": "int64", "augmented": "int64", "warning": "string"}
    )


def balance_per_length(
    windows: pd.DataFrame,
    strategy: Strategy,
    seed: int,
    classes: list[str] | tuple[str, ...] | None = None,
    length_column: str = "window_seconds",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`balance_plan` of each window length on its own (lengths ascending), so every length's classes are
    balanced; returns ``(plan, counts)``: the plans one after the other, and :func:`class_counts` of each with a
    ``window_seconds`` column (a length's ``before`` is its own training class size). A :class:`BalancingWarning`
    names its window length."""
    plans, tables = [], []
    for length in sorted(windows[length_column].unique()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BalancingWarning)
            plan = balance_plan(windows[windows[length_column] == length], strategy, seed, classes=classes)
        for warning in caught:
            warnings.warn(f"{length:g} s windows: {warning.message}", BalancingWarning, stacklevel=2)
        plans.append(plan)
        tables.append(class_counts(plan, classes=classes).assign(**{length_column: length}))
    return pd.concat(plans, ignore_index=True), pd.concat(tables, ignore_index=True)


RENDER_META_COLUMNS = [
    "recording_id",
    "patient_id",
    "lung_label",
    "diagnosis",
    "official_split",
    "window_seconds",
    "window_index",
    "source_start_s",
    "source_end_s",
    "loop_padded",
    "repeats",
    "sample_rate",
]


def render_plan(
    plan: pd.DataFrame,
    windows: pd.DataFrame,
    window_dir: str | Path,
    out_dir: str | Path,
    augment_config: AugmentConfig | None = None,
    relative_to: str | Path | None = None,
    workers: int = 1,
    wav_subtype: str = "PCM_16",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Write the plan's augmented copies as WAVs and return the plan with window metadata and audio paths.

    ``windows.audio_path`` is relative to ``window_dir``. Each augmented copy is the window's WAV through
    :func:`~cough_pipeline.icbhi.augmentation.augment_with_seed` with its ``augment_seed``, written to
    ``out_dir/<window id>_aug<copy>.wav`` (earlier copies matching that pattern are removed first). The returned
    table keeps the plan's rows and order, adds the window metadata columns, ``audio_path`` relative to
    ``relative_to`` (default ``window_dir``; it can start with ``..``) for originals and copies alike, and
    ``augmentation`` (the params as a JSON string; null for originals). ``workers`` threads read, augment and
    write; ``progress(done, total)`` is called after each plan row.
    """
    window_dir = Path(window_dir).resolve()
    target = _RenderTarget(
        window_dir,
        Path(out_dir).resolve(),
        Path(relative_to).resolve() if relative_to is not None else window_dir,
        AugmentConfig() if augment_config is None else augment_config,
        wav_subtype,
    )
    table = _with_window_columns(plan, windows)
    if target.out_dir.is_dir():
        for stale in target.out_dir.glob("*_aug[0-9][0-9][0-9].wav"):
            stale.unlink()
    rows = table.to_dict("records")
    rendered = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, result in enumerate(ordered_bounded_map(pool, target.render, rows, 4 * max(1, workers)), start=1):
            rendered.append(result)
            notify(progress, done, len(rows))
    table["audio_path"] = [Path(path).as_posix() for path, _ in rendered]
    table["augmentation"] = pd.array([params for _, params in rendered], dtype="string")
    return table.drop(columns=["window_path"])


def _with_window_columns(plan: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """The plan with its windows' metadata (:data:`RENDER_META_COLUMNS`) and their path as ``window_path``."""
    unknown = sorted(set(plan["window_id"]) - set(windows["window_id"]))
    if unknown:
        raise BalancingError(f"{len(unknown)} plan windows are not in the windows table, e.g. {unknown[:3]}")
    meta = [c for c in RENDER_META_COLUMNS if c in windows.columns]
    return plan.merge(
        windows[["window_id", *meta, "audio_path"]].rename(columns={"audio_path": "window_path"}),
        on="window_id",
        how="left",
        validate="many_to_one",
    )


@dataclass(frozen=True)
class _RenderTarget:
    """Where :func:`render_plan` reads windows and writes copies, and how it augments and encodes them."""

    window_dir: Path
    out_dir: Path
    relative_to: Path
    augment_config: AugmentConfig
    wav_subtype: str

    def render(self, row: dict) -> tuple[str, str | None]:
        """``(audio path relative to relative_to, augmentation params as JSON or None)`` of one plan row."""
        source = self.window_dir / row["window_path"]
        if not row["augmented"]:
            return os.path.relpath(source, self.relative_to), None
        samples, rate = sf.read(str(source), dtype="float32")
        augmented, params = augment_with_seed(samples, rate, int(row["augment_seed"]), self.augment_config)
        target = self.out_dir / f"{artefact_stem(row['window_id'])}_aug{int(row['copy_index']):03d}.wav"
        write_wav(target, augmented, rate, self.wav_subtype)
        return os.path.relpath(target, self.relative_to), json.dumps(params, sort_keys=True)


__all__ = [
    "COUNT_COLUMNS",
    "PLAN_COLUMNS",
    "STRATEGIES",
    "BalancingError",
    "BalancingWarning",
    "Strategy",
    "augment_seed",
    "balance_per_length",
    "balance_plan",
    "class_counts",
    "ordered_classes",
    "render_plan",
]
