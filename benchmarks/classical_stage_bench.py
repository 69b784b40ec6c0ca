"""The classical classification stage after feature extraction: folds, feature ranking, training and evaluation.

What the assets ``classification_folds``, ``feature_ranking`` and ``classical_models`` do, through the library
calls they make, timed separately at :data:`SIZES` recordings (one variant, ``original``):

* ``folds``: :func:`cough_pipeline.classification.folds.assign_folds` (15 % participant-grouped holdout, 5 folds);
* ``ranking``: :func:`cough_pipeline.classification.stage.rank_variants` with the default
  :class:`RankerConfig` (15 feature blocks x 4 classifiers x 5 CV folds = 300 pipeline fits);
* ``training_evaluation``: :func:`cough_pipeline.classification.stage.train_and_evaluate` with the default
  :class:`StageConfig` on ``all`` and ``top5`` column sets (4 classifiers x 2 sets x 5 folds = 40 fits, holdout
  predictions, fold ensemble, the report with 1,000-replicate participant bootstraps). No leave-one-dataset-out
  split (``lodo=None``); ``report_s`` re-times the report alone on the same predictions (part of this figure).

Feature table: :data:`POOL_CLIPS` synthetic recordings (:func:`synth.cough_recording`, 1-4 coughs over room tone,
half of each class; the classes differ in pitch, tail length and noisiness) are preprocessed and featurised once
with :func:`clip_features` at 22,050 Hz (868 columns; ``pool_extraction_s``, not part of any timed figure: the
``cough_features`` benchmark times extraction). A table of ``n`` recordings draws, per class, the pool's rows of
that class in a random order and, once they are used up, rows with replacement plus Gaussian jitter of
:data:`JITTER` x the column's standard deviation in the pool, so no two rows are identical (``n`` = 60 uses pool
rows only). Recordings: :data:`RECORDINGS_PER_PARTICIPANT` per participant (one label and one dataset per
participant), :data:`POSITIVE_SHARE` of participants positive, datasets cycling over :data:`DATASETS`.

Two kinds of table, because class overlap changes what the models cost (random-forest trees grow deeper, the SVM
keeps more support vectors):

* ``demo``: :data:`DEMO_RECORDINGS` recordings whose features match their label, like the demo corpus's
  audibly different synthetic classes (every model scores ROC-AUC 1); ``demo_total_s`` is its total;
* ``sizes``: :data:`SIZES` recordings where :data:`MISMATCHED_SHARE` of the participants get features of the other
  class, so the models reach a holdout ROC-AUC of about 0.7, as on real coughs; the projection uses these.
  ``separable_largest`` is the largest size without mismatches, for comparison.

Everything runs in this process with BLAS/OpenMP pools limited to one thread (threadpoolctl); 60-recording runs
are the best of :data:`DEMO_REPEATS`, larger sizes are timed once. ``projection`` fits ``t = a * n^b`` by least
squares in log-log space over every measured size, per part, and extrapolates to :data:`PROJECTED_RECORDINGS`;
``*_two_largest`` uses only the two largest sizes (fixed costs weigh less there, so the exponent is steeper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.common import stopwatch, write_result
from cough_pipeline.classification.classical import column_sets
from cough_pipeline.classification.features import FEATURE_DOMAINS, FeatureConfig, clip_features, feature_blocks
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.preprocess import PreprocessConfig, preprocess
from cough_pipeline.classification.ranking import RankerConfig
from cough_pipeline.classification.stage import (
    ALL_DATASETS,
    StageConfig,
    rank_variants,
    report_table,
    train_and_evaluate,
)
from cough_pipeline.demo_corpus import synth

SAMPLE_RATE = 22_050
POOL_CLIPS = 150
#: The demo corpus's classification subset first, then larger corpora.
SIZES = (60, 250, 500, 1000)
DEMO_RECORDINGS = 60
DEMO_REPEATS = 2
PROJECTED_RECORDINGS = 4000
RECORDINGS_PER_PARTICIPANT = 2
POSITIVE_SHARE = 0.3
JITTER = 0.05
#: Participants whose features come from the other class than their label (classes overlap as in real coughs).
MISMATCHED_SHARE = 0.25
TOP_K = 5
DATASETS = ("aicovidvn", "ccs", "coswara", "coughvid", "iatos", "ukcovid")
PARTS = ("folds", "ranking", "training_evaluation")
NOTES = (
    f"Projection to {PROJECTED_RECORDINGS} recordings assumes each part keeps the power law t = a * n^b fitted over "
    f"the measured sizes {list(SIZES)} (overlapping classes, holdout ROC-AUC about 0.7), with the default configs "
    "(15 % holdout, 5 folds, 4 classifiers, 15 ranked features, all + top-5 sets, 1,000 bootstrap replicates), one "
    "variant, no leave-one-dataset-out evaluation, one thread. Fixed per-fit costs (100-tree random forests) flatten "
    "the fit at small sizes, and kernel-SVM and tree costs grow faster than linearly, so the exponent rises with n: "
    "projected_s_two_largest (the exponent between the two largest sizes) is the more cautious figure, and even it "
    "may be low. Two variants (original + separated) double ranking and training; LODO adds one fit per "
    "classifier, set and dataset. Rows beyond the 150-clip pool are resampled pool rows with small Gaussian jitter."
)


def pool_features(config: FeatureConfig) -> pd.DataFrame:
    """:data:`POOL_CLIPS` featurised synthetic recordings: ``positive`` (bool) and the 868 feature columns."""
    preprocess_config = PreprocessConfig(sample_rate=config.sample_rate)
    rows = []
    for seed in range(POOL_CLIPS):
        rng = np.random.default_rng(seed)
        positive, n_coughs = bool(seed % 2), int(rng.integers(1, 5))
        duration = synth.min_cough_recording_s(n_coughs) + rng.uniform(0.0, 1.0)
        samples, _ = synth.cough_recording(rng, SAMPLE_RATE, duration, n_coughs, positive)
        clip = preprocess(samples, SAMPLE_RATE, preprocess_config)
        rows.append({"positive": positive, **clip_features(clip, config)})
    return pd.DataFrame(rows)


def recordings_table(n: int, mismatched_share: float, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` recordings (the columns :func:`assign_folds` reads, plus ``variant``), two per participant.

    ``sounds_positive``: the pool class a recording's features are drawn from; it is the other class than its label
    for about ``mismatched_share`` of the participants (all their recordings), so the classes overlap.
    """
    participants = -(-n // RECORDINGS_PER_PARTICIPANT)
    positive = rng.permutation(participants) < round(POSITIVE_SHARE * participants)
    mismatched = rng.random(participants) < mismatched_share
    person = np.arange(n) // RECORDINGS_PER_PARTICIPANT
    return pd.DataFrame(
        {
            "recording_id": [f"bench:{index:05d}" for index in range(n)],
            "dataset": [DATASETS[p % len(DATASETS)] for p in person],
            "participant_id": [f"p{p:05d}" for p in person],
            "covid_label": np.where(positive[person], "positive", "negative"),
            "content_hash": None,
            "variant": "original",
            "sounds_positive": positive[person] ^ mismatched[person],
        }
    )


def feature_rows(recordings: pd.DataFrame, pool: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The feature table of ``recordings``: pool rows of each recording's ``sounds_positive`` class (see the module
    docstring)."""
    columns = [c for c in pool.columns if c != "positive"]
    values = np.empty((len(recordings), len(columns)))
    spread = pool[columns].std(ddof=0).to_numpy()
    for positive in (False, True):
        wanted = np.flatnonzero(recordings["sounds_positive"].to_numpy() == positive)
        source = pool.loc[pool["positive"] == positive, columns].to_numpy()
        order = rng.permutation(len(source))
        fresh = min(len(wanted), len(source))
        drawn = source[np.concatenate([order[:fresh], rng.integers(0, len(source), len(wanted) - fresh)])]
        drawn[fresh:] += rng.normal(0.0, 1.0, drawn[fresh:].shape) * JITTER * spread
        values[wanted] = drawn
    ids = recordings[["dataset", "recording_id", "participant_id", "covid_label", "variant"]]
    return pd.concat([ids.reset_index(drop=True), pd.DataFrame(values, columns=columns)], axis=1)


def run_stage_once(features: pd.DataFrame, recordings: pd.DataFrame) -> tuple[dict, dict]:
    """Folds, ranking and training + evaluation once: ``({part: seconds}, facts about the run)``."""
    config = StageConfig()
    with stopwatch() as folds_s:
        folds = assign_folds(recordings, FoldConfig(seed=0))
    blocks = feature_blocks(features.columns)
    with stopwatch() as ranking_s:
        rankings = rank_variants(features, folds, blocks, FEATURE_DOMAINS, RankerConfig(), None)
    sets = {variant: column_sets(blocks, ranking.top_features(TOP_K), TOP_K) for variant, ranking in rankings.items()}
    with stopwatch() as training_s:
        result = train_and_evaluate(features, folds, None, sets, config)
    with stopwatch() as report_s:
        report_table(result.predictions, config.evaluation)
    holdout_auc = result.report[
        (result.report["evaluation"] == "holdout")
        & (result.report["dataset"] == ALL_DATASETS)
        & (result.report["metric"] == "roc_auc")
    ]
    facts = {
        "holdout_recordings": int((folds["split"] == "holdout").sum()),
        "ranking_fits": len(rankings["original"].scores),
        "training_fits": len(result.models.pipelines),
        "report_s": round(report_s(), 3),
        "top_features": rankings["original"].top_features(TOP_K),
        "holdout_roc_auc": {row.model: round(float(row.value), 3) for row in holdout_auc.itertuples()},
    }
    return {"folds": folds_s(), "ranking": ranking_s(), "training_evaluation": training_s()}, facts


def measure_size(n: int, pool: pd.DataFrame, repeats: int, mismatched_share: float) -> dict:
    """Best of ``repeats`` stage runs on one ``n``-recording table (per part, then the total of the best)."""
    rng = np.random.default_rng(n)
    recordings = recordings_table(n, mismatched_share, rng)
    features = feature_rows(recordings, pool, rng)
    runs = [run_stage_once(features, recordings.drop(columns="sounds_positive")) for _ in range(repeats)]
    best = {part: min(times[part] for times, _ in runs) for part in PARTS}
    return {
        "recordings": n,
        "participants": int(recordings["participant_id"].nunique()),
        "positive_recordings": int((recordings["covid_label"] == "positive").sum()),
        "mismatched_participant_share": mismatched_share,
        "repeats": repeats,
        **{f"{part}_s": round(seconds, 3) for part, seconds in best.items()},
        "total_s": round(sum(best.values()), 3),
        **runs[-1][1],
    }


def power_law(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """``(a, b)`` of ``t = a * n^b``, least squares on ``log t`` against ``log n``."""
    b, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(np.exp(log_a)), float(b)


def projection(measured: list[dict]) -> dict:
    """Per part and in total: ``t = a * n^b`` fitted over every measured size (``b``, ``projected_s``) and the
    exponent between the two largest sizes alone (``b_two_largest``, ``projected_s_two_largest``), each
    extrapolated to :data:`PROJECTED_RECORDINGS`."""
    sizes = [row["recordings"] for row in measured]
    out = {}
    for part in (*PARTS, "total"):
        seconds = [max(row[f"{part}_s"], 1e-6) for row in measured]
        a, b = power_law(sizes, seconds)
        a_top, b_top = power_law(sizes[-2:], seconds[-2:])
        out[part] = {
            "a": a,
            "b": round(b, 3),
            "projected_s": round(a * PROJECTED_RECORDINGS**b, 1),
            "b_two_largest": round(b_top, 3),
            "projected_s_two_largest": round(a_top * PROJECTED_RECORDINGS**b_top, 1),
        }
    return out


def run() -> Path:
    with threadpool_limits(limits=1):
        with stopwatch() as extraction_s:
            pool = pool_features(FeatureConfig())
        demo = measure_size(DEMO_RECORDINGS, pool, DEMO_REPEATS, 0.0)
        measured = [measure_size(n, pool, DEMO_REPEATS if n == SIZES[0] else 1, MISMATCHED_SHARE) for n in SIZES]
        separable = measure_size(SIZES[-1], pool, 1, 0.0)
    figures = {
        "demo_total_s": demo["total_s"],
        "demo_target_s": 60,
        "demo": demo,
        "sizes": measured,
        "projection": {"recordings": PROJECTED_RECORDINGS, **projection(measured)},
        "separable_largest": separable,
        "pool_clips": POOL_CLIPS,
        "pool_extraction_s": round(extraction_s(), 2),
        "feature_columns": len(pool.columns) - 1,
        "jitter": JITTER,
        "recordings_per_participant": RECORDINGS_PER_PARTICIPANT,
        "positive_share_of_participants": POSITIVE_SHARE,
        "datasets": list(DATASETS),
        "threads": "1 in this process (threadpoolctl); every estimator runs single-threaded (n_jobs=1)",
        "notes": NOTES,
    }
    return write_result("classical_stage", figures)


if __name__ == "__main__":
    print(run().read_text())
