"""numba kernels for the separator's CPU inference path: the LSTM recurrence and the log-power features.

**LSTM recurrence.** PyTorch's CPU LSTM (oneDNN) spends about 1.5 us per time step of a 50-unit layer, mostly on
per-step set-up: the arithmetic of a step is a ``(4 * hidden, hidden)`` mat-vec, 10 k multiply-adds. A 5-second clip
has 1 723 steps per layer, so on one clip the two layers' recurrences took about half of the separator's time.
:class:`ScaledLayer` splits a layer into what parallelises and what does not:

* the input projection ``x @ W_ih^T + b_ih + b_hh`` for all frames at once, one matrix product in torch (it uses
  the intra-op threads);
* the recurrence over the precomputed input gates in :func:`lstm_recurrence`, which keeps the gates in small
  arrays, vectorises the mat-vec over the gate axis and evaluates ``exp`` with a vectorisable polynomial. About
  0.7 us per step on one core, with the GIL released, so batches on worker threads run their kernels in parallel.

It needs no transcendental other than ``exp``: the weights are stored pre-scaled (:func:`scaled_layer`) so that the
pre-activations arrive negated, and the cell gate's doubled, which is exact in floating point; then
``sigmoid(a) = 1 / (1 + exp(-a))`` and ``tanh(a) = 2 sigmoid(2a) - 1``. Outputs equal ``torch.nn.LSTM``'s within a
few 1e-7 (float32 rounding in a different order); a NaN input gives NaN outputs, as in torch.

**Log power.** :func:`log_power` computes the folded first layer's input ``log(max(re^2 + im^2, floor))`` in one
pass over the complex spectrum (torch needs a strided square, an add, a clamp and a log: about 2.5x slower).

``exp`` and ``log`` are Cephes' ``expf`` / ``logf`` (range reduction by powers of two through the exponent bits, a
polynomial on the reduced argument): within 1-2 ulp of the exact values, written so that LLVM vectorises them.

Shapes: ``B`` clips, ``T`` frames, ``H`` hidden units, ``G = 4H`` gates in PyTorch's order (input, forget, cell,
output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from torch import nn

# fused multiply-add only: no reassociation, so each output depends on nothing but its inputs (bit-reproducible)
_FASTMATH = {"contract"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_LOW = np.float32(-87.0)  # exp(-87) is still a normal float32 ...
_EXP_HIGH = np.float32(88.0)  # ... and exp(88) is below float32's maximum


@njit(fastmath=_FASTMATH, boundscheck=False, error_model="numpy", nogil=True, cache=True, inline="always")
def _exp_inplace(values: np.ndarray, count: int) -> None:
    """``values[:count] = exp(values[:count])`` for a 1-D float32 array; inputs clamped to [-87, 88], NaN kept."""
    bits = values.view(np.int32)
    for j in range(count):
        x = values[j]
        if x < _EXP_LOW:
            x = _EXP_LOW
        elif x > _EXP_HIGH:
            x = _EXP_HIGH
        n = np.floor(x * _LOG2E + np.float32(0.5))
        r = x - n * _LN2_HI - n * _LN2_LO  # |r| <= ln(2) / 2
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        values[j] = p * r * r + r + np.float32(1.0)
        bits[j] += np.int32(n) << 23  # times 2^n, through the exponent field


_SQRT_HALF = np.float32(0.7071067811865476)


@njit(fastmath=_FASTMATH, boundscheck=False, error_model="numpy", nogil=True, cache=True)
def _log_power_kernel(pairs: np.ndarray, floor: np.float32, out: np.ndarray) -> None:
    """``out[i] = log(max(pairs[i, 0]^2 + pairs[i, 1]^2, floor))``; ``pairs`` ``(N, 2)``, ``out`` ``(N,)``, float32.
    ``floor`` must be a positive normal float32 (so the exponent arithmetic below holds); NaN and inf pass."""
    bits = out.view(np.int32)
    for i in range(out.shape[0]):
        power = pairs[i, 0] * pairs[i, 0] + pairs[i, 1] * pairs[i, 1]
        out[i] = floor if power < floor else power
    for i in range(out.shape[0]):
        # power = m * 2^e with m in [0.5, 1): read e from the exponent bits, then set them to 2^-1
        power = out[i]
        field = (bits[i] >> 23) & 0xFF
        exponent = field - 126
        bits[i] = (bits[i] & 0x007FFFFF) | 0x3F000000
        m = out[i]
        if m < _SQRT_HALF:  # keep the reduced argument in [sqrt(1/2) - 1, sqrt(2) - 1]
            exponent -= 1
            m = m + m - np.float32(1.0)
        else:
            m = m - np.float32(1.0)
        z = m * m
        y = np.float32(7.0376836292e-2)
        y = y * m - np.float32(1.1514610310e-1)
        y = y * m + np.float32(1.1676998740e-1)
        y = y * m - np.float32(1.2420140846e-1)
        y = y * m + np.float32(1.4249322787e-1)
        y = y * m - np.float32(1.6668057665e-1)
        y = y * m + np.float32(2.0000714765e-1)
        y = y * m - np.float32(2.4999993993e-1)
        y = y * m + np.float32(3.3333331174e-1)
        e = np.float32(exponent)
        y = y * m * z + e * _LN2_LO - np.float32(0.5) * z
        out[i] = m + y + e * _LN2_HI if field != 0xFF else power  # NaN stays NaN, log(inf) = inf


def log_power(spectrum: torch.Tensor, floor: float) -> torch.Tensor:
    """``log(max(|spectrum|^2, floor))`` of a complex64 CPU ``spectrum`` (any shape), float32 of the same shape.

    Equal to torch's ``log(clamp_min(re^2 + im^2, floor))`` within about 2 float32 ulp. ``floor`` must be a positive
    normal float32 (the separator uses ``db_floor^2 = 1e-16``)."""
    floor32 = np.float32(floor)
    if not (floor32 >= np.finfo(np.float32).tiny and np.isfinite(floor32)):
        raise ValueError(f"floor must be a positive normal float32, got {floor}")
    if spectrum.dtype != torch.complex64 or spectrum.device.type != "cpu":
        raise ValueError(f"expected a complex64 CPU spectrum, got {spectrum.dtype} on {spectrum.device}")
    pairs = torch.view_as_real(spectrum.contiguous()).reshape(-1, 2)
    out = torch.empty(spectrum.shape)
    _log_power_kernel(pairs.numpy(), floor32, out.view(-1).numpy())
    return out


@njit(fastmath=_FASTMATH, boundscheck=False, error_model="numpy", nogil=True, cache=True)
def lstm_recurrence(
    input_gates: np.ndarray, weight_hh_t: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray
) -> None:
    """Run the recurrence of one LSTM layer over ``T`` frames, in place.

    ``input_gates`` ``(B, T, G)``: the scaled input projection with both biases (:class:`ScaledLayer`);
    ``weight_hh_t`` ``(H, G)``: the scaled, transposed recurrent weight; ``h``, ``c`` ``(B, H)``: the state, updated
    to the last frame's; ``out`` ``(B, T, H)``: every frame's ``h``. All float32, C-contiguous.
    """
    batch, frames, width = input_gates.shape
    hidden = width // 4
    gates = np.empty((batch, width), np.float32)
    flat_gates = gates.reshape(batch * width)
    cells = np.empty((batch, hidden), np.float32)
    flat_cells = cells.reshape(batch * hidden)
    for t in range(frames):
        for b in range(batch):
            for j in range(width):
                gates[b, j] = input_gates[b, t, j]
        for k in range(hidden):
            for b in range(batch):
                state = h[b, k]
                for j in range(width):
                    gates[b, j] += state * weight_hh_t[k, j]
        # every pre-activation arrives as -a (the cell gate's as -2a): exp, then the logistic function
        _exp_inplace(flat_gates, batch * width)
        for j in range(batch * width):
            flat_gates[j] = np.float32(1.0) / (np.float32(1.0) + flat_gates[j])
        for b in range(batch):
            for j in range(hidden):
                candidate = np.float32(2.0) * gates[b, 2 * hidden + j] - np.float32(1.0)  # tanh
                cell = gates[b, hidden + j] * c[b, j] + gates[b, j] * candidate
                c[b, j] = cell
                cells[b, j] = np.float32(-2.0) * cell
        _exp_inplace(flat_cells, batch * hidden)
        for b in range(batch):
            for j in range(hidden):
                value = gates[b, 3 * hidden + j] * (np.float32(2.0) / (np.float32(1.0) + cells[b, j]) - np.float32(1.0))
                h[b, j] = value
                out[b, t, j] = value


@dataclass(frozen=True)
class ScaledLayer:
    """One LSTM layer's weights in the form :func:`lstm_recurrence` takes (all float32, C-contiguous, CPU).

    Rows of the input, forget and output gates are negated and the cell gate's rows multiplied by -2 (exact), so
    that the kernel needs only ``exp``. ``weight_ih_t`` ``(I, G)``, ``bias`` ``(G,)`` (``b_ih + b_hh``),
    ``weight_hh_t`` ``(H, G)``.
    """

    weight_ih_t: torch.Tensor
    bias: torch.Tensor
    weight_hh_t: torch.Tensor

    @property
    def hidden_size(self) -> int:
        return self.weight_hh_t.shape[0]

    def project(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` ``(B, T, I)`` -> scaled input gates ``(B, T, G)`` (one matrix product)."""
        batch, frames, width = inputs.shape
        return torch.addmm(self.bias, inputs.reshape(batch * frames, width), self.weight_ih_t).reshape(
            batch, frames, -1
        )

    def __call__(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``inputs`` ``(B, T, I)`` -> ``(out (B, T, H), (h, c) each (B, H))``, like ``nn.LSTM`` with
        ``batch_first`` on one layer; ``state`` (each ``(B, H)``, None for zeros) is not modified."""
        batch, frames, _ = inputs.shape
        if state is None:
            h = np.zeros((batch, self.hidden_size), np.float32)
            c = np.zeros((batch, self.hidden_size), np.float32)
        else:
            h, c = (np.array(part.detach().cpu().numpy(), np.float32, order="C") for part in state)
        out = torch.empty(batch, frames, self.hidden_size)
        if frames:
            gates = self.project(inputs.float()).numpy()
            lstm_recurrence(gates, self.weight_hh_t.numpy(), h, c, out.numpy())
        return out, (torch.from_numpy(h), torch.from_numpy(c))


def scaled_layer(layer: nn.LSTM, index: int = 0) -> ScaledLayer:
    """The ``index``-th layer of a unidirectional ``nn.LSTM`` as a :class:`ScaledLayer` (a CPU float32 copy)."""
    if layer.bidirectional or layer.proj_size or not layer.bias:
        raise ValueError("the recurrence kernel runs unidirectional LSTM layers with biases and no projection")
    hidden = layer.hidden_size
    scale = torch.full((4 * hidden, 1), -1.0)
    scale[2 * hidden : 3 * hidden] = -2.0
    with torch.no_grad():
        weight_ih = getattr(layer, f"weight_ih_l{index}").detach().float().cpu() * scale
        weight_hh = getattr(layer, f"weight_hh_l{index}").detach().float().cpu() * scale
        bias = getattr(layer, f"bias_ih_l{index}").detach().float().cpu()
        bias = (bias + getattr(layer, f"bias_hh_l{index}").detach().float().cpu()) * scale[:, 0]
    return ScaledLayer(weight_ih.t().contiguous(), bias.contiguous(), weight_hh.t().contiguous())
