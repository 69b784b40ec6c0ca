"""Scale is a profile, not a code change: ``demo`` runs the whole graph in minutes on a laptop, ``modest`` is a
real but quick run, ``paper`` uses the published sizes (12,000 / 1,500 / 1,000 mixtures, 50 epochs)."""

from __future__ import annotations

from dataclasses import dataclass

from cough_pipeline.mixtures import PROFILES as MIXTURE_PROFILES
from cough_pipeline.mixtures import MixtureProfile


@dataclass(frozen=True)
class Profile:
    """One scale of the pipeline: the separation experiment's mixture counts, the separator's training epochs, the
    batches the SNIP pruning scores connection sensitivity on, the neural classifiers' most epochs, and the
    distillation stage's model, most epochs and outer folds run (0: every fold)."""

    name: str
    mixtures: MixtureProfile
    epochs: int
    snip_batches: int
    classifier_epochs: int
    distillation_model: str = "mobilenetv3_small"
    distillation_epochs: int = 20
    distillation_folds: int = 0


PROFILES = {
    "demo": Profile(
        "demo",
        MIXTURE_PROFILES["demo"],
        epochs=4,
        snip_batches=2,
        classifier_epochs=2,
        distillation_epochs=2,
        distillation_folds=2,
    ),
    "modest": Profile("modest", MIXTURE_PROFILES["modest"], epochs=20, snip_batches=5, classifier_epochs=15),
    "paper": Profile(
        "paper",
        MIXTURE_PROFILES["paper"],
        epochs=50,
        snip_batches=10,
        classifier_epochs=30,
        distillation_model="cnn14",
        distillation_epochs=30,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ValueError naming the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
