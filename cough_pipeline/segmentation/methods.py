"""The registry of segmentation methods, by the name configs and Dagster runs use."""

from __future__ import annotations

from cough_pipeline.segmentation.hysteresis import HysteresisConfig, HysteresisSegmenter, segment_hysteresis
from cough_pipeline.segmentation.rms import RmsConfig, RmsSegmenter, segment_rms

#: name -> (in-memory segmentation function, its config dataclass).
METHODS = {"hysteresis": (segment_hysteresis, HysteresisConfig), "rms": (segment_rms, RmsConfig)}

#: name -> block segmenter class, for recordings streamed from disk.
BLOCK_SEGMENTERS = {"hysteresis": HysteresisSegmenter, "rms": RmsSegmenter}


def resolve_method(method: str, config=None):
    """The in-memory function, the block segmenter class and the config of ``method``.

    Args:
        method: a name in :data:`METHODS`.
        config: the method's config dataclass (None: its defaults).

    Returns:
        ``(function, segmenter class, config)``.

    Raises:
        ValueError: for an unknown method.
        TypeError: for a config of another method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; known: {sorted(METHODS)}")
    function, config_class = METHODS[method]
    if config is None:
        config = config_class()
    if not isinstance(config, config_class):
        raise TypeError(f"method {method!r} takes a {config_class.__name__}, got {type(config).__name__}")
    return function, BLOCK_SEGMENTERS[method], config
