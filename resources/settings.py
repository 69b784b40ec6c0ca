"""Run-wide settings: the scale profile, the seed every stochastic stage derives from, the torch device, and the
noise bank the separation stages mix coughs with."""

import os
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource, ResourceDependency

from cough_pipeline.bounds import PositiveInt, Seed
from cough_pipeline.mixtures import esc50_noise_bank, load_noise_bank, split_noise_bank
from cough_pipeline.profiles import PROFILES, Profile, get_profile
from cough_pipeline.separation.model import resolve_device
from resources.config_types import OneOf, bounded
from resources.data_roots import DataRoots
from resources.environment import DEFAULT_PROFILE, PROFILE, profile_problem


class PipelineSettings(ConfigurableResource):
    """``profile`` (``demo`` | ``modest`` | ``paper``; default ``$COUGH_PIPELINE_PROFILE`` or demo), ``seed``,
    ``device`` (empty: CUDA when available, else CPU) and ``workers`` (processes for parallel stages)."""

    #: Empty: ``$COUGH_PIPELINE_PROFILE``, else ``demo``.
    profile: OneOf(
        "profile", ("", *PROFILES), lambda value: profile_problem("resources.settings.config.profile", value)
    ) = ""
    seed: bounded(Seed) = 0
    device: str = ""
    workers: bounded(PositiveInt) = 2

    def scale(self) -> Profile:
        """The configured profile, else ``$COUGH_PIPELINE_PROFILE``, else ``demo``; a name that is not a profile is a
        one-line ``ValueError`` naming where it was set and the profiles."""
        if self.profile:
            setting, name = "resources.settings.config.profile", self.profile
        else:
            setting, name = PROFILE, os.environ.get(PROFILE) or DEFAULT_PROFILE
        problem = profile_problem(setting, name)
        if problem:
            raise ValueError(problem)
        return get_profile(name)

    def torch_device(self):
        return resolve_device(self.device or None)


class NoiseBank(ConfigurableResource):
    """Folders of noise WAVs with provenance: the demo bank by default, any ``<category>/*.wav`` folder or a
    ``noise_bank.csv`` folder (``DataRoots.noise`` / ``$COUGH_PIPELINE_NOISE_ROOT``), or ESC-50 (``esc50_root``:
    every class but ``coughing``). Split by file so test noises are never heard in training."""

    data_roots: ResourceDependency[DataRoots]
    esc50_root: str = ""

    def bank(self) -> pd.DataFrame:
        if self.esc50_root:
            return esc50_noise_bank(Path(self.esc50_root))
        configured = self.data_roots.configured_root("noise")
        folder = Path(configured) if configured else self.data_roots.demo_corpus([]) / "noise"
        return load_noise_bank(folder)

    def split_bank(self, seed: int) -> pd.DataFrame:
        """The bank with a ``split`` column (train / validation / test)."""
        return split_noise_bank(self.bank(), seed=seed)
