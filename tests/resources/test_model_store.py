"""The model store: versions by run id, a card per version, the latest for downstream, earlier ones by id."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from dagster import Output, asset, materialize

from cough_pipeline.separation.model import CoughSeparator
from resources.model_store import (
    CARD_FILE,
    MODEL_FOLDER,
    ModelIOManager,
    ModelStore,
    ModelStoreError,
    TrainedModel,
    fingerprint,
)
from resources.storage import Storage


@pytest.fixture
def store(tmp_path):
    return ModelStore(storage=Storage(root=str(tmp_path / "storage"), catalog=str(tmp_path / "w.duckdb")))


def separator(seed: int) -> CoughSeparator:
    torch.manual_seed(seed)
    return CoughSeparator()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_each_save_is_a_new_version_and_earlier_versions_stay_loadable(store):
    first, second = separator(1), separator(2)
    store.save("separator", TrainedModel(first, config={"epochs": 1}, metrics={"l1": 0.5}), run_id="run-a")
    card = store.save("separator", TrainedModel(second, config={"epochs": 2}), run_id="run-b")
    assert store.versions("separator") == ["run-a", "run-b"] and store.latest_version("separator") == "run-b"
    assert card.version == card.run_id == "run-b" and card.model_format == "torch_cough_separator"
    latest, earlier = store.load("separator"), store.load("separator", "run-a")
    assert same_weights(latest.model, second) and same_weights(earlier.model, first)
    assert not same_weights(earlier.model, latest.model)
    assert earlier.card.config == {"epochs": 1} and earlier.metrics == {"l1": 0.5} and earlier.version == "run-a"


def test_a_version_folder_holds_the_native_files_and_a_card_never_a_pickle(store):
    store.save(
        "separator", TrainedModel(separator(0), training_data={"t": fingerprint(pd.DataFrame({"a": [1]}))}), "r1"
    )
    folder = store.version_folder("separator", "r1")
    assert sorted(p.name for p in (folder / MODEL_FOLDER).iterdir()) == ["separator.json", "separator.pt"]
    card = json.loads((folder / CARD_FILE).read_text())
    assert {"code_version", "config", "training_data", "metrics", "run_id", "created_at"} <= set(card)
    assert card["training_data"]["t"]["rows"] == 1 and len(card["training_data"]["t"]["sha256"]) == 64
    torch.load(folder / MODEL_FOLDER / "separator.pt", weights_only=True)  # tensors only


def test_unknown_versions_and_models_are_clear_errors(store):
    with pytest.raises(ModelStoreError, match="materialise separator first"):
        store.load("separator")
    store.save("separator", TrainedModel(separator(0)), run_id="r1")
    with pytest.raises(ModelStoreError, match=r"no version 'nope' \(stored versions: r1\)"):
        store.load("separator", "nope")
    with pytest.raises(ModelStoreError, match="no model format for dict"):
        store.save("separator", TrainedModel({"not": "a model"}), run_id="r2")
    assert store.versions("separator") == ["r1"]


def test_a_failed_save_leaves_the_latest_version_current(store, monkeypatch):
    store.save("separator", TrainedModel(separator(0)), run_id="good")

    def broken_save(self, folder, metadata=None):
        folder.mkdir(parents=True)
        (folder / "separator.pt").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(CoughSeparator, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        store.save("separator", TrainedModel(separator(1)), run_id="bad")
    assert store.latest_version("separator") == "good" and store.versions("separator") == ["good"]
    assert not [p for p in store.asset_folder("separator").iterdir() if p.name.startswith(".staging")]


def test_the_fingerprint_depends_on_content_not_the_index():
    frame = pd.DataFrame({"path": ["a.wav", "b.wav"], "label": [0, 1]})
    assert fingerprint(frame) == fingerprint(frame.set_axis([10, 11]))
    assert fingerprint(frame) != fingerprint(frame.assign(label=[1, 1]))
    assert fingerprint(frame) != fingerprint(frame.rename(columns={"label": "y"}))


def test_model_assets_store_through_the_io_manager_and_downstream_gets_the_latest(store):
    @asset(io_manager_key="model_io_manager")
    def toy_separator(context) -> Output[TrainedModel]:
        return Output(TrainedModel(separator(len(store.versions("toy_separator"))), metrics={"n": 1}))

    @asset
    def uses_it(toy_separator: TrainedModel) -> str:
        return toy_separator.version

    resources = {"model_io_manager": ModelIOManager(store=store)}
    first = materialize([toy_separator], resources=resources)
    second = materialize([toy_separator, uses_it], resources=resources)
    assert store.versions("toy_separator") == [first.run_id, second.run_id]
    assert second.output_for_node("uses_it") == second.run_id
    metadata = second.asset_materializations_for_node("toy_separator")[0].metadata
    assert metadata["model_version"].value == second.run_id
    earlier = store.load("toy_separator", first.run_id)
    assert same_weights(earlier.model, separator(0)) and not same_weights(
        earlier.model, store.load("toy_separator").model
    )
