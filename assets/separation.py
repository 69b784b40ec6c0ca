"""Separation: participant-disjoint subsets, scaper mixtures, the LSTM separator and its SNIP-pruned variant,
their evaluation, and separated clips of the classification subset."""

import pandas as pd
import soundfile as sf
import torch
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from torch.utils.data import DataLoader

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.metadata import column_schema, counts, image, preview
from cough_pipeline.audio import load_mono
from cough_pipeline.mixtures import SPLITS, generate_mixtures, held_out_noise
from cough_pipeline.plots import loss_curves_png
from cough_pipeline.separation.complexity import complexity_table
from cough_pipeline.separation.evaluation import evaluate_separation, model_separator
from cough_pipeline.separation.model import CoughSeparator
from cough_pipeline.separation.pruning import (
    PruningConfig,
    apply_masks,
    load_pruned,
    mask_report,
    optimize_for_inference,
    save_pruned,
    snip_masks,
)
from cough_pipeline.separation.training import MixtureDataset, train_separator, train_with_masks
from cough_pipeline.subsets import CLASSIFICATION, SEPARATION, leakage, split_coughs, split_subsets
from resources.settings import NoiseBank, PipelineSettings
from resources.storage import Storage

MIXTURES_FOLDER = ("mixtures", "separation")
SOURCE_CACHE = ("mixtures", "source_cache")
SEPARATOR_FOLDER = ("models", "separator")
PRUNED_FOLDER = ("models", "separator_pruned")
CLIPS_FOLDER = ("separated_clips",)


class SubsetSplitConfig(Config):
    #: Share of participants whose coughs may train/validate/test the separator; the rest are for classification.
    separation_fraction: float = 0.5


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
            "dagster/row_count": len(table),
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
    segment_method: str = "rms"


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
    tables, events, rejected = [], [], []
    with storage.generation(*MIXTURES_FOLDER, run_id=context.run.run_id) as out_dir:
        for split in SPLITS:
            generated = generate_mixtures(
                coughs[coughs["split"] == split],
                bank[bank["split"] == split],
                profile.mixtures.count(split),
                split,
                out_dir,
                seed=settings.seed,
                workers=settings.workers,
                cache_dir=storage.artefact_dir(*SOURCE_CACHE),
                on_progress=lambda done, total, split=split: context.log.info(f"{split}: {done}/{total} mixtures"),
            )
            tables.append(rooted(generated.mixtures, out_dir, storage))
            events.append(generated.events)
            rejected.append(generated.rejected)
    events = pd.concat(events, ignore_index=True)
    table = pd.concat(tables, ignore_index=True).merge(
        events.groupby("mixture_id")
        .agg(
            recording_ids=("recording_id", lambda s: ";".join(s)),
            participant_ids=("participant_id", lambda s: ";".join(s)),
            snr_db=("snr_db", "first"),
            pitch_shift_semitones=("pitch_shift_semitones", "first"),
            time_stretch_factor=("time_stretch_factor", "first"),
            onset_s=("onset_s", "first"),
        )
        .reset_index(),
        on="mixture_id",
    )
    rejected = pd.concat(rejected, ignore_index=True)
    classification = subset_split[subset_split["subset"] == CLASSIFICATION]
    overlap = leakage(events, classification)
    yield Output(
        table,
        metadata={
            "dagster/row_count": len(table),
            "dagster/column_schema": column_schema(table),
            "profile": profile.name,
            "mixtures_per_split": MetadataValue.json(counts(table["split"])),
            "foreground_coughs_per_split": MetadataValue.json(counts(coughs["split"])),
            "noise_files_per_split": MetadataValue.json(counts(bank["split"])),
            "rejected_sources": preview(rejected),
            "folder": MetadataValue.path(str(out_dir)),
            "preview": preview(table),
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


@asset(ins={"separation_mixtures": AssetIn()}, group_name="separation", compute_kind="pytorch")
def separator(
    context: AssetExecutionContext, separation_mixtures: pd.DataFrame, settings: PipelineSettings, storage: Storage
) -> MaterializeResult:
    """The mask-based LSTM separator (STFT 512/128 → dB → BatchNorm → 2×LSTM(50) → linear → sigmoid mask → iSTFT),
    trained with L1 on magnitudes, Adam 1e-3, batch 32; the checkpoint with the best validation loss is kept."""
    profile = settings.scale()
    splits = {s: mixtures_of(separation_mixtures, s) for s in ("train", "validation")}
    result = train_separator(
        splits["train"],
        splits["validation"],
        storage.root_path,
        epochs=profile.epochs,
        seed=settings.seed,
        device=settings.torch_device(),
        on_epoch=epoch_logger(context),
    )
    history = pd.DataFrame(result.history)
    with storage.generation(*SEPARATOR_FOLDER, run_id=context.run.run_id) as folder:
        result.model.save(
            folder,
            metadata={
                "best_epoch": result.best_epoch,
                "history": result.history,
                "profile": profile.name,
                "seed": settings.seed,
            },
        )
    storage.publish_generation(folder)
    return MaterializeResult(
        metadata={
            "parameters": result.model.parameter_count(),
            "best_epoch": result.best_epoch,
            "best_validation_l1": round(float(history["val_loss"].min()), 5),
            "epochs": len(history),
            "training_mixtures_per_s": round(float(history["mixtures_per_s"].mean()), 1),
            "loss_curves": image(loss_curves_png(history), "loss curves"),
            "history": preview(history),
            "path": str(folder),
        }
    )


class SeparatorPrunedConfig(Config):
    """SNIP: keep ``keep_fraction`` of ``target_parameters`` by connection sensitivity |w · ∂L/∂w| on training
    batches, computed at a fresh initialisation (``start_from: initialization``, as SNIP does) or on the trained
    separator (``trained``); the pruned model is then trained with its masks fixed."""

    keep_fraction: float = 0.01
    target_parameters: list[str] = ["masker.output.weight"]
    start_from: str = "initialization"


@asset(ins={"separation_mixtures": AssetIn()}, deps=[separator], group_name="separation", compute_kind="pytorch")
def separator_pruned(
    context: AssetExecutionContext,
    config: SeparatorPrunedConfig,
    separation_mixtures: pd.DataFrame,
    settings: PipelineSettings,
    storage: Storage,
) -> MaterializeResult:
    """The SNIP-pruned separator (masks saved beside the weights) and its training history."""
    if config.start_from not in ("initialization", "trained"):
        raise ValueError(f"start_from must be 'initialization' or 'trained', not {config.start_from!r}")
    profile = settings.scale()
    root = storage.root_path
    dense = CoughSeparator.load(storage.current_generation(*SEPARATOR_FOLDER, what="separator"))
    if config.start_from == "initialization":
        torch.manual_seed(settings.seed)
        dense = CoughSeparator(dense.config)
    splits = {s: mixtures_of(separation_mixtures, s) for s in ("train", "validation")}
    pruning = PruningConfig(
        keep_fraction=config.keep_fraction,
        target_parameters=tuple(config.target_parameters),
        sensitivity_batches=profile.snip_batches,
    )
    batches = DataLoader(
        MixtureDataset(splits["train"], root, dense.config),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    masks = snip_masks(dense, batches, pruning, device=settings.torch_device())
    result = train_with_masks(
        apply_masks(dense, masks),
        masks,
        splits["train"],
        splits["validation"],
        root,
        epochs=profile.epochs,
        seed=settings.seed,
        device=settings.torch_device(),
        on_epoch=epoch_logger(context),
    )
    with storage.generation(*PRUNED_FOLDER, run_id=context.run.run_id) as folder:
        save_pruned(
            result.model, masks, pruning, folder, metadata={"best_epoch": result.best_epoch, "history": result.history}
        )
    storage.publish_generation(folder)
    history = pd.DataFrame(result.history)
    return MaterializeResult(
        metadata={
            "masks": MetadataValue.json(mask_report(masks)),
            "nonzero_parameters": sum(int(p.count_nonzero()) for p in result.model.parameters()),
            "best_epoch": result.best_epoch,
            "best_validation_l1": round(float(history["val_loss"].min()), 5),
            "loss_curves": image(loss_curves_png(history, "pruned separator training"), "loss curves"),
            "path": str(folder),
        }
    )


def test_rows(separation_mixtures: pd.DataFrame, root) -> tuple[list[tuple[str, str, str]], list[str]]:
    test = mixtures_of(separation_mixtures, "test")
    rows = [
        (str(root / m), str(root / c), str(root / n))
        for m, c, n in zip(test["mixture_path"], test["cough_path"], test["noise_path"])
    ]
    return rows, test["mixture_id"].tolist()


@multi_asset(
    outs={
        "separation_report": AssetOut(
            io_manager_key="table_io_manager",
            description="BSSEval v4 (museval) SDR/SIR/SAR/ISR and SNR on the test "
            "mixtures: unprocessed mixture, separator, pruned separator.",
        ),
        "separator_complexity": AssetOut(
            io_manager_key="table_io_manager",
            description="Parameters, size, MACs/FLOPs per 5 s clip, latency and "
            "throughput of both separators' inference paths (folded: "
            "BatchNorm's 514 parameters live in the first LSTM layer), "
            "per device.",
        ),
    },
    ins={"separation_mixtures": AssetIn()},
    deps=[separator, separator_pruned],
    group_name="separation",
    compute_kind="museval",
)
def separation_report(
    context: AssetExecutionContext, separation_mixtures: pd.DataFrame, settings: PipelineSettings, storage: Storage
):
    """Quality and cost of the original and the pruned separator, side by side."""
    root = storage.root_path
    dense = CoughSeparator.load(storage.current_generation(*SEPARATOR_FOLDER, what="separator"))
    pruned, _, _ = load_pruned(storage.current_generation(*PRUNED_FOLDER, what="separator_pruned"))
    # both through their inference paths (folded, CPU kernels; the pruned one with its sparse mask layer), so the
    # complexity rows compare the pruning, not the folding
    models = {"separator": dense.for_inference(), "separator_pruned": optimize_for_inference(pruned)}
    rows, clip_ids = test_rows(separation_mixtures, root)
    per_clip, summary = evaluate_separation(
        rows, {name: model_separator(model) for name, model in models.items()}, clip_ids=clip_ids
    )
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
    yield Output(
        summary,
        output_name="separation_report",
        metadata={
            "dagster/row_count": len(summary),
            "test_mixtures": len(rows),
            "report": preview(summary[[c for c in columns if c in summary.columns]].round(2)),
            "per_clip_preview": preview(per_clip.round(2), rows=15),
        },
    )
    yield Output(
        complexity,
        output_name="separator_complexity",
        metadata={
            "dagster/row_count": len(complexity),
            "table": preview(complexity.round(3)),
        },
    )


class SeparatedClipsConfig(Config):
    segment_method: str = "rms"
    #: ``separator`` (dense) or ``separator_pruned``.
    use: str = "separator_pruned"


@asset(
    ins={"subset_split": AssetIn(), "cough_segments": AssetIn()},
    deps=[separator, separator_pruned],
    io_manager_key="table_io_manager",
    group_name="separation",
    compute_kind="pytorch",
    check_specs=[artefact_paths_spec("separated_clips")],
)
def separated_clips(
    context: AssetExecutionContext,
    config: SeparatedClipsConfig,
    subset_split: pd.DataFrame,
    cough_segments: pd.DataFrame,
    settings: PipelineSettings,
    noise_bank: NoiseBank,
    storage: Storage,
):
    """Classification-subset coughs mixed with held-out noise the same way (one mixture per cough), passed
    through the chosen separator; the separated coughs are WAVs linked to their recording and label. Mixtures and
    separated WAVs form one generation of ``separated_clips/``."""
    if config.use == "separator":
        model = CoughSeparator.load(storage.current_generation(*SEPARATOR_FOLDER, what="separator")).for_inference()
    elif config.use == "separator_pruned":
        model = optimize_for_inference(
            load_pruned(storage.current_generation(*PRUNED_FOLDER, what="separator_pruned"))[0]
        )
    else:
        raise ValueError(f"use must be 'separator' or 'separator_pruned', not {config.use!r}")
    coughs = coughs_of(CLASSIFICATION, subset_split, cough_segments, config.segment_method, storage)
    noise = held_out_noise(noise_bank.split_bank(settings.seed))
    separate = model_separator(model, settings.torch_device())
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
            one_per_cough=True,
        )
        table = generated.mixtures.merge(generated.events, on="mixture_id").merge(
            subset_split[["recording_id", "covid_label"]], on="recording_id"
        )
        (folder / "separated").mkdir()
        paths = []
        for mixture_id, mixture_path in zip(table["mixture_id"], table["mixture_path"]):
            samples, rate = load_mono(folder / "mixtures" / mixture_path)
            path = folder / "separated" / f"{mixture_id}.wav"
            sf.write(path, separate(samples), rate, subtype="PCM_16")
            paths.append(path.relative_to(storage.root_path).as_posix())
        table = rooted(table, folder / "mixtures", storage).assign(separated_path=paths, separator=config.use)
    yield Output(
        table,
        metadata={
            "dagster/row_count": len(table),
            "separator": config.use,
            "recordings": int(table["recording_id"].nunique()),
            "labels": MetadataValue.json(counts(table["covid_label"])),
            "rejected_sources": preview(generated.rejected),
            "folder": MetadataValue.path(str(folder)),
            "preview": preview(table[["mixture_id", "recording_id", "covid_label", "snr_db", "separated_path"]]),
        },
    )
    storage.retire_generations(*CLIPS_FOLDER, keep=folder)
    yield artefact_paths_check(table, storage, [*MIXTURE_FILES, "separated_path"])
