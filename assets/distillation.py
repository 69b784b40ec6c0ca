"""Low-sample-rate students by self-distillation, per target rate (``1k``, ``2k``), on two tasks: ESC-50
environmental sounds and the classification subset's coughs.

``distillation_clips`` lists both tasks' clips with their folds; ``distillation_teachers`` trains, per rate, task and
outer fold, the 16 kHz model and the low-rate ``fine_tuned`` model; ``distillation_students`` distils the ``basd``
and ``cssd`` students (and a third generation when asked) and scores every strategy on the test folds;
``distillation_report`` is the study's Table 1 over both rates with its per-fold figure and the per-class changes.
"""

import dataclasses

import pandas as pd
import pydantic
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from assets.classification import rooted_recordings
from assets.metadata import counts, image, preview
from assets.partitions import DISTILLATION_RATES, rate_partitions
from assets.pools import TRAINING_POOL
from cough_pipeline.distillation.data import cough_clips, esc50_clips, load_clip_audio, task_paired_clips
from cough_pipeline.distillation.frontend import LogMelConfig
from cough_pipeline.distillation.generations import (
    TEACHER_STRATEGIES,
    DistillationConfig,
    GenerationTrainer,
    default_training,
    score_all,
)
from cough_pipeline.distillation.models import DistilledModels
from cough_pipeline.distillation.report import (
    focus_class_changes,
    generation_gains,
    markdown_table,
    per_fold_png,
    report_table,
    spread_reading,
    wide_table,
)
from resources.data_roots import DataRoots
from resources.model_store import TrainedModel, fingerprint
from resources.settings import PipelineSettings
from resources.storage import Storage

GROUP = "distillation"
TASKS = ("esc50", "coughs")


class DistillationClipsConfig(Config):
    tasks: list[str] = pydantic.Field(default=list(TASKS), description="Tasks to run: esc50 and/or coughs.")
    esc50_folds: int = pydantic.Field(
        default=5, description="Folds cut (stratified, grouped by src_file) when the ESC-50 folder holds one fold."
    )
    clip_seconds: float = pydantic.Field(default=5.0, description="Every clip is cut or looped to this length.")


@multi_asset(
    outs={
        "distillation_clips": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "distillation_quarantine": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
    },
    ins={
        "classification_recordings": AssetIn(partition_mapping=AllPartitionMapping()),
        "classification_folds": AssetIn(),
    },
    group_name=GROUP,
)
def distillation_clips(
    context: AssetExecutionContext,
    config: DistillationClipsConfig,
    classification_recordings: pd.DataFrame,
    classification_folds: pd.DataFrame,
    data_roots: DataRoots,
    settings: PipelineSettings,
    storage: Storage,
):
    """Both tasks' clips (``task, clip_id, audio_path, label, class_name, group, fold``) whose audio decodes, and a
    quarantine row for each one that does not (missing or unreadable audio). The ESC-50 folder is
    ``COUGH_PIPELINE_ESC50_ROOT`` (or the data roots' ``esc50``), else the demo corpus's; the coughs are the
    classification subset's CV recordings with their participant-grouped folds."""
    unknown = sorted(set(config.tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown distillation tasks {unknown}; choose from {list(TASKS)}")
    tables, quarantines = [], []
    if "esc50" in config.tasks:
        clips, missing = esc50_clips(data_roots.root_for("esc50"), config.esc50_folds, settings.seed)
        tables.append(clips)
        quarantines.append(missing)
    if "coughs" in config.tasks:
        clips, absent = cough_clips(rooted_recordings(classification_recordings, storage), classification_folds)
        tables.append(clips)
        quarantines.append(absent)
    clips = pd.concat(tables, ignore_index=True)
    _, kept, unreadable = load_clip_audio(clips, LogMelConfig().sample_rate, config.clip_seconds, settings.workers)
    quarantine = pd.concat([*quarantines, unreadable], ignore_index=True)
    context.log.info(f"{len(kept)} clips kept, {len(quarantine)} quarantined")
    yield Output(
        kept,
        output_name="distillation_clips",
        metadata={
            "clips": MetadataValue.json(counts(kept["task"])),
            "classes": MetadataValue.json(kept.groupby("task")["label"].nunique().astype(int).to_dict()),
            "folds": MetadataValue.json(kept.groupby("task")["fold"].nunique().astype(int).to_dict()),
            "esc50_source": data_roots.source("esc50"),
        },
    )
    yield Output(
        quarantine,
        output_name="distillation_quarantine",
        metadata={"reasons": MetadataValue.json(counts(quarantine["reason"]))},
    )


class DistillationTeachersConfig(Config):
    model: str = pydantic.Field(default="", description="Architecture of every model (empty: the profile's).")
    epochs: int = pydantic.Field(default=0, description="Most epochs per model (0: the profile's).")
    max_folds: int = pydantic.Field(
        default=-1, description="Outer folds run from the first (0: all; -1: the profile's)."
    )
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 10
    clip_seconds: float = 5.0


class DistillationStudentsConfig(Config):
    alphas: list[float] = pydantic.Field(default=[0.3, 0.7], description="Grid of the cross-entropy weight α.")
    temperatures: list[float] = pydantic.Field(default=[2.0, 4.0], description="Grid of the temperature T.")
    generations: int = pydantic.Field(default=2, description="3 adds a student taught by each second generation.")


@asset(
    ins={"distillation_clips": AssetIn()},
    partitions_def=rate_partitions,
    io_manager_key="model_io_manager",
    group_name=GROUP,
    kinds={"pytorch"},
    pool=TRAINING_POOL,
)
def distillation_teachers(
    context: AssetExecutionContext,
    config: DistillationTeachersConfig,
    distillation_clips: pd.DataFrame,
    settings: PipelineSettings,
) -> Output:
    """Per task and outer fold: the model trained on 16 kHz patches (``full_rate``, the cross-rate teacher) and the
    one trained on the partition's low-rate patches (``fine_tuned``, the Born-Again teacher), from the same
    initial weights, early-stopped on the next fold."""
    profile = settings.scale()
    training = dataclasses.replace(
        default_training(),
        epochs=config.epochs or profile.distillation_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.patience,
        seed=settings.seed,
        device=str(settings.torch_device()),
    )
    library = DistillationConfig(
        model=config.model or profile.distillation_model,
        max_folds=profile.distillation_folds if config.max_folds < 0 else config.max_folds,
        training=training,
    )
    rate = DISTILLATION_RATES[context.partition_key]
    tasks = {}
    paired, _ = task_paired_clips(distillation_clips, (rate,), config.clip_seconds, settings.workers)
    for task, data in paired.items():
        tasks[task] = GenerationTrainer(data, rate, library, context.log.info).teachers()
    card = {
        "model": library.model,
        "max_folds": library.max_folds,
        "rate": rate,
        "clip_seconds": config.clip_seconds,
        "training": dataclasses.asdict(training),
    }
    models = DistilledModels(tasks)
    return Output(
        TrainedModel(models, config=card, training_data=fingerprint(distillation_clips)),
        metadata={"models": len(models.entries()), "architecture": library.model, "rate_hz": rate},
    )


@multi_asset(
    outs={
        "distillation_students": AssetOut(io_manager_key="model_io_manager", kinds={"pytorch"}),
        "distillation_scores": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "distillation_class_accuracy": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "distillation_loss_weights": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
    },
    ins={"distillation_teachers": AssetIn(), "distillation_clips": AssetIn()},
    partitions_def=rate_partitions,
    group_name=GROUP,
    pool=TRAINING_POOL,
)
def distillation_students(
    context: AssetExecutionContext,
    config: DistillationStudentsConfig,
    distillation_teachers: TrainedModel,
    distillation_clips: pd.DataFrame,
    settings: PipelineSettings,
):
    """The ``basd`` and ``cssd`` students (and ``basd_g3`` / ``cssd_g3`` with three generations) of every task and
    fold, with α and T chosen by grid search on the first fold's validation clips; every strategy's test score per
    fold (``distillation_scores``), per-class accuracies, and the grid's validation scores."""
    card = distillation_teachers.config
    if distillation_teachers.training_data != fingerprint(distillation_clips):
        raise ValueError(
            f"distillation_teachers ({context.partition_key}) were trained on another distillation_clips table: "
            "materialise distillation_teachers for this partition again first"
        )
    training = dataclasses.replace(default_training(), **card["training"])
    library = DistillationConfig(
        model=card["model"],
        alphas=tuple(config.alphas),
        temperatures=tuple(config.temperatures),
        generations=config.generations,
        max_folds=card["max_folds"],
        training=training,
    )
    rate = DISTILLATION_RATES[context.partition_key]
    teachers = distillation_teachers.model.tasks
    scores, per_class, grids = [], [], []
    paired, _ = task_paired_clips(distillation_clips, (rate,), card["clip_seconds"], settings.workers)
    for task, data in paired.items():
        trainer = GenerationTrainer(data, rate, library, context.log.info)
        chosen, grid = trainer.students(teachers[task])
        task_scores, task_classes = score_all(data, rate, teachers[task], library.model)
        scores.append(task_scores)
        per_class.append(task_classes)
        grids.append(
            grid.assign(
                task=task,
                rate=rate,
                chosen=[chosen[s] == (a, t) for s, a, t in zip(grid["strategy"], grid["alpha"], grid["temperature"])],
            )
        )
    scores = pd.concat(scores, ignore_index=True)
    grids = pd.concat(grids, ignore_index=True)
    report = report_table(scores)
    yield Output(
        TrainedModel(
            DistilledModels(teachers).without(TEACHER_STRATEGIES),
            config={**card, **config.model_dump()},
            training_data=fingerprint(distillation_clips),
            metrics={f"{r.task}/{r.strategy}/{r.metric}": r.mean for r in report.itertuples()},
        ),
        output_name="distillation_students",
    )
    yield Output(scores, output_name="distillation_scores", metadata={"report": preview(wide_table(report))})
    yield Output(pd.concat(per_class, ignore_index=True), output_name="distillation_class_accuracy")
    yield Output(grids, output_name="distillation_loss_weights", metadata={"chosen": preview(grids[grids["chosen"]])})


@multi_asset(
    outs={
        "distillation_report": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "distillation_class_changes": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
    },
    ins={
        "distillation_scores": AssetIn(partition_mapping=AllPartitionMapping()),
        "distillation_class_accuracy": AssetIn(partition_mapping=AllPartitionMapping()),
    },
    group_name=GROUP,
)
def distillation_report(distillation_scores: pd.DataFrame, distillation_class_accuracy: pd.DataFrame):
    """Table 1: model x rate x task x strategy -> mean ± sd over folds (one row per metric), over both rates; the
    per-fold fine-tuned vs distilled figure per metric; each distilled strategy's paired difference from
    ``fine_tuned`` against the fold-to-fold spread (and each third-generation student against its teacher, when
    there is one); and the accuracy changes of coughing, crying_baby and snoring."""
    scores = distillation_scores.drop_duplicates(["task", "model", "rate", "strategy", "fold", "metric"])
    report = report_table(scores)
    plots = {
        f"per_fold_{task}_{metric}": image(
            per_fold_png(rows, metric, f"{task}: fine-tuned vs distilled per fold"), "per fold"
        )
        for (task, metric), rows in scores.groupby(["task", "metric"])
    }
    changes = focus_class_changes(distillation_class_accuracy)
    gains = generation_gains(scores)
    yield Output(
        report,
        output_name="distillation_report",
        metadata={
            "table": MetadataValue.md(markdown_table(wide_table(report))),
            "spread": preview(spread_reading(scores)),
            **({"third_generation": preview(gains)} if not gains.empty else {}),
            **plots,
        },
    )
    yield Output(changes, output_name="distillation_class_changes", metadata={"changes": preview(changes)})
