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
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from cough_pipeline.datasets import get_loader
from cough_pipeline.mixtures import SPLITS, esc50_noise_bank, generate_mixtures, split_noise_bank
from cough_pipeline.profiles import get_profile
from cough_pipeline.separation.evaluation import evaluate_separation, model_separator
from cough_pipeline.separation.model import CoughSeparator, retain_freed_memory
from cough_pipeline.separation.pruning import (
    PruningConfig,
    apply_masks,
    optimize_for_inference,
    save_pruned,
    snip_masks,
)
from cough_pipeline.separation.training import MixtureDataset, train_separator, train_with_masks
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
    epochs = profile.epochs if epochs is None else epochs
    coughs = split_coughs(real_coughs(virufy_root, esc50_root), seed)
    noise = split_noise_bank(esc50_noise_bank(esc50_root), seed=seed)
    mixtures_dir = out_dir / "mixtures"
    started = time.perf_counter()
    tables = {
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
    generation_s = time.perf_counter() - started
    print(f"mixtures: {', '.join(f'{s} {len(t)}' for s, t in tables.items())} in {generation_s:.0f} s", flush=True)
    started = time.perf_counter()
    dense = train_separator(
        tables["train"],
        tables["validation"],
        mixtures_dir,
        epochs=epochs,
        seed=seed,
        on_epoch=lambda r: print(f"separator epoch {r['epoch']}: val {r['val_loss']:.5f}"),
    )
    training_s = time.perf_counter() - started
    dense.model.save(out_dir / "separator", metadata={"history": dense.history})
    torch.manual_seed(seed)
    initial = CoughSeparator(dense.model.config)
    pruning = PruningConfig(sensitivity_batches=profile.snip_batches)
    batches = DataLoader(
        MixtureDataset(tables["train"], mixtures_dir),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    masks = snip_masks(initial, batches, pruning)
    pruned = train_with_masks(
        apply_masks(initial, masks),
        masks,
        tables["train"],
        tables["validation"],
        mixtures_dir,
        epochs=epochs,
        seed=seed,
        on_epoch=lambda r: print(f"pruned epoch {r['epoch']}: val {r['val_loss']:.5f}"),
    )
    save_pruned(pruned.model, masks, pruning, out_dir / "separator_pruned")
    test = tables["test"] if test_limit is None else tables["test"].head(test_limit)
    started = time.perf_counter()
    rows = [
        (str(mixtures_dir / m), str(mixtures_dir / c), str(mixtures_dir / n))
        for m, c, n in zip(test["mixture_path"], test["cough_path"], test["noise_path"])
    ]
    _, summary = evaluate_separation(
        rows,
        {
            "separator": model_separator(dense.model.for_inference()),
            "separator_pruned": model_separator(optimize_for_inference(pruned.model)),
        },
        clip_ids=test["mixture_id"].tolist(),
    )
    evaluation_s = time.perf_counter() - started
    report = {
        "profile": profile.name,
        "seed": seed,
        "epochs": epochs,
        "test_mixtures_evaluated": int(len(test)),
        "coughs": int(len(coughs)),
        "coughs_per_split": {k: int(v) for k, v in coughs["split"].value_counts().items()},
        "noise_files_per_split": {k: int(v) for k, v in noise["split"].value_counts().items()},
        "mixtures_per_split": {split: int(len(table)) for split, table in tables.items()},
        "mixture_generation_s": round(generation_s, 1),
        "separator_training_s": round(training_s, 1),
        "evaluation_s": round(evaluation_s, 1),
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
