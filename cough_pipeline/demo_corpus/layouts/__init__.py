"""One writer per dataset, each laying out files exactly as the real release does.

A writer takes the (empty) folder to fill, its own random generator and the
corpus size, and writes everything except ``DEMO.md`` and ``.complete``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus.layouts.aicovidvn import write_aicovidvn
from cough_pipeline.demo_corpus.layouts.ccs import write_ccs
from cough_pipeline.demo_corpus.layouts.coswara import write_coswara
from cough_pipeline.demo_corpus.layouts.coughvid import write_coughvid
from cough_pipeline.demo_corpus.layouts.esc50 import write_esc50
from cough_pipeline.demo_corpus.layouts.iatos import write_iatos
from cough_pipeline.demo_corpus.layouts.icbhi import write_icbhi
from cough_pipeline.demo_corpus.layouts.noise import write_noise
from cough_pipeline.demo_corpus.layouts.ukcovid import write_ukcovid
from cough_pipeline.demo_corpus.layouts.virufy import write_virufy
from cough_pipeline.demo_corpus.sizes import CorpusSize

LayoutWriter = Callable[[Path, np.random.Generator, CorpusSize], None]

WRITERS: dict[str, LayoutWriter] = {
    "ccs": write_ccs,
    "iatos": write_iatos,
    "coswara": write_coswara,
    "aicovidvn": write_aicovidvn,
    "coughvid": write_coughvid,
    "ukcovid": write_ukcovid,
    "virufy": write_virufy,
    "icbhi": write_icbhi,
    "esc50": write_esc50,
    "noise": write_noise,
}
