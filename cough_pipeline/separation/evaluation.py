"""Scoring cough separation: BSSEval v4 (``museval``) SDR / SIR / SAR / ISR and a plain SNR, per clip and per system.

Conventions
-----------
* **Window: the whole clip.** BSSEval v4 is computed with one window spanning the clip (``museval.metrics.bss_eval``
  with ``window = hop = len(clip)``, time-invariant distortion filters of 512 taps, the "images" variant SiSEC uses,
  no permutation). museval's default of 1-s windows aggregated by median suits music, where every source sounds
  for most of the track; a cough lasts a few hundred milliseconds in a 5-s clip, so most 1-s windows hold no
  cough (museval returns NaN for an exactly silent window) or only its tail, and the median would score the
  windows that matter least. ``window_seconds`` switches to museval's framewise scores aggregated by the median
  over the windows that could be scored, for comparison with SiSEC-style figures.
* **Sources.** The references are the cough stem and the noise stem; the estimates are the separated cough and
  ``mixture - separated cough``. Only the cough's scores are reported. In BSSEval v4 without permutation they
  depend on the cough estimate and both references only, not on the noise estimate; museval nevertheless refuses
  an all-zero estimate for any source, which is exactly what the unprocessed-mixture baseline gives
  (``mixture - mixture``), so an all-zero noise estimate is replaced by the reference noise before calling
  museval (this changes no cough score; a test checks it).
* **SNR** is ``10 log10(sum(cough**2) / sum((cough - estimate)**2))`` on the whole clip, in float64.
* **Improvement** of a system on a clip is its score minus the unprocessed mixture's score on the same clip
  (so the baseline's SDR is the input SNR and its improvement 0); the summary aggregates these per-clip
  differences (the median improvement is not the difference of the medians).
* **Degenerate clips** never raise: a silent (RMS < 1e-6) or non-finite reference, or a silent or non-finite
  estimate, gives NaN scores and a ``reason``; summaries skip NaN and count the clips they could score.
  A perfect estimate gives ``inf`` (BSSEval divides by an error energy of zero), which is kept, not clipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cough_pipeline.audio import load_mono

#: Name of the baseline system whose cough estimate is the mixture itself.
MIXTURE_BASELINE = "unprocessed mixture"
#: Score columns of the per-clip table, in order.
METRICS = ("sdr", "sir", "sar", "isr", "snr")
#: Mean power below which a signal counts as silent (RMS 1e-6, -120 dB re full scale).
SILENCE_POWER = 1e-12
#: Length of museval's distortion filters (its default; 512 taps = 11.6 ms at 44.1 kHz).
DISTORTION_FILTER_TAPS = 512

Separator = Callable[[np.ndarray], np.ndarray]
Signal = np.ndarray | str | Path


class ScoreIssue(str, Enum):
    """Why a clip's BSSEval scores are NaN."""

    NON_FINITE = "non_finite"
    SILENT_REFERENCE_COUGH = "silent_reference_cough"
    SILENT_REFERENCE_NOISE = "silent_reference_noise"
    SILENT_ESTIMATE = "silent_estimate"
    NO_SCORABLE_WINDOW = "no_scorable_window"


@dataclass(frozen=True)
class BssEvalScores:
    """BSSEval v4 scores of the cough estimate in dB; all NaN with a ``reason`` when the clip cannot be scored."""

    sdr: float
    sir: float
    sar: float
    isr: float
    reason: str | None = None

    @classmethod
    def unscorable(cls, issue: ScoreIssue) -> BssEvalScores:
        return cls(math.nan, math.nan, math.nan, math.nan, issue.value)


def is_silent(signal: np.ndarray) -> bool:
    """True when the mean power of ``signal`` (any shape) is below :data:`SILENCE_POWER`."""
    return signal.size == 0 or float(np.mean(np.square(signal, dtype=np.float64))) < SILENCE_POWER


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``estimate`` ``(samples,)`` against ``reference`` ``(samples,)`` in dB.

    ``inf`` for a perfect estimate, NaN for a silent or non-finite reference or a non-finite estimate.
    """
    reference, estimate = _same_length_pair(reference, estimate, "reference", "estimate")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(estimate))) or is_silent(reference):
        return math.nan
    error_energy = float(np.sum(np.square(reference - estimate)))
    if error_energy == 0.0:
        return math.inf
    return 10.0 * math.log10(float(np.sum(np.square(reference))) / error_energy)


def bss_eval(
    reference_cough: np.ndarray,
    reference_noise: np.ndarray,
    estimate_cough: np.ndarray,
    estimate_noise: np.ndarray,
    sample_rate: int,
    window_seconds: float | None = None,
) -> BssEvalScores:
    """BSSEval v4 SDR, SIR, SAR and ISR of ``estimate_cough``; every signal is mono ``(samples,)``, equally long.

    ``estimate_noise`` is normally ``mixture - estimate_cough``. With ``window_seconds`` None the whole clip is one
    window; otherwise museval scores windows of that length (hop = window) and the median over the scorable
    windows is returned. See the module docstring for why the whole clip is the default.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    reference_cough, reference_noise = _same_length_pair(
        reference_cough, reference_noise, "reference_cough", "reference_noise"
    )
    estimate_cough, estimate_noise = _same_length_pair(
        estimate_cough, estimate_noise, "estimate_cough", "estimate_noise"
    )
    _same_length_pair(reference_cough, estimate_cough, "reference_cough", "estimate_cough")
    issue = _bss_eval_issue(reference_cough, reference_noise, estimate_cough, estimate_noise)
    if issue is not None:
        return BssEvalScores.unscorable(issue)
    if is_silent(estimate_noise):
        estimate_noise = reference_noise
    window = len(reference_cough) if window_seconds is None else _window_samples(window_seconds, sample_rate)
    # Imported here: importing museval starts ffmpeg detection, which the rest of the module does not need.
    import museval.metrics

    references = np.stack([reference_cough, reference_noise])[:, :, np.newaxis]
    estimates = np.stack([estimate_cough, estimate_noise])[:, :, np.newaxis]
    sdr, isr, sir, sar, _ = museval.metrics.bss_eval(
        references,
        estimates,
        window=window,
        hop=window,
        compute_permutation=False,
        filters_len=DISTORTION_FILTER_TAPS,
        framewise_filters=False,
        bsseval_sources_version=False,
    )
    cough_windows = np.stack([sdr[0], sir[0], sar[0], isr[0]])  # (4, windows)
    scorable = ~np.isnan(cough_windows[0])
    if not scorable.any():
        return BssEvalScores.unscorable(ScoreIssue.NO_SCORABLE_WINDOW)
    medians = np.median(cough_windows[:, scorable], axis=1)
    return BssEvalScores(*(float(value) for value in medians))


def model_separator(model: torch.nn.Module, device: str | torch.device = "cpu") -> Separator:
    """Wrap a separation model (``(batch, samples) -> (batch, samples)`` cough waves) as a numpy
    ``(samples,) -> (samples,)`` float32 callable for :func:`evaluate_separation`."""
    model = model.to(device).eval()

    def separate(mixture: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            wave = torch.as_tensor(np.asarray(mixture, dtype=np.float32), device=device).unsqueeze(0)
            return model(wave).squeeze(0).float().cpu().numpy()

    return separate


def evaluate_mixtures(
    mixtures: pd.DataFrame, root: str | Path, models: Mapping[str, torch.nn.Module]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_separation` of ``models`` on the rows of a mixture table.

    Args:
        mixtures: ``mixture_id`` (the clip ids) and ``mixture_path`` / ``cough_path`` / ``noise_path`` relative
            to ``root``.
        root: the folder the paths are relative to.
        models: separation models by system name, each run through :func:`model_separator` on the CPU.

    Returns:
        ``(per_clip, summary)`` as :func:`evaluate_separation` returns them.
    """
    root = Path(root)
    rows = [
        (str(root / m), str(root / c), str(root / n))
        for m, c, n in zip(mixtures["mixture_path"], mixtures["cough_path"], mixtures["noise_path"])
    ]
    separators = {name: model_separator(model) for name, model in models.items()}
    return evaluate_separation(rows, separators, clip_ids=mixtures["mixture_id"].tolist())


def evaluate_separation(
    rows: Iterable[tuple[Signal, Signal, Signal]],
    separators: Mapping[str, Separator],
    sample_rate: int = 44_100,
    window_seconds: float | None = None,
    clip_ids: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every separator, and the unprocessed mixture, on every ``(mixture, cough, noise)`` row.

    Each signal is a mono ``(samples,)`` array at ``sample_rate`` or an audio path (decoded, mixed to mono and
    resampled to ``sample_rate``); signals are handled as float32, scores computed in float64. A separator maps
    the float32 mixture ``(samples,)`` to a cough estimate of the same shape. ``clip_ids`` name the rows (default:
    the mixture's path, or the row's position). Returns ``(per_clip, summary)``:

    * ``per_clip``: one row per (clip, system) with ``clip``, ``system``, ``sdr``, ``sir``, ``sar``, ``isr``,
      ``snr``, ``reason`` (why the BSSEval scores are NaN, else None) and ``<metric>_improvement`` = the system's
      score minus the unprocessed mixture's on the same clip;
    * ``summary``: one row per system (index ``system``, the baseline first) with ``clips``, ``scored`` (clips
      with a finite-or-infinite SDR), and ``<metric>_median``, ``<metric>_mean``, ``<metric>_improvement_median``,
      ``<metric>_improvement_mean`` (NaN skipped).
    """
    if MIXTURE_BASELINE in separators:
        raise ValueError(f"{MIXTURE_BASELINE!r} is the built-in baseline; give your separator another name")
    systems: dict[str, Separator] = {MIXTURE_BASELINE: lambda mixture: mixture, **separators}
    records, seen_clips = [], set()
    for index, (mixture, cough, noise) in enumerate(rows):
        clip = clip_ids[index] if clip_ids is not None else _clip_name(mixture, index)
        if clip in seen_clips:
            raise ValueError(f"clip {clip!r} appears twice; clip ids must be unique")
        seen_clips.add(clip)
        mixture, cough, noise = (_load(signal, sample_rate) for signal in (mixture, cough, noise))
        for system, separate in systems.items():
            estimate = _estimate(separate, mixture, system, clip)
            estimate_noise = mixture.astype(np.float64) - estimate
            scores = bss_eval(cough, noise, estimate, estimate_noise, sample_rate, window_seconds)
            records.append({"clip": clip, "system": system, **asdict(scores), "snr": snr_db(cough, estimate)})
    if not records:
        raise ValueError("evaluate_separation needs at least one (mixture, cough, noise) row")
    per_clip = _with_improvements(pd.DataFrame.from_records(records))
    return per_clip, summarise(per_clip)


def summarise(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Per-system medians and means of the scores and of their improvements (see :func:`evaluate_separation`)."""
    grouped = per_clip.groupby("system", sort=False)
    summary = pd.DataFrame({"clips": grouped.size(), "scored": grouped["sdr"].count()})
    for metric in METRICS:
        for column in (metric, f"{metric}_improvement"):
            summary[f"{column}_median"] = grouped[column].median()
            summary[f"{column}_mean"] = grouped[column].mean()
    return summary


def _with_improvements(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Add ``<metric>_improvement`` = score minus the mixture baseline's score on the same clip."""
    baseline = per_clip[per_clip["system"] == MIXTURE_BASELINE].set_index("clip")[list(METRICS)]
    baseline_scores = baseline.loc[per_clip["clip"]].to_numpy()
    improvements = per_clip[list(METRICS)].to_numpy() - baseline_scores
    for position, metric in enumerate(METRICS):
        per_clip[f"{metric}_improvement"] = improvements[:, position]
    return per_clip[["clip", "system", *METRICS, "reason", *(f"{m}_improvement" for m in METRICS)]]


def _bss_eval_issue(
    reference_cough: np.ndarray, reference_noise: np.ndarray, estimate_cough: np.ndarray, estimate_noise: np.ndarray
) -> ScoreIssue | None:
    """The reason museval cannot score these signals, or None."""
    signals = (reference_cough, reference_noise, estimate_cough, estimate_noise)
    if not all(np.all(np.isfinite(signal)) for signal in signals):
        return ScoreIssue.NON_FINITE
    if is_silent(reference_cough):
        return ScoreIssue.SILENT_REFERENCE_COUGH
    if is_silent(reference_noise):
        return ScoreIssue.SILENT_REFERENCE_NOISE
    if is_silent(estimate_cough):
        return ScoreIssue.SILENT_ESTIMATE
    return None


def _same_length_pair(
    first: np.ndarray, second: np.ndarray, first_name: str, second_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 ``(samples,)``; a shape mismatch is a caller's error."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.ndim != 1 or first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must be mono (samples,) arrays of one length, "
            f"got {first.shape} and {second.shape}"
        )
    return first, second


def _window_samples(window_seconds: float, sample_rate: int) -> int:
    window = round(window_seconds * sample_rate)
    if window < DISTORTION_FILTER_TAPS:
        raise ValueError(
            f"window_seconds={window_seconds} is shorter than the {DISTORTION_FILTER_TAPS}-tap "
            f"distortion filters at {sample_rate} Hz"
        )
    return window


def _load(signal: Signal, sample_rate: int) -> np.ndarray:
    """A float32 ``(samples,)`` array from an array or an audio path (resampled to ``sample_rate``)."""
    if isinstance(signal, (str, Path)):
        signal, _ = load_mono(signal, sample_rate)
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"signals must be mono (samples,) arrays, got shape {signal.shape}")
    return signal


def _estimate(separate: Separator, mixture: np.ndarray, system: str, clip: str) -> np.ndarray:
    """The system's cough estimate as float64, checked to have the mixture's shape."""
    estimate = np.asarray(separate(mixture), dtype=np.float64)
    if estimate.shape != mixture.shape:
        raise ValueError(
            f"separator {system!r} returned shape {estimate.shape} for clip {clip!r} "
            f"with a mixture of shape {mixture.shape}"
        )
    return estimate


def _clip_name(mixture: Signal, index: int) -> str:
    return str(mixture) if isinstance(mixture, (str, Path)) else str(index)
