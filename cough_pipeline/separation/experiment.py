"""Train and evaluate the separator on real coughs: Virufy's manual single-cough segments and ESC-50 ``coughing``
clips over ESC-50's non-cough classes (``make separation-experiment``).

Coughs are split into train / validation / test by participant (Virufy patient, ESC-50 source recording) and
noises by file, so the test mixtures hold neither a voice nor a noise recording that training heard. Writes
``report.json`` (BSSEval v4 medians per system and the improvement over the unprocessed mixture) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from cough_pipeline.allocator import retain_freed_memory
from cough_pipeline.datasets import get_loader
from cough_pipeline.mixtures import SPLITS, esc50_noise_bank, generate_mixtures, split_noise_bank
from cough_pipeline.profiles import Profile, get_profile
from cough_pipeline.separation.evaluation import evaluate_mixtures
from cough_pipeline.separation.pruning import PrunedTrainingConfig, optimize_for_inference, train_pruned
from cough_pipeline.separation.training import EpochCallback, TrainingConfig, TrainingResult, train_separator
from cough_pipeline.subsets import split_coughs

ESC50_COUGH = "coughing"


def real_coughs(virufy_root: Path, esc50_root: Path) -> pd.DataFrame:
    """Virufy segments and ESC-50 coughing clips: ``path``, ``recording_id``, ``participant_id``, ``dataset``."""
    rows = [
        {
            "path": str(virufy_root / r["audio_path"]),
            "recording_id": r["recording_id"],
            "participant_id": r["participant_id"],
            "dataset": "virufy",
        }
        for r in get_loader("virufy", unit="segment").read_metadata(virufy_root).rows
    ]
    with (esc50_root / "meta" / "esc50.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = esc50_root / "audio" / row["filename"]
            if row["category"] == ESC50_COUGH and path.is_file():
                rows.append(
                    {
                        "path": str(path),
                        "recording_id": f"esc50:{Path(row['filename']).stem}",
                        "participant_id": f"esc50:{row['src_file']}",
                        "dataset": "esc50",
                    }
                )
    return pd.DataFrame(rows)


def make_mixtures(
    coughs: pd.DataFrame, noise: pd.DataFrame, profile: Profile, mixtures_dir: Path, seed: int, workers: int
) -> dict[str, pd.DataFrame]:
    """The profile's mixtures of every split (their tables, paths relative to ``mixtures_dir``)."""
    return {
        split: generate_mixtures(
            coughs[coughs["split"] == split],
            noise[noise["split"] == split],
            profile.mixtures.count(split),
            split,
            mixtures_dir,
            seed=seed,
            workers=workers,
        ).mixtures
        for split in SPLITS
    }


def epoch_printer(name: str) -> EpochCallback:
    """An ``on_epoch`` callback printing the validation loss of ``name``'s epochs."""
    return lambda r: print(f"{name} epoch {r['epoch']}: val {r['val_loss']:.5f}")


@contextmanager
def stopwatch(seconds: dict, key: str) -> Iterator[None]:
    """Record the block's wall-clock seconds (rounded to 0.1) as ``seconds[key]``."""
    started = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - started, 1)


def train_both(
    tables: dict[str, pd.DataFrame],
    mixtures_dir: Path,
    training: TrainingConfig,
    snip_batches: int,
    out_dir: Path,
    seconds: dict,
) -> tuple[TrainingResult, TrainingResult]:
    """Train the separator (timed as ``separator_training_s``) and its SNIP-pruned twin from a fresh
    initialisation; both are saved under ``out_dir``."""
    with stopwatch(seconds, "separator_training_s"):
        dense = train_separator(
            tables["train"], tables["validation"], mixtures_dir, training, on_epoch=epoch_printer("separator")
        )
    dense.model.save(out_dir / "separator", metadata={"history": dense.history})
    pruning = PrunedTrainingConfig(**training.to_dict(), sensitivity_batches=snip_batches)
    pruned, result = train_pruned(
        dense.model, tables["train"], tables["validation"], mixtures_dir, pruning, epoch_printer("pruned")
    )
    pruned.save(out_dir / "separator_pruned")
    return dense, result


def _counts(values: pd.Series) -> dict[str, int]:
    return {k: int(v) for k, v in values.value_counts().items()}


def run(
    virufy_root: Path,
    esc50_root: Path,
    out_dir: Path,
    profile_name: str,
    seed: int,
    workers: int,
    epochs: int | None = None,
    test_limit: int | None = None,
) -> dict:
    """The whole experiment; ``epochs`` overrides the profile's and ``test_limit`` evaluates only the first test
    mixtures (both for quick or memory-only runs; the report records them)."""
    retain_freed_memory()
    profile = get_profile(profile_name)
    training = TrainingConfig(epochs=profile.epochs if epochs is None else epochs, seed=seed)
    coughs = split_coughs(real_coughs(virufy_root, esc50_root), seed)
    noise = split_noise_bank(esc50_noise_bank(esc50_root), seed=seed)
    mixtures_dir, seconds = out_dir / "mixtures", {}
    with stopwatch(seconds, "mixture_generation_s"):
        tables = make_mixtures(coughs, noise, profile, mixtures_dir, seed, workers)
    sizes = ", ".join(f"{s} {len(t)}" for s, t in tables.items())
    print(f"mixtures: {sizes} in {seconds['mixture_generation_s']:.0f} s", flush=True)
    dense, pruned = train_both(tables, mixtures_dir, training, profile.snip_batches, out_dir, seconds)
    test = tables["test"] if test_limit is None else tables["test"].head(test_limit)
    with stopwatch(seconds, "evaluation_s"):
        models = {"separator": dense.model.for_inference(), "separator_pruned": optimize_for_inference(pruned.model)}
        _, summary = evaluate_mixtures(test, mixtures_dir, models)
    report = {
        "profile": profile.name,
        "seed": seed,
        "epochs": training.epochs,
        "test_mixtures_evaluated": int(len(test)),
        "coughs": int(len(coughs)),
        "coughs_per_split": _counts(coughs["split"]),
        "noise_files_per_split": _counts(noise["split"]),
        "mixtures_per_split": {split: int(len(table)) for split, table in tables.items()},
        **seconds,
        "best_epoch": {"separator": dense.best_epoch, "separator_pruned": pruned.best_epoch},
        "summary": json.loads(summary.round(3).to_json(orient="index")),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--virufy", type=Path, required=True, help="folder holding clinical/labels.csv")
    parser.add_argument("--esc50", type=Path, required=True, help="folder holding meta/esc50.csv and audio/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profile", default="modest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate only the first N test mixtures")
    arguments = parser.parse_args(argv)
    report = run(
        arguments.virufy,
        arguments.esc50,
        arguments.out,
        arguments.profile,
        arguments.seed,
        arguments.workers,
        epochs=arguments.epochs,
        test_limit=arguments.test_limit,
    )
    columns = ["sdr_median", "sir_median", "sar_median", "sdr_improvement_median", "sir_improvement_median"]
    print(pd.DataFrame(report["summary"]).T[columns].to_string())


if __name__ == "__main__":
    main()
