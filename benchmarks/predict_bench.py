"""``make predict`` end to end: warm latency per stage before and after, and the command's cold start.

The recording is a seeded synthetic 5 s, 48 kHz, 16-bit WAV with three coughs
(:func:`cough_pipeline.demo_corpus.synth.cough_recording`). The models:

* cough filter: the pretrained COUGHVID model when ``$COUGH_PIPELINE_SHARED_DATA/coughvid_model`` (default
  ``shared/data`` beside the repository) holds it, else one trained on synthetic clips (as ``cough_filter_bench``
  does); its threshold is set to 0 so the synthetic recording is scored end to end (the timing does not depend on
  the verdict; the figures give the probability it said);
* separator: :class:`~cough_pipeline.separation.model.CoughSeparator` with the default config (random weights), as
  ``model_separator(separator.for_inference())``;
* four champions: five ``mobilenetv3_small`` fold models (random weights) on the ``separated`` and on the
  ``original`` variant, and five SVM fold pipelines trained on random 15 x 7 feature vectors on each variant.

``before`` is the code as it was, kept here as :func:`reference_predict`: the cough filter with scipy's
``filtfilt``/``sosfiltfilt`` per band and librosa's MFCC (a new mel filter bank per call), then each clip (the
whole recording and each cough) preprocessed and scored on its own: all four network input arrays from librosa's
feature functions and every fold model called in eager PyTorch per clip (:func:`reference_fold_probability`), or
one feature vector and one call of every fold pipeline per clip (the classical feature code itself is today's).
It runs twice: with the threads the command had (BLAS and torch at their defaults, two threads on two cores:
``before``) and with BLAS and torch at one thread (``before_one_thread``), which separates what the algorithmic
changes bring from what the thread settings bring. ``after`` is :mod:`cough_pipeline.classification.predict`:
per-stage figures time its steps one after the other on one thread; ``total`` is :func:`predict_file` itself
(cough filter on a helper thread, batched champion). The neural champion's batch goes through
``FoldModels.probability`` as it is now; ``champion_batched_eager`` is the same batch through the former eager
ensemble, which tells the batching's share from that of the fold models' own inference path.

Every figure is the median wall time in milliseconds (``total_cpu``: the process's CPU time, all threads) of
:data:`REPEATS` runs (``before`` with default threads: :data:`REPEATS_SLOW`), before and after runs interleaved,
with the load average at the start and the end: the machine is shared, so compare figures of the same run only
(on a loaded machine, CPU time is the better guide to the latency on idle cores).

``cold_start`` runs ``python -m assets.predict`` in a fresh process against a temporary model store holding each
champion kind (and against an empty one: the time to its "no champion" message); ``import_dagster_assets_s`` is
the time to import the asset modules and resources the command imported before it read the champion (Dagster
included), a lower bound of the former command's start-up.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from scipy import signal as sps
from threadpoolctl import threadpool_limits

from benchmarks.common import write_result
from cough_pipeline.audio import load_mono, resample
from cough_pipeline.classification import predict
from cough_pipeline.classification.classical import ClassicalModels
from cough_pipeline.classification.features import FeatureConfig, clip_features, feature_columns
from cough_pipeline.classification.fold_models import FoldModels, VariantModels
from cough_pipeline.classification.inputs import KINDS, TOP_DB, InputArraysConfig, _area_matrix, loudest_window
from cough_pipeline.classification.networks import NetworkConfig, NeuralClassifier, probabilities
from cough_pipeline.classification.preprocess import checked_clip, preprocess
from cough_pipeline.classification.resampling import ResamplingConfig, build_pipeline
from cough_pipeline.cough_filter import features as cough_features
from cough_pipeline.cough_filter.model import CoughClassifier
from cough_pipeline.demo_corpus import synth
from cough_pipeline.segmentation import RmsConfig
from cough_pipeline.segmentation.rms import segment_rms
from cough_pipeline.separation.evaluation import model_separator
from cough_pipeline.separation.model import CoughSeparator

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COUGH_PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_RATE = 48_000
RECORDING_S = 5.0
COUGHS = 3
FOLDS = 5
REPEATS = 11
REPEATS_SLOW = 3
COLD_REPEATS = 2
CHAMPIONS = ("neural_separated", "neural_original", "classical_separated", "classical_original")


# -- inputs --------------------------------------------------------------------------------------------------------


def write_recording(folder: Path) -> Path:
    """The 5 s, 48 kHz, three-cough WAV (PCM_16)."""
    samples, _ = synth.cough_recording(np.random.default_rng(0), SAMPLE_RATE, RECORDING_S, COUGHS, True)
    path = folder / "recording.wav"
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def cough_filter() -> tuple[CoughClassifier, str]:
    """The COUGHVID model when present, else one trained on synthetic clips; threshold 0 (see module docstring)."""
    folder = SHARED / "coughvid_model"
    if (folder / "cough_classifier.json").is_file():
        classifier, source = CoughClassifier.from_coughvid_folder(folder), "COUGHVID pretrained model"
    else:
        from benchmarks.cough_filter_bench import time_feature_extraction
        from cough_pipeline.cough_filter.training import FeatureTable, train_from_features

        _, matrix, labels = time_feature_extraction(SAMPLE_RATE, 40, 0)
        table = FeatureTable(matrix, labels, np.arange(len(labels)) // 4, np.arange(len(labels)), [])
        classifier, source = train_from_features(table)[0], f"trained on synthetic clips ({folder} not found)"
    return dataclasses.replace(classifier, threshold=0.0), source


def neural(variant: str) -> VariantModels:
    """Five randomly initialised ``mobilenetv3_small`` fold models of ``variant``."""
    torch.manual_seed(0)
    models = [NeuralClassifier(NetworkConfig(name="mobilenetv3_small")) for _ in range(FOLDS)]
    name = "mobilenetv3_small"
    return VariantModels(name, {variant: FoldModels(name, variant, list(range(FOLDS)), models, InputArraysConfig())})


def classical(variant: str) -> ClassicalModels:
    """Five SVM fold pipelines (``svm@all``) of ``variant`` fitted on random feature vectors."""
    columns = feature_columns(FeatureConfig())
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((60, len(columns))), np.arange(60) % 2
    models = ClassicalModels(columns={("svm@all", variant): list(columns)})
    for fold in range(FOLDS):
        models.pipelines[("svm@all", variant, fold)] = build_pipeline("svm", ResamplingConfig(strategy="none"))
        models.pipelines[("svm@all", variant, fold)].fit(features, labels)
    return models


def predictors(classifier: CoughClassifier) -> dict[str, predict.Predictor]:
    """One :class:`Predictor` per champion kind of :data:`CHAMPIONS`."""
    separate = model_separator(CoughSeparator().for_inference())
    out = {}
    for name in CHAMPIONS:
        kind, variant = name.split("_")
        stored, model = (neural(variant), "mobilenetv3_small") if kind == "neural" else (classical(variant), "svm@all")
        out[name] = predict.Predictor(
            cough_filter=classifier,
            segment=lambda samples, rate: segment_rms(samples, rate, RmsConfig()),
            score=predict.model_scorer(stored, model, variant),
            threshold=0.5,
            variant=variant,
            model=model,
            version="bench",
            separate=separate,
        )
    return out


# -- before: the code as it was ------------------------------------------------------------------------------------


def reference_cough_features(samples: np.ndarray, rate: int) -> np.ndarray:
    """The 68 cough filter features as computed before: scipy ``filtfilt``/``sosfiltfilt`` for every filter (one
    call per envelope band) and ``librosa.feature.mfcc`` (a new mel filter bank per call)."""
    f = cough_features
    mono = f.validate_signal(samples, rate)
    lowpassed = sps.filtfilt(*sps.butter(4, 2 * f.LOWPASS_CUTOFF_HZ / rate), mono / (np.max(np.abs(mono)) + 1e-17))
    factor = f.decimation_factor(rate)
    x = sps.sosfiltfilt(sps.cheby1(8, 0.05, 0.8 / factor, output="sos"), lowpassed)[::factor].astype(np.float32)
    fs = f.NOMINAL_SAMPLE_RATE
    nyquist = fs / 2
    bands = [sps.butter(1, [low / nyquist, high / nyquist], btype="bandpass") for low, high in f.ENVELOPE_BANDS_HZ]
    squared = np.stack([sps.filtfilt(b, a, x) ** 2 for b, a in bands])
    envelopes = sps.filtfilt(*sps.butter(2, f.ENVELOPE_SMOOTHING_HZ / nyquist), squared, axis=-1)
    envelopes /= np.max(envelopes + 1e-17, axis=-1, keepdims=True)
    peaks = [sps.find_peaks(envelope)[0].size for envelope in envelopes]
    magnitudes, (frequencies, psd) = np.abs(np.fft.rfft(x)), f.welch_psd(x, fs)
    mfcc = librosa.feature.mfcc(y=x, sr=fs, n_mfcc=f.N_MFCC)
    with np.errstate(all="ignore"):
        return np.concatenate(
            [
                peaks,
                [f.zero_crossing_rate(x), f.rms(x), f.dominant_frequency(x)],
                f.spectral_shape(magnitudes, x.size, fs),
                f.flatness_and_spread(psd),
                f.slope_and_decrease(magnitudes, x.size, fs),
                np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]),
                [np.max(np.abs(x)) / f.rms(x), x.size / fs],
                f.band_power_ratios(frequencies, psd),
            ]
        ).astype(np.float64)


def reference_input_arrays(samples: np.ndarray, config: InputArraysConfig) -> dict[str, np.ndarray]:
    """All four network input arrays as computed before: librosa's feature functions on two STFTs (the clip's and
    the patch's), a new mel filter bank per call."""
    clip = checked_clip(samples, config.n_fft)
    power = np.abs(librosa.stft(clip, n_fft=config.n_fft, hop_length=config.hop_length)) ** 2
    sr, n_fft = config.sample_rate, config.n_fft
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=n_fft, n_mels=config.mfcc_n_mels)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=TOP_DB), n_mfcc=config.n_mfcc)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft)
    patch = loudest_window(clip, config.patch_samples)
    patch_power = np.abs(librosa.stft(patch, n_fft=n_fft, hop_length=config.hop_length)) ** 2
    patch_mel = librosa.feature.melspectrogram(S=patch_power, sr=sr, n_fft=n_fft, n_mels=config.n_mels)
    logmel = librosa.power_to_db(patch_mel, ref=np.max, top_db=TOP_DB)
    image = logmel @ _area_matrix(logmel.shape[1], config.image_columns)
    arrays = {
        "logmel": (logmel - logmel.mean()) / logmel.std(),
        "mfcc": mfcc.mean(axis=1),
        "spectrogram": (image - image.min()) / (image.max() - image.min()),
        "chroma": chroma.mean(axis=1),
    }
    return {kind: arrays[kind].astype(np.float32) for kind in KINDS}


def reference_fold_probability(models: FoldModels, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The fold ensemble's P(positive) as ``FoldModels.probability`` computed it before: every fold model in eager
    PyTorch, then the mean. Shape: ``batch[kind]`` ``(batch, ...)``; returns ``(batch,)``."""
    tensors = {kind: torch.as_tensor(np.asarray(batch[kind], dtype=np.float32)) for kind in models.reads}
    with torch.inference_mode():
        stacked = torch.stack([probabilities(m(tensors), m.output) for m in models.models])
    return stacked.mean(dim=0).numpy().astype(np.float64)


def reference_score(predictor: predict.Predictor, clip: np.ndarray) -> tuple[float, float, float]:
    """``(probability, seconds making the clip's inputs, seconds in the models)`` of one preprocessed clip, as the
    former scorers did it: one clip per model call."""
    scorer = predictor.score
    started = time.perf_counter()
    if isinstance(scorer, predict.FoldEnsembleScorer):
        arrays = reference_input_arrays(clip, scorer.models.inputs)
        made = time.perf_counter()
        probability = reference_fold_probability(scorer.models, {kind: arrays[kind][None] for kind in KINDS})[0]
    else:
        row = pd.DataFrame([clip_features(clip, scorer.features)])
        made = time.perf_counter()
        probability = scorer.models.predict(row, scorer.model, scorer.variant)[0]
    return float(probability), made - started, time.perf_counter() - made


def reference_predict(path: Path, predictor: predict.Predictor) -> tuple[dict, list[float]]:
    """The former ``predict_file``, stage by stage: ``(seconds per stage, probabilities of the whole recording
    and of each cough)``."""
    clock, stages, cpu = time.perf_counter(), {}, time.process_time()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage] = stages.get(stage, 0.0) + now - clock
        clock = now

    samples, rate = load_mono(path)
    lap("decode")
    features = reference_cough_features(samples, rate)
    predictor.cough_filter.probabilities(features[np.newaxis])
    lap("cough_filter")
    segments, pieces = predict.cough_pieces(samples, rate, predictor)
    lap("segmentation")
    coughs, cough_rate = pieces, rate
    if predictor.variant == "separated":
        cough_rate = predictor.separator_rate
        coughs = [predictor.separate(resample(piece, rate, cough_rate)) for piece in pieces]
    lap("separation")
    whole = np.concatenate(coughs) if predictor.variant == "separated" else samples
    probabilities, inputs, models = [], 0.0, 0.0
    for clip in [whole, *coughs]:
        clip = preprocess(clip, cough_rate, predictor.preprocess)
        lap("clip_inputs")
        probability, making, scoring = reference_score(predictor, clip)
        probabilities.append(probability)
        inputs, models = inputs + making, models + scoring
        clock = time.perf_counter()
    stages["clip_inputs"] += inputs
    stages["champion"] = models
    stages["total"] = sum(stages.values())
    stages["total_cpu"] = time.process_time() - cpu
    return stages, probabilities


# -- after ---------------------------------------------------------------------------------------------------------


@contextmanager
def one_thread():
    """BLAS and torch at one thread inside (the settings :func:`predict_file` runs with)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, "blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def staged_predict(path: Path, predictor: predict.Predictor) -> tuple[dict, list[float]]:
    """The steps of :func:`predict_file` one after the other on one thread: seconds per stage, probabilities."""
    clock, stages = time.perf_counter(), {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage], clock = now - clock, now

    samples, rate = predict.decode(path)
    lap("decode")
    predict.cough_decision(samples, rate, predictor.cough_filter)
    lap("cough_filter")
    segments, pieces = predict.cough_pieces(samples, rate, predictor)
    lap("segmentation")
    coughs, cough_rate = predict.separated(pieces, rate, predictor)
    lap("separation")
    whole = np.concatenate(coughs) if predictor.variant == "separated" else samples
    score = predictor.score
    prepared = [score.prepare(preprocess(clip, cough_rate, predictor.preprocess)) for clip in [whole, *coughs]]
    lap("clip_inputs")
    found = score.probabilities(prepared)
    lap("champion")
    stages["total"] = sum(stages.values())
    if isinstance(score, predict.FoldEnsembleScorer):  # the same batch through the former eager fold ensemble
        reference_fold_probability(
            score.models, {kind: np.stack([p[kind] for p in prepared]) for kind in score.models.reads}
        )
        lap("champion_batched_eager")
    return stages, [float(p) for p in found]


def timed_predict_file(path: Path, predictor: predict.Predictor) -> tuple[dict, list[float]]:
    """Wall and CPU seconds (both threads) of one :func:`predict_file` call, and its probabilities."""
    started, cpu = time.perf_counter(), time.process_time()
    prediction = predict.predict_file(path, predictor)
    seconds = {"total": time.perf_counter() - started, "total_cpu": time.process_time() - cpu}
    return seconds, [prediction.probability, *prediction.coughs["probability"]]


# -- runs ----------------------------------------------------------------------------------------------------------


def medians(runs: list[dict]) -> dict:
    """Median milliseconds of each stage over the runs."""
    return {stage: round(1000 * statistics.median(run[stage] for run in runs), 1) for stage in runs[0]}


def compare(path: Path, predictor: predict.Predictor) -> dict:
    """Before (default threads, then one thread) and after figures of one champion, runs interleaved."""
    runs: dict[str, list[dict]] = {"before": [], "before_one_thread": [], "after_stages": [], "after": []}
    results = {}
    for repeat in range(REPEATS + 1):  # the first round warms caches and is not counted
        if repeat <= REPEATS_SLOW:
            stages, results["before"] = reference_predict(path, predictor)
            runs["before"].append(stages)
        with one_thread():
            stages, results["before_one_thread"] = reference_predict(path, predictor)
            runs["before_one_thread"].append(stages)
            stages, results["after_stages"] = staged_predict(path, predictor)
            runs["after_stages"].append(stages)
        stages, results["after"] = timed_predict_file(path, predictor)
        runs["after"].append(stages)
    figures = {name: medians(found[1:]) for name, found in runs.items()}
    after = figures.pop("after_stages")
    after["total_one_thread_sequential"] = after.pop("total")
    after.update(figures.pop("after"))
    reference, found = np.array(results["before"]), np.array(results["after"])
    return {
        **figures,
        "after": after,
        "speedup": round(figures["before"]["total"] / after["total"], 1),
        "speedup_vs_before_one_thread": round(figures["before_one_thread"]["total"] / after["total"], 1),
        "under_150_ms": after["total"] < 150.0,
        "probabilities_after": [round(p, 6) for p in found],
        "max_probability_difference": float(np.max(np.abs(reference - found))),
    }


def check_cough_filter(path: Path, classifier: CoughClassifier) -> dict:
    """The cough filter's features before and after on the recording (they must be equal) and its probability."""
    samples, rate = load_mono(path)
    before, after = reference_cough_features(samples, rate), cough_features.extract_features(samples, rate)
    return {
        "features_identical": bool(np.array_equal(before, after)),
        "probability": round(float(classifier.classify(samples, rate).probability), 4),
    }


def run() -> Path:
    """Warm latency of every champion kind, the cold start, and the JSON."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_recording(Path(folder))
        classifier, source = cough_filter()
        load_before = os.getloadavg()
        warm = {name: compare(path, predictor) for name, predictor in predictors(classifier).items()}
        load_after = os.getloadavg()
        cold = cold_start(Path(folder), path, classifier)
        figures = {
            "recording": {"seconds": RECORDING_S, "sample_rate": SAMPLE_RATE, "coughs": COUGHS},
            "cough_filter": {"source": source, "threshold_for_timing": 0.0, **check_cough_filter(path, classifier)},
            "cpus": os.cpu_count(),
            "load_average_1min": {"start": round(load_before[0], 2), "end": round(load_after[0], 2)},
            "repeats": {"after": REPEATS, "before_one_thread": REPEATS, "before": REPEATS_SLOW},
            "warm_ms": warm,
            "cold_start": cold,
        }
    return write_result("predict", figures)


# -- cold start ----------------------------------------------------------------------------------------------------


def _store(root: Path, classifier: CoughClassifier, kind: str) -> None:
    """A model store and tables under ``root`` holding a ``kind`` champion (``neural_separated`` or
    ``classical_original``), the cough filter and, for the separated variant, the separator."""
    from cough_pipeline.classification.champion import Champion
    from resources.model_store import ModelStore, TrainedModel
    from resources.storage import Storage

    storage = Storage(root=str(root), catalog=str(root / "catalog.duckdb"))
    store = ModelStore(storage=storage)
    model_kind, variant = kind.split("_")
    if model_kind == "neural":
        stored, model, asset = neural(variant), "mobilenetv3_small", "neural_classifiers"
    else:
        stored, model, asset = classical(variant), "svm@all", "classical_models"
    store.save(asset, TrainedModel(stored), "bench")
    store.save("cough_filter_model", TrainedModel(dataclasses.replace(classifier, threshold=0.0)), "bench")
    if variant == "separated":
        store.save("separator", TrainedModel(CoughSeparator()), "bench")
        storage.write_table("separated_clips", pd.DataFrame({"separator": ["separator"]}))
    champion = Champion(
        model=model,
        variant=variant,
        asset=asset,
        version="bench",
        metric="roc_auc",
        score=0.9,
        ci_low=0.8,
        ci_high=1.0,
        threshold=0.5,
        validation_sensitivity=0.9,
        validation_specificity=0.9,
    )
    storage.write_table("champion_classifier", pd.DataFrame([dataclasses.asdict(champion)]))


def _seconds(arguments: list[str], environ: dict) -> tuple[float, int, str]:
    """Wall seconds, exit status and the last line of output of a fresh Python process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], cwd=REPO, env=environ, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return time.perf_counter() - started, done.returncode, lines[-1] if lines else ""


def cold_start(folder: Path, recording: Path, classifier: CoughClassifier) -> dict:
    """Seconds of ``python -m assets.predict`` per store (median of :data:`COLD_REPEATS`), and the import lower
    bound of the former command."""
    out = {}
    for kind in ("neural_separated", "classical_original", "no_champion"):
        root = folder / f"store_{kind}"
        root.mkdir()
        if kind != "no_champion":
            _store(root, classifier, kind)
        environ = {**os.environ, "COUGH_PIPELINE_STORAGE": str(root), "DAGSTER_HOME": str(folder / "home")}
        environ.pop("COUGH_PIPELINE_CATALOG", None)
        runs = [_seconds(["-m", "assets.predict", str(recording)], environ) for _ in range(COLD_REPEATS)]
        out[kind] = {
            "seconds": round(statistics.median(seconds for seconds, _, _ in runs), 2),
            "exit_status": runs[-1][1],
            "last_line": runs[-1][2][:160],
        }
    former = "import assets.classification, assets.resources"
    runs = [_seconds(["-c", former], dict(os.environ)) for _ in range(COLD_REPEATS)]
    out["import_dagster_assets_s"] = round(statistics.median(seconds for seconds, _, _ in runs), 2)
    return out
