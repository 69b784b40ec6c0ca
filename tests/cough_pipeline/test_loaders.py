"""Each loader on its native layout (the demo corpus), plus the dataset-specific ways input goes wrong."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from cough_pipeline.datasets.base import LayoutError
from cough_pipeline.demo_corpus import PLANTED_DEFECTS
from cough_pipeline.manifest import build_manifest
from cough_pipeline.schema import ALL_DATASETS, MANIFEST_REQUIRED, ManifestSchemaError, domain_violations
from tests.conftest import write_tone

EXPECTED_FORMATS = {
    "ccs": {"wav"},
    "iatos": {"ogg"},
    "coswara": {"wav"},
    "aicovidvn": {"wav"},
    "coughvid": {"webm", "ogg"},
    "ukcovid": {"wav"},
    "virufy": {"mp3"},
    "icbhi": {"wav"},
}


def copy_dataset(demo_corpus, dataset, tmp_path):
    return shutil.copytree(demo_corpus / dataset, tmp_path / dataset)


@pytest.mark.parametrize("dataset", ALL_DATASETS)
def test_loader_reads_its_native_layout(demo_corpus, dataset):
    build = build_manifest(dataset, demo_corpus / dataset)
    frame = build.manifest
    assert len(frame) > 0 and build.accounted
    assert build.quarantine["reason"].value_counts().to_dict() == PLANTED_DEFECTS.get(dataset, {})
    assert not domain_violations(frame)
    assert frame[list(MANIFEST_REQUIRED)].notna().all().all()
    assert set(frame["audio_format"]) == EXPECTED_FORMATS[dataset]
    assert frame["recording_id"].is_unique and frame["recording_id"].str.startswith(f"{dataset}:").all()
    assert not frame["audio_path"].str.startswith("/").any()  # paths stay relative to the dataset root


def test_rates_are_probed_not_taken_from_metadata(demo_corpus):
    aicovidvn = build_manifest("aicovidvn", demo_corpus / "aicovidvn").manifest
    warmup = aicovidvn[aicovidvn["audio_path"].str.contains("_8k/")]
    assert len(warmup) > 0 and set(warmup["sample_rate"]) == {8_000}
    assert {44_100, 48_000} <= set(aicovidvn["sample_rate"])
    icbhi = build_manifest("icbhi", demo_corpus / "icbhi").manifest
    assert {4_000, 44_100} <= set(icbhi["sample_rate"])


def test_coswara_tarballs_are_extracted_once(demo_corpus, tmp_path):
    root = copy_dataset(demo_corpus, "coswara", tmp_path)
    shutil.rmtree(root / "Extracted_data", ignore_errors=True)  # another test may have extracted the shared copy
    first = build_manifest("coswara", root)
    assert any("extracted" in note for note in first.notes) and (root / "Extracted_data").is_dir()
    second = build_manifest("coswara", root)
    assert not second.notes and second.manifest.equals(first.manifest)


def test_ukcovid_header_only_modality_is_quarantined_not_skipped(demo_corpus, tmp_path):
    root = copy_dataset(demo_corpus, "ukcovid", tmp_path)
    audio = pd.read_csv(root / "audio_metadata.csv", dtype=str)
    participant = audio.loc[0, "participant_identifier"]
    audio.loc[0, "three_cough_size"] = "44"
    audio.to_csv(root / "audio_metadata.csv", index=False)
    build = build_manifest("ukcovid", root)
    rows = build.quarantine[build.quarantine["recording_id"] == f"ukcovid:{participant}:three_cough"]
    assert rows["reason"].tolist() == ["audio_not_provided"] and "m_size=44" in rows["detail"].iloc[0]
    assert build.accounted


def test_aicovidvn_uuid_in_two_subsets_is_a_duplicate_id(demo_corpus, tmp_path):
    root = copy_dataset(demo_corpus, "aicovidvn", tmp_path)
    final = root / "aicv115m_final_public_train"
    warmup = pd.read_csv(root / "aicv115m_public_train" / "metadata_train_challenge.csv", dtype=str)
    final_meta = pd.read_csv(final / "public_train_metadata.csv", dtype=str)
    uuid = final_meta.loc[0, "uuid"]
    warmup.loc[len(warmup)] = final_meta.loc[0]
    warmup.to_csv(root / "aicv115m_public_train" / "metadata_train_challenge.csv", index=False)
    shutil.copy(
        final / "public_train_audio_files" / f"{uuid}.wav",
        root / "aicv115m_public_train" / "train_audio_files_8k" / f"{uuid}.wav",
    )
    build = build_manifest("aicovidvn", root)
    assert build.quarantine.set_index("recording_id").loc[f"aicovidvn:{uuid}", "reason"] == "duplicate_id"
    assert build.accounted


def test_aicovidvn_macos_junk_is_not_audio(demo_corpus):
    assert list((demo_corpus / "aicovidvn").rglob("__MACOSX/**/._*"))  # the fixture has junk to skip
    assert build_manifest("aicovidvn", demo_corpus / "aicovidvn").quarantine.empty


def test_iatos_layout_mismatch_lists_expected_and_found(tmp_path):
    (tmp_path / "grabaciones").mkdir()
    write_tone(tmp_path / "grabaciones" / "a1.ogg.wav")
    with pytest.raises(LayoutError) as raised:
        build_manifest("iatos", tmp_path)
    message = str(raised.value)
    assert "exactly one metadata table" in message and "audios/" in message  # what was expected
    assert "grabaciones/" in message  # what was found


def test_iatos_unrecognised_columns_need_an_explicit_mapping(demo_corpus, tmp_path):
    root = copy_dataset(demo_corpus, "iatos", tmp_path)
    table = pd.read_csv(root / "metadata.csv", sep=";", encoding="latin-1", dtype=str)
    renamed = table.rename(columns={"id_audio": "codigo", "resultado_pcr": "hisopado"})
    renamed.to_csv(root / "metadata.csv", sep=";", encoding="latin-1", index=False)
    with pytest.raises(ManifestSchemaError, match=r"no recognisable id/label columns.*codigo.*hisopado"):
        build_manifest("iatos", root)
    build = build_manifest("iatos", root, options={"columns": {"id": "codigo", "label": "hisopado"}})
    assert len(build.manifest) == len(table) and build.accounted


def test_coughvid_threshold_marks_non_coughs(demo_corpus):
    frame = build_manifest("coughvid", demo_corpus / "coughvid").manifest
    low = frame["cough_detected"] < 0.8
    assert low.any() and (frame.loc[low, "exclude_reason"] == "not_cough").all()
    strict = build_manifest("coughvid", demo_corpus / "coughvid", options={"cough_threshold": 0.99}).manifest
    assert (strict["exclude_reason"] == "not_cough").sum() > low.sum()
