"""How many recordings each corpus size holds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CorpusSize:
    """Counts per dataset for one named corpus size."""

    covid_recordings: int
    """Recordings (or participants, where a participant has several files) per COVID dataset."""
    icbhi_recordings: int
    virufy_patients: int
    aicovidvn_warmup_recordings: int
    noise_files_per_category: int
    esc50_sources_per_class: int = 5
    """Source recordings per ESC-50 class (two takes each)."""


SIZES: dict[str, CorpusSize] = {
    "small": CorpusSize(
        covid_recordings=12,
        icbhi_recordings=20,
        virufy_patients=6,
        aicovidvn_warmup_recordings=4,
        noise_files_per_category=3,
    ),
    "medium": CorpusSize(
        covid_recordings=60,
        icbhi_recordings=30,
        virufy_patients=16,
        aicovidvn_warmup_recordings=12,
        noise_files_per_category=6,
        esc50_sources_per_class=10,
    ),
}
