"""Features -> CoughFeatureRanker -> classical models on real coughs (``make classify-experiment``).

The recordings are Virufy's manual single-cough segments (one row per segment; the label is the patient's PCR
result, every segment of a patient in one group). They go through the same library calls as the pipeline's
assets: preprocessing and the 15 x 7 feature table, a participant-grouped stratified holdout and CV folds, the
ranking on the CV folds only, the four classifiers on all features and on the top-k, and the report with
participant-bootstrap intervals. Writes ``report.csv``, ``ranking.csv``, ``predictions.csv`` and ``summary.json``
to ``--out`` and prints the best models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from cough_pipeline.classification.classical import ClassicalConfig
from cough_pipeline.classification.features import FEATURE_DOMAINS, FeatureConfig, feature_blocks, feature_table
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.ranking import RankerConfig
from cough_pipeline.classification.stage import (
    ALL_DATASETS,
    EvaluationConfig,
    StageConfig,
    ranking_table,
    run_stage,
)
from cough_pipeline.datasets import get_loader
from cough_pipeline.parallel import throttled


def virufy_segments(root: Path) -> pd.DataFrame:
    """Virufy's manual segments as classification recordings (variant ``original``, absolute audio paths)."""
    root = root.resolve()
    rows = pd.DataFrame(get_loader("virufy", unit="segment").read_metadata(root).rows)
    return rows[["dataset", "recording_id", "participant_id", "covid_label"]].assign(
        variant="original", audio_path=[str(root / path) for path in rows["audio_path"]]
    )


def headline(report: pd.DataFrame, metric: str = "roc_auc") -> pd.DataFrame:
    """Per model and variant: the metric with its interval on the holdout and on the pooled CV predictions."""
    rows = report[(report["metric"] == metric) & (report["dataset"] == ALL_DATASETS)]
    wide = rows.pivot_table(index=["model", "variant"], columns="evaluation", values=["value", "ci_low", "ci_high"])
    wide.columns = [f"{evaluation}_{stat}" for stat, evaluation in wide.columns]
    wide = wide.join(rows.groupby(["model", "variant"])[["cv_mean", "cv_sd"]].first())
    order = [f"{e}_{s}" for e in ("holdout", "cv") for s in ("value", "ci_low", "ci_high")] + ["cv_mean", "cv_sd"]
    return wide[order].reset_index().sort_values("holdout_value", ascending=False, ignore_index=True)


def run(virufy: Path, out: Path, workers: int, seed: int, n_boot: int) -> dict:
    """The whole experiment; returns the summary it writes."""
    started = time.perf_counter()
    recordings = virufy_segments(virufy)
    table = feature_table(recordings, FeatureConfig(workers=workers), progress=throttled(print, "featurised", 20))
    features = table.features
    folds = assign_folds(features.assign(content_hash=None), FoldConfig(seed=seed))
    config = StageConfig(
        ranker=RankerConfig(seed=seed, workers=workers),
        classical=ClassicalConfig(seed=seed),
        evaluation=EvaluationConfig(n_boot=n_boot, seed=seed),
    )
    result = run_stage(features, folds, None, feature_blocks(features.columns), FEATURE_DOMAINS, config)
    out.mkdir(parents=True, exist_ok=True)
    result.report.to_csv(out / "report.csv", index=False)
    ranking_table(result.rankings).to_csv(out / "ranking.csv", index=False)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    best = headline(result.report)
    summary = {
        "recordings": len(recordings),
        "feature_rows": len(features),
        "quarantined": table.quarantine[["recording_id", "reason"]].to_dict("records"),
        "participants": int(folds["participant_id"].nunique()),
        "holdout": {
            "recordings": int((folds["split"] == "holdout").sum()),
            "participants": int(folds.loc[folds["split"] == "holdout", "participant_id"].nunique()),
        },
        "top_features": result.rankings["original"].top_features(config.classical.top_k),
        "roc_auc": best.round(4).to_dict("records"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--virufy", type=Path, required=True, help="the Virufy folder holding clinical/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    arguments = parser.parse_args(argv)
    summary = run(arguments.virufy, arguments.out, arguments.workers, arguments.seed, arguments.n_boot)
    print(pd.DataFrame(summary["roc_auc"]).to_string(index=False))
    print(f"holdout: {summary['holdout']}; top features: {summary['top_features']}; {summary['seconds']} s")
    print(f"written to {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
