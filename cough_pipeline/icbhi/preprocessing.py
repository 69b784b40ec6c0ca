"""ICBHI preprocessing for models, in four steps (one module each; this module re-exports their public API):

1. :mod:`.windows` — decode, resample to 16 kHz, cut 6 s / 20 s windows (slicing long recordings, loop-padding
   short ones and long enough tails, never padding silence), write them as WAVs: :func:`make_windows`.
2. :mod:`.augmentation` — pitch shift, time shift, Gaussian noise, gain, each with a probability: :func:`augment`.
3. :mod:`.balancing` — ``original`` / ``undersample`` / ``oversample`` / ``hybrid_anchor`` plans over the training
   split only (:func:`balance_plan`, :func:`class_counts`) and their rendering with augmented copies
   (:func:`render_plan`).
4. :mod:`.features` — log-mel (128 mels, fmax 8 kHz, dB re 1.0) and MFCC from one STFT, stacked per window length
   (:func:`feature_arrays`) with a per-window MFCC mean/std table.

Typical flow::

    windows, problems = make_windows(recordings, icbhi_root, WindowConfig(), window_dir)
    plan = balance_plan(windows[windows.window_seconds == 6.0], "hybrid_anchor", seed=0)
    examples = render_plan(plan, windows, window_dir, augmented_dir, AugmentConfig())
    logmel, mfcc_table = feature_arrays(examples, window_dir, FeatureConfig())
"""

from __future__ import annotations

from cough_pipeline.icbhi.augmentation import (
    PITCH_METHODS,
    TRANSFORMS,
    AugmentConfig,
    AugmentError,
    augment,
    augment_with_seed,
    pitch_shift,
)
from cough_pipeline.icbhi.balancing import (
    COUNT_COLUMNS,
    PLAN_COLUMNS,
    STRATEGIES,
    BalancingError,
    BalancingWarning,
    augment_seed,
    balance_per_length,
    balance_plan,
    class_counts,
    render_plan,
)
from cough_pipeline.icbhi.features import (
    FeatureConfig,
    FeatureError,
    feature_arrays,
    feature_arrays_by_length,
    log_mel,
    log_mel_and_mfcc,
    logmel_file,
    mfcc,
    mfcc_columns,
)
from cough_pipeline.icbhi.windows import (
    AUDIO_ABSENT,
    PROBLEM_COLUMNS,
    WINDOW_COLUMNS,
    Window,
    WindowConfig,
    WindowError,
    expected_window_count,
    loop_pad,
    make_windows,
    slice_windows,
    window_label,
    window_samples,
)

__all__ = [
    "AUDIO_ABSENT",
    "COUNT_COLUMNS",
    "PITCH_METHODS",
    "PLAN_COLUMNS",
    "PROBLEM_COLUMNS",
    "STRATEGIES",
    "TRANSFORMS",
    "WINDOW_COLUMNS",
    "AugmentConfig",
    "AugmentError",
    "BalancingError",
    "BalancingWarning",
    "FeatureConfig",
    "FeatureError",
    "Window",
    "WindowConfig",
    "WindowError",
    "augment",
    "augment_seed",
    "augment_with_seed",
    "balance_per_length",
    "balance_plan",
    "class_counts",
    "expected_window_count",
    "feature_arrays",
    "feature_arrays_by_length",
    "log_mel",
    "log_mel_and_mfcc",
    "logmel_file",
    "loop_pad",
    "make_windows",
    "mfcc",
    "mfcc_columns",
    "pitch_shift",
    "render_plan",
    "slice_windows",
    "window_label",
    "window_samples",
]
