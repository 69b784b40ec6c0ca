"""The separator's CPU kernels: LSTM recurrence equal to torch.nn.LSTM (state in and out), exp and log-power accuracy,
NaN propagation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cough_pipeline.separation.cpu_kernels import (
    _exp_inplace,
    log_power,
    lstm_recurrence,
    scaled_layer,
)
from cough_pipeline.separation.model import CoughSeparator


def _layer(inputs: int, hidden: int, seed: int) -> nn.LSTM:
    torch.manual_seed(seed)
    return nn.LSTM(inputs, hidden, batch_first=True).eval()


@pytest.mark.parametrize(
    ("batch", "frames", "inputs", "hidden"), [(1, 300, 257, 50), (3, 41, 50, 50), (2, 1, 7, 13), (1, 5, 3, 1)]
)
def test_kernel_equals_torch_lstm_with_and_without_state(batch, frames, inputs, hidden):
    layer = _layer(inputs, hidden, seed=frames)
    kernel = scaled_layer(layer)
    x = 2.0 * torch.randn(batch, frames, inputs)
    state = (torch.randn(batch, hidden), torch.randn(batch, hidden))
    given = tuple(part.clone() for part in state)
    with torch.inference_mode():
        for initial in (None, state):
            torch_state = None if initial is None else tuple(part.unsqueeze(0) for part in initial)
            expected, (h, c) = layer(x, torch_state)
            out, (kernel_h, kernel_c) = kernel(x, initial)
            assert out.shape == expected.shape
            assert (out - expected).abs().max() < 1e-5
            assert (kernel_h - h[0]).abs().max() < 1e-5 and (kernel_c - c[0]).abs().max() < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(state, given))  # the caller's state is not modified


def test_state_carries_across_calls_like_one_long_call():
    layer = _layer(20, 50, seed=3)
    kernel = scaled_layer(layer)
    x = torch.randn(2, 200, 20)
    whole, whole_state = kernel(x)
    state, pieces = None, []
    for start in range(0, 200, 37):
        piece, state = kernel(x[:, start : start + 37], state)
        pieces.append(piece)
    assert (torch.cat(pieces, dim=1) - whole).abs().max() < 1e-6
    assert all((a - b).abs().max() < 1e-6 for a, b in zip(state, whole_state))


def test_saturated_gates_stay_finite_and_match_torch():
    """Pre-activations far outside exp's float range are clamped, not overflowed."""
    layer = _layer(8, 6, seed=4)
    with torch.no_grad():
        layer.weight_ih_l0.mul_(500.0)
    x = torch.randn(1, 50, 8)
    with torch.inference_mode():
        expected, _ = layer(x)
    out, _ = scaled_layer(layer)(x)
    assert torch.isfinite(out).all()
    assert (out - expected).abs().max() < 1e-5


def test_exp_is_accurate_over_the_float_range_and_keeps_nan():
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), [-1e-6, 0.0, 1e-6]]).astype(np.float32)
    values = x.copy()
    _exp_inplace(values, values.size)
    expected = np.exp(x.astype(np.float64))
    assert np.max(np.abs(values - expected) / expected) < 5e-7  # a few float32 ulp
    clamped = np.array([-1e4, 1e4, np.nan], np.float32)
    _exp_inplace(clamped, 3)
    assert clamped[0] == pytest.approx(np.exp(-87.0), rel=1e-6) and clamped[1] == pytest.approx(np.exp(88.0), rel=1e-6)
    assert np.isnan(clamped[2])


def test_nan_input_gives_nan_output():
    out, _ = scaled_layer(_layer(4, 5, seed=5))(torch.full((1, 3, 4), float("nan")))
    assert torch.isnan(out).all()


def test_raw_kernel_updates_the_state_in_place():
    """The raw kernel: h and c hold the last frame's state afterwards, out every frame's h."""
    layer = _layer(3, 4, seed=6)
    kernel = scaled_layer(layer)
    x = torch.randn(1, 10, 3)
    gates = kernel.project(x).numpy()
    h, c = np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)
    out = np.empty((1, 10, 4), np.float32)
    lstm_recurrence(gates, kernel.weight_hh_t.numpy(), h, c, out)
    np.testing.assert_array_equal(out[0, -1], h[0])
    with torch.inference_mode():
        expected, (_, expected_c) = layer(x)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(c[0], expected_c[0, 0].numpy(), atol=1e-6)


def test_refuses_bidirectional_layers():
    with pytest.raises(ValueError, match="unidirectional"):
        scaled_layer(nn.LSTM(3, 4, bidirectional=True))


def test_inference_separator_paths_agree():
    """The kernel path (default) and torch's LSTM (``cpu_kernels=False``) give the same separated wave."""
    torch.manual_seed(7)
    model = CoughSeparator().eval()
    with torch.no_grad():
        model.masker.norm.running_mean.fill_(-60.0)
        model.masker.norm.running_var.fill_(400.0)
    waves = 0.1 * torch.randn(2, 20_000)
    kernel, fused = model.for_inference(), model.for_inference(cpu_kernels=False)
    assert kernel.uses_cpu_kernels and not fused.uses_cpu_kernels
    with torch.inference_mode():
        assert (kernel(waves) - fused(waves)).abs().max() < 1e-5
        assert (kernel(waves) - model(waves)).abs().max() < 1e-5


def test_log_power_matches_float64_over_the_float_range():
    rng = np.random.default_rng(8)
    magnitudes = np.concatenate([10.0 ** rng.uniform(-7.9, 18.0, 50_000), [1.0, 0.5, 2.0**0.5, 1e-9, 0.0]])
    angles = rng.uniform(0, 2 * np.pi, magnitudes.size)
    spectrum = torch.from_numpy((magnitudes * np.exp(1j * angles)).astype(np.complex64)).reshape(5, -1)
    out = log_power(spectrum, 1e-16)
    assert out.shape == spectrum.shape and out.dtype == torch.float32
    pairs = torch.view_as_real(spectrum).double()
    expected = np.log(np.maximum((pairs[..., 0] ** 2 + pairs[..., 1] ** 2).numpy(), np.float32(1e-16)))
    assert np.max(np.abs(out.numpy() - expected) / np.maximum(1.0, np.abs(expected))) < 5e-7
    assert out.reshape(-1)[-2:].tolist() == pytest.approx([np.log(np.float32(1e-16))] * 2)  # below the floor


def test_log_power_passes_nan_and_inf_and_checks_its_input():
    spectrum = torch.tensor([complex(float("nan"), 0.0), complex(float("inf"), 1.0), complex(3.0, 4.0)])
    out = log_power(spectrum, 1e-16)
    assert torch.isnan(out[0]) and out[1] == float("inf") and out[2].item() == pytest.approx(np.log(25.0))
    with pytest.raises(ValueError, match="complex64"):
        log_power(spectrum.to(torch.complex128), 1e-16)
    with pytest.raises(ValueError, match="positive normal"):
        log_power(spectrum, 0.0)
