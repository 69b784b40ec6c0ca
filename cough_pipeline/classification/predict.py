"""From one recording to a COVID-19 probability: decode -> cough filter -> segmentation -> separation -> champion.

:func:`predict_file` runs the same steps the pipeline's training data went through, with models the caller loads
(the command-line entry point loads them from the model store):

1. decode any format the manifest reads (mono, native rate); a file that cannot be decoded is refused with the
   decoder's reason (``audio_unreadable``, ``audio_empty``, ...);
2. the cough filter on the whole recording: below its threshold the file is refused as ``not_cough`` (or with
   the filter's own reason, e.g. ``silent``);
3. segmentation into single coughs (``no_cough_segments`` when none is found);
4. for a champion trained on the ``separated`` variant, each cough passes through the separator (at its rate)
   and the separated coughs are joined in order, as ``classification_recordings`` joins them; for the ``original``
   variant the whole recording is scored, as in training;
5. the champion's score of the preprocessed clip (22,050 Hz, trimmed, peak-normalised), its decision at the
   champion's threshold, and a score per cough (a cough too short to score has no probability and a reason).

Speed (``benchmarks/results/predict.json``). The champion's scorers (:class:`FoldEnsembleScorer`,
:class:`ClassicalScorer`) split scoring into a per-clip step (the input arrays a network reads, or the feature
vector) and one batched model call, so the whole recording and its coughs go through each fold model once. The
work runs on two threads: a helper thread runs the cough filter while the calling thread segments, separates and
prepares the clips, and the helper takes the clips not yet started once the filter is done (its verdict is still
checked first, so the refusal reasons and their order are those of the sequential steps). Every library runs
single-threaded inside :func:`predict_file` (BLAS, torch intra-op): on two cores, OpenMP and OpenBLAS pools that
spin-wait for cores the other thread holds cost far more than they save on these small arrays.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cough_pipeline.audio import AudioDecodeError, load_mono, resample
from cough_pipeline.classification.errors import ClassificationError, InputRejected
from cough_pipeline.classification.features import FeatureConfig, feature_columns, feature_vector
from cough_pipeline.classification.inputs import input_arrays
from cough_pipeline.classification.preprocess import PreprocessConfig, preprocess
from cough_pipeline.segmentation.segments import Segment

#: ``score(clip)`` -> P(positive) for a preprocessed clip at the preprocessing rate.
Scorer = Callable[[np.ndarray], float]


class PredictionRefused(ClassificationError):
    """A recording the predictor cannot score; ``reason`` is machine-readable, ``detail`` for people."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Predictor:
    """The models of one prediction: the cough filter (``classify(samples, rate)`` -> a decision with
    ``probability``, ``is_cough``, ``reason``), a segmenter (``segment(samples, rate)`` -> segments), the
    separator (``separate(wave)`` at ``separator_rate``; used for the ``separated`` variant) and the champion's
    scorer, threshold, name and model-store version.

    ``score`` is any :data:`Scorer`; one that also has ``prepare(clip)`` and ``probabilities(prepared)`` (the
    scorers :func:`model_scorer` returns) scores all clips of a recording in one batch.
    """

    cough_filter: object
    segment: Callable[[np.ndarray, int], list[Segment]]
    score: Scorer
    threshold: float
    variant: str
    model: str
    version: str
    separate: Callable[[np.ndarray], np.ndarray] | None = None
    separator_rate: int = 44_100
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass(frozen=True)
class Prediction:
    """``probability`` of COVID-19, ``positive`` at ``threshold``, the model that said so, the cough filter's
    probability, and ``coughs``: start_s, end_s, probability, reason (one row per cough)."""

    path: str
    probability: float
    positive: bool
    threshold: float
    model: str
    variant: str
    version: str
    cough_probability: float
    coughs: pd.DataFrame


# -- the steps -----------------------------------------------------------------------------------------------------


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono samples at the file's rate, or :class:`PredictionRefused` with the decoder's reason."""
    try:
        return load_mono(Path(path))
    except AudioDecodeError as error:
        raise PredictionRefused(error.reason.value, error.detail) from None
    except (OSError, ValueError) as error:
        raise PredictionRefused("audio_unreadable", f"{type(error).__name__}: {error}") from None


def cough_decision(samples: np.ndarray, rate: int, cough_filter) -> object:
    """The cough filter's decision on the whole recording, at the rate the filter was trained at (when it says)."""
    filter_rate = getattr(cough_filter, "input_sample_rate", None) or rate
    return cough_filter.classify(resample(samples, rate, filter_rate), filter_rate)


def check_cough(decision) -> None:
    """Raise :class:`PredictionRefused` (the filter's reason, else ``not_cough``) unless the decision is a cough."""
    if not decision.is_cough:
        reason = decision.reason or "not_cough"
        raise PredictionRefused(reason, f"cough probability {decision.probability:.3f} is below the cough filter's")


def cough_pieces(samples: np.ndarray, rate: int, predictor: Predictor) -> tuple[list[Segment], list[np.ndarray]]:
    """The recording's segments and each one's samples (views), or ``no_cough_segments``."""
    segments = predictor.segment(samples, rate)
    if not segments:
        raise PredictionRefused("no_cough_segments", "the segmenter found no cough in the recording")
    pieces = [samples[int(s.start_s * rate) : max(int(s.end_s * rate), int(s.start_s * rate) + 1)] for s in segments]
    return segments, pieces


def separated(pieces: Sequence[np.ndarray], rate: int, predictor: Predictor) -> tuple[list[np.ndarray], int]:
    """Each cough as the champion's variant sees it, and their rate: through the separator for ``separated``."""
    if predictor.variant != "separated":
        return list(pieces), rate
    if predictor.separate is None:
        raise ClassificationError("the champion reads separated coughs but no separator was given")
    target = predictor.separator_rate
    return [predictor.separate(resample(piece, rate, target)) for piece in pieces], target


# -- scorers -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldEnsembleScorer:
    """A neural champion's scorer: the input arrays of each clip (only the kinds its fold models read), then one
    batch through every fold model, whose probabilities are averaged (the fold ensemble the holdout scored).

    Args:
        models: a :class:`~cough_pipeline.classification.fold_models.FoldModels`.
    """

    models: object

    def prepare(self, clip: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays the models read of one preprocessed clip; raises :class:`InputRejected`."""
        return input_arrays(clip, self.models.inputs, self.models.reads)

    def probabilities(self, prepared: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """P(positive) of each prepared clip, shape ``(len(prepared),)``."""
        return self.models.probability({kind: np.stack([p[kind] for p in prepared]) for kind in self.models.reads})

    def __call__(self, clip: np.ndarray) -> float:
        return float(self.probabilities([self.prepare(clip)])[0])


@dataclass(frozen=True)
class ClassicalScorer:
    """A classical champion's scorer: the 15 x 7 feature vector of each clip, then the mean of the fold models'
    probabilities over all clips at once.

    Args:
        models: a :class:`~cough_pipeline.classification.classical.ClassicalModels`.
        model, variant: which of its models (e.g. ``"svm@all"``, ``"separated"``).
        features: the feature settings the models were trained on.
    """

    models: object
    model: str
    variant: str
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def prepare(self, clip: np.ndarray) -> np.ndarray:
        """The feature vector of one preprocessed clip; raises :class:`InputRejected`."""
        return feature_vector(clip, self.features)

    def probabilities(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        """P(positive) of each prepared clip, shape ``(len(prepared),)``."""
        frame = pd.DataFrame(np.stack(prepared), columns=feature_columns(self.features))
        return np.asarray(self.models.predict(frame, self.model, self.variant), dtype=np.float64)

    def __call__(self, clip: np.ndarray) -> float:
        return float(self.probabilities([self.prepare(clip)])[0])


@dataclass(frozen=True)
class CalibratedScorer:
    """A batching scorer's probabilities mapped through ``calibrate`` (:func:`calibrated`).

    Args:
        scorer: a scorer with ``prepare`` and ``probabilities`` (:class:`FoldEnsembleScorer`, ...).
        calibrate: ``calibrate(probability) -> probability``.
    """

    scorer: object
    calibrate: Callable[[float], float]

    def prepare(self, clip: np.ndarray) -> object:
        return self.scorer.prepare(clip)

    def probabilities(self, prepared: Sequence) -> np.ndarray:
        return np.array([self.calibrate(float(p)) for p in self.scorer.probabilities(prepared)], dtype=np.float64)

    def __call__(self, clip: np.ndarray) -> float:
        return float(self.probabilities([self.prepare(clip)])[0])


def calibrated(score: Scorer, calibrate: Callable[[float], float] | None) -> Scorer:
    """``score`` followed by ``calibrate`` (e.g. a champion's calibrator: the scale its threshold was chosen on);
    ``score`` itself when there is nothing to calibrate. A batching scorer stays one."""
    if calibrate is None:
        return score
    if _batches(score):
        return CalibratedScorer(score, calibrate)
    return lambda clip: float(calibrate(score(clip)))


def classical_scorer(models, model: str, variant: str, feature_config: FeatureConfig | None = None) -> ClassicalScorer:
    """The scorer of a stored classical model: the 15 x 7 features of the clip, then the mean of the fold models'
    probabilities (the fold ensemble the holdout scored).

    Args:
        models: a :class:`~cough_pipeline.classification.classical.ClassicalModels`.
        model, variant: which of its models (e.g. ``"svm@all"``, ``"separated"``).
        feature_config: the :class:`~cough_pipeline.classification.features.FeatureConfig` the models were
            trained on (default settings when None).
    """
    return ClassicalScorer(models, model, variant, feature_config or FeatureConfig())


def model_scorer(stored, model: str, variant: str) -> Scorer:
    """The scorer of a stored champion: the neural fold models of ``variant`` (:class:`VariantModels`) or the
    classical model ``model`` of ``variant`` (:class:`ClassicalModels`), each as its fold ensemble."""
    # Looked up, not imported: a VariantModels exists only if its (torch) module is loaded, and a classical champion
    # should not pay for importing torch.
    fold_models = sys.modules.get("cough_pipeline.classification.fold_models")
    if fold_models is not None and isinstance(stored, fold_models.VariantModels):
        return FoldEnsembleScorer(stored[variant])
    return classical_scorer(stored, model, variant)


# -- threads -------------------------------------------------------------------------------------------------------

_HELPER: ThreadPoolExecutor | None = None
_BLAS = None
_SETUP_LOCK = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    """The process-wide helper thread of :func:`predict_file`."""
    global _HELPER
    with _SETUP_LOCK:
        if _HELPER is None:
            _HELPER = ThreadPoolExecutor(1, thread_name_prefix="predict")
        return _HELPER


@contextmanager
def _one_thread_per_op():
    """Inside: BLAS at one thread (process-wide) and torch at one intra-op thread (in this thread, if loaded)."""
    global _BLAS
    with _SETUP_LOCK:
        if _BLAS is None:  # built once: it lists the loaded libraries
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"), _torch_threads(1):
        yield


@contextmanager
def _torch_threads(count: int):
    """Torch intra-op threads of this thread set to ``count`` inside (nothing when torch is not loaded)."""
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else count
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if previous != count:
            torch.set_num_threads(previous)


def _on_helper(function: Callable, *args) -> Future:
    """``function(*args)`` on the helper thread, with one torch intra-op thread there."""

    def run():
        with _torch_threads(1):
            return function(*args)

    return _helper().submit(run)


def _shared(function: Callable, items: Sequence) -> list:
    """``[function(item) for item in items]`` on this thread and the helper thread: each takes the next item when
    it is free (the helper once the cough filter is done), in order, so the first item (the whole recording, the
    longest) starts at once. An :class:`InputRejected` is returned in place of its item's result."""
    results: list = [None] * len(items)
    claimed = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(claimed, None)
            if index is None:
                return
            try:
                results[index] = function(items[index])
            except InputRejected as rejected:
                results[index] = rejected

    helper = _on_helper(work) if len(items) > 1 else None
    try:
        work()
    finally:
        if helper is not None:
            helper.result()
    return results


# -- end to end ----------------------------------------------------------------------------------------------------


def _batches(score) -> bool:
    """Whether ``score`` scores many clips at once (``prepare`` per clip, then ``probabilities`` of them all)."""
    return hasattr(score, "prepare") and hasattr(score, "probabilities")


def prepare_clips(clips: Sequence[np.ndarray], rate: int, predictor: Predictor) -> list:
    """Each clip (at ``rate``) preprocessed, then turned into the scorer's inputs when it batches; an
    :class:`InputRejected` in place of a clip that cannot be scored. Two threads share the clips."""
    score, config = predictor.score, predictor.preprocess

    def step(clip: np.ndarray):
        clip = preprocess(clip, rate, config)
        return score.prepare(clip) if _batches(score) else clip

    return _shared(step, list(clips))


def score_prepared(prepared: Sequence, predictor: Predictor) -> list[tuple[float, str | None]]:
    """``(probability, None)``, or ``(nan, reason)`` for a refused clip, of each of :func:`prepare_clips`'s
    outcomes; a batching scorer sees all ready clips in one call (one pass through each fold model costs little
    more for four clips than for one: most of a small CNN's time on a CPU is per call, not per example)."""
    outcomes = list(prepared)
    ready = [index for index, outcome in enumerate(outcomes) if not isinstance(outcome, InputRejected)]
    if _batches(predictor.score):
        found = predictor.score.probabilities([outcomes[i] for i in ready]) if ready else []
        for index, probability in zip(ready, found):
            outcomes[index] = float(probability)
    else:
        for index in ready:
            try:
                outcomes[index] = float(predictor.score(outcomes[index]))
            except InputRejected as rejected:
                outcomes[index] = rejected
    return [(float("nan"), o.reason) if isinstance(o, InputRejected) else (o, None) for o in outcomes]


def score_clips(clips: Sequence[np.ndarray], rate: int, predictor: Predictor) -> list[tuple[float, str | None]]:
    """:func:`score_prepared` of :func:`prepare_clips`."""
    return score_prepared(prepare_clips(clips, rate, predictor), predictor)


def _clips(samples: np.ndarray, rate: int, predictor: Predictor) -> tuple[list[Segment], list[np.ndarray], int]:
    """The segments, the clips to score (the whole recording as the variant sees it, then each cough) and their
    rate: the separated coughs joined in order at the separator's rate, or the recording itself."""
    segments, pieces = cough_pieces(samples, rate, predictor)
    coughs, cough_rate = separated(pieces, rate, predictor)
    whole = np.concatenate(coughs) if predictor.variant == "separated" else samples
    return segments, [whole, *coughs], cough_rate


def _prepared_work(samples: np.ndarray, rate: int, predictor: Predictor) -> tuple[list[Segment], list]:
    """Segments and :func:`prepare_clips` of the recording's clips; run while the cough filter decides."""
    segments, clips, clip_rate = _clips(samples, rate, predictor)
    return segments, prepare_clips(clips, clip_rate, predictor)


def predict_file(path: str | Path, predictor: Predictor) -> Prediction:
    """Score one recording end to end (see the module docstring).

    Raises:
        PredictionRefused: the file cannot be decoded, is not a cough, has no cough segment, or its clip cannot
            be scored (silent or too short after trimming).
    """
    samples, rate = decode(path)
    with _one_thread_per_op():
        verdict = _on_helper(cough_decision, samples, rate, predictor.cough_filter)
        try:
            segments, prepared = _prepared_work(samples, rate, predictor)
            refused = None
        except PredictionRefused as error:
            refused = error
        finally:
            decision = verdict.result()
        check_cough(decision)  # the filter's verdict first, then the segmenter's, as in the sequential steps
        if refused is not None:
            raise refused
        if isinstance(prepared[0], InputRejected):
            raise PredictionRefused(prepared[0].reason, "the recording cannot be scored after preprocessing")
        scores = score_prepared(prepared, predictor)
    probability, reason = scores[0]
    if reason is not None:
        raise PredictionRefused(reason, "the recording cannot be scored after preprocessing")
    return Prediction(
        path=str(path),
        probability=probability,
        positive=probability >= predictor.threshold,
        threshold=predictor.threshold,
        model=predictor.model,
        variant=predictor.variant,
        version=predictor.version,
        cough_probability=float(decision.probability),
        coughs=_cough_table(segments, scores[1:]),
    )


def _cough_table(segments: Sequence[Segment], scores: Sequence[tuple[float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start_s": [s.start_s for s in segments],
            "end_s": [s.end_s for s in segments],
            "probability": [p for p, _ in scores],
            "reason": [r for _, r in scores],
        }
    )
