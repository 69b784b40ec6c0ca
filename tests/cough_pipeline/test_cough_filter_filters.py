"""The cough filter's zero-phase IIR kernels give scipy's ``filtfilt`` / ``sosfiltfilt`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from cough_pipeline.cough_filter.filters import BiquadBank, ZeroPhaseFilter, ZeroPhaseSosFilter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order, cutoff", [(2, 10 / 6000), (4, 0.25), (4, 12_000 / 44_100)])
def test_transfer_function_filter_is_scipys_filtfilt(dtype, order, cutoff):
    x = np.random.default_rng(order).standard_normal(5_000).astype(dtype)
    b, a = sps.butter(order, cutoff)
    np.testing.assert_array_equal(ZeroPhaseFilter(b, a)(x), sps.filtfilt(b, a, x))


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_section_filter_is_scipys_sosfiltfilt(factor):
    x = np.random.default_rng(factor).standard_normal(7_000)
    sos = sps.cheby1(8, 0.05, 0.8 / factor, output="sos")
    np.testing.assert_array_equal(ZeroPhaseSosFilter(sos)(x), sps.sosfiltfilt(sos, x))


def test_a_bank_filters_each_column_as_filtfilt_does():
    x = np.random.default_rng(0).standard_normal(3_000).astype(np.float32)
    bands = [sps.butter(1, [low / 6000, (low + 50) / 6000], btype="bandpass") for low in range(50, 1000, 50)]
    band_passed = BiquadBank(bands)(x[:, np.newaxis])  # one input, every filter
    np.testing.assert_array_equal(band_passed.T, [sps.filtfilt(b, a, x) for b, a in bands])
    smoother = sps.butter(2, 10 / 6000)
    smoothed = BiquadBank([smoother] * len(bands))(band_passed**2)  # one column per filter
    np.testing.assert_array_equal(smoothed.T, sps.filtfilt(*smoother, band_passed.T**2, axis=-1))


def test_filters_refuse_what_they_cannot_run():
    with pytest.raises(ValueError):
        ZeroPhaseFilter([1.0, 0.5], [1.0, 0.2, 0.1])
    with pytest.raises(ValueError):
        BiquadBank([sps.butter(4, 0.2)])
    with pytest.raises(ValueError):
        ZeroPhaseSosFilter(np.ones((2, 5)))
