"""Model complexity of the neural classifiers: parameters, float32 size, counted FLOPs/MACs on a batch of one,
and single-clip latency and batched throughput per device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cough_pipeline.classification.complexity import (
    COMPLEXITY_COLUMNS,
    complexity_table,
    float32_size_mb,
    flop_count,
    model_complexity,
    parameter_count,
)
from cough_pipeline.classification.errors import ClassificationError

FAST = {"latency_runs": 2, "throughput_runs": 1, "batch_size": 4}


class TwoInputs(nn.Module):
    """Reads ``{"a": (batch, 6), "b": (batch, 4)}`` and sums two linear heads."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 2), nn.Linear(4, 2)

    def forward(self, batch):
        return self.a(batch["a"]) + self.b(batch["b"])


def test_parameter_count_is_the_sum_of_numel_with_shared_weights_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    assert parameter_count(model) == (sum(p.numel() for p in model.parameters()),) * 2
    tied = nn.Sequential(nn.Linear(5, 5, bias=False), nn.Linear(5, 5, bias=False))
    tied[1].weight = tied[0].weight
    assert parameter_count(tied)[0] == 25
    model[0].requires_grad_(False)
    total, trainable = parameter_count(model)
    assert trainable == total - (4 * 9 + 4)


def test_size_counts_float32_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4))
    # 44 + 8 parameters and 8 running statistics at 4 bytes, the int64 batch counter at 8.
    assert float32_size_mb(model) == pytest.approx(((44 + 8 + 8) * 4 + 8) / 1e6)
    assert float32_size_mb(model.half()) == pytest.approx(((44 + 8 + 8) * 4 + 8) / 1e6)


def test_flops_of_a_linear_layer_follow_the_counter_convention():
    model = nn.Linear(10, 4)
    assert flop_count(model, (torch.randn(1, 10),)) == 2 * 10 * 4  # the bias add is not counted
    row = model_complexity(model, (torch.randn(7, 10),), **FAST)  # counted on the first item only
    assert row["flops"] == 80 and row["macs"] == 40


def test_flops_of_convolutions_match_hand_computed_values():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    # Per output element (8 x 16 x 16) one multiply-accumulate per weight of its filter (3 x 3 x 3).
    assert flop_count(conv, (torch.randn(1, 3, 16, 16),)) == 2 * (8 * 16 * 16) * (3 * 3 * 3)
    grouped = nn.Conv2d(4, 8, kernel_size=3, groups=4, bias=False)  # each filter sees one input channel
    assert flop_count(grouped, (torch.randn(1, 4, 10, 10),)) == 2 * (8 * 8 * 8) * (1 * 3 * 3)
    stack = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    row = model_complexity(stack, (torch.randn(2, 3, 16, 16),), **FAST)
    assert row["flops"] == 2 * (8 * 16 * 16 * 27) + 2 * 8 * 2
    assert row["macs"] == row["flops"] / 2


def test_model_complexity_times_the_model_and_leaves_it_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    previous = torch.get_num_threads()
    row = model_complexity(model, (torch.randn(1, 10),), threads=1, **FAST)
    assert row["latency_ms"] > 0 and row["throughput_clips_per_s"] > 0
    assert row["threads"] == 1 and torch.get_num_threads() == previous
    assert row["device"] == "cpu" and row["batch_size"] == 4
    assert model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_mapping_inputs_and_the_table():
    torch.manual_seed(0)
    inputs = ({"a": torch.randn(3, 6), "b": torch.randn(3, 4)},)
    table = complexity_table(
        {"two_inputs": (TwoInputs(), inputs), "linear": (nn.Linear(10, 4), (torch.randn(1, 10),))},
        devices=["cpu"],
        **FAST,
    )
    assert list(table.columns) == list(COMPLEXITY_COLUMNS)
    assert table["model"].tolist() == ["two_inputs", "linear"]
    assert table["flops"].tolist() == [2 * 6 * 2 + 2 * 4 * 2, 80]
    assert table["parameters"].tolist() == [14 + 10, 44]
    assert (table["latency_ms"] > 0).all() and (table["throughput_clips_per_s"] > 0).all()


def test_bad_example_inputs_are_refused():
    model = nn.Linear(10, 4)
    with pytest.raises(ClassificationError, match="tuple of tensors"):
        model_complexity(model, ())
    with pytest.raises(ClassificationError, match="tuple of tensors"):
        model_complexity(model, ([1.0] * 10,))
    with pytest.raises(ClassificationError, match="batch dimension"):
        model_complexity(model, (torch.randn(0, 10),))
    with pytest.raises(ClassificationError, match="batch_size"):
        model_complexity(model, (torch.randn(1, 10),), batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_rows_when_a_gpu_is_available():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    table = complexity_table({"cnn": (model, (torch.randn(1, 1, 32, 32),))}, **FAST)
    assert table["device"].tolist() == ["cpu", "cuda"]
    assert table["flops"].nunique() == 1 and (table["latency_ms"] > 0).all()
    assert next(model.parameters()).device.type == "cpu"
