"""Cough segmentation per dataset partition, and the segmentation methods scored on Virufy's manual segments."""

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from assets.artefacts import artefact_paths_check, artefact_paths_spec
from assets.config import bounded, mirror
from assets.metadata import counts, image, preview
from assets.partitions import dataset_partitions
from cough_pipeline.bounds import PositiveInt
from cough_pipeline.parallel import throttled
from cough_pipeline.plots import waveform_with_segments_png
from cough_pipeline.schema import EXCLUDE_REASONS
from cough_pipeline.segmentation import HysteresisConfig, RmsConfig
from cough_pipeline.segmentation.batch import SegmentationRun, segment_recordings
from cough_pipeline.segmentation.methods import METHODS
from cough_pipeline.segmentation.virufy_evaluation import evaluate_virufy
from resources.config_types import choices, plain
from resources.data_roots import DataRoots
from resources.storage import Storage

HysteresisSettings = mirror(
    HysteresisConfig,
    "The COUGHVID hysteresis comparator (thresholds are multiples of "
    "the whole signal's RMS); defaults: the published configuration.",
)
RmsSettings = mirror(
    RmsConfig,
    "The RMS-threshold method (librosa-style frames, min-max normalised RMS); defaults: the published configuration.",
)


#: The segmentation methods and the manifest's exclude reasons, as config choices.
MethodName = choices("MethodName", METHODS)
ExcludeReason = choices("ExcludeReason", EXCLUDE_REASONS)


class CoughSegmentsConfig(Config):
    methods: list[MethodName] = ["hysteresis", "rms"]
    hysteresis: HysteresisSettings = HysteresisSettings()
    rms: RmsSettings = RmsSettings()
    #: Recordings excluded upstream for these reasons are not segmented (they are counted in the metadata).
    skip_exclude_reasons: list[ExcludeReason] = ["not_cough", "duplicate"]
    write_wavs: bool = True
    workers: bounded(PositiveInt) = 2


@asset(
    ins={"manifest": AssetIn()},
    partitions_def=dataset_partitions,
    io_manager_key="table_io_manager",
    group_name="segmentation",
    kinds={"numpy"},
    check_specs=[artefact_paths_spec("cough_segments")],
)
def cough_segments(
    context: AssetExecutionContext, config: CoughSegmentsConfig, manifest, data_roots: DataRoots, storage: Storage
):
    """One row per detected cough (recording, method, start, end, WAV path), each cough also written as a WAV.

    The WAVs go to a new generation folder ``segments/<dataset>/<generation>/<method>/``; the previous one is
    deleted only once this table is committed."""
    dataset = context.partition_key
    settings = {"hysteresis": config.hysteresis.library_config(), "rms": config.rms.library_config()}
    methods = {m: settings[m] for m in plain(config.methods)}
    root = data_roots.root_for(dataset)
    with storage.generation("segments", dataset, run_id=context.run.run_id) as folder:
        run = SegmentationRun(
            methods=methods,  # validated here, before anything is written
            output_dir=folder if config.write_wavs else None,
            relative_to=storage.root_path,
            skip_exclude_reasons=tuple(plain(config.skip_exclude_reasons)),
            workers=config.workers,
        )
        result = segment_recordings(
            manifest, root, run, on_progress=throttled(context.log.info, "segmented", every=100)
        )
    per_recording = result.per_recording
    rate = per_recording.groupby("method")["coughs_per_minute"].describe()[["mean", "50%", "max"]].round(2)
    example = result.example
    metadata = {
        "recordings_segmented": int(per_recording["recording_id"].nunique()),
        "recordings_skipped": MetadataValue.json(result.skipped_counts),
        "recordings_failed": MetadataValue.json(result.failed_counts),
        "segments_per_method": MetadataValue.json(counts(result.segments["method"])),
        "coughs_per_minute": preview(rate.rename(columns={"50%": "median"}).reset_index()),
        "per_recording": preview(per_recording, rows=20),
        "folder": MetadataValue.path(str(folder)),
    }
    if example is not None:
        metadata["example_plot"] = image(
            waveform_with_segments_png(
                example.samples,
                example.sample_rate,
                example.segments_by_method,
                f"{example.recording_id}: detected coughs",
            ),
            "segments",
        )
    yield Output(result.segments, metadata=metadata)
    storage.retire_generations("segments", dataset, keep=folder)
    yield artefact_paths_check(result.segments, storage, ["path"])


class SegmentationEvaluationConfig(Config):
    hysteresis: HysteresisSettings = HysteresisSettings()
    rms: RmsSettings = RmsSettings()


@asset(io_manager_key="table_io_manager", group_name="segmentation", kinds={"numpy"})
def segmentation_evaluation(
    context: AssetExecutionContext, config: SegmentationEvaluationConfig, data_roots: DataRoots
):
    """Both methods on the Virufy clinical originals, against Virufy's manual single-cough segments: counts per
    file, the precision proxy, the published counts when known, and Fleiss' kappa over 50 ms frames."""
    root = data_roots.root_for("virufy")
    context.log.info(f"virufy: reading {data_roots.source('virufy')} ({root})")
    evaluation = evaluate_virufy(
        root, {"hysteresis": config.hysteresis.library_config(), "rms": config.rms.library_config()}
    )
    metadata = {
        "source": data_roots.source("virufy"),
        "summary": preview(evaluation.summary),
        "fleiss_kappa_manual_hysteresis_rms": round(float(evaluation.fleiss_kappa), 4),
        "per_file": preview(evaluation.per_file, rows=40),
    }
    if evaluation.example is not None:
        name, samples, rate, segments = evaluation.example
        metadata["example_plot"] = image(
            waveform_with_segments_png(samples, rate, segments, f"{name}: manual vs automatic segments"), "segments"
        )
    return Output(evaluation.per_file, metadata=metadata)
