"""The compiled core on its own: level coding round trips, truncated binarization, trellis."""
import itertools

import numpy as np
import pytest

from nnc_core import DecodeError
from nnc_core.cabac import PayloadDecoder, PayloadEncoder, quantize_dependent


def round_trip(levels, rows, cols, **kw):
    enc = PayloadEncoder()
    enc.bypass_bits(0b10110, 5)
    decoded = enc.encode_tensor(levels, rows, cols, **kw)
    payload = enc.finish()
    dec = PayloadDecoder(payload)
    assert dec.bypass_bits(5) == 0b10110
    kw.pop("row_skipping", None)
    kw.pop("param_opt", None)
    kw.pop("hdsp", None)
    out, info = dec.decode_tensor(rows, cols, **kw)
    dec.finish()
    np.testing.assert_array_equal(out, decoded)
    return decoded, payload


@pytest.mark.parametrize("num_gt", [1, 2, 5, 11, 16])
@pytest.mark.parametrize("magnitude", [3, 300, 2**20, 2**31 - 1])
def test_levels_with_long_remainders(num_gt, magnitude):
    rng = np.random.default_rng(num_gt)
    levels = rng.integers(-magnitude, magnitude, size=(13, 11), endpoint=True).astype(np.int32)
    decoded, _ = round_trip(levels, 13, 11, num_gt=num_gt)
    np.testing.assert_array_equal(decoded, levels.reshape(-1))


def test_int32_minimum_level():
    levels = np.array([-(2**31), 2**31 - 1, 0, -1], np.int32)
    decoded, _ = round_trip(levels, 2, 2)
    np.testing.assert_array_equal(decoded, levels)


@pytest.mark.parametrize("cb_size", [1, 2, 3, 4, 7, 40])
@pytest.mark.parametrize("num_gt", [1, 3, 11])
def test_codebook_truncated_binarization(cb_size, num_gt):
    rng = np.random.default_rng(cb_size * 100 + num_gt)
    for zero in sorted({0, cb_size // 2, cb_size - 1}):
        index = rng.integers(0, cb_size, size=(6, 9)).astype(np.int32) - zero
        decoded, _ = round_trip(index, 6, 9, num_gt=num_gt, cb_size=cb_size, cb_zero=zero)
        np.testing.assert_array_equal(decoded, index.reshape(-1))


def test_truncation_saves_bits():
    index = np.random.default_rng(0).integers(0, 3, size=(40, 40)).astype(np.int32)
    _, full = round_trip(index, 40, 40)
    _, truncated = round_trip(index, 40, 40, cb_size=3, cb_zero=0)
    assert len(truncated) < len(full)


def test_dq_with_inconsistent_parity_reports_what_decodes():
    """Reconstruction integers that break the DQ parity rule are coded as the nearest
    transmittable level; the encoder returns exactly what the decoder will produce."""
    levels = np.arange(-12, 12, dtype=np.int32)
    decoded, _ = round_trip(levels, 4, 6, dq=True)
    assert np.max(np.abs(decoded - levels)) <= 1


@pytest.mark.parametrize("scan_order", [0, 1, 2])
def test_trellis_output_is_consistent_with_the_state_machine(scan_order):
    from nnc_core.quant.scan import scan_positions
    x = np.random.default_rng(5).normal(0, 1, (40, 30))
    r = quantize_dependent(x, 0.1, scan_positions(40, 30, scan_order))
    decoded, _ = round_trip(r, 40, 30, dq=True, scan_order=scan_order)
    np.testing.assert_array_equal(decoded, r)


# DQ state transitions: state -> (next on an even level, next on an odd level)
DQ_NEXT = {0: (0, 2), 1: (7, 5), 2: (1, 3), 3: (6, 4), 4: (2, 0), 5: (5, 7), 6: (3, 1), 7: (4, 6)}


def test_trellis_is_optimal_on_small_inputs():
    """Exhaustive search over all transmitted levels |k| <= 4 for 5 values."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        x = rng.normal(0, 2.0, 5)
        best = np.inf
        for ks in itertools.product(range(-4, 5), repeat=5):
            state, err = 0, 0.0
            for xi, k in zip(x, ks):
                r = 0 if k == 0 else 2 * k - np.sign(k) * (state & 1)
                err += (xi - r) ** 2
                state = DQ_NEXT[state][abs(k) & 1]
            best = min(best, err)
        r = quantize_dependent(x, 1.0)
        assert np.sum((x - r) ** 2) == pytest.approx(best, rel=1e-12)


def test_decoder_rejects_short_payloads():
    enc = PayloadEncoder()
    enc.encode_tensor(np.arange(64, dtype=np.int32), 8, 8)
    payload = enc.finish()
    for cut in range(len(payload)):
        with pytest.raises(DecodeError):
            dec = PayloadDecoder(payload[:cut])
            dec.decode_tensor(8, 8)
            dec.finish()


def test_encoder_input_validation():
    enc = PayloadEncoder()
    with pytest.raises(ValueError):
        enc.encode_tensor(np.zeros(5, np.int32), 2, 3)
    with pytest.raises(ValueError):
        enc.encode_tensor(np.zeros(6, np.int32), 2, 3, num_gt=0)
    with pytest.raises(ValueError):
        enc.encode_tensor(np.zeros(6, np.int32), 2, 3, cb_size=3, cb_zero=3)
    with pytest.raises(ValueError):
        quantize_dependent(np.ones(3), 0.0)


# ----------------------------------------------------------------------------- vectorised paths

@pytest.mark.parametrize("shape,std,qp,dq,scan_order", [
    ((300, 200), 0.05, -32, True, 0), ((257, 129), 0.02, -38, True, 0), ((64, 64), 0.05, -20, False, 0),
    ((128, 96), 0.05, -40, True, 1), ((1000,), 0.3, -40, True, 0), ((50, 3, 3, 3), 1.0, -60, True, 0),
    ((7, 5), 0.01, -10, True, 2), ((40, 1), 2.0, -70, False, 0)])
def test_vectorised_pricing_and_trellis_give_the_same_bytes(shape, std, qp, dq, scan_order):
    """The AVX-512 param_opt pricing and trellis forward pass (where the CPU has them) must
    reproduce the scalar loops bit for bit: same parameter sets, same levels, same bytes."""
    from nnc_core.cabac import levels, trellis
    from nnc_core.tensor import encode
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * std).astype(np.float32)
    if len(shape) > 1:
        x[shape[0] // 3:shape[0] // 2] = 0          # skipped rows, long zero runs
    out = {}
    try:
        for on in (False, True):
            levels._use_simd(on)
            trellis._use_simd(on)
            out[on] = encode(x, qp=qp, use_dq=dq, scan_order=scan_order)
    finally:
        levels._use_simd(True)
        trellis._use_simd(True)
    assert out[False] == out[True]


def test_vectorised_trellis_on_float64():
    from nnc_core.cabac import trellis
    x = np.random.default_rng(5).standard_normal(5000) * 0.1
    order = np.random.default_rng(6).permutation(5000)
    try:
        results = []
        for on in (False, True):
            trellis._use_simd(on)
            results.append((trellis.quantize_dependent(x, 0.01), trellis.quantize_dependent(x, 0.013, order)))
    finally:
        trellis._use_simd(True)
    for a, b in zip(*results):
        assert np.array_equal(a, b)
