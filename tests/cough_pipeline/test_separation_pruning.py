"""SNIP pruning, the sparse inference path and the complexity table, on a small separator."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cough_pipeline.separation.complexity import (
    STAGES,
    complexity_table,
    cost_breakdown,
    parameter_counts,
    stage_costs,
    state_sizes_mb,
)
from cough_pipeline.separation.model import CoughSeparator, SeparatorConfig
from cough_pipeline.separation.pruning import (
    MASKS_FILE,
    PrunedTrainingConfig,
    PruningConfig,
    SparseLinear,
    apply_masks,
    connection_sensitivity,
    keep_top,
    load_pruned,
    mask_report,
    optimize_for_inference,
    save_pruned,
    separator_loss,
    snip_masks,
    sparse_layers,
)
from cough_pipeline.separation.training import TrainingConfig, train_on_datasets

SMALL = SeparatorConfig(sample_rate=8_000, n_fft=64, hop_length=16, hidden_size=8, clip_seconds=0.25)
SAMPLES = 2_000


def small_model(seed: int = 0) -> CoughSeparator:
    torch.manual_seed(seed)
    return CoughSeparator(SMALL)


def batches(count: int, batch_size: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(mixture, cough)`` pairs ``(batch_size, SAMPLES)``: noise bursts in white noise."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(count):
        envelope = torch.exp(-torch.arange(SAMPLES) / 300.0)
        cough = torch.randn(batch_size, SAMPLES, generator=generator) * envelope
        noise = 0.1 * torch.randn(batch_size, SAMPLES, generator=generator)
        pairs.append((cough + noise, cough))
    return pairs


def test_config_validates_and_round_trips():
    config = PruningConfig(keep_fraction=0.05, target_parameters=["masker.output.weight", "masker.lstm.weight_hh_l0"])
    assert PruningConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in (
        {"keep_fraction": 0.0},
        {"keep_fraction": 1.5},
        {"target_parameters": ()},
        {"sensitivity_batches": 0},
        {"scope": "layer"},
    ):
        with pytest.raises(ValueError):
            PruningConfig(**bad)


def test_keep_top_global_and_per_parameter():
    scores = {"a": torch.tensor([[9.0, 1.0], [8.0, 2.0]]), "b": torch.tensor([7.0, 0.5, 0.1, 0.2])}
    global_masks = keep_top(scores, 0.25, "global")
    assert global_masks["a"].tolist() == [[True, False], [True, False]] and not global_masks["b"].any()
    per_parameter = keep_top(scores, 0.25, "per_parameter")
    assert per_parameter["a"].tolist() == [[True, False], [False, False]]
    assert per_parameter["b"].tolist() == [True, False, False, False]
    assert keep_top({"c": torch.ones(10)}, 0.001)["c"].sum() == 1  # at least one weight survives


def test_sensitivity_is_weight_times_summed_gradient_and_leaves_the_model_alone():
    model = small_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    pairs = batches(2)
    scores = connection_sensitivity(model, pairs, ["masker.output.weight"], max_batches=2)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())

    reference = small_model().train()
    for mixture, cough in pairs:
        separator_loss(reference, mixture, cough).backward()
    expected = (reference.masker.output.weight * reference.masker.output.weight.grad).abs()
    torch.testing.assert_close(scores["masker.output.weight"], expected.detach())


def test_only_the_first_batches_count():
    model = small_model()
    pairs = batches(3)
    first_two = connection_sensitivity(model, pairs, ["masker.output.weight"], max_batches=2)
    all_given = connection_sensitivity(model, pairs[:2], ["masker.output.weight"], max_batches=5)
    assert torch.equal(first_two["masker.output.weight"], all_given["masker.output.weight"])
    with pytest.raises(ValueError, match="at least one"):
        connection_sensitivity(model, [], ["masker.output.weight"], max_batches=2)


def test_snip_masks_keep_the_configured_fraction():
    model = small_model()
    masks = snip_masks(model, batches(2), PruningConfig(keep_fraction=0.05))
    weight = model.masker.output.weight
    assert set(masks) == {"masker.output.weight"} and masks["masker.output.weight"].dtype == torch.bool
    assert mask_report(masks)["masker.output.weight"]["kept"] == round(0.05 * weight.numel())

    lstm_targets = ("masker.lstm.weight_ih_l0", "masker.lstm.weight_hh_l1")
    lstm_masks = snip_masks(model, batches(2), PruningConfig(0.1, lstm_targets, scope="per_parameter"))
    for name in lstm_targets:
        assert lstm_masks[name].sum() == round(0.1 * lstm_masks[name].numel())


def test_a_target_left_without_weights_is_warned_about():
    def output_only_loss(model, mixture, cough):
        return model.masker.output.weight.square().sum()  # never reaches the LSTM: zero sensitivity there

    config = PruningConfig(keep_fraction=0.01, target_parameters=("masker.output.weight", "masker.lstm.weight_hh_l0"))
    with pytest.warns(UserWarning, match="weight_hh_l0"):
        masks = snip_masks(small_model(), batches(1), config, loss_fn=output_only_loss)
    assert not masks["masker.lstm.weight_hh_l0"].any()


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match=r"masker\.nope"):
        snip_masks(small_model(), batches(1), PruningConfig(target_parameters=("masker.nope",)))


def test_apply_masks_zeroes_the_pruned_weights():
    model = small_model()
    masks = snip_masks(model, batches(1), PruningConfig(keep_fraction=0.1))
    apply_masks(model, masks)
    weight = model.masker.output.weight.detach()
    assert torch.equal(weight != 0, masks["masker.output.weight"])
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"masker.output.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_training_with_the_masks_keeps_the_pruned_weights_at_zero(tmp_path):
    model = small_model()
    config = PruningConfig(
        keep_fraction=0.05,
        target_parameters=("masker.output.weight", "masker.lstm.weight_hh_l0"),
        scope="per_parameter",
    )
    masks = snip_masks(model, batches(2), config)
    clips = [(mixture[0], cough[0]) for mixture, cough in batches(4, batch_size=1)]
    result = train_on_datasets(
        clips[:3],
        clips[3:],
        TrainingConfig(epochs=2, batch_size=2, device="cpu"),
        SMALL,
        grad_masks=masks,
        model=apply_masks(model, masks),
    )
    trained = dict(result.model.named_parameters())
    for name, mask in masks.items():
        assert not trained[name].detach()[~mask].any()
        assert trained[name].detach()[mask].count_nonzero() > 0
    save_pruned(result.model, masks, config, tmp_path / "trained")


def test_sparse_linear_equals_the_masked_dense_layer():
    torch.manual_seed(1)
    dense = nn.Linear(50, 257)
    with torch.no_grad():
        dense.weight.mul_(torch.rand_like(dense.weight) < 0.01)
    sparse = SparseLinear.from_dense(dense)
    assert sparse.nnz == int(dense.weight.count_nonzero())
    assert torch.equal(sparse.dense_weight(), dense.weight.detach())
    features = torch.randn(2, 30, 50)
    with torch.no_grad():
        torch.testing.assert_close(sparse(features), dense(features), atol=1e-6, rtol=1e-5)
    without_bias = nn.Linear(4, 3, bias=False)
    assert torch.equal(SparseLinear.from_dense(without_bias).bias, torch.zeros(3))


def pruned_small_model(keep_fraction: float = 0.02) -> tuple[CoughSeparator, dict, PruningConfig]:
    model = small_model()
    config = PruningConfig(keep_fraction=keep_fraction)
    masks = snip_masks(model, batches(2), config)
    return apply_masks(model, masks).eval(), masks, config


def test_optimize_for_inference_swaps_the_sparse_layer_and_keeps_the_output():
    pruned, _, _ = pruned_small_model()
    optimized = optimize_for_inference(pruned)
    assert list(sparse_layers(optimized)) == ["output"]
    assert isinstance(pruned.masker.output, nn.Linear)  # the source model is untouched
    wave = batches(1)[0][0]
    with torch.inference_mode():
        torch.testing.assert_close(optimized(wave), pruned(wave), atol=1e-5, rtol=0)
    assert not sparse_layers(optimize_for_inference(small_model().eval()))  # a dense model stays dense


def test_save_and_load_pruned(tmp_path):
    pruned, masks, config = pruned_small_model()
    folder = save_pruned(pruned, masks, config, tmp_path / "pruned", metadata={"note": "test"})
    stored = torch.load(folder / MASKS_FILE, weights_only=True)
    assert torch.equal(stored["masker.output.weight"], masks["masker.output.weight"])
    model, loaded_masks, loaded_config = load_pruned(folder)
    assert loaded_config == config and model.metadata == {"note": "test"}
    assert torch.equal(model.masker.output.weight, pruned.masker.output.weight)
    assert torch.equal(loaded_masks["masker.output.weight"], masks["masker.output.weight"])
    with pytest.raises(ValueError, match="apply_masks"):
        save_pruned(small_model(), masks, config, tmp_path / "unmasked")


def test_mask_layer_costs_follow_the_sparsity_and_match_torch_flop_counter():
    pruned, masks, _ = pruned_small_model()
    optimized = optimize_for_inference(pruned)
    dense_costs = {cost.stage: cost for cost in stage_costs(pruned, SAMPLES)}
    sparse_costs = {cost.stage: cost for cost in stage_costs(optimized, SAMPLES)}
    assert list(dense_costs) == list(STAGES)
    frames, nnz = SMALL.n_frames(SAMPLES), int(masks["masker.output.weight"].sum())
    assert sparse_costs["mask layer"].macs == frames * nnz
    assert dense_costs["mask layer"].macs == frames * SMALL.hidden_size * SMALL.n_bins
    assert sparse_costs["lstm"].macs == dense_costs["lstm"].macs
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pruned(torch.zeros(1, SAMPLES))
    assert counter.get_total_flops() == 2 * dense_costs["mask layer"].macs
    breakdown = cost_breakdown(pruned, clip_seconds=0.25, sample_rate=SMALL.sample_rate)
    assert breakdown["flops_share"].sum() == pytest.approx(1.0)


def test_parameter_counts_and_sizes_of_the_sparse_model():
    pruned, masks, _ = pruned_small_model()
    optimized = optimize_for_inference(pruned)
    folded_dense = pruned.for_inference()
    assert parameter_counts(optimized) == parameter_counts(folded_dense)
    total, nonzero = parameter_counts(pruned)
    assert total == pruned.parameter_count()
    assert parameter_counts(folded_dense)[0] == total - 2 * SMALL.n_bins  # BatchNorm folded, shared weights once
    assert state_sizes_mb(folded_dense)[0] == state_sizes_mb(folded_dense)[1]
    pruned_away = int((~masks["masker.output.weight"]).sum())
    assert nonzero == total - pruned_away - _incidental_zeros(pruned, masks)
    dense_mb, stored_mb = state_sizes_mb(optimized)
    assert dense_mb == pytest.approx(state_sizes_mb(folded_dense)[1])
    assert stored_mb < dense_mb


def test_complexity_table_has_one_row_per_model_and_device():
    pruned, _, _ = pruned_small_model()
    models = {"dense": small_model().eval(), "pruned sparse": optimize_for_inference(pruned)}
    table = complexity_table(
        models,
        clip_seconds=0.25,
        sample_rate=SMALL.sample_rate,
        devices=["cpu"],
        batch_size=2,
        latency_runs=2,
        throughput_runs=1,
    )
    assert list(table["model"]) == ["dense", "pruned sparse"] and set(table["device"]) == {"cpu"}
    assert (table["latency_ms"] > 0).all() and (table["throughput_clips_per_s"] > 0).all()
    dense, sparse = table.iloc[0], table.iloc[1]
    assert sparse["macs_millions"] < dense["macs_millions"]
    assert sparse["nonzero_parameters"] < dense["nonzero_parameters"]


def test_complexity_refuses_an_unknown_model():
    with pytest.raises(TypeError, match="Linear"):
        stage_costs(nn.Linear(2, 2), SAMPLES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sparse_path_on_cuda():
    pruned, _, _ = pruned_small_model()
    optimized = optimize_for_inference(pruned.to("cuda"))
    wave = batches(1)[0][0].to("cuda")
    with torch.inference_mode():
        torch.testing.assert_close(optimized(wave), pruned(wave), atol=1e-5, rtol=0)


def _incidental_zeros(model: nn.Module, masks: dict) -> int:
    """Weights that are zero without being pruned (none expected with random initialisation, counted to be exact)."""
    zeros = 0
    for name, parameter in model.named_parameters():
        kept = masks[name] if name in masks else torch.ones_like(parameter, dtype=torch.bool)
        zeros += int((parameter.detach()[kept] == 0).sum())
    return zeros


def test_pruned_training_config_splits_into_pruning_and_training():
    config = PrunedTrainingConfig(epochs=3, keep_fraction=0.05, target_parameters=["masker.output.weight"])
    assert config.pruning_config() == PruningConfig(keep_fraction=0.05, target_parameters=("masker.output.weight",))
    assert config.training_config() == TrainingConfig(epochs=3)
    for bad in ({"start_from": "scratch"}, {"keep_fraction": 0.0}, {"target_parameters": ()}, {"epochs": 0}):
        with pytest.raises(ValueError):
            PrunedTrainingConfig(**bad)
