"""``make classify-experiment``: Virufy's manual segments as classification recordings, one small neural model
trained and reported on a few real segments (the classical stage has its own tests), the neural options and
command line, and the headline table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from cough_pipeline.classification import experiment
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE
from cough_pipeline.classification.experiment import (
    NEURAL_MODELS,
    NeuralOptions,
    headline,
    neural_part,
    virufy_segments,
)
from cough_pipeline.classification.folds import FoldConfig, assign_folds
from cough_pipeline.classification.stage import EvaluationConfig, report_table


@pytest.mark.shared_data
def test_virufy_segments_are_121_labelled_recordings_of_16_participants(shared_data):
    recordings = virufy_segments(shared_data / "virufy")
    assert len(recordings) == 121 and recordings["participant_id"].nunique() == 16
    assert recordings["covid_label"].value_counts().to_dict() == {"negative": 73, "positive": 48}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in recordings["audio_path"])
    assert set(recordings["variant"]) == {"original"}


@pytest.mark.shared_data
def test_a_small_neural_model_is_trained_and_reported_on_the_real_folds_and_holdout(shared_data, tmp_path):
    few = virufy_segments(shared_data / "virufy").groupby("participant_id").head(2).reset_index(drop=True)
    folds = assign_folds(few.assign(content_hash=None), FoldConfig(seed=0))  # 32 segments of all 16 patients
    options = NeuralOptions(("mfcc_mlp",), replace(NeuralOptions().training, epochs=1, batch_size=8))
    trained = neural_part(few, folds, tmp_path / "inputs", options)

    holdout = folds[folds["split"] == "holdout"]
    row = headline(report_table(trained.predictions, EvaluationConfig(n_boot=20)), seconds=trained.seconds).iloc[0]
    assert row["model"] == "mfcc_mlp" and row["holdout_clips"] == len(holdout)
    assert row["holdout_participants"] == holdout["participant_id"].nunique()
    assert row["holdout_ci_low"] <= row["holdout_value"] <= row["holdout_ci_high"]
    assert row["cv_ci_low"] <= row["cv_value"] <= row["cv_ci_high"]
    assert row["train_s"] == trained.seconds["mfcc_mlp"] > 0
    ensemble = trained.predictions[trained.predictions["fold"] == FOLD_ENSEMBLE]
    assert sorted(ensemble["recording_id"]) == sorted(holdout["recording_id"])
    assert len(trained.histories) == 5 and trained.quarantine.empty  # one epoch per CV fold
    summary = experiment._neural_summary(trained, options)
    assert summary["epochs"] == {"mfcc_mlp": 1} and summary["best_epochs"] == {"mfcc_mlp": [1] * 5}


def test_neural_options_cap_the_cnn_epochs_and_refuse_unknown_models():
    options = NeuralOptions()
    assert options.models == NEURAL_MODELS and len(NEURAL_MODELS) == 7
    assert options.config("mobilenetv2").epochs == options.cnn_epochs < options.config("cough2covid19").epochs
    assert options.training.num_threads == 1
    with pytest.raises(ValueError, match="models"):
        NeuralOptions(models=("resnet50",))


def test_the_command_line_sets_the_neural_part_or_skips_it():
    parse = experiment._parser().parse_args
    base = ["--virufy", "v", "--out", "o"]
    assert experiment._neural_options(parse([*base, "--no-neural"])) is None
    options = experiment._neural_options(
        parse([*base, "--models", "mfcc_mlp", "chroma_mlp", "--epochs", "3", "--patience", "2", "--seed", "4"])
    )
    assert options.models == ("mfcc_mlp", "chroma_mlp")
    assert (options.training.epochs, options.training.patience, options.training.seed) == (3, 2, 4)
    assert experiment._neural_options(parse(base)).models == NEURAL_MODELS


def test_headline_puts_holdout_and_cv_with_their_intervals_side_by_side():
    rows = []
    for model, holdout, cv in (("a", 0.9, 0.7), ("b", 0.6, 0.8)):
        for evaluation, value in (("holdout", holdout), ("cv", cv)):
            rows.append(
                {
                    "model": model,
                    "variant": "original",
                    "evaluation": evaluation,
                    "dataset": "all",
                    "metric": "roc_auc",
                    "value": value,
                    "ci_low": value - 0.1,
                    "ci_high": value + 0.1,
                    "n": 22 if evaluation == "holdout" else 99,
                    "n_participants": 2 if evaluation == "holdout" else 14,
                    "cv_mean": cv,
                    "cv_sd": 0.05,
                }
            )
    rows.append({**rows[0], "dataset": "ccs", "value": 0.1})  # per-dataset rows are not the headline
    table = headline(pd.DataFrame(rows), seconds={"b": 12.5})
    assert table["model"].tolist() == ["a", "b"]
    assert table.iloc[0][["holdout_value", "holdout_ci_low", "cv_value", "cv_ci_high"]].tolist() == pytest.approx(
        [0.9, 0.8, 0.7, 0.8]
    )
    assert table[["holdout_clips", "holdout_participants"]].drop_duplicates().values.tolist() == [[22, 2]]
    assert pd.isna(table.loc[0, "train_s"]) and table.loc[1, "train_s"] == 12.5
