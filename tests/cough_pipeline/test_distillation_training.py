"""The distillation front end, task tables, generation training and report, on synthetic ESC-50-layout folders
(and the shared ESC-50 fold-4 metadata when present)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import torch

from cough_pipeline.classification.networks import NeuralClassifier
from cough_pipeline.demo_corpus.layouts.esc50 import write_esc50
from cough_pipeline.demo_corpus.sizes import SIZES
from cough_pipeline.distillation import generations
from cough_pipeline.distillation.data import (
    TEACHER_INPUT,
    DistillationDataError,
    PairedClips,
    cough_clips,
    esc50_clips,
    load_clip_audio,
    task_paired_clips,
)
from cough_pipeline.distillation.experiment import run_rate, write_report
from cough_pipeline.distillation.frontend import DB_SCALE, LogMelConfig, log_mel, log_mel_direct
from cough_pipeline.distillation.generations import DistillationConfig, GenerationTrainer, default_training
from cough_pipeline.distillation.lowrate import down_sample, to_low_rate
from cough_pipeline.distillation.models import DistilledModels
from cough_pipeline.distillation.report import focus_class_changes, report_table, spread_reading

SHARED = Path(os.environ.get("COUGH_PIPELINE_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
FRONTEND = LogMelConfig()
SECONDS = 1.0  # short clips keep the training tests to seconds
EXACT = "donot_use_mm_for_euclid_dist"  # cdist without the matmul shortcut, whose round-off is ~0.1 here


@pytest.fixture(scope="module")
def esc50_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("esc50")
    write_esc50(root, np.random.default_rng(0), replace(SIZES["small"], esc50_sources_per_class=5))
    return root


@pytest.fixture(scope="module")
def paired(esc50_folder) -> PairedClips:
    clips, _ = esc50_clips(esc50_folder)
    audio, kept, _ = load_clip_audio(clips, FRONTEND.sample_rate, SECONDS)
    return PairedClips.build(kept, audio, (1_000,), FRONTEND)


def tiny_config(**changes) -> DistillationConfig:
    training = replace(default_training(), epochs=2, patience=2, batch_size=16, num_threads=1, fold_workers=1)
    values = {"alphas": (0.5,), "temperatures": (2.0,), "max_folds": 2, "training": training, **changes}
    return DistillationConfig(**values)


def test_the_log_mel_matches_librosa_and_the_direct_patch_matches_the_up_sampled_one():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((2, 16_000)).astype(np.float32) * 0.1
    patch = log_mel(audio, FRONTEND)
    assert patch.shape == (2, 64, 101) and patch.dtype == np.float32
    mel = librosa.feature.melspectrogram(
        y=audio[0], sr=16_000, n_fft=512, hop_length=160, n_mels=64, fmin=50, fmax=8_000, pad_mode="reflect"
    )
    reference = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None) / DB_SCALE
    np.testing.assert_allclose(patch[0], reference, atol=1e-3)
    # at 1 kHz: the up-sampled patch's bins above 500 Hz hold the floor; the direct patch agrees below it
    low = to_low_rate(audio, 16_000, 1_000)
    upsampled, direct = log_mel(low, FRONTEND), log_mel_direct(down_sample(audio, 16_000, 1_000), 1_000, FRONTEND)
    centres = librosa.mel_frequencies(66, fmin=50, fmax=8_000)[1:-1]
    in_band = patch[:, centres < 400].mean()
    # the lost band, away from the clip's edges (the filters' start-up), is at least 60 dB below the signal
    assert upsampled[:, centres > 1_000, 3:-3].max() < in_band - 60 / DB_SCALE
    inner = (centres > 100) & (centres < 400)
    difference = np.abs(upsampled[:, inner, 2:-2] - direct[:, inner, 2:-2]) * DB_SCALE
    assert np.median(difference) < 0.5


def test_esc50_folds_group_source_recordings_and_missing_audio_is_quarantined(esc50_folder, tmp_path):
    clips, quarantine = esc50_clips(esc50_folder)
    assert quarantine.empty and len(clips) == 50 and clips["label"].nunique() == 5
    assert clips.groupby("group")["fold"].nunique().max() == 1
    # one official fold: cut into 5 folds, stratified and grouped
    one_fold = tmp_path / "one_fold"
    (one_fold / "meta").mkdir(parents=True)
    (one_fold / "audio").symlink_to(esc50_folder / "audio")
    meta = pd.read_csv(esc50_folder / "meta" / "esc50.csv").assign(fold=4)
    meta = pd.concat([meta, meta.iloc[:1].assign(filename="4-999-A-0.wav", src_file=999)])  # listed, no file
    meta.to_csv(one_fold / "meta" / "esc50_fold4.csv", index=False)
    clips, quarantine = esc50_clips(one_fold, n_folds=5, seed=3)
    assert quarantine[["clip_id", "reason"]].values.tolist() == [["4-999-A-0", "audio_missing"]]
    assert sorted(clips["fold"].unique()) == [0, 1, 2, 3, 4]
    assert clips.groupby("group")["fold"].nunique().max() == 1
    assert len(clips) + len(quarantine) == len(meta)
    with pytest.raises(DistillationDataError, match="lacks the columns"):
        meta.drop(columns="src_file").to_csv(one_fold / "meta" / "esc50_fold4.csv", index=False)
        esc50_clips(one_fold)


@pytest.mark.skipif(not (SHARED / "esc50_fold4").is_dir(), reason="the shared ESC-50 fold-4 sample is absent")
def test_the_shared_fold4_clips_get_five_folds_grouped_by_src_file():
    clips, quarantine = esc50_clips(SHARED / "esc50_fold4", n_folds=5, seed=0)
    assert quarantine.empty and len(clips) == 400 and clips["label"].nunique() == 50
    assert clips.groupby("group")["fold"].nunique().max() == 1
    assert clips["fold"].value_counts().min() >= 60


def test_unreadable_audio_becomes_a_quarantine_row(esc50_folder, tmp_path):
    clips, _ = esc50_clips(esc50_folder)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    clips.loc[0, "audio_path"] = str(broken)
    audio, kept, quarantine = load_clip_audio(clips, 16_000, SECONDS)
    assert len(kept) == len(clips) - 1 == len(audio)
    assert quarantine[["clip_id", "reason"]].values.tolist() == [[clips.loc[0, "clip_id"], "audio_unreadable"]]
    tasks, unreadable = task_paired_clips(clips, (1_000,), SECONDS, workers=1)
    pd.testing.assert_frame_equal(unreadable, quarantine)
    assert tasks["esc50"].clips["clip_id"].tolist() == kept["clip_id"].tolist()
    assert {rate: len(patches) for rate, patches in tasks["esc50"].log_mels.items()} == {
        16_000: len(kept),
        1_000: len(kept),
    }


def test_cough_clips_take_the_cv_rows_and_their_participant_folds():
    recordings = pd.DataFrame(
        {
            "recording_id": ["a", "a", "b", "c"],
            "variant": ["original", "separated", "original", "original"],
            "audio_path": ["/a.wav", "/a_sep.wav", "/b.wav", "/c.wav"],
        }
    )
    folds = pd.DataFrame(
        {
            "recording_id": ["a", "b", "c"],
            "split": ["cv", "cv", "holdout"],
            "fold": [0, 1, -1],
            "group_id": ["g1", "g2", "g3"],
            "label": [1, 0, 1],
            "covid_label": ["positive", "negative", "positive"],
        }
    )
    clips, quarantine = cough_clips(recordings, folds)
    assert clips[["clip_id", "audio_path", "label", "fold"]].values.tolist() == [
        ["a", "/a.wav", 1, 0],
        ["b", "/b.wav", 0, 1],
    ]
    assert quarantine.empty
    clips, quarantine = cough_clips(recordings[recordings["recording_id"] != "b"], folds)
    assert clips["clip_id"].tolist() == ["a"]
    assert quarantine[["clip_id", "reason"]].values.tolist() == [["b", "no_original_audio"]]


def test_the_split_is_test_fold_next_fold_validation_rest_training(paired):
    split = paired.split(4)
    fold = paired.clips["fold"].to_numpy()
    assert set(fold[split["test"]]) == {4} and set(fold[split["validation"]]) == {0}
    assert not (split["train"] & (split["test"] | split["validation"])).any()
    assert (split["train"] | split["test"] | split["validation"]).all()


class RecordingClassifier(NeuralClassifier):
    """Records the ``logmel`` batches the student's network is given."""

    seen: list[torch.Tensor] = []

    def forward(self, batch):
        RecordingClassifier.seen.append(batch["logmel"].detach().clone())
        return super().forward(batch)


def test_cssd_student_never_receives_16k_input_and_the_teacher_stays_frozen(paired, monkeypatch):
    config = tiny_config()
    trainer = GenerationTrainer(paired, 1_000, config)
    teacher, _ = trainer.train(0, "full_rate", 16_000)
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    monkeypatch.setattr(generations, "NeuralClassifier", RecordingClassifier)
    RecordingClassifier.seen = []
    student, _ = trainer.train(0, "cssd", 1_000, teacher, 16_000, alpha=0.5, temperature=2.0)
    assert RecordingClassifier.seen, "the student was never called"
    low = paired.log_mels[1_000][:, 0].reshape(len(paired.clips), -1)
    high = paired.log_mels[16_000][:, 0].reshape(len(paired.clips), -1)
    for batch in RecordingClassifier.seen:
        rows = batch[:, 0].reshape(len(batch), -1).contiguous()
        assert (
            torch.cdist(rows, low, compute_mode=EXACT).min(dim=1).values.max() < 1e-5
        )  # every example is a low-rate patch ...
        assert torch.cdist(rows, high, compute_mode=EXACT).min(dim=1).values.min() > 1.0  # ... and none a 16 kHz one
    assert isinstance(student, RecordingClassifier)
    # the teacher: same weights and batch-norm statistics, no gradient, eval mode
    after = teacher.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_every_strategy_of_a_fold_starts_from_the_same_initial_weights(paired, monkeypatch):
    built: list[dict] = []

    class Remembering(NeuralClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append({k: v.clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(generations, "NeuralClassifier", Remembering)
    trainer = GenerationTrainer(paired, 1_000, tiny_config())
    teacher, _ = trainer.train(1, "fine_tuned", 1_000)
    trainer.train(1, "basd", 1_000, teacher, 1_000, 0.5, 2.0)
    trainer.train(1, "full_rate", 16_000)
    assert len(built) == 3
    assert all(torch.equal(built[0][k], other[k]) for other in built[1:] for k in built[0])


def test_the_same_seed_gives_the_same_report_and_the_models_round_trip(paired, tmp_path):
    config = tiny_config(generations=3, alphas=(0.3, 0.7))
    first = run_rate(paired, 1_000, config)
    second = run_rate(paired, 1_000, config)
    pd.testing.assert_frame_equal(first.scores, second.scores)
    report = report_table(first.scores)
    strategies = set(report["strategy"])
    assert strategies == {"full_rate", "raw", "fine_tuned", "fine_tuned_direct", "basd", "cssd", "basd_g3", "cssd_g3"}
    assert (report["folds"] == 2).all() and report["score"].str.contains("±").all()
    assert set(first.grid["alpha"]) == {0.3, 0.7} and set(first.chosen) == {"basd", "cssd", "basd_g3", "cssd_g3"}
    assert report_table(second.scores).equals(report)
    # the students' store format
    DistilledModels({"esc50": first.folds}).save(tmp_path / "models")
    loaded = DistilledModels.load(tmp_path / "models")
    assert sorted(loaded.entries()) == sorted(DistilledModels({"esc50": first.folds}).entries())
    logits = generations.predict_logits(loaded.tasks["esc50"][0].models["cssd"], paired.arrays(1_000))
    expected = generations.predict_logits(first.folds[0].models["cssd"], paired.arrays(1_000))
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    written = write_report([first], tmp_path / "report")
    assert written.equals(report) and (tmp_path / "report" / "report.md").read_text().startswith("| task |")
    assert not spread_reading(first.scores).empty
    changes = focus_class_changes(first.per_class)
    assert set(changes["class_name"]) == {"coughing", "crying_baby", "snoring"}
    assert np.allclose(changes.loc[changes["strategy"] == "fine_tuned", "change"], 0.0)


def test_the_configuration_is_validated():
    with pytest.raises(generations.DistillationError, match="unknown distillation model"):
        DistillationConfig(model="cough2covid19")
    with pytest.raises(generations.DistillationError, match="generations"):
        DistillationConfig(generations=4)
    with pytest.raises(generations.DistillationError, match="alphas"):
        DistillationConfig(alphas=(1.5,))
    assert DistillationConfig(model="cnn14").model == "cnn14"


def test_cnn14_trains_through_the_same_loop_on_the_pipelines_patches(paired):
    trainer = GenerationTrainer(
        paired,
        1_000,
        tiny_config(model="cnn14", training=replace(default_training(), epochs=1, batch_size=16, num_threads=2)),
    )
    model, history = trainer.train(0, "fine_tuned", 1_000)
    assert model.config.name == "cnn14" and model.config.classes == 5 and len(history) == 1
    logits = generations.predict_logits(model, paired.arrays(1_000).subset(paired.split(0)["test"]))
    assert logits.shape == (int(paired.split(0)["test"].sum()), 5)


def test_the_teacher_view_is_the_16k_patch_of_the_same_clip(paired):
    arrays = paired.arrays(1_000, 16_000)
    batch, _ = arrays[torch.arange(4)]
    assert torch.equal(batch[TEACHER_INPUT], paired.log_mels[16_000][:4])
    assert torch.equal(batch["logmel"], paired.log_mels[1_000][:4])


def test_worker_processes_train_the_same_models_as_this_process_up_to_float_order(paired):
    single = tiny_config(training=replace(tiny_config().training, num_threads=1, fold_workers=1))
    pooled = tiny_config(training=replace(tiny_config().training, num_threads=2, fold_workers=2))
    here = GenerationTrainer(paired, 1_000, single).teachers()
    lines: list[str] = []
    there = GenerationTrainer(paired, 1_000, pooled, lines.append).teachers()
    assert len(lines) == 4 and all("kept" in line for line in lines)
    arrays = paired.arrays(1_000)
    for fold in here:
        for strategy in ("full_rate", "fine_tuned"):
            mine = generations.predict_logits(here[fold].models[strategy], arrays)
            theirs = generations.predict_logits(there[fold].models[strategy], arrays)
            assert here[fold].models[strategy].metadata == there[fold].models[strategy].metadata
            # oneDNN may sum in another order on the workers' shared-memory tensors: close, not bit-equal
            np.testing.assert_allclose(theirs, mine, atol=0.02)


def test_workers_are_used_only_for_long_trainings_on_several_cores(paired, monkeypatch):
    monkeypatch.setattr(generations, "available_cores", lambda: 2)
    auto = replace(tiny_config().training, fold_workers=0, num_threads=2, device="cpu")
    assert GenerationTrainer(paired, 1_000, tiny_config(training=auto))._workers(4) == (1, 2)  # 30 clips x 2 epochs
    long = replace(auto, epochs=100)
    assert GenerationTrainer(paired, 1_000, tiny_config(training=long))._workers(4) == (2, 1)
    assert GenerationTrainer(paired, 1_000, tiny_config(training=long))._workers(1) == (1, 2)
    monkeypatch.setattr(generations, "available_cores", lambda: 1)
    assert GenerationTrainer(paired, 1_000, tiny_config(training=long))._workers(4) == (1, 2)
