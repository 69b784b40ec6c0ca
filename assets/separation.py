"""Separation: participant-disjoint subsets, scaper mixtures, the LSTM separator and its SNIP-pruned variant,
their evaluation, and separated clips of the classification subset."""

from typing import Literal

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.config import bounded, mirror
from assets.metadata import counts, image, preview
from assets.pools import MIXTURES_POOL, TRAINING_POOL
from cough_pipeline.bounds import Fraction
from cough_pipeline.mixtures import SPLITS, generate_mixtures, held_out_noise, mixture_table
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import loss_curves_png
from cough_pipeline.segmentation.methods import METHODS
from cough_pipeline.separation.clips import separate_files
from cough_pipeline.separation.complexity import complexity_table
from cough_pipeline.separation.evaluation import evaluate_mixtures, model_separator
from cough_pipeline.separation.pruning import PrunedTrainingConfig, mask_report, train_pruned
from cough_pipeline.separation.training import TrainingConfig, TrainingResult, train_separator
from cough_pipeline.subsets import CLASSIFICATION, SEPARATION, leakage, split_coughs, split_subsets
from resources.model_store import TrainedModel, fingerprint
from resources.settings import NoiseBank, PipelineSettings
from resources.storage import Storage

MIXTURES_FOLDER = ("mixtures", "separation")
SOURCE_CACHE = ("mixtures", "source_cache")
CLIPS_FOLDER = ("separated_clips",)
#: The segmentation method whose single coughs are used (a name in ``cough_pipeline.segmentation.METHODS``).
SegmentMethod = Literal[tuple(METHODS)]
#: Training settings that are not run config: the seed and the device come from the ``settings`` resource, data
#: loading and intra-op threads keep the library's defaults.
FROM_SETTINGS = frozenset({"seed", "device", "num_workers", "num_threads"})


class SubsetSplitConfig(Config):
    #: Share of participants whose coughs may train/validate/test the separator; the rest are for classification.
    separation_fraction: bounded(Fraction) = 0.5


@asset(
    ins={"cough_list": AssetIn()},
    io_manager_key="table_io_manager",
    group_name="separation",
    check_specs=[
        AssetCheckSpec(
            "participant_disjoint",
            asset="subset_split",
            blocking=True,
            description="No participant (or recording) is in both subsets.",
        )
    ],
)
def subset_split(
    context: AssetExecutionContext, config: SubsetSplitConfig, cough_list: pd.DataFrame, settings: PipelineSettings
):
    """Recordings that passed the cough filter, split participant-disjointly into a separation subset and a
    classification subset (seeded; the fraction counts participants, stratified by dataset)."""
    passed = cough_list.loc[
        cough_list["is_cough"].fillna(False).astype(bool), ["dataset", "recording_id", "participant_id", "covid_label"]
    ]
    table = split_subsets(passed.reset_index(drop=True), config.separation_fraction, settings.seed)
    overlap = leakage(table[table["subset"] == SEPARATION], table[table["subset"] == CLASSIFICATION])
    by_dataset = table.groupby(["subset", "dataset"]).size().unstack(fill_value=0)
    yield Output(
        table,
        metadata={
            "recordings_per_subset": MetadataValue.json(counts(table["subset"])),
            "participants_per_subset": MetadataValue.json(
                {k: int(v) for k, v in table.groupby("subset")["participant_id"].nunique().items()}
            ),
            "by_dataset": preview(by_dataset.reset_index()),
            "cough_list_rows_not_passing": int(len(cough_list) - len(passed)),
        },
    )
    yield AssetCheckResult(
        check_name="participant_disjoint",
        passed=not any(overlap.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"overlap": MetadataValue.json(overlap)},
    )


class SeparationMixturesConfig(Config):
    #: Which segmentation method's single coughs become the foreground events.
    segment_method: SegmentMethod = "rms"


#: The file columns of a mixture table (all relative to the storage root once the table is stored).
MIXTURE_FILES = ("mixture_path", "cough_path", "noise_path", "jams_path")


def rooted(mixtures: pd.DataFrame, out_dir, storage: Storage) -> pd.DataFrame:
    """``mixtures`` with its file columns made relative to the storage root instead of ``out_dir``."""
    prefix = out_dir.relative_to(storage.root_path).as_posix()
    return mixtures.assign(**{column: prefix + "/" + mixtures[column].astype(str) for column in MIXTURE_FILES})


def mixtures_of(separation_mixtures: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split (train / validation / test) of the mixture table."""
    return separation_mixtures[separation_mixtures["split"] == split]


def epoch_logger(context: AssetExecutionContext):
    """An ``on_epoch`` callback that logs each epoch's losses to the run's log."""
    return lambda row: context.log.info(
        f"epoch {row['epoch']}: train {row['train_loss']:.4f}, validation {row['val_loss']:.4f}"
    )


def coughs_of(
    subset: str, split_table: pd.DataFrame, cough_segments: pd.DataFrame, method: str, storage: Storage
) -> pd.DataFrame:
    """The single-cough WAVs (absolute ``path``) of the recordings in ``subset``, with their provenance."""
    recordings = split_table.loc[split_table["subset"] == subset, ["recording_id"]]
    segments = cough_segments[(cough_segments["method"] == method) & cough_segments["path"].notna()]
    coughs = segments.merge(recordings, on="recording_id")
    return coughs.assign(path=coughs["path"].map(lambda p: str(storage.root_path / p)))


@asset(
    ins={"subset_split": AssetIn(), "cough_segments": AssetIn()},
    io_manager_key="table_io_manager",
    group_name="separation",
    pool=MIXTURES_POOL,
    check_specs=[
        AssetCheckSpec(
            "no_classification_coughs",
            asset="separation_mixtures",
            blocking=True,
            description="No cough or participant of the classification subset is in any "
            "separator training, validation or test mixture.",
        ),
        artefact_paths_spec("separation_mixtures"),
    ],
)
def separation_mixtures(
    context: AssetExecutionContext,
    config: SeparationMixturesConfig,
    subset_split: pd.DataFrame,
    cough_segments: pd.DataFrame,
    settings: PipelineSettings,
    noise_bank: NoiseBank,
    storage: Storage,
):
    """5-second 44.1 kHz scaper soundscapes of separation-subset coughs over noise (train/validation/test, sizes
    from the profile): the mixture, the isolated cough and noise, the JAMS file, and every sampled parameter.
    Paths are relative to the storage root, in a new generation of ``mixtures/separation/``."""
    profile = settings.scale()
    coughs = split_coughs(
        coughs_of(SEPARATION, subset_split, cough_segments, config.segment_method, storage), settings.seed
    )
    bank = noise_bank.split_bank(settings.seed)
    generated = {}
    with storage.generation(*MIXTURES_FOLDER, run_id=context.run.run_id) as out_dir:
        for split in SPLITS:
            generated[split] = generate_mixtures(
                coughs[coughs["split"] == split],
                bank[bank["split"] == split],
                profile.mixtures.count(split),
                split,
                out_dir,
                seed=settings.seed,
                workers=settings.workers,
                cache_dir=storage.artefact_dir(*SOURCE_CACHE),
                on_progress=throttled(context.log.info, f"{split}: mixed", every=100),
            )
    events = pd.concat([g.events for g in generated.values()], ignore_index=True)
    mixtures = pd.concat([rooted(g.mixtures, out_dir, storage) for g in generated.values()], ignore_index=True)
    table = mixture_table(mixtures, events)
    overlap = leakage(events, subset_split[subset_split["subset"] == CLASSIFICATION])
    yield Output(
        table,
        metadata={
            "profile": profile.name,
            "mixtures_per_split": MetadataValue.json(counts(table["split"])),
            "foreground_coughs_per_split": MetadataValue.json(counts(coughs["split"])),
            "noise_files_per_split": MetadataValue.json(counts(bank["split"])),
            "rejected_sources": preview(pd.concat([g.rejected for g in generated.values()], ignore_index=True)),
            "folder": MetadataValue.path(str(out_dir)),
        },
    )
    storage.retire_generations(*MIXTURES_FOLDER, keep=out_dir)
    yield AssetCheckResult(
        check_name="no_classification_coughs",
        passed=not any(overlap.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"overlap": MetadataValue.json(overlap)},
    )
    yield artefact_paths_check(table, storage, list(MIXTURE_FILES))


SeparatorTrainingConfig = mirror(
    TrainingConfig,
    "Training of the separator: ``epochs`` left unset is the scale profile's; the seed and the device come from "
    "the ``settings`` resource.",
    exclude=FROM_SETTINGS,
    unset=frozenset({"epochs"}),
)


def training_data(separation_mixtures: pd.DataFrame) -> dict:
    """The model card's fingerprints of the training and validation mixtures."""
    return {
        "mixtures": fingerprint(mixtures_of(separation_mixtures, "train")),
        "validation_mixtures": fingerprint(mixtures_of(separation_mixtures, "validation")),
    }


def training_metrics(result: TrainingResult) -> dict:
    """What a training run achieved, for the model card and the UI."""
    history = pd.DataFrame(result.history)
    return {
        "best_epoch": result.best_epoch,
        "best_validation_l1": round(float(history["val_loss"].min()), 5),
        "epochs": len(history),
        "training_mixtures_per_s": round(float(history["mixtures_per_s"].mean()), 1),
    }


@asset(
    ins={"separation_mixtures": AssetIn()},
    group_name="separation",
    kinds={"pytorch"},
    io_manager_key="model_io_manager",
    pool=TRAINING_POOL,
)
def separator(
    context: AssetExecutionContext,
    config: SeparatorTrainingConfig,
    separation_mixtures: pd.DataFrame,
    settings: PipelineSettings,
    storage: Storage,
) -> Output[TrainedModel]:
    """The mask-based LSTM separator (STFT 512/128 → dB → BatchNorm → 2×LSTM(50) → linear → sigmoid mask → iSTFT),
    trained with L1 on magnitudes, Adam 1e-3, batch 32 (by default); the checkpoint with the best validation loss
    is kept, stored as a new model version."""
    profile = settings.scale()
    training = config.library_config(epochs=profile.epochs, seed=settings.seed, device=settings.torch_device())
    result = train_separator(
        mixtures_of(separation_mixtures, "train"),
        mixtures_of(separation_mixtures, "validation"),
        storage.root_path,
        training,
        on_epoch=epoch_logger(context),
    )
    model = result.model
    model.metadata = {
        "best_epoch": result.best_epoch,
        "history": result.history,
        "profile": profile.name,
        "seed": settings.seed,
    }
    metrics = {"parameters": model.parameter_count(), **training_metrics(result)}
    trained = TrainedModel(
        model,
        config={**training.to_dict(), "separator": model.config.to_dict(), "profile": profile.name},
        training_data=training_data(separation_mixtures),
        metrics=metrics,
    )
    history = pd.DataFrame(result.history)
    return Output(
        trained,
        metadata={
            **metrics,
            "loss_curves": image(loss_curves_png(history), "loss curves"),
            "history": preview(history),
        },
    )


SeparatorPrunedConfig = mirror(
    PrunedTrainingConfig,
    "SNIP: keep ``keep_fraction`` of ``target_parameters`` by connection sensitivity |w · ∂L/∂w| on training "
    "batches, computed at a fresh initialisation (``start_from: initialization``, as SNIP does) or on the trained "
    "separator (``trained``); the pruned model is then trained with its masks fixed. ``epochs`` left unset is the "
    "scale profile's, and so are the SNIP scoring batches.",
    exclude=FROM_SETTINGS | {"sensitivity_batches", "scope"},
    unset=frozenset({"epochs"}),
)


@asset(
    ins={"separation_mixtures": AssetIn(), "separator": AssetIn()},
    group_name="separation",
    kinds={"pytorch"},
    io_manager_key="model_io_manager",
    pool=TRAINING_POOL,
)
def separator_pruned(
    context: AssetExecutionContext,
    config: SeparatorPrunedConfig,
    separation_mixtures: pd.DataFrame,
    separator: TrainedModel,
    settings: PipelineSettings,
    storage: Storage,
) -> Output[TrainedModel]:
    """The SNIP-pruned separator (its masks stored beside the weights) and its training history."""
    profile = settings.scale()
    pruning = config.library_config(
        epochs=profile.epochs,
        seed=settings.seed,
        device=settings.torch_device(),
        sensitivity_batches=profile.snip_batches,
    )
    pruned, result = train_pruned(
        separator.model,
        mixtures_of(separation_mixtures, "train"),
        mixtures_of(separation_mixtures, "validation"),
        storage.root_path,
        pruning,
        on_epoch=epoch_logger(context),
    )
    pruned.model.metadata = {"best_epoch": result.best_epoch, "history": result.history}
    metrics = {
        "nonzero_parameters": sum(int(p.count_nonzero()) for p in pruned.model.parameters()),
        **training_metrics(result),
    }
    trained = TrainedModel(
        pruned,
        config={**pruning.to_dict(), "profile": profile.name, "dense_separator_version": separator.version},
        training_data=training_data(separation_mixtures),
        metrics=metrics,
    )
    history = pd.DataFrame(result.history)
    return Output(
        trained,
        metadata={
            "masks": MetadataValue.json(mask_report(pruned.masks)),
            **metrics,
            "loss_curves": image(loss_curves_png(history, "pruned separator training"), "loss curves"),
            "dense_separator_version": MetadataValue.text(separator.version or ""),
        },
    )


def model_versions(**models: TrainedModel) -> MetadataValue:
    """The stored versions of the models an asset used, for its metadata."""
    return MetadataValue.json({name: trained.version for name, trained in models.items()})


@multi_asset(
    outs={
        "separation_report": AssetOut(
            io_manager_key="table_io_manager",
            kinds={"museval"},
            description="BSSEval v4 (museval) SDR/SIR/SAR/ISR and SNR on the test "
            "mixtures: unprocessed mixture, separator, pruned separator.",
        ),
        "separator_complexity": AssetOut(
            io_manager_key="table_io_manager",
            kinds={"pytorch"},
            description="Parameters, size, MACs/FLOPs per 5 s clip, latency and "
            "throughput of both separators' inference paths (folded: "
            "BatchNorm's 514 parameters live in the first LSTM layer), "
            "per device.",
        ),
    },
    ins={"separation_mixtures": AssetIn(), "separator": AssetIn(), "separator_pruned": AssetIn()},
    group_name="separation",
)
def separation_report(
    context: AssetExecutionContext,
    separation_mixtures: pd.DataFrame,
    separator: TrainedModel,
    separator_pruned: TrainedModel,
    storage: Storage,
):
    """Quality and cost of the original and the pruned separator, side by side."""
    # both through their inference paths (folded, CPU kernels; the pruned one with its sparse mask layer), so the
    # complexity rows compare the pruning, not the folding
    models = {"separator": separator.model.for_inference(), "separator_pruned": separator_pruned.model.for_inference()}
    test = mixtures_of(separation_mixtures, "test")
    per_clip, summary = evaluate_mixtures(test, storage.root_path, models)
    summary = summary.reset_index()
    complexity = complexity_table(models).reset_index(drop=True)
    columns = [
        "system",
        "clips",
        "sdr_median",
        "sir_median",
        "sar_median",
        "isr_median",
        "snr_median",
        "sdr_improvement_median",
        "sir_improvement_median",
    ]
    versions = model_versions(separator=separator, separator_pruned=separator_pruned)
    yield Output(
        summary,
        output_name="separation_report",
        metadata={
            "test_mixtures": len(test),
            "model_versions": versions,
            "report": preview(summary[[c for c in columns if c in summary.columns]].round(2)),
            "per_clip_preview": preview(per_clip.round(2), rows=15),
        },
    )
    yield Output(
        complexity,
        output_name="separator_complexity",
        metadata={"model_versions": versions, "table": preview(complexity.round(3))},
    )


class SeparatedClipsConfig(Config):
    segment_method: SegmentMethod = "rms"
    #: ``separator`` (dense) or ``separator_pruned``.
    use: Literal["separator", "separator_pruned"] = "separator_pruned"


@asset(
    ins={
        "subset_split": AssetIn(),
        "cough_segments": AssetIn(),
        "separator": AssetIn(),
        "separator_pruned": AssetIn(),
    },
    io_manager_key="table_io_manager",
    group_name="separation",
    kinds={"pytorch"},
    check_specs=[artefact_paths_spec("separated_clips")],
)
def separated_clips(
    context: AssetExecutionContext,
    config: SeparatedClipsConfig,
    subset_split: pd.DataFrame,
    cough_segments: pd.DataFrame,
    separator: TrainedModel,
    separator_pruned: TrainedModel,
    settings: PipelineSettings,
    noise_bank: NoiseBank,
    storage: Storage,
):
    """Classification-subset coughs mixed with held-out noise the same way (one mixture per cough), passed
    through the chosen separator; the separated coughs are WAVs linked to their recording and label. Mixtures and
    separated WAVs form one generation of ``separated_clips/``."""
    chosen = separator if config.use == "separator" else separator_pruned
    separate = model_separator(chosen.model.for_inference(), settings.torch_device())
    coughs = coughs_of(CLASSIFICATION, subset_split, cough_segments, config.segment_method, storage)
    noise = held_out_noise(noise_bank.split_bank(settings.seed))
    with storage.generation(*CLIPS_FOLDER, run_id=context.run.run_id) as folder:
        generated = generate_mixtures(
            coughs,
            noise,
            1,
            "classification",
            folder / "mixtures",
            seed=settings.seed,
            workers=settings.workers,
            cache_dir=storage.artefact_dir(*SOURCE_CACHE),
            on_progress=throttled(context.log.info, "mixed", every=100),
            one_per_cough=True,
        )
        table = generated.mixtures.merge(generated.events, on="mixture_id").merge(
            subset_split[["recording_id", "covid_label"]], on="recording_id"
        )
        paths = separate_files(
            table, folder / "mixtures", folder / "separated", separate, throttled(context.log.info, "separated", 100)
        )
        separated = [path.relative_to(storage.root_path).as_posix() for path in paths]
        table = rooted(table, folder / "mixtures", storage).assign(separated_path=separated, separator=config.use)
    yield Output(
        table,
        metadata={
            "separator": config.use,
            "model_version": MetadataValue.text(chosen.version or ""),
            "recordings": int(table["recording_id"].nunique()),
            "labels": MetadataValue.json(counts(table["covid_label"])),
            "rejected_sources": preview(generated.rejected),
            "folder": MetadataValue.path(str(folder)),
            "summary_preview": preview(
                table[["mixture_id", "recording_id", "covid_label", "snr_db", "separated_path"]]
            ),
        },
    )
    storage.retire_generations(*CLIPS_FOLDER, keep=folder)
    yield artefact_paths_check(table, storage, [*MIXTURE_FILES, "separated_path"])
