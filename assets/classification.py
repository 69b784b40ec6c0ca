"""Classification: the classification subset in two variants, cough feature tables, the neural-model input arrays,
participant-grouped folds, feature ranking, classical models and their report."""

import dataclasses
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.automation import SUMMARY_AUTOMATION
from assets.config import mirror
from assets.metadata import counts, image, preview
from assets.partitions import dataset_partitions
from assets.pools import TRAINING_POOL
from cough_pipeline.classification.champion import Champion, ChampionConfig
from cough_pipeline.classification.classical import ClassicalConfig, column_sets
from cough_pipeline.classification.classifiers import INPUT_SETTINGS_COLUMN, input_settings
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE
from cough_pipeline.classification.features import FeatureConfig, feature_blocks, feature_catalog, feature_table
from cough_pipeline.classification.folds import (
    FoldConfig,
    LodoConfig,
    assign_folds,
    fold_violations,
    leave_one_dataset_out,
)
from cough_pipeline.classification.folds import (
    cross_dataset_duplicates as find_cross_dataset_duplicates,
)
from cough_pipeline.classification.inputs import InputArraysConfig, input_table
from cough_pipeline.classification.preprocess import PreprocessConfig
from cough_pipeline.classification.ranking import RankerConfig, ranking_bar_png
from cough_pipeline.classification.resampling import ResamplingConfig
from cough_pipeline.classification.stage import (
    EvaluationConfig,
    StageConfig,
    StageResult,
    best_models,
    rank_variants,
    ranking_table,
    top_features,
    train_and_evaluate,
)
from cough_pipeline.classification.variants import classification_recordings as variant_tables
from cough_pipeline.classification.variants import join_separated
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import confusion_matrix_png, roc_curves_png
from cough_pipeline.subsets import CLASSIFICATION, SEPARATION
from resources.data_roots import DataRoots
from resources.model_store import TrainedModel, fingerprint
from resources.settings import PipelineSettings
from resources.storage import Storage

GROUP = "classification"
SEPARATED_FOLDER = ("classification", "separated")
INPUTS_FOLDER = ("classification", "inputs")

PreprocessSettings = mirror(
    PreprocessConfig,
    "Before features: resampled to ``sample_rate``, leading/trailing silence trimmed (``top_db`` below the peak), "
    "peak-normalised to [-1, 1]; a silent, too short or non-finite clip is a quarantine row.",
)
FeatureSettings = mirror(
    FeatureConfig,
    "The 15 cough features (one STFT and one CQT per clip) summarised by 7 statistics over frames.",
    exclude=frozenset({"workers"}),
)
InputArraysSettings = mirror(
    InputArraysConfig, "The neural models' inputs: log-mel patch, time-averaged MFCCs, spectrogram image, chroma."
)
FoldSettings = mirror(
    FoldConfig,
    "A stratified, participant-disjoint holdout and participant-grouped stratified folds over the rest.",
    exclude=frozenset({"seed"}),
)
LodoSettings = mirror(
    LodoConfig,
    "Leave one dataset out: a group (participants joined by identical audio) spanning the test dataset and "
    "others is dropped from training (``drop_from_train``) or moved whole to the test side (``test_side``).",
)


class ClassificationFoldsConfig(FoldSettings):
    leave_one_dataset_out: LodoSettings = LodoSettings()


@multi_asset(
    outs={
        "classification_recordings": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "classification_quarantine": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
    },
    ins={"subset_split": AssetIn(), "manifest": AssetIn(), "separated_clips": AssetIn()},
    partitions_def=dataset_partitions,
    group_name=GROUP,
    check_specs=[artefact_paths_spec("classification_recordings")],
)
def classification_recordings(
    context: AssetExecutionContext,
    subset_split: pd.DataFrame,
    manifest: pd.DataFrame,
    separated_clips: pd.DataFrame,
    data_roots: DataRoots,
    storage: Storage,
):
    """The dataset's classification-subset recordings in two variants, ``original`` (the recording's file) and
    ``separated`` (its coughs after the separator, joined into one WAV), or a quarantine row per variant saying
    why not. ``audio_path`` is relative to the storage root (separated WAVs) or absolute (dataset files)."""
    dataset = context.partition_key
    chosen = subset_split[(subset_split["subset"] == CLASSIFICATION) & (subset_split["dataset"] == dataset)]
    rows = chosen[["recording_id"]].merge(manifest, on="recording_id")
    clips = separated_clips[separated_clips["recording_id"].isin(rows["recording_id"])]
    with storage.generation(*SEPARATED_FOLDER, dataset, run_id=context.run.run_id) as folder:
        joined, unreadable = join_separated(clips, storage.root_path, folder)
        joined["audio_path"] = [Path(p).relative_to(storage.root_path).as_posix() for p in joined["audio_path"]]
    tables = variant_tables(rows, data_roots.root_for(dataset), joined, unreadable)
    recordings, quarantine = tables.recordings, tables.quarantine
    yield Output(
        recordings,
        output_name="classification_recordings",
        metadata={
            "recordings": int(recordings["recording_id"].nunique()),
            "variants": MetadataValue.json(counts(recordings["variant"])),
            "labels": MetadataValue.json(counts(recordings.drop_duplicates("recording_id")["covid_label"])),
            "subset_rows": len(chosen),
            "quarantined": len(quarantine),
        },
    )
    yield Output(
        quarantine,
        output_name="classification_quarantine",
        metadata={"reasons": MetadataValue.json(counts(quarantine["reason"]))},
    )
    storage.retire_generations(*SEPARATED_FOLDER, dataset, keep=folder)
    yield artefact_paths_check(recordings, storage, ["audio_path"])


def rooted_recordings(recordings: pd.DataFrame, storage: Storage) -> pd.DataFrame:
    """``recordings`` with absolute audio paths (stored ones are relative to the storage root or absolute)."""
    return recordings.assign(audio_path=[str(storage.root_path / p) for p in recordings["audio_path"]])


class CoughFeaturesConfig(FeatureSettings):
    preprocess: PreprocessSettings = PreprocessSettings()


@multi_asset(
    outs={
        "cough_features": AssetOut(io_manager_key="table_io_manager", kinds={"numpy"}),
        "cough_feature_quarantine": AssetOut(io_manager_key="table_io_manager", kinds={"numpy"}),
    },
    ins={"classification_recordings": AssetIn()},
    partitions_def=dataset_partitions,
    group_name=GROUP,
)
def cough_features(
    context: AssetExecutionContext,
    config: CoughFeaturesConfig,
    classification_recordings: pd.DataFrame,
    settings: PipelineSettings,
    storage: Storage,
):
    """15 features (time, spectral, cepstral, tonal) x 7 statistics per recording and variant, from one STFT and
    one CQT per clip, in parallel workers; a clip that is silent, too short or not finite is a quarantine row."""
    result = feature_table(
        rooted_recordings(classification_recordings, storage),
        config.library_config(workers=settings.workers),
        config.preprocess.library_config(),
        progress=throttled(context.log.info, "featurised", every=50),
    )
    features, quarantine = result.features, result.quarantine
    yield Output(
        features,
        output_name="cough_features",
        metadata={
            "rows_by_variant": MetadataValue.json(counts(features["variant"])),
            "feature_columns": sum(len(columns) for columns in feature_blocks(features.columns).values()),
            "input_rows": len(classification_recordings),
            "quarantined": len(quarantine),
        },
    )
    yield Output(
        quarantine,
        output_name="cough_feature_quarantine",
        metadata={"reasons": MetadataValue.json(counts(quarantine["reason"]))},
    )


@asset(io_manager_key="table_io_manager", group_name=GROUP, kinds={"pandas"})
def cough_feature_catalog(config: FeatureSettings) -> Output:
    """Feature -> domain -> columns and parameters: what each ``cough_features`` column is."""
    catalog = feature_catalog(config.library_config(workers=1))
    return Output(
        catalog, metadata={"features": len(catalog), "domains": MetadataValue.json(counts(catalog["domain"]))}
    )


class ClassificationInputsConfig(InputArraysSettings):
    preprocess: PreprocessSettings = PreprocessSettings()


@multi_asset(
    outs={
        "classification_inputs": AssetOut(io_manager_key="table_io_manager", kinds={"numpy"}),
        "classification_input_quarantine": AssetOut(io_manager_key="table_io_manager", kinds={"numpy"}),
    },
    ins={"classification_recordings": AssetIn()},
    partitions_def=dataset_partitions,
    group_name=GROUP,
    check_specs=[artefact_paths_spec("classification_inputs")],
)
def classification_inputs(
    context: AssetExecutionContext,
    config: ClassificationInputsConfig,
    classification_recordings: pd.DataFrame,
    storage: Storage,
):
    """Per recording and variant, the neural models' inputs as ``.npy`` files: the 4 s log-mel patch, 39
    time-averaged MFCCs, the 128 x 40 spectrogram image and the 12-bin chroma vector; ``input_settings`` records
    the settings they were made with, which the trained classifiers keep for prediction."""
    dataset = context.partition_key
    arrays, clips = config.library_config(), config.preprocess.library_config()
    with storage.generation(*INPUTS_FOLDER, dataset, run_id=context.run.run_id) as folder:
        table, quarantine = input_table(
            rooted_recordings(classification_recordings, storage),
            folder,
            arrays,
            clips,
            relative_to=storage.root_path,
            progress=throttled(context.log.info, "converted", every=50),
        )
    table[INPUT_SETTINGS_COLUMN] = input_settings(arrays, clips)
    paths = [c for c in table.columns if c.endswith("_path")]
    yield Output(
        table,
        output_name="classification_inputs",
        metadata={
            "rows_by_variant": MetadataValue.json(counts(table["variant"])),
            "folder": MetadataValue.path(str(folder)),
        },
    )
    yield Output(
        quarantine,
        output_name="classification_input_quarantine",
        metadata={"reasons": MetadataValue.json(counts(quarantine["reason"]))},
    )
    storage.retire_generations(*INPUTS_FOLDER, dataset, keep=folder)
    yield artefact_paths_check(table, storage, paths)


@asset(
    ins={"manifest": AssetIn()},
    io_manager_key="table_io_manager",
    group_name=GROUP,
    kinds={"pandas"},
    automation_condition=SUMMARY_AUTOMATION,
)
def cross_dataset_duplicates(manifest: pd.DataFrame) -> Output:
    """Recordings whose audio (content hash) is published in more than one dataset; the folds keep each such
    recording's participants in one group."""
    table = find_cross_dataset_duplicates(manifest)
    return Output(
        table,
        metadata={
            "recordings": len(table),
            "distinct_audio": int(table["content_hash"].nunique()) if len(table) else 0,
            "datasets": MetadataValue.json(counts(table["dataset"])) if len(table) else {},
        },
    )


FOLD_CHECK = "participant_disjoint_folds"


@multi_asset(
    outs={
        "classification_folds": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
        "leave_one_dataset_out_folds": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
    },
    ins={"classification_recordings": AssetIn(), "manifest": AssetIn(), "subset_split": AssetIn()},
    group_name=GROUP,
    check_specs=[
        AssetCheckSpec(
            FOLD_CHECK,
            asset="classification_folds",
            blocking=True,
            description="No participant (or group joined by identical audio) in two folds, in both CV and holdout, "
            "or from the separation subset.",
        )
    ],
)
def classification_folds(
    context: AssetExecutionContext,
    config: ClassificationFoldsConfig,
    classification_recordings: pd.DataFrame,
    manifest: pd.DataFrame,
    subset_split: pd.DataFrame,
    settings: PipelineSettings,
):
    """A seeded, stratified, participant-disjoint holdout and participant-grouped stratified CV folds over the
    rest; and the leave-one-dataset-out splits (train on the other datasets, test on one)."""
    recordings = (
        classification_recordings.drop_duplicates("recording_id")
        .drop(columns=["audio_path", "variant", "n_coughs"])
        .merge(manifest[["recording_id", "content_hash"]], on="recording_id")
    )
    fold_config = config.library_config(seed=settings.seed)
    folds = assign_folds(recordings, fold_config)
    lodo = leave_one_dataset_out(recordings, config.leave_one_dataset_out.library_config())
    separation = set(subset_split.loc[subset_split["subset"] == SEPARATION, "participant_id"])
    violations = fold_violations(folds, separation)
    per_fold = folds.groupby(["split", "fold", "covid_label"]).size().unstack(fill_value=0).reset_index()
    yield Output(
        folds,
        output_name="classification_folds",
        metadata={
            "recordings": len(folds),
            "participants": int(folds["participant_id"].nunique()),
            "groups": int(folds["group_id"].nunique()),
            "per_fold": preview(per_fold),
        },
    )
    yield Output(
        lodo.table,
        output_name="leave_one_dataset_out_folds",
        metadata={
            "test_datasets": MetadataValue.json(counts(lodo.table.drop_duplicates("test_dataset")["test_dataset"])),
            "skipped_datasets": preview(lodo.skipped),
        },
    )
    yield AssetCheckResult(
        check_name=FOLD_CHECK,
        asset_key="classification_folds",
        passed=not any(violations.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"violations": MetadataValue.json(violations)},
    )


ResamplingSettings = mirror(
    ResamplingConfig,
    "Resampling inside each training fold only (an imblearn pipeline): SMOTE, balanced class weights or none; SMOTE "
    "with more neighbours than minority rows uses minority - 1 (``reduce_k``, recorded) or fails (``error``).",
    exclude=frozenset({"seed"}),
)
RankerSettings = mirror(
    RankerConfig,
    "CoughFeatureRanker: each feature's 7-statistic block alone, scored by each classifier over the CV folds.",
    exclude=frozenset({"resampling", "seed", "top_k", "workers"}),
)
ClassicalSettings = mirror(
    ClassicalConfig,
    "The classical models, trained per CV fold on all features and on the ``top_k`` ranked features.",
    exclude=frozenset({"resampling", "seed"}),
)
EvaluationSettings = mirror(
    EvaluationConfig, "Confidence intervals from a bootstrap over participants.", exclude=frozenset({"seed"})
)


class FeatureRankingConfig(RankerSettings):
    resampling: ResamplingSettings = ResamplingSettings()


def feature_inputs(cough_features: pd.DataFrame, catalog: pd.DataFrame) -> tuple[dict, dict]:
    """(feature -> its columns, feature -> its domain) of the stored feature table and its catalog."""
    blocks = feature_blocks(cough_features.columns)
    domains = dict(zip(catalog["feature"], catalog["domain"]))
    missing = sorted(set(domains) ^ set(blocks))
    if missing:
        raise ValueError(
            f"cough_features and cough_feature_catalog disagree on features {missing}: materialise both with the "
            "same feature settings"
        )
    return blocks, domains


@multi_asset(
    outs={
        "feature_ranking": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
        "feature_ranking_scores": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
    },
    ins={"cough_features": AssetIn(), "classification_folds": AssetIn(), "cough_feature_catalog": AssetIn()},
    group_name=GROUP,
)
def feature_ranking(
    context: AssetExecutionContext,
    config: FeatureRankingConfig,
    cough_features: pd.DataFrame,
    classification_folds: pd.DataFrame,
    cough_feature_catalog: pd.DataFrame,
    settings: PipelineSettings,
):
    """CoughFeatureRanker: each of the 15 features alone (its 7-statistic block), scored by KNN, SVM, random
    forest and logistic regression over the 5 CV folds (never the holdout), ranked by the mean score; per variant."""
    blocks, domains = feature_inputs(cough_features, cough_feature_catalog)
    resampling = config.resampling.library_config(seed=settings.seed)
    ranker = config.library_config(resampling=resampling, seed=settings.seed, workers=settings.workers)
    progress = throttled(context.log.info, "ranked features", 5)
    rankings = rank_variants(cough_features, classification_folds, blocks, domains, ranker, progress)
    table = ranking_table(rankings)
    charts = {
        f"chart_{variant}": image(ranking_bar_png(r.ranking, ranker.metric, f"{variant}: {ranker.metric}"), variant)
        for variant, r in rankings.items()
    }
    yield Output(table, output_name="feature_ranking", metadata={**charts, "metric": ranker.metric})
    scores = pd.concat([r.scores.assign(variant=v) for v, r in rankings.items()], ignore_index=True)
    yield Output(scores, output_name="feature_ranking_scores", metadata={"fits": len(scores)})


LEAKAGE_CHECK = "resampling_saw_training_rows_only"


class ClassicalModelsConfig(ClassicalSettings):
    resampling: ResamplingSettings = ResamplingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()


def stage_config(config: ClassicalModelsConfig, seed: int) -> StageConfig:
    classical = config.library_config(resampling=config.resampling.library_config(seed=seed), seed=seed)
    return StageConfig(classical=classical, evaluation=config.evaluation.library_config(seed=seed))


def evaluation_plots(result: StageResult) -> dict:
    """ROC curves of every model and the best model's confusion matrix, per variant, on the holdout ensemble."""
    holdout = result.predictions[
        result.predictions["split"].eq("holdout") & result.predictions["fold"].eq(FOLD_ENSEMBLE)
    ]
    plots = {}
    for best in best_models(result.report).itertuples():
        rows = holdout[holdout["variant"] == best.variant]
        curves = {m: (g["label"], g["probability"]) for m, g in rows.groupby("model")}
        plots[f"roc_{best.variant}"] = image(roc_curves_png(curves, f"holdout ROC ({best.variant})"), "ROC")
        chosen = rows[rows["model"] == best.model]
        matrix = confusion_matrix_png(chosen["label"], (chosen["probability"] >= 0.5).astype(int), best.model)
        plots[f"confusion_{best.variant}"] = image(matrix, "confusion matrix")
    return plots


@multi_asset(
    outs={
        "classical_models": AssetOut(io_manager_key="model_io_manager", kinds={"scikitlearn"}),
        "classification_predictions": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
        "classification_report": AssetOut(io_manager_key="table_io_manager", kinds={"scikitlearn"}),
    },
    check_specs=[
        AssetCheckSpec(
            LEAKAGE_CHECK,
            asset="classification_predictions",
            blocking=True,
            description="Every fold model's sampler (SMOTE or none) saw training rows only: no validation or "
            "holdout row.",
        )
    ],
    ins={
        "cough_features": AssetIn(),
        "classification_folds": AssetIn(),
        "leave_one_dataset_out_folds": AssetIn(),
        "feature_ranking": AssetIn(),
    },
    group_name=GROUP,
    pool=TRAINING_POOL,
)
def classical_models(
    context: AssetExecutionContext,
    config: ClassicalModelsConfig,
    cough_features: pd.DataFrame,
    classification_folds: pd.DataFrame,
    leave_one_dataset_out_folds: pd.DataFrame,
    feature_ranking: pd.DataFrame,
    settings: PipelineSettings,
):
    """KNN, SVM, random forest and logistic regression on all features and on the top-k ranked ones, trained per
    CV fold (resampling inside training folds only) and evaluated with participant-bootstrap intervals: pooled CV,
    the fold ensemble on the holdout, leave-one-dataset-out, overall and per dataset."""
    stage = stage_config(config, settings.seed)
    blocks = feature_blocks(cough_features.columns)
    k = stage.classical.top_k
    sets = {v: column_sets(blocks, top_features(feature_ranking, v, k), k) for v in feature_ranking["variant"].unique()}
    result = train_and_evaluate(
        cough_features,
        classification_folds,
        leave_one_dataset_out_folds,
        sets,
        stage,
        throttled(context.log.info, "trained", 20),
    )
    best = best_models(result.report)
    metrics = {f"holdout_roc_auc_{b.variant}": {"model": b.model, "value": b.value} for b in best.itertuples()}
    yield Output(
        TrainedModel(
            result.models,
            config=dataclasses.asdict(stage),
            training_data=fingerprint(cough_features),
            metrics=metrics,
        ),
        output_name="classical_models",
    )
    yield Output(
        result.predictions,
        output_name="classification_predictions",
        metadata={"rows_by_split": MetadataValue.json(counts(result.predictions["split"]))},
    )
    yield Output(
        result.report,
        output_name="classification_report",
        metadata={
            "best_holdout_roc_auc": preview(best[["variant", "model", "value", "ci_low", "ci_high"]]),
            "resampling": preview(result.resampling.drop_duplicates(["variant", "strategy", "k_neighbors_used"])),
            **evaluation_plots(result),
        },
    )
    leaked = result.resampling[["leaked_validation_rows", "leaked_holdout_rows"]].sum()
    yield AssetCheckResult(
        check_name=LEAKAGE_CHECK,
        asset_key="classification_predictions",
        passed=bool(leaked.sum() == 0),
        severity=AssetCheckSeverity.ERROR,
        metadata={"leaked_rows": MetadataValue.json({k: int(v) for k, v in leaked.items()})},
    )


ChampionSettings = mirror(
    ChampionConfig,
    "The champion: the best model on ``evaluation`` by ``metric``; it replaces the current one only when better "
    "by ``margin``; its threshold reaches ``target_sensitivity`` on validation predictions.",
)
CHAMPION_TABLE = "champion_classifier"


def current_champion(storage: Storage) -> Champion | None:
    """The champion recorded by the last materialisation, or None before the first."""
    try:
        table = storage.read_table(CHAMPION_TABLE)
    except FileNotFoundError:
        return None
    if table.empty:
        return None
    # Through JSON: plain Python values (parquet gives numpy scalars), so it serialises like a new champion; fields
    # a table written by an earlier version lacks take their defaults.
    return Champion.from_json(table.iloc[0].to_json())
