"""Cough separation: the published STFT-mask LSTM separator, its training, pruning, evaluation and streaming.

* :mod:`.model`: :class:`SeparatorConfig`, the :class:`StftEncoder` / :class:`MaskEstimator` / :class:`IstftDecoder`
  steps, :class:`CoughSeparator` (95 821 parameters, ``save``/``load``) and the fast :class:`InferenceSeparator`;
* :mod:`.training`: :class:`MixtureDataset` over WAV pairs, :class:`TrainingConfig`, :func:`train_separator` (L1 on
  magnitudes, Adam, best epoch on validation loss, optional fixed pruning masks);
* :mod:`.pruning`: SNIP masks, :func:`~.pruning.train_pruned` and the sparse inference path;
* :mod:`.evaluation` and :mod:`.complexity`: BSSEval scores and model cost; :mod:`.clips`: separated WAVs;
* :mod:`.streaming`: :class:`StreamingSeparator`, chunk-by-chunk output equal to the offline one, 511 samples late.
"""

from cough_pipeline.allocator import retain_freed_memory
from cough_pipeline.separation.model import (
    CoughSeparator,
    InferenceSeparator,
    IstftDecoder,
    MaskEstimator,
    SeparatorConfig,
    StftEncoder,
    expected_parameter_count,
)
from cough_pipeline.separation.streaming import StreamingSeparator, stream
from cough_pipeline.separation.training import (
    ClipReadError,
    MixtureDataset,
    TrainingConfig,
    TrainingResult,
    evaluate_loss,
    l1_magnitude_loss,
    train_on_datasets,
    train_separator,
    train_with_masks,
)

__all__ = [
    "ClipReadError",
    "CoughSeparator",
    "InferenceSeparator",
    "IstftDecoder",
    "MaskEstimator",
    "MixtureDataset",
    "SeparatorConfig",
    "StftEncoder",
    "StreamingSeparator",
    "TrainingConfig",
    "TrainingResult",
    "evaluate_loss",
    "expected_parameter_count",
    "l1_magnitude_loss",
    "retain_freed_memory",
    "stream",
    "train_on_datasets",
    "train_separator",
    "train_with_masks",
]
