"""Runs the distillation strategies on one task at each low rate and writes the report.

``make distill-experiment`` runs it on an ESC-50 folder::

    python -m cough_pipeline.distillation.experiment --esc50 DIR --out DIR [--model mobilenetv3_small]
        [--rates 1000 2000] [--epochs 20] [--patience 10] [--generations 2]

It writes ``scores.csv`` (every fold's test score per strategy), ``report.csv`` / ``report.md`` (mean ± sd over
folds, Table 1's layout), ``spread.csv`` (each distilled strategy against ``fine_tuned``, paired by fold),
``generations.csv`` (each third-generation student against its teacher, with ``--generations 3``),
``per_class.csv`` and ``focus_classes.csv``, ``grid.csv`` (the α, T search), ``per_fold_<metric>.png`` and
``run.json`` (settings, epochs and wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from cough_pipeline.distillation.data import PairedClips, esc50_clips, task_paired_clips
from cough_pipeline.distillation.generations import (
    DistillationConfig,
    FoldModels,
    GenerationTrainer,
    score_all,
)
from cough_pipeline.distillation.report import (
    focus_class_changes,
    generation_gains,
    markdown_table,
    per_fold_png,
    report_table,
    spread_reading,
    wide_table,
)


@dataclass
class RateRun:
    """One task's models, chosen loss weights, grid, test scores, per-class accuracies and histories at a rate."""

    rate: int
    folds: dict[int, FoldModels]
    chosen: dict[str, tuple[float, float]]
    grid: pd.DataFrame
    scores: pd.DataFrame
    per_class: pd.DataFrame
    histories: pd.DataFrame


def run_rate(data: PairedClips, rate: int, config: DistillationConfig, log=None, full_rate=None) -> RateRun:
    """Teachers, then students, of every fold at ``rate``, scored on the test folds. ``full_rate``: the 16 kHz
    models by fold from another rate's run (the same seed and data give the same models, so they are reused)."""
    trainer = GenerationTrainer(data, rate, config, log)
    folds = trainer.teachers(full_rate)
    chosen, grid = trainer.students(folds)
    scores, per_class = score_all(data, rate, folds, config.model)
    histories = pd.DataFrame([row for fold_models in folds.values() for row in fold_models.histories])
    return RateRun(rate, folds, chosen, grid.assign(rate=rate), scores, per_class, histories.assign(rate=rate))


def write_report(runs: list[RateRun], out: Path) -> pd.DataFrame:
    """The report files of ``runs`` in ``out``; returns the report table."""
    out.mkdir(parents=True, exist_ok=True)
    scores = pd.concat([run.scores for run in runs], ignore_index=True).drop_duplicates(
        ["task", "model", "rate", "strategy", "fold", "metric"]
    )
    per_class = pd.concat([run.per_class for run in runs], ignore_index=True).drop_duplicates(
        ["task", "model", "rate", "strategy", "fold", "class_name"]
    )
    report = report_table(scores)
    scores.to_csv(out / "scores.csv", index=False)
    report.to_csv(out / "report.csv", index=False)
    (out / "report.md").write_text(markdown_table(wide_table(report)))
    spread_reading(scores).to_csv(out / "spread.csv", index=False)
    generation_gains(scores).to_csv(out / "generations.csv", index=False)
    per_class.to_csv(out / "per_class.csv", index=False)
    focus_class_changes(per_class).to_csv(out / "focus_classes.csv", index=False)
    pd.concat([run.grid for run in runs], ignore_index=True).to_csv(out / "grid.csv", index=False)
    pd.concat([run.histories for run in runs], ignore_index=True).to_csv(out / "histories.csv", index=False)
    for metric in scores["metric"].unique():
        (out / f"per_fold_{metric}.png").write_bytes(per_fold_png(scores, metric, f"fine-tuned vs distilled: {metric}"))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--esc50", required=True, help="an ESC-50 folder (meta/*.csv and audio/)")
    parser.add_argument("--out", required=True, help="where the report goes")
    parser.add_argument("--model", default="mobilenetv3_small")
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--generations", type=int, default=2, choices=(2, 3))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.7])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--folds", type=int, default=5, help="folds when the folder holds one official fold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base = DistillationConfig()
    config = DistillationConfig(
        model=args.model,
        alphas=tuple(args.alphas),
        temperatures=tuple(args.temperatures),
        generations=args.generations,
        training=replace(base.training, epochs=args.epochs, patience=args.patience, seed=args.seed),
    )
    clips, missing = esc50_clips(args.esc50, n_folds=args.folds, seed=args.seed)
    tasks, unreadable = task_paired_clips(clips, tuple(args.rates), seconds=5.0)
    data, quarantine = tasks["esc50"], pd.concat([missing, unreadable], ignore_index=True)
    print(f"{len(data.clips)} clips, {len(data.classes)} classes, folds {data.folds}, {len(quarantine)} quarantined")
    runs, full_rate = [], None
    for rate in args.rates:
        run = run_rate(data, rate, config, log=lambda line: print(f"  {line}", flush=True), full_rate=full_rate)
        full_rate = {fold: models.models["full_rate"] for fold, models in run.folds.items()}
        print(f"{rate} Hz: chosen (alpha, T) {run.chosen}", flush=True)
        runs.append(run)
    out = Path(args.out)
    report = write_report(runs, out)
    quarantine.to_csv(out / "quarantine.csv", index=False)
    seconds = time.perf_counter() - started
    facts = {
        "settings": {**vars(args)},
        "training": asdict(config.training),
        "seconds": seconds,
        "chosen": {run.rate: run.chosen for run in runs},
        "clips": len(data.clips),
        "quarantined": len(quarantine),
    }
    (out / "run.json").write_text(json.dumps(facts, indent=2, default=str) + "\n")
    print(wide_table(report).to_string(index=False))
    print(f"report in {out} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
