"""ICBHI recording/cycle tables, label rules, bad input, and the association tests: hand-made layouts in
tmp_path, the real metadata and annotations in ../shared/data/icbhi, and the demo corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cough_pipeline.datasets.icbhi import parse_annotation, read_cycles
from cough_pipeline.icbhi.associations import (
    ASSOCIATION_COLUMNS,
    LEVELS,
    association_table,
    association_tests,
    duration_summary,
    observations,
)
from cough_pipeline.icbhi.tables import (
    CYCLE_COLUMNS,
    LABEL_RULES,
    LUNG_LABELS,
    RECORDING_COLUMNS,
    CycleCounts,
    build_icbhi_tables,
    cycle_labels,
    label_dominant,
    lung_label,
)
from cough_pipeline.schema import QUARANTINE_COLUMNS, ManifestSchemaError

# Cycle lines by label: N normal, C crackles only, W wheezes only, B both.
LINE = {"N": (0, 0), "C": (1, 0), "W": (0, 1), "B": (1, 1)}


def annotation(pattern: str, cycle_s: float = 2.0) -> str:
    """Back-to-back cycles of ``cycle_s`` seconds with the flags spelled by ``pattern`` (e.g. ``"NCWB"``)."""
    return "".join(
        f"{i * cycle_s:.3f}\t{(i + 1) * cycle_s:.3f}\t{LINE[c][0]}\t{LINE[c][1]}\n" for i, c in enumerate(pattern)
    )


def write_layout(
    root: Path,
    annotations: dict[str, str],
    *,
    wavs: dict[str, float] | None = None,
    diagnoses: dict[str, str] | None = None,
    demographics: dict[str, str] | None = None,
    kaggle: bool = False,
) -> Path:
    """A minimal ICBHI layout: annotation texts by stem, WAVs (stem -> seconds at 4 kHz), the diagnosis and
    demographics lists (patient -> diagnosis / "age sex bmi kg cm"), and a train/test list of every stem."""
    folder = root / ("audio_and_txt_files" if kaggle else "ICBHI_final_database")
    folder.mkdir(parents=True)
    for stem, text in annotations.items():
        (folder / f"{stem}.txt").write_text(text)
    for stem, seconds in (wavs or {}).items():
        sf.write(folder / f"{stem}.wav", np.zeros(int(seconds * 4000), dtype=np.float32), 4000, subtype="PCM_16")
    patients = sorted({stem[:3] for stem in [*annotations, *(wavs or {})]})
    diagnoses = diagnoses if diagnoses is not None else {p: "COPD" for p in patients}
    demographics = demographics if demographics is not None else {p: "70 M 25.0 NA NA" for p in patients}
    if kaggle:
        (root / "patient_diagnosis.csv").write_text("".join(f"{p},{d}\r\n" for p, d in diagnoses.items()))
        (root / "demographic_info.txt").write_text("\r\n" + "".join(f"{p} {d}\r\n" for p, d in demographics.items()))
    else:
        (root / "ICBHI_Challenge_diagnosis.txt").write_text("".join(f"{p}\t{d}\n" for p, d in diagnoses.items()))
        (root / "ICBHI_Challenge_demographic_information.txt").write_text(
            "".join(f"{p}\t{d.replace(' ', chr(9))}\n" for p, d in demographics.items())
        )
    stems = sorted(annotations)
    (root / "ICBHI_challenge_train_test.txt").write_text(
        "".join(f"{s}\t{'train' if i % 2 == 0 else 'test'}\n" for i, s in enumerate(stems))
    )
    return root


def stem(patient: int, chest: str = "Al") -> str:
    return f"{patient}_1b1_{chest}_sc_Litt3200"


def reasons(tables) -> list[str]:
    return sorted(tables.quarantine["reason"].tolist())


# --- label rules --------------------------------------------------------------------------------------------

# pattern -> expected label under any / majority / dominant
DISAGREEING = {
    "WWWCCNNN": ("both", "normal", "wheezes"),  # any abnormal; no sound in > half; wheezes-only most frequent
    "BCCCW": ("both", "crackles", "crackles"),  # crackles in 4/5 cycles, wheezes in 2/5
    "CWW": ("both", "wheezes", "wheezes"),
    "CWN": ("both", "normal", "crackles"),  # dominant tie crackles = wheezes = 1 -> crackles
    "BBBN": ("both", "both", "both"),
    "NN": ("normal", "normal", "normal"),
    "CCNN": ("crackles", "normal", "crackles"),  # exactly half is not a majority
}


def test_label_rules_on_counts():
    for pattern, expected in DISAGREEING.items():
        counts = CycleCounts.from_flags([LINE[c][0] for c in pattern], [LINE[c][1] for c in pattern])
        assert tuple(lung_label(counts, rule) for rule in ("any", "majority", "dominant")) == expected, pattern
    # Tie-breaks of "dominant": both > crackles > wheezes.
    assert label_dominant(CycleCounts(normal=5, crackles_only=2, wheezes_only=2, both=2)) == "both"
    assert label_dominant(CycleCounts(crackles_only=3, wheezes_only=3, both=1)) == "crackles"
    assert label_dominant(CycleCounts(crackles_only=1, wheezes_only=3, both=3)) == "both"
    assert set(LABEL_RULES) == {"any", "majority", "dominant"}
    assert cycle_labels([0, 1, 0, 1], [0, 0, 1, 1]).tolist() == list(LUNG_LABELS)


def test_label_rules_on_annotation_files(tmp_path):
    stems = {pattern: stem(101 + i) for i, pattern in enumerate(DISAGREEING)}
    root = write_layout(tmp_path, {stems[p]: annotation(p) for p in DISAGREEING})
    for index, rule in enumerate(("any", "majority", "dominant")):
        tables = build_icbhi_tables(root, label_rule=rule)
        labels = tables.recordings.set_index("stem")["lung_label"]
        assert {p: labels[stems[p]] for p in DISAGREEING} == {p: e[index] for p, e in DISAGREEING.items()}
        assert set(tables.recordings["label_rule"]) == {rule}
    counts = build_icbhi_tables(root).recordings.set_index("stem").loc[stems["WWWCCNNN"]]
    assert (
        counts["n_cycles"],
        counts["n_normal"],
        counts["n_crackles_only"],
        counts["n_wheezes_only"],
        counts["n_both"],
    ) == (8, 3, 2, 3, 0)


def test_unknown_label_rule_lists_the_choices(tmp_path):
    root = write_layout(tmp_path, {stem(101): annotation("N")})
    with pytest.raises(ValueError, match="'any', 'majority', 'dominant'"):
        build_icbhi_tables(root, label_rule="mode")


# --- layouts and columns ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kaggle", [False, True])
def test_columns_and_durations(tmp_path, kaggle):
    root = write_layout(
        tmp_path, {stem(101): annotation("NCW"), stem(102): annotation("BN", 3.0)}, wavs={stem(101): 7.0}, kaggle=kaggle
    )
    tables = build_icbhi_tables(root)
    assert tuple(tables.recordings.columns) == tuple(RECORDING_COLUMNS)
    assert tuple(tables.cycles.columns) == tuple(CYCLE_COLUMNS)
    assert tuple(tables.quarantine.columns) == tuple(QUARANTINE_COLUMNS)
    assert {c: str(t) for c, t in tables.recordings.dtypes.items()} == RECORDING_COLUMNS
    rec = tables.recordings.set_index("stem")
    with_wav, without = rec.loc[stem(101)], rec.loc[stem(102)]
    folder = "audio_and_txt_files" if kaggle else "ICBHI_final_database"
    assert with_wav["audio_path"] == f"{folder}/{stem(101)}.wav" and with_wav["audio_present"]
    assert (with_wav["sample_rate"], with_wav["duration_s"], with_wav["duration_source"]) == (4000, 7.0, "wav")
    assert pd.isna(without["audio_path"]) and not without["audio_present"] and pd.isna(without["sample_rate"])
    assert (without["duration_s"], without["duration_source"]) == (6.0, "annotations")
    assert with_wav["recording_id"] == f"icbhi:{stem(101)}" and with_wav["patient_id"] == "101"
    assert (with_wav["chest_location"], with_wav["acquisition_mode"], with_wav["device"]) == ("Al", "sc", "Litt3200")
    assert (with_wav["age"], with_wav["sex"], with_wav["adult_bmi"]) == (70.0, "M", 25.0)
    assert {with_wav["official_split"], without["official_split"]} == {"train", "test"}
    cycles = tables.cycles[tables.cycles["recording_id"] == f"icbhi:{stem(101)}"]
    assert cycles["cycle"].tolist() == [0, 1, 2]
    assert cycles["cycle_label"].tolist() == ["normal", "crackles", "wheezes"]
    assert cycles["duration_s"].tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert tables.accounted and tables.quarantine.empty


def test_read_audio_false_opens_no_wav(tmp_path):
    root = write_layout(tmp_path, {stem(101): annotation("NNNN")}, wavs={stem(101): 3.0})
    (root / "ICBHI_final_database" / f"{stem(101)}.wav").write_bytes(b"not a wav at all")
    tables = build_icbhi_tables(root, read_audio=False)
    row = tables.recordings.iloc[0]
    assert row["audio_present"] and row["duration_source"] == "annotations" and row["duration_s"] == 8.0
    assert pd.isna(row["sample_rate"]) and tables.quarantine.empty and tables.accounted


# --- bad input ------------------------------------------------------------------------------------------------


def test_wav_without_annotation_is_quarantined(tmp_path):
    root = write_layout(tmp_path, {stem(101): annotation("NC")}, wavs={stem(101): 5.0, stem(102): 5.0})
    # Other .txt files beside the recordings (the official release's *_events.txt) are not annotations.
    (root / "ICBHI_final_database" / f"{stem(101)}_events.txt").write_text("0.1\t0.2\tcrackle\n")
    tables = build_icbhi_tables(root)
    assert tables.recordings["stem"].tolist() == [stem(101)]
    assert reasons(tables) == ["annotation_missing"]
    row = tables.quarantine.iloc[0]
    assert row["native_id"] == stem(102) and row["audio_path"] == f"ICBHI_final_database/{stem(102)}.wav"
    assert pd.isna(row["source_file"]) and pd.isna(row["source_row"])
    assert tables.counts["wavs_without_annotation"] == 1 and tables.counts["annotation_files"] == 1
    assert tables.accounted


def test_bad_annotation_lines_are_quarantined_and_the_rest_kept(tmp_path):
    text = (
        "0.0\t1.0\t0\t0\n"
        "\n"  # blank: ignored, but physical line numbers keep counting
        "1.0\t2.0\t1\n"  # line 3: three fields
        "abc\t3.0\t0\t0\n"  # line 4: not a number
        "-0.5\t3.0\t0\t0\n"  # line 5: negative onset
        "3.0\t3.0\t0\t0\n"  # line 6: offset <= onset
        "3.0\t4.0\t2\t0\n"  # line 7: flag not 0/1
        "3.5\t4.5\t1\t1\n"  # line 8: overlaps the previous cycle: fine
        "4.0\t5.4\t0\t1\n"  # line 9: 0.4 s past the 5 s WAV: within the 0.5 s tolerance
        "4.5\t5.6\t1\t0\n"
    )  # line 10: 0.6 s past: out of range
    root = write_layout(tmp_path, {stem(101): text}, wavs={stem(101): 5.0})
    tables = build_icbhi_tables(root)
    rec = tables.recordings.iloc[0]
    assert (rec["n_cycles"], rec["cycles_quarantined"], rec["lung_label"]) == (3, 6, "both")
    assert tables.cycles["cycle"].tolist() == [0, 6, 7]  # 0-based among non-blank lines: gaps where lines left
    q = tables.quarantine.sort_values("source_row")
    assert q["source_row"].tolist() == [3, 4, 5, 6, 7, 10]
    assert q["reason"].tolist() == ["annotation_unparseable"] * 2 + ["annotation_out_of_range"] * 4
    assert all(f"{stem(101)}.txt line {n}" in d for n, d in zip(q["source_row"], q["detail"]))
    assert "negative onset" in q["detail"].iloc[2] and "<= onset" in q["detail"].iloc[3]
    assert "not 0/1" in q["detail"].iloc[4] and "beyond the WAV" in q["detail"].iloc[5]
    assert set(q["source_file"]) == {f"ICBHI_final_database/{stem(101)}.txt"}
    c = tables.counts
    assert (c["annotation_lines"], c["cycles_kept"], c["cycles_quarantined"]) == (9, 3, 6)
    assert c["recordings_kept"] == 1 and c["recordings_quarantined"] == 0 and tables.accounted


def test_recording_with_only_bad_lines_or_empty_is_quarantined(tmp_path):
    root = write_layout(
        tmp_path, {stem(101): "1\t0.5\t0\t0\nx y z w\n", stem(102): "\n\n", stem(103): annotation("NB")}
    )
    tables = build_icbhi_tables(root)
    assert tables.recordings["stem"].tolist() == [stem(103)]
    q = tables.quarantine
    file_rows = q[q["source_row"].isna()]
    assert sorted(file_rows["native_id"]) == [stem(101), stem(102)]
    assert set(file_rows["reason"]) == {"no_valid_cycles"}
    assert sorted(q.loc[q["source_row"].notna(), "reason"]) == ["annotation_out_of_range", "annotation_unparseable"]
    c = tables.counts
    assert (c["annotation_files"], c["recordings_kept"], c["recordings_quarantined"]) == (3, 1, 2)
    assert (c["annotation_lines"], c["cycles_kept"], c["cycles_quarantined"]) == (4, 2, 2)
    assert tables.accounted


def test_unknown_diagnosis_and_missing_patient(tmp_path):
    root = write_layout(
        tmp_path,
        {stem(101): annotation("NC"), stem(102): annotation("W"), stem(103): "x\n" + annotation("N")},
        diagnoses={"101": "COPD", "102": "Flu"},
    )
    tables = build_icbhi_tables(root)
    assert tables.recordings["stem"].tolist() == [stem(101)]
    q = tables.quarantine
    files = q[q["source_row"].isna()].set_index("native_id")
    assert set(files["reason"]) == {"unknown_diagnosis"}
    assert "'Flu'" in files.loc[stem(102), "detail"] and "no line" in files.loc[stem(103), "detail"]
    lines = q[q["source_row"].notna()]
    # Every line of a quarantined recording gets a row: its own problem, or the recording's reason.
    assert sorted(zip(lines["native_id"], lines["source_row"], lines["reason"])) == [
        (stem(102), 1, "unknown_diagnosis"),
        (stem(103), 1, "annotation_unparseable"),
        (stem(103), 2, "unknown_diagnosis"),
    ]
    assert tables.counts["recordings_quarantined"] == 2 and tables.counts["cycles_quarantined"] == 3
    assert tables.accounted


def test_bad_file_name_with_wav_is_quarantined(tmp_path):
    root = write_layout(
        tmp_path, {stem(101): annotation("N"), "101_odd_name": annotation("N")}, wavs={"101_odd_name": 3.0}
    )
    tables = build_icbhi_tables(root)
    assert tables.recordings["stem"].tolist() == [stem(101)]
    assert reasons(tables) == ["invalid_value", "invalid_value"] and tables.accounted


def test_patients_without_demographics_are_kept_with_nulls(tmp_path):
    root = write_layout(
        tmp_path,
        {stem(101): annotation("N"), stem(102): annotation("C"), stem(103): annotation("W")},
        demographics={"101": "70 F NA NA NA", "102": "NA NA NA NA NA"},
    )
    tables = build_icbhi_tables(root)
    rec = tables.recordings.set_index("patient_id")
    assert rec["demographics_known"].to_dict() == {"101": True, "102": False, "103": False}
    assert rec.loc[["102", "103"], "age"].isna().all() and rec.loc[["102", "103"], "sex"].isna().all()
    assert tables.cycles["sex"].isna().sum() == 2
    assert tables.quarantine.empty and tables.counts["recordings_without_demographics"] == 2


@pytest.mark.parametrize(("content", "reason"), [(b"RIFF nonsense", "audio_unreadable"), (b"", "audio_empty")])
def test_unreadable_wav_keeps_the_recording_without_audio(tmp_path, content, reason):
    root = write_layout(
        tmp_path, {stem(101): annotation("NCC"), stem(102): annotation("N")}, wavs={stem(101): 3.0, stem(102): 3.0}
    )
    (root / "ICBHI_final_database" / f"{stem(101)}.wav").write_bytes(content)
    tables = build_icbhi_tables(root)
    rec = tables.recordings.set_index("stem").loc[stem(101)]
    assert not rec["audio_present"] and pd.isna(rec["audio_path"]) and pd.isna(rec["sample_rate"])
    assert (rec["duration_source"], rec["duration_s"], rec["n_cycles"]) == ("annotations", 6.0, 3)
    assert reasons(tables) == [reason]
    row = tables.quarantine.iloc[0]
    assert row["audio_path"] == f"ICBHI_final_database/{stem(101)}.wav" and "kept" in row["detail"]
    assert tables.counts["audio_quarantined"] == 1 and tables.counts["audio_read"] == 1
    assert tables.counts["recordings_quarantined"] == 0 and tables.accounted


def test_a_truncated_wav_is_quarantined_with_both_frame_counts(tmp_path):
    root = write_layout(
        tmp_path, {stem(101): annotation("NCC"), stem(102): annotation("N")}, wavs={stem(101): 3.0, stem(102): 3.0}
    )
    path = root / "ICBHI_final_database" / f"{stem(101)}.wav"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    tables = build_icbhi_tables(root)
    assert not tables.recordings.set_index("stem").loc[stem(101), "audio_present"]
    assert reasons(tables) == ["audio_truncated"]
    assert "12000 frames" in tables.quarantine.iloc[0]["detail"] and tables.accounted


def test_strict_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "101_1b1_Al_sc_Litt3200.txt"
    path.write_text("0\t1\t0\t0\n\n1\t0.5\t0\t0\n")
    with pytest.raises(ManifestSchemaError, match="line 3"):
        read_cycles(path)
    lines = parse_annotation(path.read_text())
    assert [(line.cycle, line.line, line.problem is None) for line in lines] == [(0, 1, True), (1, 3, False)]


# --- associations on hand-made tables -----------------------------------------------------------------------


def test_association_levels_and_exclusions(tmp_path):
    demographics = {
        "101": "70 M NA NA NA",
        "102": "60 F NA NA NA",
        "103": "30 M NA NA NA",
        "104": "40 F NA NA NA",
        "105": "NA NA NA NA NA",
    }
    annotations = {
        stem(101): annotation("NN"),
        stem(101, "Ar"): annotation("CN"),
        stem(102): annotation("WW"),
        stem(103): annotation("BN"),
        stem(104): annotation("NNN"),
        stem(105): annotation("C"),
    }
    diagnoses = {"101": "COPD", "102": "COPD", "103": "Healthy", "104": "Healthy", "105": "URTI"}
    tables = build_icbhi_tables(write_layout(tmp_path, annotations, diagnoses=diagnoses, demographics=demographics))
    patient = observations(tables.recordings, tables.cycles, "patient")
    assert len(patient) == 5
    # Patient 101 pools NN + CN: crackles under "any".
    assert patient["lung_label"].tolist() == ["crackles", "wheezes", "both", "normal", "crackles"]
    for level, units, excluded in (("recording", 6, 1), ("patient", 5, 1), ("cycle", 12, 1)):
        result = association_tests(tables.recordings, tables.cycles, level)
        assert tuple(result.columns) == ASSOCIATION_COLUMNS
        assert result[["variable", "grouping", "test"]].values.tolist() == [
            ["age", "lung_label", "anova"],
            ["age", "diagnosis", "anova"],
            ["sex", "lung_label", "chi_square"],
            ["sex", "diagnosis", "chi_square"],
        ]
        assert (result["n"] + result["n_excluded"]).tolist() == [units] * 4
        assert result["n_excluded"].tolist() == [excluded] * 4
    # Patient level: 4 patients with age in 4 lung-label groups (no within df) and 2 diagnoses of 2 each.
    patient_tests = association_tests(tables.recordings, tables.cycles, "patient").set_index(["variable", "grouping"])
    failed = patient_tests.loc[("age", "lung_label")]
    assert np.isnan(failed["statistic"]) and "more observations than groups" in failed["note"]
    assert failed["groups"] == 4 and failed["n"] == 4
    ok = patient_tests.loc[("age", "diagnosis")]
    # COPD ages 70, 60 (mean 65) vs Healthy 30, 40 (mean 35): SS_b = 4·15² = 900, SS_w = 4·5² = 100, F = 900/(100/2)
    assert ok["statistic"] == pytest.approx(18.0) and ok["effect_squared"] == pytest.approx(0.9)
    assert (ok["df1"], ok["df2"], ok["df"]) == (1, 2, "1, 2") and pd.isna(ok["note"])
    with pytest.raises(ValueError, match="unknown level"):
        association_tests(tables.recordings, tables.cycles, "site")


def test_association_table_stacks_the_levels_in_order(tmp_path):
    annotations = {stem(101): annotation("NN"), stem(102): annotation("CW"), stem(103): annotation("N")}
    tables = build_icbhi_tables(write_layout(tmp_path, annotations))
    both = association_table(tables.recordings, tables.cycles, ["cycle", "recording"])
    assert both["level"].tolist() == ["cycle"] * 4 + ["recording"] * 4
    expected = association_tests(tables.recordings, tables.cycles, "cycle")
    pd.testing.assert_frame_equal(both.head(4), expected)
    for bad in ([], ["recording", "site"]):
        with pytest.raises(ValueError, match="non-empty subset"):
            association_table(tables.recordings, tables.cycles, bad)


def test_duration_summary_by_hand(tmp_path):
    annotations = {stem(101): annotation("NN", 1.0), stem(102): annotation("NNN", 2.0), stem(103): annotation("CW")}
    root = write_layout(tmp_path, annotations, wavs={stem(102): 10.0})
    tables = build_icbhi_tables(root)
    summary = duration_summary(tables.recordings, tables.cycles).set_index("lung_label")
    assert summary.index.tolist() == [*LUNG_LABELS, "all"]
    normal = summary.loc["normal"]
    assert (normal["recordings"], normal["cycles"]) == (2, 5)
    assert (normal["duration_mean_s"], normal["duration_min_s"], normal["duration_max_s"]) == (6.0, 2.0, 10.0)
    assert (normal["cycle_duration_mean_s"], normal["cycle_duration_min_s"]) == (pytest.approx(8 / 5), 1.0)
    assert (normal["duration_from_wav"], normal["duration_from_annotations"]) == (1, 1)
    assert summary.loc["both", "recordings"] == 1 and summary.loc["crackles", "recordings"] == 0
    assert np.isnan(summary.loc["crackles", "duration_mean_s"])
    assert summary.loc["all", "recordings"] == 3 and summary.loc["all", "cycles"] == 7


# --- the real metadata and annotations ----------------------------------------------------------------------

SOURCE_DURATIONS = {  # SOURCE.md "Included recordings": stem -> (rate, duration s, cycles, any-cycle label)
    "101_1b1_Al_sc_Meditron": (44100, 20.000, 12, "normal"),
    "101_1b1_Pr_sc_Meditron": (44100, 20.000, 11, "normal"),
    "102_1b1_Ar_sc_Meditron": (44100, 20.000, 13, "normal"),
    "103_2b2_Ar_mc_LittC2SE": (44100, 20.000, 6, "wheezes"),
    "104_1b1_Al_sc_Litt3200": (4000, 15.856, 6, "normal"),
    "104_1b1_Ar_sc_Litt3200": (4000, 25.584, 14, "wheezes"),
    "104_1b1_Ll_sc_Litt3200": (4000, 18.480, 7, "crackles"),
    "104_1b1_Lr_sc_Litt3200": (4000, 15.024, 5, "normal"),
    "104_1b1_Pl_sc_Litt3200": (4000, 22.960, 13, "normal"),
    "104_1b1_Pr_sc_Litt3200": (4000, 23.728, 10, "normal"),
}


@pytest.fixture(scope="module")
def real_tables(shared_data):
    return build_icbhi_tables(shared_data / "icbhi")


@pytest.mark.shared_data
def test_real_tables_counts(real_tables):
    rec, cycles = real_tables.recordings, real_tables.cycles
    assert len(rec) == 920 and rec["patient_id"].nunique() == 126 and len(cycles) == 6898
    assert real_tables.quarantine.empty and real_tables.accounted
    assert cycles["cycle_label"].value_counts().to_dict() == {
        "normal": 3642,
        "crackles": 1864,
        "wheezes": 886,
        "both": 506,
    }
    assert (rec["n_normal"].sum(), rec["n_crackles_only"].sum(), rec["n_wheezes_only"].sum(), rec["n_both"].sum()) == (
        3642,
        1864,
        886,
        506,
    )
    assert rec["lung_label"].value_counts().to_dict() == {"crackles": 297, "normal": 287, "both": 202, "wheezes": 134}
    assert rec["official_split"].value_counts().to_dict() == {"train": 539, "test": 381}
    assert set(rec["diagnosis"]) <= {
        "URTI",
        "Healthy",
        "Asthma",
        "COPD",
        "LRTI",
        "Bronchiectasis",
        "Pneumonia",
        "Bronchiolitis",
    }


@pytest.mark.shared_data
def test_real_tables_durations_and_patient_223(real_tables):
    rec = real_tables.recordings.set_index("stem")
    with_audio = rec[rec["audio_present"]]
    assert sorted(with_audio.index) == sorted(SOURCE_DURATIONS)
    assert set(with_audio["duration_source"]) == {"wav"}
    for name, (rate, seconds, cycles, label) in SOURCE_DURATIONS.items():
        row = rec.loc[name]
        assert (row["sample_rate"], row["n_cycles"], row["lung_label"]) == (rate, cycles, label)
        assert row["duration_s"] == pytest.approx(seconds, abs=5e-4)
    others = rec[~rec["audio_present"]]
    assert len(others) == 910 and set(others["duration_source"]) == {"annotations"}
    assert others["sample_rate"].isna().all() and others["audio_path"].isna().all()
    patient = rec[rec["patient_id"] == "223"]
    assert len(patient) == 6 and set(patient["diagnosis"]) == {"COPD"}
    assert patient["age"].isna().all() and patient["sex"].isna().all() and not patient["demographics_known"].any()
    assert (~rec["demographics_known"]).sum() == 6
    assert rec.loc["101_1b1_Al_sc_Meditron", "age"] == 3.0 and rec.loc["101_1b1_Al_sc_Meditron", "sex"] == "F"


@pytest.mark.shared_data
def test_real_label_rules_differ_but_cover_every_recording(shared_data, real_tables):
    any_labels = real_tables.recordings["lung_label"]
    for rule in ("majority", "dominant"):
        labels = build_icbhi_tables(shared_data / "icbhi", label_rule=rule, read_audio=False).recordings["lung_label"]
        assert len(labels) == 920 and set(labels) <= set(LUNG_LABELS)
        assert (labels != any_labels).any()
        # Neither rule can call abnormal a recording that "any" calls normal.
        assert (labels[any_labels == "normal"] == "normal").all()


@pytest.mark.shared_data
def test_real_associations_reproduce_source_md(real_tables):
    result = association_tests(real_tables.recordings, real_tables.cycles, "recording")
    rows = result.set_index(["variable", "grouping"])
    assert (result["n"] == 914).all() and (result["n_excluded"] == 6).all() and result["note"].isna().all()
    expected = {  # SOURCE.md "Reference statistics": (df text, statistic, effect)
        ("age", "diagnosis"): ("7, 906", 418.525, 0.874),
        ("sex", "diagnosis"): ("7", 31.036, 0.184),
        ("age", "lung_label"): ("3, 910", 14.397, 0.213),
        ("sex", "lung_label"): ("3", 14.136, 0.124),
    }
    for key, (df, statistic, effect) in expected.items():
        assert rows.loc[key, "df"] == df
        assert round(rows.loc[key, "statistic"], 3) == statistic and round(rows.loc[key, "effect"], 3) == effect
    assert rows.loc[("age", "diagnosis"), "effect_name"] == "eta"
    assert rows.loc[("sex", "diagnosis"), "effect_name"] == "cramers_v"
    assert (result["p_value"] < 0.01).all()
    patient = association_tests(real_tables.recordings, real_tables.cycles, "patient")
    assert (patient["n"] == 125).all() and (patient["n_excluded"] == 1).all()
    cycle = association_tests(real_tables.recordings, real_tables.cycles, "cycle")
    assert ((cycle["n"] + cycle["n_excluded"]) == 6898).all() and (cycle["n_excluded"] == 61).all()


@pytest.mark.shared_data
def test_real_duration_summary(real_tables):
    summary = duration_summary(real_tables.recordings, real_tables.cycles).set_index("lung_label")
    assert summary.loc[list(LUNG_LABELS), "recordings"].tolist() == [287, 297, 134, 202]
    assert summary.loc[list(LUNG_LABELS), "cycles"].sum() == 6898 == summary.loc["all", "cycles"]
    assert summary.loc["all", "duration_from_wav"] == 10 and summary.loc["all", "duration_from_annotations"] == 910
    assert (summary["duration_min_s"] <= summary["duration_mean_s"]).all()
    assert (summary["duration_mean_s"] <= summary["duration_max_s"]).all()


# --- the demo corpus ----------------------------------------------------------------------------------------


def test_demo_corpus_tables(demo_corpus):
    root = demo_corpus / "icbhi"
    tables = build_icbhi_tables(root)
    rec = tables.recordings
    annotations = len(list((root / "ICBHI_final_database").glob("*.txt")))
    assert len(rec) == annotations > 0 and tables.quarantine.empty and tables.accounted
    assert rec["audio_present"].all() and set(rec["duration_source"]) == {"wav"}
    assert set(rec["sample_rate"]) == {4000, 44100}
    for row in rec.itertuples():
        info = sf.info(root / row.audio_path)
        assert row.duration_s == pytest.approx(info.frames / info.samplerate)
    ends = tables.cycles.groupby("recording_id")["offset_s"].max()
    assert (ends <= rec.set_index("recording_id")["duration_s"].loc[ends.index] + 0.5).all()
    assert (~rec["demographics_known"]).sum() >= 1  # the corpus has one all-NA patient
    assert rec["official_split"].notna().all() and set(rec["lung_label"]) <= set(LUNG_LABELS)
    for level in LEVELS:
        result = association_tests(rec, tables.cycles, level)
        assert len(result) == 4
        # Every row has its statistic or says why not.
        assert (result["statistic"].notna() | result["note"].notna()).all()
        assert (result["n_excluded"] >= 1).all()
