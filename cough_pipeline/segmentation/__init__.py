"""Cutting recordings that hold several coughs into single coughs (Atmaja et al. 2023 compare both methods).

* ``hysteresis``: the COUGHVID hysteresis comparator on the signal power (:mod:`.hysteresis`);
* ``rms``: a threshold on the min-max normalised frame RMS (:mod:`.rms`).

Both take mono float samples and return :class:`Segment` start/end times; :func:`segment_file` decodes (or, for
long files, streams) a file first, and :func:`write_segments` writes each segment as a WAV. :mod:`.evaluation`
compares automatic with manual segmentations.
"""

from cough_pipeline.segmentation.evaluation import (
    coughs_per_minute,
    count_table,
    fleiss_kappa,
    locate_clips,
    precision_proxy,
)
from cough_pipeline.segmentation.hysteresis import HysteresisConfig, segment_hysteresis
from cough_pipeline.segmentation.io import (
    SegmentedRecording,
    segment_file,
    write_recording_segments,
    write_segments,
)
from cough_pipeline.segmentation.methods import METHODS
from cough_pipeline.segmentation.rms import RmsConfig, segment_rms
from cough_pipeline.segmentation.segments import Segment

__all__ = [
    "METHODS",
    "HysteresisConfig",
    "RmsConfig",
    "Segment",
    "SegmentedRecording",
    "count_table",
    "coughs_per_minute",
    "fleiss_kappa",
    "locate_clips",
    "precision_proxy",
    "segment_file",
    "segment_hysteresis",
    "segment_rms",
    "write_recording_segments",
    "write_segments",
]
