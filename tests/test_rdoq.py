"""Rate-distortion optimised quantization: standard streams, fewer bits, sane statistics."""
import numpy as np
import pytest

from nnc_core.cabac.levels import bin_statistics
from nnc_core.quant.rdoq import bit_costs, lagrange_multiplier, rate_model
from nnc_core.tensor import decode, encode, encode_with_reconstruction


def weights(shape=(96, 80), seed=0):
    return np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)


@pytest.mark.parametrize("use_dq", [True, False])
@pytest.mark.parametrize("scan_order", [0, 1])
def test_rdoq_round_trip_is_exact(use_dq, scan_order):
    x = weights()
    bs, recon = encode_with_reconstruction(x, lambda_scale=1.0, use_dq=use_dq, scan_order=scan_order)
    np.testing.assert_array_equal(decode(bs), recon)


@pytest.mark.parametrize("use_dq", [True, False])
def test_rate_falls_as_lambda_grows(use_dq):
    x = weights()
    sizes = [len(encode(x, qp=-28, use_dq=use_dq, lambda_scale=s)) for s in (0.0, 2.0, 8.0)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_lambda_zero_is_the_plain_encoder():
    x = weights()
    assert encode(x, lambda_scale=0.0) == encode(x)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_invalid_lambda(bad):
    with pytest.raises(ValueError):
        encode(weights(), lambda_scale=bad)


def test_bin_statistics_count_every_significance_flag():
    r = np.random.default_rng(3).integers(-3, 4, size=(20, 30)).astype(np.int32)
    counts = bin_statistics(r, 20, 30, dq=False, row_skipping=False)
    sig = counts[:, 0:3].sum(axis=1)
    assert sig.sum() == r.size                         # one significance flag per element
    assert sig[1] == np.count_nonzero(r)               # its value 1 marks a non-zero level
    assert counts[:, 48:51].sum() == np.count_nonzero(r)   # one sign flag per non-zero level


def test_bit_costs_are_probabilities():
    c0, c1 = bit_costs(np.array([[10, 0, 5], [10, 7, 0]]))
    np.testing.assert_allclose(2.0 ** -c0 + 2.0 ** -c1, 1.0)
    assert c0[0] == pytest.approx(1.0)


def test_rate_model_prefers_small_levels_for_gaussian_weights():
    r = np.round(weights() / 2**-8).astype(np.int32)
    tables = rate_model(r.reshape(-1), 96, 80, dq=False)
    from nnc_core.cabac.trellis import quantize_uniform_rd
    # with a huge multiplier every value quantizes to zero: rate dominates
    zeros = quantize_uniform_rd(weights().reshape(-1), 2**-8, tables, 1e6)
    assert not np.any(zeros)
    assert lagrange_multiplier(1.0, dq=True) == pytest.approx(4 * lagrange_multiplier(1.0, dq=False))
