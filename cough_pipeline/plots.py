"""Small PNG figures for materialisation metadata (rendered in the Dagster UI)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display: figures are only ever written to bytes
import matplotlib.pyplot as plt  # noqa: E402


def to_png(figure) -> bytes:
    """The figure as PNG bytes; the figure is closed, so pyplot keeps no reference to it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def stacked_bar_png(
    counts: Mapping[str, Mapping[str, int]], title: str, xlabel: str = "", ylabel: str = "rows"
) -> bytes:
    """Bars per outer key, stacked by inner key: e.g. ``{"positive": {"usable": 5, "excluded": 2}}``."""
    categories = list(counts)
    stacks = sorted({inner for values in counts.values() for inner in values})
    figure, axis = plt.subplots(figsize=(6, 3.2))
    bottom = [0] * len(categories)
    for stack in stacks:
        heights = [counts[c].get(stack, 0) for c in categories]
        axis.bar(categories, heights, bottom=bottom, label=stack)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if len(stacks) > 1:
        axis.legend(fontsize="small")
    return to_png(figure)


def waveform_with_segments_png(samples, sample_rate: int, segments_by_method: Mapping[str, list], title: str) -> bytes:
    """The waveform with each method's segments shaded in its own row band (segments have start_s/end_s)."""
    import numpy as np

    figure, axis = plt.subplots(figsize=(9, 3))
    times = np.arange(len(samples)) / sample_rate
    step = max(1, len(samples) // 20_000)  # plotting every sample of a long file adds nothing visible
    axis.plot(times[::step], samples[::step], color="0.3", linewidth=0.5)
    peak = float(np.max(np.abs(samples))) or 1.0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = max(1, len(segments_by_method))
    for row, (method, segments) in enumerate(segments_by_method.items()):
        low = -peak + 2 * peak * row / rows
        for number, segment in enumerate(segments):
            axis.fill_between(
                [segment.start_s, segment.end_s],
                low,
                low + 2 * peak / rows,
                alpha=0.3,
                color=colours[row % len(colours)],
                label=method if number == 0 else None,
            )
    axis.set_xlabel("time (s)")
    axis.set_title(title)
    if segments_by_method:
        axis.legend(loc="upper right", fontsize="small")
    return to_png(figure)


def histogram_png(values, threshold: float | None, title: str, xlabel: str, bins: int = 20) -> bytes:
    """A histogram of ``values`` with an optional vertical threshold line."""
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.hist(list(values), bins=bins, range=(0.0, 1.0), color="tab:blue", alpha=0.8)
    if threshold is not None:
        axis.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
        axis.legend(fontsize="small")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("recordings")
    return to_png(figure)


def loss_curves_png(history, title: str = "separator training", ylabel: str = "L1 magnitude loss") -> bytes:
    """Training and validation loss per epoch (``history`` has ``epoch``, ``train_loss``, ``val_loss``)."""
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    axis.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize="small")
    return to_png(figure)


def spectrogram_grid_png(
    images: Mapping[str, np.ndarray], sample_rate: int, hop_length: int, fmax: float, title: str
) -> bytes:
    """One panel per ``(n_bands, frames)`` array (e.g. log-mel in dB), side by side with a shared colour scale;
    the y axis is band index (mel bands are not linear in Hz), the x axis seconds."""
    import numpy as np

    figure, axes = plt.subplots(1, max(1, len(images)), figsize=(3.2 * max(1, len(images)), 2.8), squeeze=False)
    values = [np.asarray(v, dtype=np.float32) for v in images.values()]
    low = min((float(v.min()) for v in values), default=0.0)
    high = max((float(v.max()) for v in values), default=1.0)
    for axis, (name, array) in zip(axes[0], zip(images, values)):
        seconds = array.shape[1] * hop_length / sample_rate
        shown = axis.imshow(
            array,
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, array.shape[0]),
            vmin=low,
            vmax=high,
            cmap="magma",
        )
        axis.set_title(name, fontsize="small")
        axis.set_xlabel("time (s)")
    axes[0][0].set_ylabel(f"mel band (to {fmax / 1000:g} kHz)")
    figure.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label="dB")
    figure.suptitle(title)
    return to_png(figure)


def confusion_matrix_png(labels, predicted, title: str) -> bytes:
    """The 2 x 2 confusion matrix of 0/1 ``labels`` against 0/1 ``predicted``, counts written in the cells."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    counts = np.array([[np.sum((labels == truth) & (predicted == guess)) for guess in (0, 1)] for truth in (0, 1)])
    figure, axis = plt.subplots(figsize=(3.6, 3.2))
    axis.imshow(counts, cmap="Blues", vmin=0)
    names = ["negative", "positive"]
    axis.set_xticks([0, 1], names)
    axis.set_yticks([0, 1], names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(counts):
        dark = count > counts.max() / 2  # white text on the darker cells stays readable
        axis.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
    axis.set_title(title)
    return to_png(figure)


def roc_curves_png(curves: Mapping[str, tuple], title: str) -> bytes:
    """One ROC curve per name from its ``(labels, probabilities)``, with the AUC in the legend; a name whose
    labels hold one class only is listed as ``AUC n/a`` without a curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="chance")
    for name, (labels, probabilities) in curves.items():
        labels, probabilities = np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float)
        if len(np.unique(labels)) < 2:
            axis.plot([], [], label=f"{name} (AUC n/a)")
            continue
        false_positive, true_positive, _ = roc_curve(labels, probabilities)
        auc = roc_auc_score(labels, probabilities)
        axis.plot(false_positive, true_positive, label=f"{name} (AUC {auc:.2f})")
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_title(title)
    axis.legend(fontsize="small", loc="lower right")
    return to_png(figure)


def reliability_png(curves: Mapping[str, tuple], title: str, n_bins: int = 10) -> bytes:
    """A reliability diagram: per name, each equal-width probability bin's share of positives against its mean
    probability (``(labels, probabilities)`` per name, ECE in the legend), over a histogram of the rows per bin."""
    from cough_pipeline.classification.calibration import expected_calibration_error, reliability_curve

    figure, (axis, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="perfectly calibrated")
    width = 1.0 / (n_bins * max(1, len(curves)))
    for number, (name, (labels, probabilities)) in enumerate(curves.items()):
        curve = reliability_curve(labels, probabilities, n_bins)
        used = curve[curve["n"] > 0]
        ece = expected_calibration_error(labels, probabilities, n_bins)
        axis.plot(used["confidence"], used["accuracy"], marker="o", markersize=3, label=f"{name} (ECE {ece:.3f})")
        # Side-by-side bars per bin, one per curve, so several curves stay readable.
        counts.bar(curve["lower"] + (number + 0.5) * width, curve["n"], width=width, label=name)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_ylabel("share of positives")
    axis.set_title(title)
    axis.legend(fontsize="small", loc="upper left")
    counts.set_xlabel("mean predicted probability")
    counts.set_ylabel("rows")
    return to_png(figure)
