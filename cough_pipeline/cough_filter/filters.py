"""Zero-phase IIR filtering for the cough filter's features: ``scipy.signal.filtfilt`` / ``sosfiltfilt`` in numba.

The features filter every clip through 21 zero-phase IIR filters (the 6 kHz low-pass and the decimation filter of
the preprocessing, then 19 band-passes and the envelope smoother). scipy spends most of that time around the
arithmetic: per call it validates, pads, solves for the initial state and runs a generic filter loop. These
kernels run the same recurrences (direct form II transposed, the operations in scipy's order, no fast-math), so
their outputs are bit for bit scipy's; the padding (odd extension) and the initial states (``lfilter_zi`` /
``sosfilt_zi``, cached per filter) are scipy's own.

Shapes: ``n`` samples, ``T`` taps (``len(b) == len(a)``), ``S`` second-order sections.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import signal as sps
from scipy.signal._arraytools import odd_ext


@njit(cache=True, nogil=True, boundscheck=False)
def _lfilter_inplace(b: np.ndarray, a: np.ndarray, state: np.ndarray, values: np.ndarray, reverse: bool) -> None:
    """``values = lfilter(b, a, values, zi=state)`` in place (``reverse``: over ``values[::-1]``), with
    scipy's arithmetic: ``y = z0 + b0 x``, ``z_k = z_{k+1} + x b_{k+1} - y a_{k+1}``, ``z_last = x b_T - y a_T``.
    ``a[0]`` must be 1. ``state`` ``(T - 1,)`` is consumed."""
    n, taps = values.shape[0], b.shape[0]
    for step in range(n):
        i = n - 1 - step if reverse else step
        x = values[i]
        y = state[0] + b[0] * x
        for k in range(taps - 2):
            state[k] = state[k + 1] + x * b[k + 1] - y * a[k + 1]
        state[taps - 2] = x * b[taps - 1] - y * a[taps - 1]
        values[i] = y


@njit(cache=True, nogil=True, boundscheck=False)
def _filtfilt_inplace(b: np.ndarray, a: np.ndarray, zi: np.ndarray, ext: np.ndarray) -> None:
    """Forward then backward pass over the padded signal ``ext`` (float64, in place), each started from ``zi``
    times the first sample it reads, as ``filtfilt`` does."""
    _lfilter_inplace(b, a, zi * ext[0], ext, False)
    _lfilter_inplace(b, a, zi * ext[-1], ext, True)


@njit(cache=True, nogil=True, boundscheck=False)
def _sosfilt_inplace(sos: np.ndarray, state: np.ndarray, values: np.ndarray, reverse: bool) -> None:
    """``values = sosfilt(sos, values, zi=state)`` in place with scipy's arithmetic per section:
    ``y = b0 x + z0``, ``z0 = b1 x - a1 y + z1``, ``z1 = b2 x - a2 y``. ``state`` ``(S, 2)`` is consumed."""
    n, sections = values.shape[0], sos.shape[0]
    for step in range(n):
        i = n - 1 - step if reverse else step
        x = values[i]
        for s in range(sections):
            y = sos[s, 0] * x + state[s, 0]
            state[s, 0] = sos[s, 1] * x - sos[s, 4] * y + state[s, 1]
            state[s, 1] = sos[s, 2] * x - sos[s, 5] * y
            x = y
        values[i] = x


@njit(cache=True, nogil=True, boundscheck=False)
def _sosfiltfilt_inplace(sos: np.ndarray, zi: np.ndarray, ext: np.ndarray) -> None:
    """Forward then backward second-order-section passes over ``ext`` (float64, in place), as ``sosfiltfilt``."""
    _sosfilt_inplace(sos, zi * ext[0], ext, False)
    _sosfilt_inplace(sos, zi * ext[-1], ext, True)


@njit(cache=True, nogil=True, boundscheck=False)
def _biquad_bank_inplace(coefficients: np.ndarray, state: np.ndarray, values: np.ndarray, reverse: bool) -> None:
    """:func:`_lfilter_inplace` of ``B`` second-order (3-tap) filters at once, one per column of ``values``
    ``(n, B)``; ``coefficients`` ``(5, B)`` rows ``b0, b1, b2, a1, a2``, ``state`` ``(2, B)`` consumed. The loop
    over the columns is innermost and branch-free, so it vectorises; each column gets scipy's arithmetic."""
    n, bands = values.shape
    b0, b1, b2, a1, a2 = coefficients[0], coefficients[1], coefficients[2], coefficients[3], coefficients[4]
    z0, z1 = state[0], state[1]
    for step in range(n):
        row = values[n - 1 - step] if reverse else values[step]
        for j in range(bands):
            x = row[j]
            y = z0[j] + b0[j] * x
            z0[j] = z1[j] + x * b1[j] - y * a1[j]
            z1[j] = x * b2[j] - y * a2[j]
            row[j] = y


@njit(cache=True, nogil=True, boundscheck=False)
def _biquad_bank_filtfilt(coefficients: np.ndarray, zi: np.ndarray, ext: np.ndarray) -> None:
    """Forward and backward passes of the bank over ``ext`` ``(n, B)`` in place, as ``filtfilt`` per column."""
    _biquad_bank_inplace(coefficients, zi * ext[0], ext, False)
    _biquad_bank_inplace(coefficients, zi * ext[-1], ext, True)


class BiquadBank:
    """``B`` second-order transfer-function filters, each applied as ``scipy.signal.filtfilt(b, a, x)`` (odd
    padding of 9 samples) to its own column: one pass over the samples for all of them.

    Args:
        filters: ``B`` pairs ``(b, a)`` of three coefficients each.
    """

    edge = 9  # filtfilt's default padding: 3 * taps

    def __init__(self, filters):
        normalised = [ZeroPhaseFilter(b, a) for b, a in filters]
        if any(f.b.size != 3 for f in normalised):
            raise ValueError("a biquad bank holds second-order (3-tap) filters only")
        self.coefficients = np.ascontiguousarray([[*f.b, *f.a[1:]] for f in normalised], np.float64).T.copy()
        self.zi = np.ascontiguousarray(np.stack([f.zi for f in normalised], axis=1))

    def __call__(self, columns: np.ndarray) -> np.ndarray:
        """Each column of ``columns`` through its own filter (zero phase), float64.

        Shape:
            columns: ``(n, B)`` (or ``(n, 1)``, filtered by every filter) with ``n > 9``; returns ``(n, B)``.
        """
        padded = odd_ext(np.asarray(columns), self.edge, axis=0)  # padding in the input's own dtype, as filtfilt
        ext = np.empty((padded.shape[0], self.zi.shape[1]))
        ext[...] = padded  # float64, one column per filter
        _biquad_bank_filtfilt(self.coefficients, self.zi, ext)
        return ext[self.edge : -self.edge]


class ZeroPhaseFilter:
    """One transfer-function filter ``(b, a)`` applied as ``scipy.signal.filtfilt(b, a, x)`` (odd padding of
    ``3 * T`` samples), with the coefficients normalised and the initial state solved once.

    Args:
        b, a: the filter's coefficients, ``(T,)`` each.
    """

    def __init__(self, b: np.ndarray, a: np.ndarray):
        b, a = np.atleast_1d(np.asarray(b, np.float64)), np.atleast_1d(np.asarray(a, np.float64))
        if b.shape != a.shape or b.size < 2 or a[0] == 0:
            raise ValueError(f"need b and a of the same length >= 2 with a[0] != 0, got {b.shape} and {a.shape}")
        self.zi = np.ascontiguousarray(sps.lfilter_zi(b, a), np.float64)
        self.b, self.a = b / a[0], a / a[0]  # as lfilter normalises
        self.edge = 3 * b.size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``filtfilt(b, a, x)``, float64.

        Shape:
            x: ``(n,)`` with ``n > 3 T``; returns ``(n,)``.
        """
        ext = np.ascontiguousarray(odd_ext(np.asarray(x), self.edge), np.float64)  # padding in x's own dtype
        _filtfilt_inplace(self.b, self.a, self.zi, ext)
        return ext[self.edge : -self.edge]


class ZeroPhaseSosFilter:
    """Second-order sections applied as ``scipy.signal.sosfiltfilt(sos, x)`` (odd padding), initial state solved
    once.

    Args:
        sos: ``(S, 6)`` sections, each ``[b0, b1, b2, 1, a1, a2]``.
    """

    def __init__(self, sos: np.ndarray):
        sos = np.ascontiguousarray(sos, np.float64)
        if sos.ndim != 2 or sos.shape[1] != 6 or not np.all(sos[:, 3] == 1.0):
            raise ValueError(f"need (sections, 6) sections with a0 = 1, got shape {sos.shape}")
        self.sos = sos
        self.zi = np.ascontiguousarray(sps.sosfilt_zi(sos), np.float64)
        trailing_zeros = min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        self.edge = 3 * (2 * len(sos) + 1 - trailing_zeros)  # sosfiltfilt's default padlen

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``sosfiltfilt(sos, x)``, float64.

        Shape:
            x: ``(n,)`` with ``n > edge``; returns ``(n,)``.
        """
        ext = np.ascontiguousarray(odd_ext(np.asarray(x), self.edge), np.float64)
        _sosfiltfilt_inplace(self.sos, self.zi, ext)
        return ext[self.edge : -self.edge]
