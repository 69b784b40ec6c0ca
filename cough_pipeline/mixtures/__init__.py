"""Controlled cough-in-noise mixtures: the noise bank and its splits, and scaper-based mixture generation."""

from cough_pipeline.mixtures.errors import MixtureError
from cough_pipeline.mixtures.generate import (
    PROFILES,
    SPLITS,
    MixtureProfile,
    MixtureSet,
    MixtureSpec,
    generate_mixtures,
    mixture_seed,
    mixture_table,
    plan_mixture,
)
from cough_pipeline.mixtures.noise_bank import (
    DEFAULT_FRACTIONS,
    NoiseFile,
    esc50_noise_bank,
    held_out_noise,
    load_noise_bank,
    noise_bank_frame,
    split_noise_bank,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "PROFILES",
    "SPLITS",
    "MixtureError",
    "MixtureProfile",
    "MixtureSet",
    "MixtureSpec",
    "NoiseFile",
    "esc50_noise_bank",
    "generate_mixtures",
    "held_out_noise",
    "load_noise_bank",
    "mixture_seed",
    "mixture_table",
    "noise_bank_frame",
    "plan_mixture",
    "split_noise_bank",
]
