"""The cough/non-cough filter: a feature scaler plus an XGBoost booster, stored as JSON (never pickles).

:class:`CoughClassifier` loads the pretrained COUGHVID model (``cough_classifier.json`` and
``cough_classification_scaler.json``) or one trained by :mod:`cough_pipeline.cough_filter.training`, and turns a
clip into a :class:`CoughDecision`. As in the COUGHVID code, a clip whose features cannot be computed gets
probability 0; unlike it, the decision says why (``reason``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from cough_pipeline.audio import decode_audio, load_mono
from cough_pipeline.cough_filter.features import (
    FEATURE_NAMES,
    N_FEATURES,
    UnusableSignalError,
    as_float_samples,
    extract_features,
)

#: COUGHVID's cut-off: a recording with a cough probability of at least 0.8 counts as a cough.
DEFAULT_THRESHOLD = 0.8
#: A sample at or above this fraction of full scale counts as clipped.
CLIPPING_LEVEL = 0.999
#: File names inside a folder written by :meth:`CoughClassifier.save`.
BOOSTER_FILE = "booster.json"
SCALER_FILE = "scaler.json"
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_FORMAT = "cough_pipeline.cough_filter/1"
#: File names of the pretrained COUGHVID model, converted to JSON (the COUGHVID reference model, see README).
COUGHVID_BOOSTER_FILE = "cough_classifier.json"
COUGHVID_SCALER_FILE = "cough_classification_scaler.json"
_GENERIC_FEATURE_NAMES = tuple(f"f{i}" for i in range(N_FEATURES))


class CoughModelError(Exception):
    """A model or scaler file that is missing, unreadable or does not fit the 68 COUGHVID features."""


@dataclass(frozen=True)
class CoughDecision:
    """The filter's verdict on one clip.

    ``reason`` is None when the features were computed, otherwise a :class:`~.features.SignalIssue` value
    (``silent``, ``too_short``, ``non_finite``, ``sample_rate_too_low``, ``degenerate``) and the probability is 0.
    ``clipping_fraction`` is the share of samples at full scale; clipping does not reject a clip.
    """

    probability: float
    is_cough: bool
    reason: str | None
    clipping_fraction: float


@dataclass(frozen=True)
class FeatureScaler:
    """Standardisation equal to scikit-learn's ``StandardScaler``: ``(x - mean) / scale``, each ``(68,)``."""

    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    n_samples_seen: int

    @classmethod
    def fit(cls, feature_matrix: np.ndarray) -> FeatureScaler:
        """Mean and population variance per feature column.

        Args:
            feature_matrix: one row of :data:`FEATURE_NAMES` features per clip, all finite.

        Returns:
            The scaler; a zero-variance column gets scale 1, as in sklearn.

        Shape:
            feature_matrix: ``(n, 68)``.
        """
        matrix = _checked_feature_matrix(feature_matrix)
        var = matrix.var(axis=0)
        scale = np.sqrt(var)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
        return cls(mean=matrix.mean(axis=0), var=var, scale=scale, n_samples_seen=matrix.shape[0])

    def transform(self, feature_matrix: np.ndarray) -> np.ndarray:
        """Standardised copy of a feature matrix.

        Shape:
            feature_matrix: ``(n, 68)``; returns ``(n, 68)``.
        """
        return (feature_matrix - self.mean) / self.scale

    def to_json_dict(self) -> dict:
        """The schema of ``cough_classification_scaler.json``."""
        return {
            "feature_names": list(FEATURE_NAMES),
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "scale": self.scale.tolist(),
            "n_samples_seen": self.n_samples_seen,
            "with_mean": True,
            "with_std": True,
        }

    @classmethod
    def from_json_dict(cls, payload: dict, origin: str) -> FeatureScaler:
        """Parse and validate a scaler JSON object; ``origin`` names the file in error messages."""
        if not isinstance(payload, dict):
            raise CoughModelError(f"{origin}: expected a JSON object, got {type(payload).__name__}")
        missing = [key for key in ("feature_names", "mean", "var", "scale") if key not in payload]
        if missing:
            raise CoughModelError(f"{origin}: missing keys {missing}")
        names = tuple(payload["feature_names"])
        if len(names) != N_FEATURES:
            raise CoughModelError(f"{origin}: has {len(names)} features, the cough filter needs {N_FEATURES}")
        if names != FEATURE_NAMES:
            wrong = [
                f"{i}: {got!r} != {want!r}" for i, (got, want) in enumerate(zip(names, FEATURE_NAMES)) if got != want
            ]
            raise CoughModelError(f"{origin}: feature names differ from FEATURE_NAMES at {'; '.join(wrong[:3])}")
        vectors = {key: np.asarray(payload[key], dtype=np.float64) for key in ("mean", "var", "scale")}
        for key, vector in vectors.items():
            if vector.shape != (N_FEATURES,) or not np.isfinite(vector).all():
                raise CoughModelError(
                    f"{origin}: '{key}' must be {N_FEATURES} finite numbers, got shape {vector.shape}"
                )
        if (vectors["scale"] <= 0).any():
            raise CoughModelError(f"{origin}: 'scale' must be positive")
        return cls(n_samples_seen=int(payload.get("n_samples_seen", 0)), **vectors)


@dataclass
class CoughClassifier:
    """Scaler + XGBoost booster over :data:`FEATURE_NAMES`; ``threshold`` turns a probability into ``is_cough``."""

    booster: xgb.Booster
    scaler: FeatureScaler
    feature_names: tuple[str, ...] = FEATURE_NAMES
    threshold: float = DEFAULT_THRESHOLD
    source: str = ""
    training: dict | None = None
    #: Files are resampled to this rate before :meth:`classify_file` when set. COUGHVID's features assume about
    #: 48 kHz input (a nominal 12 kHz after decimation), so a model trained on one rate scores other rates
    #: consistently only if they are brought to it. ``None`` (the COUGHVID behaviour) keeps each file's rate.
    input_sample_rate: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise CoughModelError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.input_sample_rate is not None and self.input_sample_rate <= 0:
            raise CoughModelError(f"input_sample_rate must be positive or None, got {self.input_sample_rate}")
        if tuple(self.feature_names) != FEATURE_NAMES:
            raise CoughModelError("feature_names must equal cough_pipeline.cough_filter.features.FEATURE_NAMES")
        _check_booster(self.booster, "booster")

    @classmethod
    def load(
        cls, booster_json: Path, scaler_json: Path, threshold: float = DEFAULT_THRESHOLD, source: str | None = None
    ) -> CoughClassifier:
        """Load an xgboost JSON booster and a scaler JSON.

        Args:
            booster_json: native xgboost JSON model over the 68 features (binary logistic).
            scaler_json: the scaler, in the schema of :meth:`FeatureScaler.to_json_dict`.
            threshold: the probability at or above which a clip is a cough.
            source: where the model came from, for the model card (default: the two file names).

        Returns:
            The classifier, keeping each file's own rate (no ``input_sample_rate``).

        Raises:
            CoughModelError: naming the missing, malformed or mismatched file.
        """
        booster_json, scaler_json = Path(booster_json), Path(scaler_json)
        scaler = FeatureScaler.from_json_dict(_read_json(scaler_json), scaler_json.name)
        booster = _load_booster(booster_json)
        return cls(
            booster=booster,
            scaler=scaler,
            threshold=threshold,
            source=source or f"{booster_json.name} + {scaler_json.name}",
        )

    @classmethod
    def from_coughvid_folder(cls, folder: Path, threshold: float = DEFAULT_THRESHOLD) -> CoughClassifier:
        """The pretrained COUGHVID model from the folder holding its two converted JSON files.

        Args:
            folder: holds ``cough_classifier.json`` and ``cough_classification_scaler.json``.
            threshold: the probability at or above which a clip is a cough (COUGHVID: 0.8).

        Returns:
            The classifier. Raises :class:`CoughModelError` for a missing or mismatched file.
        """
        folder = Path(folder)
        return cls.load(
            folder / COUGHVID_BOOSTER_FILE,
            folder / COUGHVID_SCALER_FILE,
            threshold,
            source="COUGHVID pretrained XGBoost cough classifier (EPFL ESL, Orlandic et al. 2021)",
        )

    @classmethod
    def from_folder(cls, folder: Path) -> CoughClassifier:
        """Load a folder written by :meth:`save` (booster, scaler and model card).

        Args:
            folder: a folder :meth:`save` wrote.

        Returns:
            The classifier with the card's threshold, source, training report and input rate.
            Raises :class:`CoughModelError` for a missing, malformed or mismatched file.
        """
        folder = Path(folder)
        card = _read_json(folder / MODEL_CARD_FILE)
        if not isinstance(card, dict) or card.get("format") != MODEL_CARD_FORMAT:
            raise CoughModelError(f"{MODEL_CARD_FILE}: not a cough filter model card (format {MODEL_CARD_FORMAT!r})")
        if tuple(card.get("feature_names", ())) != FEATURE_NAMES:
            raise CoughModelError(f"{MODEL_CARD_FILE}: feature list differs from FEATURE_NAMES")
        threshold = card.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise CoughModelError(f"{MODEL_CARD_FILE}: 'threshold' must be a number, got {threshold!r}")
        classifier = cls.load(folder / BOOSTER_FILE, folder / SCALER_FILE, float(threshold), card.get("source"))
        classifier.training = card.get("training")
        classifier.input_sample_rate = card.get("input_sample_rate")
        return classifier

    @classmethod
    def from_pretrained(cls, folder: Path) -> CoughClassifier:
        """Either kind of model folder: one written by :meth:`save` (it has a model card) or the COUGHVID files.

        Args:
            folder: a saved model or the COUGHVID files.

        Returns:
            The classifier. Raises :class:`CoughModelError` when the folder holds neither.
        """
        folder = Path(folder)
        if (folder / MODEL_CARD_FILE).is_file():
            return cls.from_folder(folder)
        if (folder / COUGHVID_BOOSTER_FILE).is_file() or (folder / COUGHVID_SCALER_FILE).is_file():
            return cls.from_coughvid_folder(folder)
        raise CoughModelError(
            f"{folder} holds neither {MODEL_CARD_FILE} (a saved model) nor "
            f"{COUGHVID_BOOSTER_FILE} + {COUGHVID_SCALER_FILE} (the COUGHVID model)"
        )

    def save(self, folder: Path) -> Path:
        """Write ``booster.json`` (native xgboost JSON), ``scaler.json`` and ``model_card.json``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / BOOSTER_FILE))
        _write_json(folder / SCALER_FILE, self.scaler.to_json_dict())
        _write_json(folder / MODEL_CARD_FILE, self.model_card())
        return folder

    def model_card(self) -> dict:
        """What the model is: features, threshold, where it came from, and its training report if any."""
        return {
            "format": MODEL_CARD_FORMAT,
            "feature_names": list(self.feature_names),
            "threshold": self.threshold,
            "source": self.source,
            "training": self.training,
            "xgboost_version": xgb.__version__,
            "input_sample_rate": self.input_sample_rate,
            "booster_file": BOOSTER_FILE,
            "scaler_file": SCALER_FILE,
        }

    def probabilities(self, feature_matrix: np.ndarray) -> np.ndarray:
        """Cough probability of each row of a feature matrix.

        Args:
            feature_matrix: unscaled features in :data:`FEATURE_NAMES` order, all finite.

        Returns:
            float64 probabilities.

        Raises:
            ValueError: for another shape or non-finite features.

        Shape:
            feature_matrix: ``(n, 68)``; returns ``(n,)``.
        """
        standardised = self.scaler.transform(_checked_feature_matrix(feature_matrix))
        return np.asarray(self.booster.inplace_predict(standardised), dtype=np.float64)

    def classify(self, samples: np.ndarray, sample_rate: int) -> CoughDecision:
        """The decision on a raw clip; an unusable clip gets probability 0 and a ``reason``.

        Args:
            samples: the clip, integer PCM or float.
            sample_rate: its rate (Hz).

        Returns:
            Probability, decision at :attr:`threshold`, reason (None when scored) and clipping fraction.

        Shape:
            samples: ``(frames,)`` or ``(frames, channels)``.
        """
        clipped = clipping_fraction(samples)
        try:
            features = extract_features(samples, sample_rate)
        except UnusableSignalError as error:
            return CoughDecision(probability=0.0, is_cough=False, reason=error.reason.value, clipping_fraction=clipped)
        probability = float(self.probabilities(features[np.newaxis, :])[0])
        return CoughDecision(
            probability=probability, is_cough=probability >= self.threshold, reason=None, clipping_fraction=clipped
        )

    def probability(self, samples: np.ndarray, sample_rate: int) -> float:
        """Cough probability of a raw clip (0 when its features cannot be computed, as in COUGHVID).

        Shape:
            samples: ``(frames,)`` or ``(frames, channels)``.
        """
        return self.classify(samples, sample_rate).probability

    def classify_file(self, path: Path) -> CoughDecision:
        """Decode a file and classify it, at :attr:`input_sample_rate` when set (mono), else at its own rate.

        Args:
            path: an audio file.

        Returns:
            The decision, as :meth:`classify`.

        Raises:
            AudioDecodeError: with its quarantine reason, for a file that cannot be decoded (NaN samples included).
        """
        if self.input_sample_rate is None:
            decoded = decode_audio(path)
            return self.classify(decoded.samples, decoded.sample_rate)
        return self.classify(*load_mono(path, self.input_sample_rate))


def clipping_fraction(samples: np.ndarray) -> float:
    """Share of samples (over all channels) at or above :data:`CLIPPING_LEVEL` of full scale; 0 for no samples.

    Shape:
        samples: ``(frames,)`` or ``(frames, channels)``, integer PCM or float.
    """
    values = as_float_samples(samples)
    if values.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(values) >= CLIPPING_LEVEL) / values.size)


def _checked_feature_matrix(feature_matrix: np.ndarray) -> np.ndarray:
    """``feature_matrix`` as float64 ``(n, 68)``, or a ValueError saying what is wrong with it."""
    matrix = np.asarray(feature_matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != N_FEATURES:
        raise ValueError(f"expected a feature matrix of shape (n, {N_FEATURES}), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("the feature matrix contains NaN or infinite values")
    return matrix


def _read_json(path: Path):
    """Parsed JSON of ``path``, or a :class:`CoughModelError` saying it is missing or malformed."""
    if not path.is_file():
        raise CoughModelError(f"{path.name}: no such file at {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CoughModelError(f"{path.name}: not valid JSON ({error})") from None


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _load_booster(path: Path) -> xgb.Booster:
    """An xgboost Booster from a JSON model file, with file-named errors."""
    _read_json(path)  # a clear message for a missing or non-JSON file before xgboost's own
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as error:
        raise CoughModelError(f"{path.name}: xgboost cannot load it ({str(error).splitlines()[0]})") from None
    _check_booster(booster, path.name)
    return booster


def _check_booster(booster: xgb.Booster, origin: str) -> None:
    """The booster must be a binary logistic model over exactly the 68 features."""
    if booster.num_features() != N_FEATURES:
        raise CoughModelError(
            f"{origin}: the booster has {booster.num_features()} features, the cough filter needs {N_FEATURES}"
        )
    names = tuple(booster.feature_names or ())
    if names and names not in (FEATURE_NAMES, _GENERIC_FEATURE_NAMES):
        raise CoughModelError(
            f"{origin}: the booster's feature names are neither FEATURE_NAMES nor f0..f{N_FEATURES - 1}"
        )
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective != "binary:logistic":
        raise CoughModelError(f"{origin}: objective is {objective!r}, expected 'binary:logistic'")
