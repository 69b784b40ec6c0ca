"""The XGBoost cough filter: a model (pretrained or trained here), and per-dataset cough probabilities."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    MetadataValue,
    Output,
    asset,
)

from assets.config import bounded, mirror
from assets.metadata import counts, image
from assets.partitions import dataset_partitions
from cough_pipeline.bounds import PositiveInt
from cough_pipeline.cough_filter import CoughClassifier, esc50_clips, train_cough_classifier
from cough_pipeline.cough_filter.batch import classify_recordings, prepared_clips
from cough_pipeline.cough_filter.settings import CoughFilterSettings, clip_table
from cough_pipeline.demo_corpus.clips import CLIP_DATASETS, labelled_clips
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import histogram_png
from resources.cough_model import CoughModelSource
from resources.data_roots import DataRoots
from resources.model_store import TrainedModel, fingerprint

CoughFilterModelConfig = mirror(
    CoughFilterSettings,
    "Train on ``training_clips`` (``demo``, or an ESC-50 folder: ``coughing`` vs every other class) unless a "
    "pretrained model is configured in the ``cough_model_source`` resource.",
)


def cross_validation_metadata(report: dict) -> dict:
    """The training report of :func:`train_cough_classifier` as UI metadata."""
    cv = report["cross_validation"]
    return {
        "clips": report["n_clips"],
        "coughs": report["n_positive"],
        "groups": report["n_groups"],
        "rejected_clips": MetadataValue.json(report["rejected"]),
        "cv_mean_roc_auc": round(cv["mean_roc_auc"], 4) if cv["mean_roc_auc"] is not None else None,
        "cv_pooled_roc_auc": round(cv["pooled_roc_auc"], 4),
        "cv_folds": MetadataValue.json(
            [{k: f[k] for k in ("fold", "n_train", "n_test", "n_test_positive", "roc_auc")} for f in cv["folds"]]
        ),
    }


@asset(group_name="cough_filter", kinds={"xgboost"}, io_manager_key="model_io_manager")
def cough_filter_model(
    context: AssetExecutionContext,
    config: CoughFilterModelConfig,
    cough_model_source: CoughModelSource,
    data_roots: DataRoots,
) -> Output[TrainedModel]:
    """The cough/non-cough XGBoost model (native JSON booster + scaler) the cough list uses: pretrained, or
    trained here with group-disjoint cross-validation; stored as a new model version."""
    settings = config.library_config()
    pretrained = cough_model_source.pretrained_folder()
    if pretrained is not None:
        classifier = CoughClassifier.from_pretrained(pretrained)
        context.log.info(f"using the pretrained model in {pretrained}")
        metadata, training_data, metrics = {"source": str(pretrained)}, {"pretrained": str(pretrained)}, {}
    else:
        if settings.training_clips == "demo":
            clips = labelled_clips(data_roots.demo_corpus(CLIP_DATASETS), seed=settings.seed)
        else:
            clips = esc50_clips(settings.training_clips)
        clips = prepared_clips(clips, settings.input_sample_rate or None)
        classifier, report = train_cough_classifier(clips, seed=settings.seed, settings=settings.training_settings())
        metadata = {"source": f"trained on {settings.training_clips} clips", **cross_validation_metadata(report)}
        training_data = {"clips": fingerprint(clip_table(clips))}
        metrics = {k: metadata[k] for k in ("cv_mean_roc_auc", "cv_pooled_roc_auc", "clips", "coughs", "groups")}
    classifier.threshold = settings.threshold
    classifier.input_sample_rate = settings.input_sample_rate or None
    trained = TrainedModel(classifier, config=config.model_dump(), training_data=training_data, metrics=metrics)
    return Output(trained, metadata={**metadata, "threshold": settings.threshold})


class CoughListConfig(Config):
    workers: bounded(PositiveInt) = 2


@asset(
    ins={"manifest": AssetIn(), "cough_filter_model": AssetIn()},
    partitions_def=dataset_partitions,
    io_manager_key="table_io_manager",
    group_name="cough_filter",
    kinds={"xgboost"},
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
    context: AssetExecutionContext,
    config: CoughListConfig,
    manifest: pd.DataFrame,
    cough_filter_model: TrainedModel,
    data_roots: DataRoots,
):
    """Per recording: the cough probability and the decision at the model's threshold (COUGHVID: 0.80)."""
    dataset = context.partition_key
    classifier = cough_filter_model.model
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
            "threshold": classifier.threshold,
            "model_version": MetadataValue.text(cough_filter_model.version or ""),
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
