"""Demographic association tests and duration summaries over the ICBHI tables of :mod:`.tables`.

:func:`association_tests` runs, at one level of observation (:func:`association_table`: at several),

* age × lung-sound label and age × diagnosis: one-way ANOVA with the correlation ratio η (and η²);
* sex × lung-sound label and sex × diagnosis: chi-square test of independence with Cramér's V (and V²).

Levels (one observation per ...):

* ``"recording"``: recording, with its ``lung_label`` under the tables' label rule (the ICBHI convention);
* ``"patient"``: patient, with their age, sex and diagnosis, and as ``lung_label`` the tables' label rule
  applied to all of the patient's kept cycles pooled (for the "any" rule: crackles if any of their cycles has
  crackles, and so on);
* ``"cycle"``: respiratory cycle, with its own ``cycle_label`` in the ``lung_label`` role.

Only the patient level has independent observations; recordings and cycles of one patient share age, sex and
diagnosis, so their p-values are optimistic (pseudo-replication) and are best read with the effect sizes.

Observations with a null age or sex (for example patient 223) are excluded per test and counted in
``n_excluded``; none is dropped silently. A test the data cannot support (for example a single sex in a tiny
corpus) keeps its row with null statistics and the reason in ``note``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from cough_pipeline.icbhi.tables import DURATION_SOURCES, LUNG_LABELS, CycleCounts, lung_label
from cough_pipeline.stats import RESULT_COLUMNS, StatsError, anova_oneway, chi_square, results_frame

#: Levels of observation (see the module docstring).
Level = Literal["recording", "patient", "cycle"]
LEVELS: tuple[str, ...] = get_args(Level)
#: (variable, grouping, test) in output order.
TESTS: tuple[tuple[str, str, str], ...] = (
    ("age", "lung_label", "anova"),
    ("age", "diagnosis", "anova"),
    ("sex", "lung_label", "chi_square"),
    ("sex", "diagnosis", "chi_square"),
)
ASSOCIATION_COLUMNS = ("level", "variable", "grouping", *RESULT_COLUMNS, "note")
_EFFECT_NAMES = {"anova": "eta", "chi_square": "cramers_v"}


def observations(recordings: pd.DataFrame, cycles: pd.DataFrame, level: Level = "recording") -> pd.DataFrame:
    """One row per observation of ``level`` with columns ``age``, ``sex``, ``diagnosis`` and ``lung_label``."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {list(LEVELS)}")
    columns = ["age", "sex", "diagnosis", "lung_label"]
    if level == "recording":
        return recordings[columns].reset_index(drop=True)
    if level == "cycle":
        return cycles[["age", "sex", "diagnosis", "cycle_label"]].rename(columns={"cycle_label": "lung_label"})
    rules = recordings["label_rule"].dropna().unique()
    if len(rules) > 1:
        raise ValueError(f"recordings mix label rules {sorted(rules)}; build them with one rule")
    rule = rules[0] if len(rules) else "any"
    per_patient = recordings.groupby("patient_id", sort=True).agg(
        age=("age", "first"),
        sex=("sex", "first"),
        diagnosis=("diagnosis", "first"),
        normal=("n_normal", "sum"),
        crackles_only=("n_crackles_only", "sum"),
        wheezes_only=("n_wheezes_only", "sum"),
        both=("n_both", "sum"),
    )
    per_patient["lung_label"] = [
        lung_label(CycleCounts(int(r.normal), int(r.crackles_only), int(r.wheezes_only), int(r.both)), rule)
        for r in per_patient.itertuples()
    ]
    return per_patient[columns].reset_index(drop=True)


def association_tests(recordings: pd.DataFrame, cycles: pd.DataFrame, level: Level = "recording") -> pd.DataFrame:
    """The four tests of :data:`TESTS` at ``level``, one row each with :data:`ASSOCIATION_COLUMNS`.

    recordings, cycles: the tables of :func:`cough_pipeline.icbhi.tables.build_icbhi_tables`. ``df`` is text
    (``"7, 906"``), ``df1``/``df2`` integers (``df2`` null for chi-square); ``groups`` is the number of
    lung-sound labels or diagnoses observed.
    """
    data = observations(recordings, cycles, level)
    rows = []
    for variable, grouping, test in TESTS:
        x = data[variable].astype(object) if variable == "sex" else data[variable]
        groups = data[grouping].astype(object)
        head = {"level": level, "variable": variable, "grouping": grouping}
        try:
            result = anova_oneway(x, groups) if test == "anova" else chi_square(x, groups)
            rows.append({**head, **result.as_row(), "note": None})
        except StatsError as error:
            missing = (pd.isna(x) | pd.isna(groups)).to_numpy()
            rows.append(
                {
                    **head,
                    "test": test,
                    "n": int((~missing).sum()),
                    "n_excluded": int(missing.sum()),
                    "groups": int(groups[~missing].nunique()),
                    "df1": None,
                    "df2": None,
                    "df": None,
                    "statistic": np.nan,
                    "p_value": np.nan,
                    "effect_name": _EFFECT_NAMES[test],
                    "effect": np.nan,
                    "effect_squared": np.nan,
                    "note": str(error),
                }
            )
    frame = results_frame(rows)
    for column in ("level", "variable", "grouping", "test", "df", "effect_name", "note"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None).astype("string")
    return frame[list(ASSOCIATION_COLUMNS)]


def association_table(
    recordings: pd.DataFrame, cycles: pd.DataFrame, levels: Sequence[Level] = ("recording",)
) -> pd.DataFrame:
    """:func:`association_tests` at each of ``levels`` (a non-empty subset of :data:`LEVELS`), one table in that
    order: four rows per level."""
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown or not levels:
        raise ValueError(f"levels {list(levels)} must be a non-empty subset of {list(LEVELS)}")
    return pd.concat([association_tests(recordings, cycles, level) for level in levels], ignore_index=True)


def duration_summary(recordings: pd.DataFrame, cycles: pd.DataFrame) -> pd.DataFrame:
    """Durations (seconds) per lung-sound label in :data:`LUNG_LABELS` order, then ``"all"``.

    Columns: lung_label, recordings, duration_mean_s / _min_s / _max_s (recording durations), cycles,
    cycle_duration_mean_s / _min_s / _max_s (cycles of the recordings with that label), and how many recording
    durations came from the WAV header or the annotations (duration_from_wav, duration_from_annotations).
    A label without recordings has zero counts and null durations.
    """
    label_of = recordings.set_index("recording_id")["lung_label"]
    cycle_frame = pd.DataFrame(
        {
            "lung_label": cycles["recording_id"].map(label_of).astype(object),
            "duration_s": cycles["duration_s"].to_numpy(dtype=np.float64),
        }
    )
    rows = []
    for label in (*LUNG_LABELS, "all"):
        chosen = recordings if label == "all" else recordings[recordings["lung_label"] == label]
        chosen_cycles = cycle_frame if label == "all" else cycle_frame[cycle_frame["lung_label"] == label]
        durations = chosen["duration_s"].to_numpy(dtype=np.float64)
        cycle_durations = chosen_cycles["duration_s"].to_numpy()
        sources = chosen["duration_source"].value_counts()
        rows.append(
            {
                "lung_label": label,
                "recordings": len(chosen),
                **_spread(durations, "duration"),
                "cycles": len(chosen_cycles),
                **_spread(cycle_durations, "cycle_duration"),
                **{f"duration_from_{source}": int(sources.get(source, 0)) for source in DURATION_SOURCES},
            }
        )
    frame = pd.DataFrame(rows)
    frame["lung_label"] = frame["lung_label"].astype("string")
    return frame


def _spread(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean, min and max of ``values`` (NaN when empty)."""
    if len(values) == 0:
        return {f"{prefix}_{stat}_s": np.nan for stat in ("mean", "min", "max")}
    return {
        f"{prefix}_mean_s": float(values.mean()),
        f"{prefix}_min_s": float(values.min()),
        f"{prefix}_max_s": float(values.max()),
    }
