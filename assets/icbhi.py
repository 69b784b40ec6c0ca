"""ICBHI 2017: recording and cycle tables, the demographic and acoustic analysis a clinician reads, and the
preprocessing (16 kHz windows, augmentation, class balancing, log-mel and MFCC features) that prepares it for
models.

The association tests (``icbhi_associations``: metadata and annotations only) and the spectral features
(``icbhi_spectral_features``: decodes every WAV) are separate assets, so either re-runs without the other.
"""

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
    asset,
    multi_asset,
)

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.config import bounded, mirror
from assets.metadata import counts, image, preview
from assets.partitions import balance_partitions
from cough_pipeline.bounds import PositiveInt
from cough_pipeline.icbhi.acoustics import SpectralConfig, feature_box_plots_png, rms_envelopes_png, spectral_analysis
from cough_pipeline.icbhi.associations import LEVELS, association_table, duration_summary
from cough_pipeline.icbhi.preprocessing import (
    AugmentConfig,
    BalancingWarning,
    FeatureConfig,
    WindowConfig,
    balance_per_length,
    feature_arrays_by_length,
    logmel_file,
    make_windows,
    render_plan,
)
from cough_pipeline.icbhi.tables import LUNG_LABELS, LabelRule, build_icbhi_tables
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import spectrogram_grid_png, stacked_bar_png
from resources.config_types import choices, plain
from resources.data_roots import DataRoots
from resources.settings import PipelineSettings
from resources.storage import Storage

GROUP = "icbhi"


class IcbhiTablesConfig(Config):
    #: How a recording's cycle annotations become its lung-sound label: "any" (a sound in any cycle; the ICBHI
    #: convention), "majority" (in more than half of the cycles) or "dominant" (the most frequent abnormal cycle
    #: type). See cough_pipeline/icbhi/tables.py.
    label_rule: LabelRule = "any"
    #: Read WAV headers for durations and sample rates (False: durations from the annotations only).
    read_audio: bool = True


@multi_asset(
    outs={
        "icbhi_recordings": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"pandas"},
            description="One row per annotated ICBHI recording: patient, diagnosis, "
            "demographics, chest location, device, official split, duration, "
            "cycle counts and the lung-sound label.",
        ),
        "icbhi_cycles": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"pandas"},
            description="One row per annotated respiratory cycle (onset, offset, crackles, wheezes, cycle label).",
        ),
        "icbhi_quarantine": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"pandas"},
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
)
def icbhi_tables(context: AssetExecutionContext, config: IcbhiTablesConfig, data_roots: DataRoots):
    """Read the ICBHI metadata and annotations (official or Kaggle layout) into recording, cycle and quarantine
    tables; WAVs are optional (durations then come from the annotations, flagged as such)."""
    root = data_roots.root_for("icbhi")
    context.log.info(f"icbhi: reading {data_roots.source('icbhi')} ({root}), label rule {config.label_rule!r}")
    tables = build_icbhi_tables(root, label_rule=config.label_rule, read_audio=config.read_audio)
    recordings, cycles, quarantine = tables.recordings, tables.cycles, tables.quarantine
    yield Output(
        recordings,
        output_name="icbhi_recordings",
        metadata=_recordings_metadata(recordings, tables.counts, config.label_rule, data_roots.source("icbhi")),
    )
    cycle_labels = {label: int((cycles["cycle_label"] == label).sum()) for label in LUNG_LABELS}
    yield Output(
        cycles,
        output_name="icbhi_cycles",
        metadata={
            "cycles_per_label": MetadataValue.json(cycle_labels),
            "mean_cycle_s": round(float(cycles["duration_s"].mean()), 3) if len(cycles) else None,
        },
    )
    yield Output(
        quarantine,
        output_name="icbhi_quarantine",
        metadata={"reasons": MetadataValue.json(counts(quarantine["reason"]))},
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


def _recordings_metadata(recordings: pd.DataFrame, bookkeeping: dict, label_rule: str, source: str) -> dict:
    """Per-label, per-diagnosis and per-split counts of the recordings table, and its labels plot."""
    labels = {label: int((recordings["lung_label"] == label).sum()) for label in LUNG_LABELS}
    by_label_split = {
        label: counts(recordings.loc[recordings["lung_label"] == label, "official_split"].fillna("none"))
        for label in LUNG_LABELS
    }
    plot = stacked_bar_png(
        by_label_split, f"ICBHI recordings per lung-sound label ({label_rule!r} rule)", ylabel="recordings"
    )
    return {
        "source": source,
        "label_rule": label_rule,
        "recordings_per_label": MetadataValue.json(labels),
        "recordings_per_diagnosis": MetadataValue.json(counts(recordings["diagnosis"])),
        "recordings_per_split": MetadataValue.json(counts(recordings["official_split"].fillna("none"))),
        "patients": int(recordings["patient_id"].nunique()),
        "recordings_without_demographics": int((~recordings["demographics_known"]).sum()),
        "duration_sources": MetadataValue.json(counts(recordings["duration_source"])),
        "bookkeeping": MetadataValue.json({k: int(v) for k, v in bookkeeping.items()}),
        "labels_plot": image(plot, "labels"),
    }


#: The association levels, as config choices.
AssociationLevel = choices("AssociationLevel", LEVELS)
#: Columns of the association table shown in the UI.
TEST_COLUMNS = [
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
]


class IcbhiAssociationsConfig(Config):
    #: Levels of observation for the association tests: "recording" (the ICBHI convention), "patient", "cycle".
    levels: list[AssociationLevel] = ["recording"]


@multi_asset(
    ins={"icbhi_recordings": AssetIn(), "icbhi_cycles": AssetIn()},
    outs={
        "icbhi_associations": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"scipy"},
            description="Association tests: age x lung-sound label and age x diagnosis (one-way "
            "ANOVA, eta), sex x lung-sound label and sex x diagnosis (chi-square, "
            "Cramer's V), each with n, excluded, df, statistic, p and effect size.",
        ),
        "icbhi_durations": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"pandas"},
            description="Recording and cycle durations (mean/min/max) per lung-sound "
            "pattern, with where each duration came from.",
        ),
    },
)
def icbhi_associations(config: IcbhiAssociationsConfig, icbhi_recordings: pd.DataFrame, icbhi_cycles: pd.DataFrame):
    """The demographic analysis of ICBHI from metadata and annotations alone (no audio is read): association
    tests at each configured level and durations per lung-sound pattern."""
    tests = association_table(icbhi_recordings, icbhi_cycles, plain(config.levels))
    yield Output(
        tests,
        output_name="icbhi_associations",
        metadata={
            "tests": preview(tests, TEST_COLUMNS, rows=len(tests)),
            "recordings": len(icbhi_recordings),
            "recordings_excluded_for_missing_demographics": int((~icbhi_recordings["demographics_known"]).sum()),
        },
    )
    durations = duration_summary(icbhi_recordings, icbhi_cycles)
    yield Output(
        durations, output_name="icbhi_durations", metadata={"durations": preview(durations, rows=len(durations))}
    )


SpectralSettings = mirror(
    SpectralConfig,
    "How recordings are analysed: resampled to analysis_sample_rate (4 kHz, the "
    "lowest ICBHI device rate, so all recordings describe the same band; "
    "null = native rate), then one STFT; see cough_pipeline/icbhi/acoustics.py.",
)


class IcbhiSpectralConfig(Config):
    spectral: SpectralSettings = SpectralSettings()
    #: Processes for the spectral features; a pool pays off only for hundreds of recordings on idle cores (its
    #: start-up against the time per recording: benchmarks/results/icbhi_spectral.json).
    workers: bounded(PositiveInt) = 1


@multi_asset(
    ins={"icbhi_recordings": AssetIn()},
    outs={
        "icbhi_spectral_features": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"numpy"},
            description="Per recording with audio: spectral centroid, bandwidth, "
            "roll-off 85 %/95 %, flux and RMS (mean and median over "
            "frames).",
        ),
        "icbhi_spectral_medians": AssetOut(
            io_manager_key="table_io_manager",
            group_name=GROUP,
            kinds={"pandas"},
            description="Median of each spectral feature per lung-sound pattern.",
        ),
    },
)
def icbhi_spectral_features(
    context: AssetExecutionContext, config: IcbhiSpectralConfig, icbhi_recordings: pd.DataFrame, data_roots: DataRoots
):
    """The acoustic analysis of ICBHI: spectral features per recording, their medians per pattern and RMS
    envelopes. Without WAVs the tables are empty and say so."""
    spectral = config.spectral.library_config()
    with_audio = int(icbhi_recordings["audio_present"].sum())
    context.log.info(
        f"spectral features of {with_audio} recordings with audio "
        f"(analysis rate {spectral.analysis_sample_rate or 'native'})"
    )
    analysis = spectral_analysis(
        icbhi_recordings,
        data_roots.root_for("icbhi"),
        spectral,
        workers=config.workers,
        progress=throttled(context.log.info, "analysed", every=25),
    )
    features, missing = analysis.features, list(analysis.missing_envelopes)
    metadata = {
        "recordings_with_audio": analysis.recordings_with_audio,
        "recordings_without_audio": int(len(icbhi_recordings) - analysis.recordings_with_audio),
        "problems": preview(analysis.problems, rows=20),
        "analysis_sample_rate": spectral.analysis_sample_rate or "native",
        "rms_envelopes": image(rms_envelopes_png(analysis.envelopes, missing=missing), "RMS envelopes"),
        "envelope_patterns_without_audio": MetadataValue.json(missing),
    }
    if len(features):
        plots = feature_box_plots_png(features, list(analysis.summaries))
        metadata["box_plots"] = image(plots, "spectral features per pattern")
    yield Output(features, output_name="icbhi_spectral_features", metadata=metadata)
    medians = analysis.medians
    yield Output(
        medians, output_name="icbhi_spectral_medians", metadata={"medians": preview(medians, rows=len(medians))}
    )


# -- preprocessing ----------------------------------------------------------------------------------------------

WINDOWS_FOLDER = ("icbhi", "windows")
EXAMPLES_FOLDER = ("icbhi", "examples")
FEATURES_FOLDER = ("icbhi", "features")


WindowSettings = mirror(
    WindowConfig,
    "16 kHz windows: long recordings sliced, short ones and long-enough tails "
    "loop-padded (never silence); see cough_pipeline/icbhi/windows.py.",
)


class IcbhiWindowsConfig(Config):
    windows: WindowSettings = WindowSettings()
    #: Threads that decode, resample and write windows.
    workers: bounded(PositiveInt) = 2


@asset(
    ins={"icbhi_recordings": AssetIn()},
    io_manager_key="table_io_manager",
    group_name=GROUP,
    kinds={"soxr"},
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
            progress=throttled(context.log.info, "windowed", every=25),
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
            "per_window_length": preview(per_length),
            "problems": preview(problems, rows=20),
            "problem_reasons": MetadataValue.json(counts(problems["reason"])),
            "windows_plot": image(
                stacked_bar_png(per_label, "ICBHI windows per length and lung-sound label", ylabel="windows"), "windows"
            ),
            "folder": MetadataValue.path(str(out_dir)),
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
    #: Threads that read, augment and write the augmented copies.
    workers: bounded(PositiveInt) = 2


@asset(
    ins={"icbhi_windows": AssetIn()},
    partitions_def=balance_partitions,
    io_manager_key="table_io_manager",
    group_name=GROUP,
    kinds={"numpy"},
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BalancingWarning)
        plan, per_class = balance_per_length(icbhi_windows, strategy, settings.seed, classes=list(LUNG_LABELS))
    for warning in caught:
        context.log.warning(str(warning.message))
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
            progress=throttled(context.log.info, "rendered", every=500),
        )
    train_counts = per_class[per_class["split"] == "train"].groupby("label", sort=False)[["after", "augmented"]].sum()
    chart = {
        label: {"original": int(row.after - row.augmented), "augmented": int(row.augmented)}
        for label, row in train_counts.iterrows()
    }
    yield Output(
        examples,
        metadata={
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
        },
    )
    storage.retire_generations(*EXAMPLES_FOLDER, strategy, keep=out_dir)
    yield artefact_paths_check(examples, storage, ["audio_path"])
    yield _test_split_check(examples, icbhi_windows)


def _test_split_check(examples: pd.DataFrame, windows: pd.DataFrame) -> AssetCheckResult:
    """Every non-training window is an example exactly once, never augmented."""
    held_out = examples[examples["split"] != "train"]
    expected = windows[windows["official_split"].fillna("none") != "train"]
    passed = (
        not bool(held_out["augmented"].any())
        and not held_out["window_id"].duplicated().any()
        and set(held_out["window_id"]) == set(expected["window_id"])
    )
    return AssetCheckResult(
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
    #: Threads that read windows and compute their log-mel and MFCCs.
    workers: bounded(PositiveInt) = 2


@asset(
    ins={"icbhi_training_set": AssetIn()},
    partitions_def=balance_partitions,
    io_manager_key="table_io_manager",
    group_name=GROUP,
    kinds={"librosa"},
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
            icbhi_training_set,
            storage.root_path,
            feature_config,
            out_dir=out_dir,
            workers=config.workers,
            progress=throttled(context.log.info, "extracted", every=500),
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
        "strategy": strategy,
        "arrays": MetadataValue.json({f"{length:g} s": list(array.shape) for length, (array, _) in results.items()}),
        "folder": MetadataValue.path(str(out_dir)),
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
