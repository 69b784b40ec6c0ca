"""Classical and neural COVID-19 classifiers on real coughs (``make classify-experiment``).

The recordings are Virufy's manual single-cough segments (one row per segment; the label is the patient's PCR
result, every segment of a patient in one group). They go through the same library calls as the pipeline's
assets: preprocessing and the 15 x 7 feature table, a participant-grouped stratified holdout and CV folds, the
ranking on the CV folds only, the four classifiers on all features and on the top-k; then the neural input arrays
(log-mel patch, MFCC, spectrogram image, chroma) and, on the same folds and holdout, the three CNNs, the
Cough2COVID19 ensemble and its single-branch models, each trained once per CV fold with early stopping on that
fold. Every model gets the same report with participant-bootstrap intervals (holdout: the fold models' averaged
probabilities). Writes ``report.csv``, ``ranking.csv``, ``predictions.csv``, ``neural_history.csv`` and
``summary.json`` to ``--out`` and prints the headline table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from cough_pipeline.bounds import PositiveInt, check_fields
from cough_pipeline.classification.classical import ClassicalConfig
from cough_pipeline.classification.evaluation import fold_ensemble
from cough_pipeline.classification.features import FEATURE_DOMAINS, FeatureConfig, feature_blocks, feature_table
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.inputs import InputArraysConfig, input_table
from cough_pipeline.classification.networks import CNN_NAMES, MODEL_NAMES, ModelName
from cough_pipeline.classification.neural import NeuralTrainingConfig, train_neural
from cough_pipeline.classification.ranking import RankerConfig
from cough_pipeline.classification.stage import (
    ALL_DATASETS,
    EvaluationConfig,
    StageConfig,
    ranking_table,
    report_table,
    run_stage,
)
from cough_pipeline.datasets import get_loader
from cough_pipeline.parallel import throttled

#: The CNNs and the Cough2COVID19 ensemble, then its single-branch models (small: a few seconds per fold).
NEURAL_MODELS = (*CNN_NAMES, "cough2covid19", "mfcc_mlp", "spectrogram_cnn", "chroma_mlp")
VARIANT = "original"


@dataclass(frozen=True)
class NeuralOptions:
    """Which neural models the experiment trains, and how.

    Args:
        models: keys of :data:`~cough_pipeline.classification.networks.MODELS`, trained in this order.
        training: every model's settings. One torch thread by default: on a 2-core machine shared with other
            jobs, two threads wait on each other and trained several times slower.
        cnn_epochs: the most epochs of the three ImageNet-size CNNs, which take 2 to 12 s per fold and epoch on
            one CPU thread here, against under 1 s for the Cough2COVID19 family.
    """

    models: tuple[ModelName, ...] = NEURAL_MODELS
    training: NeuralTrainingConfig = NeuralTrainingConfig(epochs=20, patience=5, num_threads=1)
    cnn_epochs: PositiveInt = 6

    def __post_init__(self):
        check_fields(self)

    def config(self, name: str) -> NeuralTrainingConfig:
        """The training settings of model ``name``."""
        if name in CNN_NAMES:
            return replace(self.training, epochs=min(self.training.epochs, self.cnn_epochs))
        return self.training


def virufy_segments(root: Path) -> pd.DataFrame:
    """Virufy's manual segments as classification recordings (variant ``original``, absolute audio paths)."""
    root = root.resolve()
    rows = pd.DataFrame(get_loader("virufy", unit="segment").read_metadata(root).rows)
    return rows[["dataset", "recording_id", "participant_id", "covid_label"]].assign(
        variant=VARIANT, audio_path=[str(root / path) for path in rows["audio_path"]]
    )


def headline(report: pd.DataFrame, metric: str = "roc_auc", seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model and variant: the metric with its interval on the holdout and on the pooled CV predictions, the
    holdout's clips and participants, and the model's training seconds where ``seconds`` names it."""
    rows = report[(report["metric"] == metric) & (report["dataset"] == ALL_DATASETS)]
    wide = rows.pivot_table(index=["model", "variant"], columns="evaluation", values=["value", "ci_low", "ci_high"])
    wide.columns = [f"{evaluation}_{stat}" for stat, evaluation in wide.columns]
    wide = wide.join(rows.groupby(["model", "variant"])[["cv_mean", "cv_sd"]].first())
    holdout = rows[rows["evaluation"] == "holdout"].groupby(["model", "variant"])[["n", "n_participants"]].first()
    wide = wide.join(holdout.rename(columns={"n": "holdout_clips", "n_participants": "holdout_participants"}))
    order = [f"{e}_{s}" for e in ("holdout", "cv") for s in ("value", "ci_low", "ci_high")]
    table = wide[[*order, "cv_mean", "cv_sd", "holdout_clips", "holdout_participants"]].reset_index()
    table["train_s"] = table["model"].map(seconds or {})
    return table.sort_values("holdout_value", ascending=False, ignore_index=True)


def classical_part(recordings: pd.DataFrame, workers: int, seed: int, evaluation: EvaluationConfig):
    """The feature table, the fold table and the classical stage's result (rankings, predictions, report)."""
    table = feature_table(recordings, FeatureConfig(workers=workers), progress=throttled(print, "featurised", 20))
    features = table.features
    folds = assign_folds(features.assign(content_hash=None), FoldConfig(seed=seed))
    config = StageConfig(
        ranker=RankerConfig(seed=seed, workers=workers), classical=ClassicalConfig(seed=seed), evaluation=evaluation
    )
    result = run_stage(features, folds, None, feature_blocks(features.columns), FEATURE_DOMAINS, config)
    return table, folds, result


@dataclass
class NeuralRun:
    """The neural part: ``predictions`` (validation, per-fold holdout and fold-ensemble rows), ``histories`` (per
    model, fold and epoch), ``seconds`` (per model: all its folds with their predictions), ``inputs_s`` (writing
    the arrays) and the recordings whose arrays were refused (``quarantine``)."""

    predictions: pd.DataFrame
    histories: pd.DataFrame
    seconds: dict[str, float]
    inputs_s: float
    quarantine: pd.DataFrame


def train_neural_models(
    inputs: pd.DataFrame, folds: pd.DataFrame, root: Path, options: NeuralOptions
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Each model's fold models on the arrays under ``root``: predictions with the fold ensemble, the per-epoch
    histories (``model`` column added) and each model's training seconds (all folds, with their predictions)."""
    predictions, histories, seconds = [], [], {}
    for name in options.models:
        started = time.perf_counter()
        result = train_neural(inputs, folds, name, VARIANT, root, options.config(name))
        seconds[name] = round(time.perf_counter() - started, 1)
        predictions.append(result.predictions)
        histories.append(result.histories.assign(model=name))
        print(f"{name}: {seconds[name]} s, best epoch per fold {[m.best_epoch for m in result.models]}")
    table = pd.concat(predictions, ignore_index=True)
    return pd.concat([table, fold_ensemble(table)], ignore_index=True), pd.concat(histories, ignore_index=True), seconds


def neural_part(
    recordings: pd.DataFrame, folds: pd.DataFrame, folder: Path, options: NeuralOptions, workers: int = 1
) -> NeuralRun:
    """Write the recordings' input arrays under ``folder`` (``workers`` processes, as ``classification_inputs``
    does), then train every model of ``options`` on them."""
    started = time.perf_counter()
    progress = throttled(print, "converted", 20)
    inputs, quarantine = input_table(recordings, folder, InputArraysConfig(workers=workers), progress=progress)
    inputs_s = round(time.perf_counter() - started, 1)
    predictions, histories, seconds = train_neural_models(inputs, folds, folder, options)
    return NeuralRun(predictions, histories, seconds, inputs_s, quarantine)


def _neural_summary(neural: NeuralRun, options: NeuralOptions) -> dict:
    """The neural settings, each model's training seconds and best epoch per fold, and the refused recordings."""
    best = neural.histories[neural.histories["best"]]
    training = options.training
    return {
        "models": list(options.models),
        "epochs": {name: options.config(name).epochs for name in options.models},
        "patience": training.patience,
        "batch_size": training.batch_size,
        "threads": training.num_threads,
        "device": training.resolved_device().type,
        "inputs_seconds": neural.inputs_s,
        "train_seconds": neural.seconds,
        "best_epochs": {name: best.loc[best["model"] == name, "epoch"].tolist() for name in options.models},
        "quarantined": neural.quarantine[["recording_id", "reason"]].to_dict("records"),
    }


def run(
    virufy: Path,
    out: Path,
    workers: int = 2,
    seed: int = 0,
    n_boot: int = 1000,
    neural: NeuralOptions | None = NeuralOptions(),
) -> dict:
    """The whole experiment (classical models only when ``neural`` is None or names no model); returns the
    summary it writes. The neural models are seeded by ``neural.training.seed``."""
    started = time.perf_counter()
    evaluation = EvaluationConfig(n_boot=n_boot, seed=seed)
    recordings = virufy_segments(virufy)
    table, folds, result = classical_part(recordings, workers, seed, evaluation)
    classical_s = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    report, predictions, trained = result.report, result.predictions, None
    if neural is not None and neural.models:
        trained = neural_part(recordings, folds, out / "inputs", neural, workers)
        report = pd.concat([report, report_table(trained.predictions, evaluation)], ignore_index=True)
        predictions = pd.concat([predictions, trained.predictions], ignore_index=True)
        trained.histories.to_csv(out / "neural_history.csv", index=False)
    report.to_csv(out / "report.csv", index=False)
    ranking_table(result.rankings).to_csv(out / "ranking.csv", index=False)
    predictions.to_csv(out / "predictions.csv", index=False)
    holdout = folds[folds["split"] == "holdout"]
    summary = {
        "recordings": len(recordings),
        "feature_rows": len(table.features),
        "quarantined": table.quarantine[["recording_id", "reason"]].to_dict("records"),
        "participants": int(folds["participant_id"].nunique()),
        "holdout": {"recordings": len(holdout), "participants": int(holdout["participant_id"].nunique())},
        "top_features": result.rankings[VARIANT].top_features(ClassicalConfig().top_k),
        "roc_auc": headline(report, seconds=trained.seconds if trained else None).round(4).to_dict("records"),
        "neural": _neural_summary(trained, neural) if trained else None,
        "classical_seconds": classical_s,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _parser() -> argparse.ArgumentParser:
    defaults = NeuralOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--virufy", type=Path, required=True, help="the Virufy folder holding clinical/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2, help="processes for the features and input arrays")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    neural = parser.add_argument_group("neural models")
    neural.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_NAMES,
        default=list(defaults.models),
        metavar="MODEL",
        help=f"which to train, in order (default: all of {', '.join(MODEL_NAMES)})",
    )
    neural.add_argument("--epochs", type=int, default=defaults.training.epochs, help="the most epochs per fold model")
    neural.add_argument("--cnn-epochs", type=int, default=defaults.cnn_epochs, help="the most for the three CNNs")
    neural.add_argument(
        "--patience",
        type=int,
        default=defaults.training.patience,
        help="stop after so many epochs without a lower loss",
    )
    neural.add_argument("--batch-size", type=int, default=defaults.training.batch_size)
    neural.add_argument("--threads", type=int, default=defaults.training.num_threads, help="torch threads per model")
    neural.add_argument("--no-neural", action="store_true", help="the classical models only")
    return parser


def _neural_options(arguments: argparse.Namespace) -> NeuralOptions | None:
    """The neural part the command line asks for (None for ``--no-neural``)."""
    if arguments.no_neural:
        return None
    training = replace(
        NeuralOptions().training,
        epochs=arguments.epochs,
        patience=arguments.patience,
        batch_size=arguments.batch_size,
        num_threads=arguments.threads,
        seed=arguments.seed,
    )
    return NeuralOptions(tuple(dict.fromkeys(arguments.models)), training, arguments.cnn_epochs)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    neural = _neural_options(arguments)
    summary = run(arguments.virufy, arguments.out, arguments.workers, arguments.seed, arguments.n_boot, neural)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(summary["roc_auc"]).to_string(index=False))
    print(f"holdout: {summary['holdout']}; top features: {summary['top_features']}; {summary['seconds']} s")
    print(f"written to {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
