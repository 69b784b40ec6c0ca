"""Neural classifiers (one partition per model), the leaderboard over every family, and the models' complexity."""

import dataclasses

import pandas as pd
import pydantic
import torch
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from assets.classification import GROUP, ChampionSettings, EvaluationSettings, current_champion
from assets.config import mirror
from assets.metadata import image, preview
from assets.partitions import model_partitions
from assets.pools import TRAINING_POOL
from cough_pipeline.classification.champion import challenger, promote
from cough_pipeline.classification.classifiers import ClassifierVariants, train_classifier
from cough_pipeline.classification.complexity import complexity_table
from cough_pipeline.classification.evaluation import FOLD_ENSEMBLE, PREDICTION_COLUMNS, binary_metrics
from cough_pipeline.classification.leaderboard import (
    Leaderboard,
    LeaderboardConfig,
    build_leaderboard,
    ranking,
    separation_verdict,
    variant_comparison,
)
from cough_pipeline.classification.networks import IMAGE_KINDS, MODEL_NAMES, NeuralClassifier
from cough_pipeline.classification.neural import NeuralTrainingConfig
from cough_pipeline.classification.stage import report_table
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import confusion_matrix_png, loss_curves_png, reliability_png, roc_curves_png
from resources.model_store import ModelStore, ModelStoreError, TrainedModel, fingerprint, stored_name
from resources.settings import PipelineSettings
from resources.storage import Storage

NeuralTrainingSettings = mirror(
    NeuralTrainingConfig,
    "Training of each fold model: Adam, early stopping on the validation fold, SpecAugment on training images; "
    "``epochs`` left unset is the scale profile's; the seed and the device come from the settings resource.",
    exclude=frozenset({"seed", "device"}),
    unset=frozenset({"epochs"}),
)
ClassifierVariantsSettings = mirror(ClassifierVariants, "The input variants each model is trained on, separately.")
LeaderboardSettings = mirror(
    LeaderboardConfig, "Calibration (fitted on validation folds only) and the strata of the matched holdout."
)


class ClassifiersConfig(ClassifierVariantsSettings):
    training: NeuralTrainingSettings = NeuralTrainingSettings()
    leave_one_dataset_out: bool = pydantic.Field(
        default=True,
        description="Also train one model per testable dataset on the other datasets and score that dataset "
        "(the leaderboard's lodo:<dataset> rows); these models are not stored.",
    )


def holdout_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """The fold ensemble's holdout ROC-AUC per variant (what the model's card records)."""
    ensemble = predictions[predictions["split"].eq("holdout") & predictions["fold"].eq(FOLD_ENSEMBLE)]
    return {
        f"holdout_roc_auc_{variant}": binary_metrics(rows["label"], rows["probability"])["roc_auc"]
        for variant, rows in ensemble.groupby("variant")
    }


def loss_plots(histories: pd.DataFrame, model: str) -> dict:
    """Per variant, the fold models' mean training and validation loss per epoch."""
    plots = {}
    for variant, rows in histories.groupby("variant"):
        mean = rows.groupby("epoch", as_index=False)[["train_loss", "val_loss"]].mean()
        png = loss_curves_png(mean, f"{model} ({variant})", "loss (mean over folds)")
        plots[f"loss_{variant}"] = image(png, "loss curves")
    return plots


@multi_asset(
    outs={
        "classifiers": AssetOut(io_manager_key="model_io_manager", kinds={"pytorch"}),
        "classifier_predictions": AssetOut(io_manager_key="table_io_manager", kinds={"pytorch"}),
        "classifier_training_history": AssetOut(io_manager_key="table_io_manager", kinds={"pytorch"}),
    },
    ins={
        "classification_inputs": AssetIn(partition_mapping=AllPartitionMapping()),
        "classification_folds": AssetIn(),
        "leave_one_dataset_out_folds": AssetIn(),
    },
    partitions_def=model_partitions,
    group_name=GROUP,
    pool=TRAINING_POOL,
)
def classifiers(
    context: AssetExecutionContext,
    config: ClassifiersConfig,
    classification_inputs: pd.DataFrame,
    classification_folds: pd.DataFrame,
    leave_one_dataset_out_folds: pd.DataFrame,
    settings: PipelineSettings,
    storage: Storage,
):
    """One neural classifier (the partition) trained per CV fold on each configured input variant, the best
    validation-loss epoch kept per fold; validation and holdout predictions (with the fold ensemble) in the
    shared schema, each row tagged with the model version that made it; and, per tested dataset, a model trained
    on the other datasets scoring it (leave-one-dataset-out rows).

    A run over a range of partitions (the retraining schedule's single run) trains the models one after another;
    each output is then a dict from model name to that model's value, which the IO managers store per partition."""
    training = config.training.library_config(
        epochs=settings.scale().classifier_epochs, seed=settings.seed, device=str(settings.torch_device())
    )
    variants = config.library_config().variants
    lodo = leave_one_dataset_out_folds if config.leave_one_dataset_out else None
    names = list(context.partition_keys)
    outputs: dict[str, dict] = {"classifiers": {}, "classifier_predictions": {}, "classifier_training_history": {}}
    metadata: dict[str, dict] = {key: {} for key in outputs}
    for name in names:
        progress = throttled(context.log.info, f"{name}: epochs", every=5)
        run = train_classifier(
            classification_inputs, classification_folds, name, variants, storage.root_path, training, progress, lodo
        )
        scores = {k: float(v) for k, v in holdout_scores(run.predictions).items()}
        card_config = {"model": name, "variants": list(variants), "training": dataclasses.asdict(training)}
        outputs["classifiers"][name] = TrainedModel(
            run.models, config=card_config, training_data=fingerprint(classification_inputs), metrics=scores
        )
        outputs["classifier_predictions"][name] = run.predictions.assign(model_version=context.run.run_id)
        outputs["classifier_training_history"][name] = run.histories
        best = run.histories[run.histories["best"]]
        lodo_rows = run.predictions["split"].str.startswith("lodo:")
        prefix = "" if len(names) == 1 else f"{name}/"
        metadata["classifiers"].update({prefix + k: v for k, v in scores.items()})
        metadata["classifier_predictions"].update(
            {
                **{prefix + k: v for k, v in scores.items()},
                prefix + "rows": len(run.predictions),
                prefix + "lodo_tested": MetadataValue.json(sorted(run.predictions.loc[lodo_rows, "split"].unique())),
                prefix + "lodo_skipped": preview(run.lodo_skipped),
            }
        )
        metadata["classifier_training_history"].update(
            {
                prefix + "kept_epochs": preview(best[["variant", "fold", "epoch", "val_loss"]]),
                prefix + "seconds": float(run.histories["seconds"].sum()),
                **{prefix + k: v for k, v in loss_plots(run.histories, name).items()},
            }
        )
    for output_name, values in outputs.items():
        value = values[names[0]] if len(names) == 1 else values
        yield Output(value, output_name=output_name, metadata=metadata[output_name])


def leaderboard_plots(board: Leaderboard) -> dict:
    """Holdout ROC curves of the best model per family and variant, the leader's confusion matrix, and the
    leader's reliability diagram before and after calibration."""
    leaders = ranking(board.table).drop_duplicates(["family", "variant"])
    predictions = board.calibrated
    holdout = predictions[predictions["split"].eq("holdout") & predictions["fold"].eq(FOLD_ENSEMBLE)]
    curves = {}
    for row in leaders.itertuples():
        rows = holdout[(holdout["model"] == row.model) & (holdout["variant"] == row.variant)]
        curves[f"{row.model} ({row.variant})"] = (rows["label"], rows["probability"])
    if not curves:
        return {}
    top = leaders.iloc[0]
    chosen = holdout[(holdout["model"] == top["model"]) & (holdout["variant"] == top["variant"])]
    predicted = (chosen["probability"] >= 0.5).astype(int)
    return {
        "roc": image(roc_curves_png(curves, "holdout ROC, best per family and variant"), "ROC"),
        "confusion": image(confusion_matrix_png(chosen["label"], predicted, f"{top['model']} (calibrated)"), "CM"),
    }


def reliability_plots(board: Leaderboard, before: pd.DataFrame) -> dict:
    """The leader's validation reliability diagram, uncalibrated and calibrated (out-of-fold predictions)."""
    top = ranking(board.table).iloc[0]
    plots = {}
    for label, table in (("before", before), ("after", board.calibrated)):
        rows = table[
            (table["model"] == top["model"]) & (table["variant"] == top["variant"]) & (table["split"] == "validation")
        ]
        plots[label] = (rows["label"], rows["probability"])
    title = f"{top['model']} ({top['variant']}): validation reliability"
    return {"reliability": image(reliability_png(plots, title), "reliability diagram")}


class ClassifierEvaluationConfig(LeaderboardSettings):
    evaluation: EvaluationSettings = EvaluationSettings()


@multi_asset(
    outs={
        "classifier_evaluation": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "classifier_calibration": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
        "matched_holdout": AssetOut(io_manager_key="table_io_manager", kinds={"pandas"}),
    },
    ins={
        "classification_report": AssetIn(),
        "classification_predictions": AssetIn(),
        "classifier_predictions": AssetIn(),
        "manifest": AssetIn(),
    },
    group_name=GROUP,
)
def classifier_evaluation(
    context: AssetExecutionContext,
    config: ClassifierEvaluationConfig,
    classification_report: pd.DataFrame,
    classification_predictions: pd.DataFrame,
    classifier_predictions: pd.DataFrame,
    manifest: pd.DataFrame,
    settings: PipelineSettings,
):
    """The leaderboard: classical and neural models x variant x metric with participant-bootstrap intervals on
    pooled CV (with the fold mean and sd), the holdout fold ensemble, per dataset, leave-one-dataset-out, the
    matched holdout and the calibrated holdout; the calibration measures before and after; the matched strata."""
    evaluation = config.evaluation.library_config(seed=settings.seed)
    leaderboard_config = config.library_config()
    neural_report = report_table(classifier_predictions, evaluation)
    board = build_leaderboard(
        {"classical": classification_report, "neural": neural_report},
        {"classical": classification_predictions, "neural": classifier_predictions},
        manifest,
        leaderboard_config,
        evaluation,
    )
    comparison = variant_comparison(board.table)
    verdict = separation_verdict(comparison)
    context.log.info(verdict)
    plain, matched = ranking(board.table), ranking(board.table, evaluation="holdout_matched")
    yield Output(
        board.table,
        output_name="classifier_evaluation",
        metadata={
            "holdout_roc_auc": preview(plain, ["family", "model", "variant", "value", "ci_low", "ci_high"], 15),
            "matched_holdout_roc_auc": preview(matched, ["model", "variant", "value", "ci_low", "ci_high", "n"], 15),
            "separated_vs_original": preview(comparison, rows=15),
            "does_separation_help": MetadataValue.text(verdict),
            **leaderboard_plots(board),
            **reliability_plots(board, pd.concat([classification_predictions, classifier_predictions])),
        },
    )
    yield Output(
        board.calibration,
        output_name="classifier_calibration",
        metadata={"method": leaderboard_config.calibration},
    )
    yield Output(
        board.matching,
        output_name="matched_holdout",
        metadata={"matched_participants": int(board.matched["participant_id"].nunique())},
    )


def trained_models(store: ModelStore) -> dict[str, tuple[NeuralClassifier, dict]]:
    """The first fold model of the latest stored version of every trained neural classifier, with one zero
    example of each array it reads (at the shapes of the inputs it was trained on)."""
    found = {}
    for name in MODEL_NAMES:
        try:
            stored = store.load(stored_name("classifiers", name)).model
        except ModelStoreError:
            continue
        first = next(iter(stored.variants.values()))
        shapes = first.inputs.shapes()
        example = {
            kind: torch.zeros((1, 1, *shapes[kind]) if kind in IMAGE_KINDS else (1, *shapes[kind]))
            for kind in first.reads
        }
        found[name] = (first.models[0], (example,))
    return found


@asset(deps=["classifiers"], io_manager_key="table_io_manager", group_name=GROUP, kinds={"pytorch"})
def classifier_complexity(model_store: ModelStore) -> Output:
    """Per trained neural classifier and device: parameters, float32 size, FLOPs and MACs per clip, single-clip
    latency and batched throughput (CUDA rows where a GPU is present)."""
    models = trained_models(model_store)
    if not models:
        raise ModelStoreError("no neural classifier is stored yet: materialise partitions of classifiers first")
    table = complexity_table(models)
    return Output(table, metadata={"complexity": preview(table, rows=len(table))})


#: Run tags the champion step sets: ``promoted`` or ``kept``, and the promotion rule's sentence (shortened).
CHAMPION_TAG = "cough_pipeline/champion"
CHAMPION_DECISION_TAG = "cough_pipeline/champion_decision"
RUN_TAG_CHARS = 500


def validation_rows(*predictions: pd.DataFrame) -> pd.DataFrame:
    """The validation (out-of-fold) prediction rows of every family, in the shared schema."""
    rows = [p.loc[p["split"] == "validation", list(PREDICTION_COLUMNS)] for p in predictions]
    return pd.concat(rows, ignore_index=True)


def stored_versions(classical_models: TrainedModel, classifier_predictions: pd.DataFrame, classical: pd.DataFrame):
    """Model name -> (model-store name, version) of every model on the leaderboard."""
    where = {model: ("classical_models", classical_models.version) for model in classical["model"].unique()}
    for row in classifier_predictions[["model", "model_version"]].drop_duplicates().itertuples():
        where[row.model] = (stored_name("classifiers", row.model), row.model_version)
    return where


@asset(
    ins={
        "classifier_evaluation": AssetIn(),
        "classifier_calibration": AssetIn(),
        "classification_predictions": AssetIn(),
        "classifier_predictions": AssetIn(),
        "classical_models": AssetIn(),
    },
    io_manager_key="table_io_manager",
    group_name=GROUP,
    kinds={"pandas"},
)
def champion_classifier(
    context: AssetExecutionContext,
    config: ChampionSettings,
    classifier_evaluation: pd.DataFrame,
    classifier_calibration: pd.DataFrame,
    classification_predictions: pd.DataFrame,
    classifier_predictions: pd.DataFrame,
    classical_models: TrainedModel,
    storage: Storage,
) -> Output:
    """The model (and input variant) ``make predict`` uses: the best challenger of every family on the
    leaderboard, promoted over the current champion only by a margin, with its calibrator (fitted on validation
    folds), its decision threshold chosen on calibrated validation predictions and its model-store version. One
    row; ``decision`` says whether and why the champion changed."""
    settings = config.library_config()
    validation = validation_rows(classification_predictions, classifier_predictions)
    stored = stored_versions(classical_models, classifier_predictions, classification_predictions)
    calibrators = {
        (row.model, row.variant): row.calibrator
        for row in classifier_calibration.drop_duplicates(["model", "variant"]).itertuples()
    }
    candidate = challenger(classifier_evaluation, validation, stored, settings, calibrators)
    champion, decision = promote(current_champion(storage), candidate, settings.margin)
    context.log.info(decision)
    # On the run as well, so a retraining run says in its own tags whether it changed the champion.
    outcome = "promoted" if champion is candidate else "kept"
    context.instance.add_run_tags(
        context.run.run_id, {CHAMPION_TAG: outcome, CHAMPION_DECISION_TAG: decision[:RUN_TAG_CHARS]}
    )
    table = pd.DataFrame([{**dataclasses.asdict(champion), "decision": decision}])
    return Output(
        table,
        metadata={
            "model": champion.model,
            "variant": champion.variant,
            "model_version": champion.version,
            champion.metric: champion.score,
            "threshold": champion.threshold,
            "decision": MetadataValue.text(decision),
            "champion": outcome,
            "challenger": MetadataValue.text(f"{candidate.model} ({candidate.variant}) {candidate.score:.4f}"),
        },
    )
