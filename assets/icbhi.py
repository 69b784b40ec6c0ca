"""ICBHI 2017: recording and cycle tables, the demographic and acoustic analysis a clinician reads, and the
preprocessing (16 kHz windows, augmentation, class balancing, log-mel and MFCC features) that prepares it for
models."""

import warnings

import numpy as np
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
    StaticPartitionsDefinition,
    asset,
    multi_asset,
)

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.config import mirror
from assets.metadata import column_schema, counts, image, preview
from cough_pipeline.icbhi.acoustics import (
    SpectralConfig,
    feature_box_plots_png,
    load_envelopes,
    median_table,
    pick_envelope_recordings,
    rms_envelopes_png,
    spectral_table,
)
from cough_pipeline.icbhi.associations import LEVELS, association_tests, duration_summary
from cough_pipeline.icbhi.preprocessing import (
    STRATEGIES,
    AugmentConfig,
    BalancingWarning,
    FeatureConfig,
    WindowConfig,
    balance_plan,
    class_counts,
    feature_arrays_by_length,
    logmel_file,
    make_windows,
    render_plan,
)
from cough_pipeline.icbhi.tables import LABEL_RULES, LUNG_LABELS, build_icbhi_tables
from cough_pipeline.plots import spectrogram_grid_png, stacked_bar_png
from resources.data_roots import DataRoots
from resources.settings import PipelineSettings
from resources.storage import Storage

GROUP = "icbhi"


class IcbhiTablesConfig(Config):
    #: How a recording's cycle annotations become its lung-sound label: "any" (a sound in any cycle; the ICBHI
    #: convention), "majority" (in more than half of the cycles) or "dominant" (the most frequent abnormal cycle
    #: type). See cough_pipeline/icbhi/tables.py.
    label_rule: str = "any"
    #: Read WAV headers for durations and sample rates (False: durations from the annotations only).
    read_audio: bool = True


@multi_asset(
    outs={
        "icbhi_recordings": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="One row per annotated ICBHI recording: patient, diagnosis, "
            "demographics, chest location, device, official split, duration, "
            "cycle counts and the lung-sound label.",
        ),
        "icbhi_cycles": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="One row per annotated respiratory cycle (onset, offset, crackles, wheezes, cycle label).",
        ),
        "icbhi_quarantine": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="Annotation files, lines and WAVs that could not be used, each with a machine-readable reason.",
        ),
    },
    check_specs=[
        AssetCheckSpec(
            "every_annotation_accounted",
            asset="icbhi_recordings",
            blocking=True,
            description="Annotation files = recordings + quarantined files; annotation lines = cycles "
            "+ quarantined lines.",
        ),
        AssetCheckSpec(
            "labels_in_domain",
            asset="icbhi_recordings",
            blocking=True,
            description="Every lung-sound label is one of normal / crackles / wheezes / both.",
        ),
    ],
    compute_kind="pandas",
)
def icbhi_tables(context: AssetExecutionContext, config: IcbhiTablesConfig, data_roots: DataRoots):
    """Read the ICBHI metadata and annotations (official or Kaggle layout) into recording, cycle and quarantine
    tables; WAVs are optional (durations then come from the annotations, flagged as such)."""
    if config.label_rule not in LABEL_RULES:
        raise ValueError(f"label_rule {config.label_rule!r} is not one of {sorted(LABEL_RULES)}")
    root = data_roots.root_for("icbhi")
    context.log.info(f"icbhi: reading {data_roots.source('icbhi')} ({root}), label rule {config.label_rule!r}")
    tables = build_icbhi_tables(root, label_rule=config.label_rule, read_audio=config.read_audio)
    recordings, cycles, quarantine = tables.recordings, tables.cycles, tables.quarantine
    labels = {label: int((recordings["lung_label"] == label).sum()) for label in LUNG_LABELS}
    by_label_split = {
        label: counts(recordings.loc[recordings["lung_label"] == label, "official_split"].fillna("none"))
        for label in LUNG_LABELS
    }
    yield Output(
        recordings,
        output_name="icbhi_recordings",
        metadata={
            "dagster/row_count": len(recordings),
            "dagster/column_schema": column_schema(recordings),
            "source": data_roots.source("icbhi"),
            "label_rule": config.label_rule,
            "recordings_per_label": MetadataValue.json(labels),
            "recordings_per_diagnosis": MetadataValue.json(counts(recordings["diagnosis"])),
            "recordings_per_split": MetadataValue.json(counts(recordings["official_split"].fillna("none"))),
            "patients": int(recordings["patient_id"].nunique()),
            "recordings_without_demographics": int((~recordings["demographics_known"]).sum()),
            "duration_sources": MetadataValue.json(counts(recordings["duration_source"])),
            "bookkeeping": MetadataValue.json({k: int(v) for k, v in tables.counts.items()}),
            "labels_plot": image(
                stacked_bar_png(
                    by_label_split,
                    f"ICBHI recordings per lung-sound label ({config.label_rule!r} rule)",
                    ylabel="recordings",
                ),
                "labels",
            ),
            "preview": preview(recordings),
        },
    )
    cycle_labels = {label: int((cycles["cycle_label"] == label).sum()) for label in LUNG_LABELS}
    yield Output(
        cycles,
        output_name="icbhi_cycles",
        metadata={
            "dagster/row_count": len(cycles),
            "dagster/column_schema": column_schema(cycles),
            "cycles_per_label": MetadataValue.json(cycle_labels),
            "mean_cycle_s": round(float(cycles["duration_s"].mean()), 3) if len(cycles) else None,
            "preview": preview(cycles),
        },
    )
    yield Output(
        quarantine,
        output_name="icbhi_quarantine",
        metadata={
            "dagster/row_count": len(quarantine),
            "reasons": MetadataValue.json(counts(quarantine["reason"])),
            "preview": preview(quarantine, rows=20),
        },
    )
    yield AssetCheckResult(
        check_name="every_annotation_accounted",
        asset_key="icbhi_recordings",
        passed=bool(tables.accounted),
        severity=AssetCheckSeverity.ERROR,
        metadata={"counts": MetadataValue.json({k: int(v) for k, v in tables.counts.items()})},
    )
    unknown = sorted(set(recordings["lung_label"].dropna()) - set(LUNG_LABELS))
    yield AssetCheckResult(
        check_name="labels_in_domain",
        asset_key="icbhi_recordings",
        passed=not unknown and bool(recordings["lung_label"].notna().all()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"unknown": MetadataValue.json(unknown)},
    )


SpectralSettings = mirror(
    SpectralConfig,
    "How recordings are analysed: resampled to analysis_sample_rate (4 kHz, the "
    "lowest ICBHI device rate, so all recordings describe the same band; "
    "null = native rate), then one STFT; see cough_pipeline/icbhi/acoustics.py.",
)


class IcbhiEdaConfig(Config):
    #: Levels of observation for the association tests: "recording" (the ICBHI convention), "patient", "cycle".
    levels: list[str] = ["recording"]
    spectral: SpectralSettings = SpectralSettings()
    #: Processes for the spectral features; a pool pays off only for hundreds of recordings on idle cores
    #: (about 10 ms per 20-s recording in one process; starting a pool costs about a second).
    workers: int = 1


@multi_asset(
    ins={"icbhi_recordings": AssetIn(), "icbhi_cycles": AssetIn()},
    outs={
        "icbhi_eda": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="Association tests: age x lung-sound label and age x diagnosis (one-way "
            "ANOVA, eta), sex x lung-sound label and sex x diagnosis (chi-square, "
            "Cramer's V), each with n, excluded, df, statistic, p and effect size.",
        ),
        "icbhi_durations": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="Recording and cycle durations (mean/min/max) per lung-sound "
            "pattern, with where each duration came from.",
        ),
        "icbhi_spectral_features": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="Per recording with audio: spectral centroid, bandwidth, "
            "roll-off 85 %/95 %, flux and RMS (mean and median over "
            "frames).",
        ),
        "icbhi_spectral_medians": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            description="Median of each spectral feature per lung-sound pattern.",
        ),
    },
    compute_kind="scipy",
)
def icbhi_eda(
    context: AssetExecutionContext,
    config: IcbhiEdaConfig,
    icbhi_recordings: pd.DataFrame,
    icbhi_cycles: pd.DataFrame,
    data_roots: DataRoots,
):
    """The demographic and acoustic analysis of ICBHI: association tests, durations per pattern, RMS envelopes and
    spectral features per recording. Works from metadata and annotations alone: without WAVs the acoustic tables
    are empty and say so."""
    unknown = sorted(set(config.levels) - set(LEVELS))
    if unknown or not config.levels:
        raise ValueError(f"levels {config.levels} must be a non-empty subset of {list(LEVELS)}")
    tests = pd.concat(
        [association_tests(icbhi_recordings, icbhi_cycles, level) for level in config.levels], ignore_index=True
    )
    yield Output(
        tests,
        output_name="icbhi_eda",
        metadata={
            "dagster/row_count": len(tests),
            "dagster/column_schema": column_schema(tests),
            "tests": preview(
                tests,
                [
                    "level",
                    "variable",
                    "grouping",
                    "test",
                    "n",
                    "n_excluded",
                    "df",
                    "statistic",
                    "p_value",
                    "effect_name",
                    "effect",
                    "note",
                ],
                rows=len(tests),
            ),
            "recordings": len(icbhi_recordings),
            "recordings_excluded_for_missing_demographics": int((~icbhi_recordings["demographics_known"]).sum()),
        },
    )
    durations = duration_summary(icbhi_recordings, icbhi_cycles)
    yield Output(
        durations,
        output_name="icbhi_durations",
        metadata={
            "dagster/row_count": len(durations),
            "durations": preview(durations, rows=len(durations)),
        },
    )

    root = data_roots.root_for("icbhi")
    spectral = config.spectral.library_config()
    with_audio = int(icbhi_recordings["audio_present"].sum())
    context.log.info(
        f"spectral features of {with_audio} recordings with audio "
        f"(analysis rate {spectral.analysis_sample_rate or 'native'})"
    )
    features, problems = spectral_table(
        icbhi_recordings, root, spectral, workers=config.workers, progress=progress_logger(context, "analysed")
    )
    summaries = [f"{name}_mean" for name in spectral.features]
    medians = (
        median_table(features, features=summaries)
        if len(features)
        else pd.DataFrame({"lung_label": pd.Series(LUNG_LABELS, dtype="string"), "n": 0})
    )
    picks = pick_envelope_recordings(icbhi_recordings)
    envelopes, envelope_problems = load_envelopes(picks, root)
    missing = [label for label in LUNG_LABELS if label not in envelopes]
    metadata = {
        "dagster/row_count": len(features),
        "recordings_with_audio": with_audio,
        "recordings_without_audio": int(len(icbhi_recordings) - with_audio),
        "problems": preview(pd.concat([problems, envelope_problems], ignore_index=True), rows=20),
        "analysis_sample_rate": spectral.analysis_sample_rate or "native",
        "rms_envelopes": image(rms_envelopes_png(envelopes, missing=missing), "RMS envelopes"),
        "envelope_patterns_without_audio": MetadataValue.json(missing),
    }
    if len(features):
        metadata["box_plots"] = image(feature_box_plots_png(features, summaries), "spectral features per pattern")
        metadata["preview"] = preview(features)
    yield Output(features, output_name="icbhi_spectral_features", metadata=metadata)
    yield Output(
        medians,
        output_name="icbhi_spectral_medians",
        metadata={
            "dagster/row_count": len(medians),
            "medians": preview(medians, rows=len(medians)),
        },
    )


def progress_logger(context: AssetExecutionContext, verb: str, every: int = 25):
    """A ``progress(done, total)`` callback logging every ``every`` items and the last one."""

    def log(done: int, total: int) -> None:
        if done == total or done % every == 0:
            context.log.info(f"{verb} {done}/{total}")

    return log


# -- preprocessing ----------------------------------------------------------------------------------------------

WINDOWS_FOLDER = ("icbhi", "windows")
EXAMPLES_FOLDER = ("icbhi", "examples")
FEATURES_FOLDER = ("icbhi", "features")
balance_partitions = StaticPartitionsDefinition(list(STRATEGIES))


WindowSettings = mirror(
    WindowConfig,
    "16 kHz windows: long recordings sliced, short ones and long-enough tails "
    "loop-padded (never silence); see cough_pipeline/icbhi/windows.py.",
)


class IcbhiWindowsConfig(Config):
    windows: WindowSettings = WindowSettings()
    workers: int = 2


@asset(
    ins={"icbhi_recordings": AssetIn()},
    io_manager_key="table_io_manager",
    group_name=GROUP,
    compute_kind="soxr",
    check_specs=[
        AssetCheckSpec(
            "every_recording_windowed_or_reported",
            asset="icbhi_windows",
            blocking=True,
            description="Each recording has windows of every length or a problem row.",
        ),
        artefact_paths_spec("icbhi_windows"),
    ],
)
def icbhi_windows(
    context: AssetExecutionContext,
    config: IcbhiWindowsConfig,
    icbhi_recordings: pd.DataFrame,
    data_roots: DataRoots,
    storage: Storage,
):
    """Every ICBHI recording with audio resampled to 16 kHz and cut into 6 s and 20 s windows (WAVs), one row per
    window with its source offsets and whether it was loop-padded."""
    window_config = config.windows.library_config()
    root = data_roots.root_for("icbhi")
    with storage.generation(*WINDOWS_FOLDER, run_id=context.run.run_id) as out_dir:
        windows, problems = make_windows(
            icbhi_recordings,
            root,
            window_config,
            out_dir,
            workers=config.workers,
            progress=progress_logger(context, "windowed"),
        )
    prefix = out_dir.relative_to(storage.root_path).as_posix()
    windows["audio_path"] = prefix + "/" + windows["audio_path"].astype("string")
    per_length = (
        windows.groupby("window_seconds")
        .agg(windows=("window_id", "size"), recordings=("recording_id", "nunique"), loop_padded=("loop_padded", "sum"))
        .reset_index()
    )
    per_label = {
        f"{length:g} s": counts(windows.loc[windows["window_seconds"] == length, "lung_label"])
        for length in window_config.window_seconds
    }
    yield Output(
        windows,
        metadata={
            "dagster/row_count": len(windows),
            "dagster/column_schema": column_schema(windows),
            "per_window_length": preview(per_length),
            "problems": preview(problems, rows=20),
            "problem_reasons": MetadataValue.json(counts(problems["reason"])),
            "windows_plot": image(
                stacked_bar_png(per_label, "ICBHI windows per length and lung-sound label", ylabel="windows"), "windows"
            ),
            "folder": MetadataValue.path(str(out_dir)),
            "preview": preview(windows),
        },
    )
    windowed = set(windows["recording_id"])
    reported = set(problems["recording_id"])
    lengths_per_recording = windows.groupby("recording_id")["window_seconds"].nunique()
    incomplete = sorted(lengths_per_recording[lengths_per_recording < len(window_config.window_seconds)].index)
    unaccounted = sorted(set(icbhi_recordings["recording_id"]) - windowed - reported)
    storage.retire_generations(*WINDOWS_FOLDER, keep=out_dir)
    yield AssetCheckResult(
        check_name="every_recording_windowed_or_reported",
        passed=not unaccounted and not incomplete,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "unaccounted": MetadataValue.json(unaccounted[:20]),
            "missing_a_window_length": MetadataValue.json(incomplete[:20]),
        },
    )
    yield artefact_paths_check(windows, storage, ["audio_path"])


AugmentSettings = mirror(
    AugmentConfig,
    "Augmentation of the oversampled copies: each transform has a probability "
    "and a range; defaults in cough_pipeline/icbhi/augmentation.py.",
)


class IcbhiTrainingSetConfig(Config):
    augmentation: AugmentSettings = AugmentSettings()
    workers: int = 2


@asset(
    ins={"icbhi_windows": AssetIn()},
    partitions_def=balance_partitions,
    io_manager_key="table_io_manager",
    group_name=GROUP,
    compute_kind="numpy",
    check_specs=[
        artefact_paths_spec("icbhi_training_set"),
        AssetCheckSpec(
            "test_split_untouched",
            asset="icbhi_training_set",
            blocking=True,
            description="Balancing touched the training split only: every non-training window "
            "appears exactly once, never augmented, never dropped.",
        ),
    ],
)
def icbhi_training_set(
    context: AssetExecutionContext,
    config: IcbhiTrainingSetConfig,
    icbhi_windows: pd.DataFrame,
    settings: PipelineSettings,
    storage: Storage,
):
    """The windows as model examples under one class-balancing strategy (the partition): ``original``,
    ``undersample`` (to the minority class), ``oversample`` (minorities up to the majority with augmented copies)
    or ``hybrid_anchor`` (every class to the mean class size). Only the training split is balanced, per window
    length; augmented copies are written as WAVs."""
    strategy = context.partition_key
    plans, class_tables = [], []
    for length in sorted(icbhi_windows["window_seconds"].unique()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BalancingWarning)
            plan = balance_plan(
                icbhi_windows[icbhi_windows["window_seconds"] == length], strategy, settings.seed, classes=LUNG_LABELS
            )
        for warning in caught:
            context.log.warning(f"{length:g} s windows: {warning.message}")
        plans.append(plan)
        # per length: a plan's "before" is its own training class size
        class_tables.append(class_counts(plan, classes=list(LUNG_LABELS)).assign(window_seconds=length))
    plan = pd.concat(plans, ignore_index=True)
    augmentation = config.augmentation.library_config()
    with storage.generation(*EXAMPLES_FOLDER, strategy, run_id=context.run.run_id) as out_dir:
        examples = render_plan(
            plan,
            icbhi_windows,
            storage.root_path,
            out_dir,
            augmentation,
            relative_to=storage.root_path,
            workers=config.workers,
        )
    per_class = pd.concat(class_tables, ignore_index=True)
    train_counts = per_class[per_class["split"] == "train"].groupby("label", sort=False)[["after", "augmented"]].sum()
    chart = {
        label: {"original": int(row.after - row.augmented), "augmented": int(row.augmented)}
        for label, row in train_counts.iterrows()
    }
    yield Output(
        examples,
        metadata={
            "dagster/row_count": len(examples),
            "dagster/column_schema": column_schema(examples),
            "strategy": strategy,
            "class_counts": preview(per_class, rows=len(per_class)),
            "augmented_copies": int(examples["augmented"].sum()),
            "balance_plot": image(
                stacked_bar_png(
                    chart, f"training examples per class ({strategy}, all window lengths)", ylabel="examples"
                ),
                "balance",
            ),
            "folder": MetadataValue.path(str(out_dir)),
            "preview": preview(examples),
        },
    )
    storage.retire_generations(*EXAMPLES_FOLDER, strategy, keep=out_dir)
    yield artefact_paths_check(examples, storage, ["audio_path"])
    held_out = examples[examples["split"] != "train"]
    expected = icbhi_windows[icbhi_windows["official_split"].fillna("none") != "train"]
    passed = (
        not bool(held_out["augmented"].any())
        and not held_out["window_id"].duplicated().any()
        and set(held_out["window_id"]) == set(expected["window_id"])
    )
    yield AssetCheckResult(
        check_name="test_split_untouched",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"held_out_rows": len(held_out), "held_out_windows": len(expected)},
    )


FeatureSettings = mirror(
    FeatureConfig,
    "Log-mel (128 mels up to 8 kHz, dB re 1.0) and MFCC settings; defaults in cough_pipeline/icbhi/features.py.",
)


class IcbhiFeaturesConfig(Config):
    features: FeatureSettings = FeatureSettings()
    workers: int = 2


@asset(
    ins={"icbhi_training_set": AssetIn()},
    partitions_def=balance_partitions,
    io_manager_key="table_io_manager",
    group_name=GROUP,
    compute_kind="librosa",
    check_specs=[artefact_paths_spec("icbhi_features")],
)
def icbhi_features(
    context: AssetExecutionContext, config: IcbhiFeaturesConfig, icbhi_training_set: pd.DataFrame, storage: Storage
):
    """Log-mel spectrograms (one ``.npy`` array per window length, row ``array_index``) and a table with one row per
    example: its ids, the array it is in, and the mean and standard deviation of each MFCC coefficient."""
    strategy = context.partition_key
    feature_config = config.features.library_config()
    with storage.generation(*FEATURES_FOLDER, strategy, run_id=context.run.run_id) as out_dir:
        results = feature_arrays_by_length(
            icbhi_training_set, storage.root_path, feature_config, out_dir=out_dir, workers=config.workers
        )
    tables, examples = [], {}
    for length, (array, table) in results.items():
        table = table.copy()
        table["logmel_path"] = logmel_file(out_dir, length).relative_to(storage.root_path).as_posix()
        table["logmel_shape"] = "x".join(str(n) for n in array.shape[1:])
        tables.append(table)
        if length == min(results):  # one original window per label, from the shortest windows
            for label in LUNG_LABELS:
                rows = table.index[(table["label"] == label) & ~table["augmented"].astype(bool)]
                if len(rows):
                    examples[f"{label} ({length:g} s)"] = np.asarray(array[int(table.loc[rows[0], "array_index"])])
    features = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    metadata = {
        "dagster/row_count": len(features),
        "dagster/column_schema": column_schema(features),
        "strategy": strategy,
        "arrays": MetadataValue.json({f"{length:g} s": list(array.shape) for length, (array, _) in results.items()}),
        "folder": MetadataValue.path(str(out_dir)),
        "preview": preview(features),
    }
    if examples:
        metadata["log_mel_examples"] = image(
            spectrogram_grid_png(
                examples,
                feature_config.sample_rate,
                feature_config.hop_length,
                feature_config.fmax,
                "log-mel per lung-sound label (dB re 1)",
            ),
            "log-mel",
        )
    yield Output(features, metadata=metadata)
    storage.retire_generations(*FEATURES_FOLDER, strategy, keep=out_dir)
    yield artefact_paths_check(features, storage, ["logmel_path"], index_column="array_index")
