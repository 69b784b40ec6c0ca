"""The XGBoost cough filter: a model (pretrained or trained here), and per-dataset cough probabilities."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import column_schema, counts, image, preview
from assets.partitions import dataset_partitions
from cough_pipeline.cough_filter import CoughClassifier, TrainingSettings, esc50_clips, train_cough_classifier
from cough_pipeline.cough_filter.batch import classify_recordings, prepared_clips
from cough_pipeline.demo_corpus.clips import CLIP_DATASETS, labelled_clips
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import histogram_png
from resources.cough_model import CoughModelSource
from resources.data_roots import DataRoots
from resources.storage import Storage

MODEL_FOLDER = ("models", "cough_filter")


class CoughFilterModelConfig(Config):
    """Train on ``training_clips`` (``demo``, or an ESC-50 folder: ``coughing`` vs every other class) unless a
    pretrained model is configured in the ``cough_model_source`` resource."""

    training_clips: str = "demo"
    seed: int = 0
    n_estimators: int = 100
    max_depth: int = 4
    n_splits: int = 5
    threshold: float = 0.8
    #: Every clip is resampled to this rate before features (0: keep each file's own rate, as COUGHVID did).
    input_sample_rate: int = 48_000


@asset(group_name="cough_filter", compute_kind="xgboost")
def cough_filter_model(
    context: AssetExecutionContext,
    config: CoughFilterModelConfig,
    cough_model_source: CoughModelSource,
    data_roots: DataRoots,
    storage: Storage,
) -> MaterializeResult:
    """The cough/non-cough XGBoost model (native JSON booster + scaler + model card) the cough list uses, saved as
    a new generation of ``models/cough_filter/`` that becomes current only once it is complete."""
    pretrained = cough_model_source.pretrained_folder()
    metadata = {}
    if pretrained is not None:
        classifier = CoughClassifier.from_pretrained(pretrained)
        context.log.info(f"using the pretrained model in {pretrained}")
        metadata["source"] = str(pretrained)
    else:
        if config.training_clips == "demo":
            clips = labelled_clips(data_roots.demo_corpus(CLIP_DATASETS), seed=config.seed)
        else:
            clips = esc50_clips(config.training_clips)
        clips = prepared_clips(clips, config.input_sample_rate or None)
        settings = TrainingSettings(
            n_estimators=config.n_estimators,
            max_depth=config.max_depth,
            n_splits=config.n_splits,
            threshold=config.threshold,
        )
        classifier, report = train_cough_classifier(clips, seed=config.seed, settings=settings)
        cv = report["cross_validation"]
        metadata.update(
            {
                "source": f"trained on {config.training_clips} clips",
                "clips": report["n_clips"],
                "coughs": report["n_positive"],
                "groups": report["n_groups"],
                "rejected_clips": MetadataValue.json(report["rejected"]),
                "cv_mean_roc_auc": round(cv["mean_roc_auc"], 4) if cv["mean_roc_auc"] is not None else None,
                "cv_pooled_roc_auc": round(cv["pooled_roc_auc"], 4),
                "cv_folds": MetadataValue.json(
                    [
                        {k: f[k] for k in ("fold", "n_train", "n_test", "n_test_positive", "roc_auc")}
                        for f in cv["folds"]
                    ]
                ),
            }
        )
    classifier.threshold = config.threshold
    classifier.input_sample_rate = config.input_sample_rate or None
    with storage.generation(*MODEL_FOLDER, run_id=context.run.run_id) as folder:
        classifier.save(folder)
    storage.publish_generation(folder)
    metadata.update({"path": str(folder), "threshold": config.threshold})
    return MaterializeResult(metadata=metadata)


class CoughListConfig(Config):
    workers: int = 2


@asset(
    ins={"manifest": AssetIn()},
    deps=[cough_filter_model],
    partitions_def=dataset_partitions,
    io_manager_key="table_io_manager",
    group_name="cough_filter",
    compute_kind="xgboost",
    check_specs=[
        AssetCheckSpec(
            "every_manifest_row_scored",
            asset="cough_list",
            blocking=True,
            description="One row per manifest row: rejected recordings stay, with a reason.",
        )
    ],
)
def cough_list(
    context: AssetExecutionContext, config: CoughListConfig, manifest, data_roots: DataRoots, storage: Storage
):
    """Per recording: the cough probability and the decision at the model's threshold (COUGHVID: 0.80)."""
    dataset = context.partition_key
    model_folder = storage.current_generation(*MODEL_FOLDER, what="cough_filter_model")
    classifier = CoughClassifier.from_folder(model_folder)
    table = classify_recordings(
        manifest,
        data_roots.root_for(dataset),
        classifier,
        classifier.threshold,
        workers=config.workers,
        on_progress=throttled(context.log.info, "scored", every=200),
    )
    kept = int(table["is_cough"].sum())
    yield Output(
        table,
        metadata={
            "dagster/row_count": len(table),
            "dagster/column_schema": column_schema(table),
            "threshold": classifier.threshold,
            "coughs_kept": kept,
            "rejected": len(table) - kept,
            "reasons": MetadataValue.json(counts(table["reason"])),
            "probability_histogram": image(
                histogram_png(
                    table["cough_probability"].dropna(),
                    classifier.threshold,
                    f"{dataset}: cough probability",
                    "probability",
                ),
                "histogram",
            ),
            "preview": preview(table),
        },
    )
    missing = sorted(set(manifest["recording_id"]) - set(table["recording_id"]))
    yield AssetCheckResult(
        check_name="every_manifest_row_scored",
        passed=not missing and len(table) == len(manifest),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "manifest_rows": len(manifest),
            "scored_rows": len(table),
            "missing": MetadataValue.json(missing[:20]),
        },
    )
