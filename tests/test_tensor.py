"""Tensor API: exact round trips, physical bounds, input handling and bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnc_core import DecodeError
from nnc_core.quant.step import step_size
from nnc_core.tensor import decode, encode, encode_with_reconstruction

RNG = np.random.default_rng(1234)


def gaussian(shape, std=0.05, seed=0):
    return np.random.default_rng(seed).normal(0, std, shape).astype(np.float32)


def assert_round_trip(x, **options):
    bs, recon = encode_with_reconstruction(x, **options)
    y = decode(bs)
    assert y.dtype == recon.dtype
    assert y.shape == recon.shape
    np.testing.assert_array_equal(y, recon)
    return bs, y


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("shape", [(37,), (64, 48), (16, 8, 3, 3), (1, 100), (100, 1), (3, 1, 1, 1)])
@pytest.mark.parametrize("use_dq", [True, False])
@pytest.mark.parametrize("qp", [-20, -32, -40])
def test_round_trip_exact(shape, use_dq, qp):
    x = gaussian(shape, seed=len(shape) * 7 - qp)
    bs, y = assert_round_trip(x, qp=qp, use_dq=use_dq)
    assert y.dtype == np.float32 and y.shape == shape
    # every value is a multiple of the step size of the qp that was used
    step = step_size(qp if len(shape) > 1 else -75)
    assert np.all(np.abs(y / step - np.round(y / step)) < 1e-3)


@pytest.mark.parametrize("use_dq", [True, False])
def test_quantization_error_is_bounded(use_dq):
    """Uniform: |x - y| <= step/2. DQ: from any state the trellis may pick either level
    parity, and levels of one parity within one quantizer are 4 steps apart: <= 2 steps."""
    x = gaussian((128, 96), seed=3)
    qp = -32
    y = decode(encode(x, qp=qp, use_dq=use_dq))
    step = float(step_size(qp))
    bound = 2 * step if use_dq else step / 2
    assert np.max(np.abs(x - y)) <= bound * (1 + 1e-5)


def test_rate_is_within_physical_bounds():
    """Bits per element of a gaussian at qp -32: above a small floor, below raw float32,
    and coarser qps give fewer bits."""
    x = gaussian((256, 256))
    sizes = {qp: len(encode(x, qp=qp)) * 8 / x.size for qp in (-40, -32, -20)}
    assert 1.0 < sizes[-20] < sizes[-32] < sizes[-40] < 32.0


def test_snr_grows_with_finer_qp():
    x = gaussian((128, 128))
    snr = []
    for qp in (-20, -28, -36):
        y = decode(encode(x, qp=qp))
        snr.append(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y).astype(np.float64) ** 2)))
    assert snr[0] < snr[1] < snr[2]


def test_all_zero_tensor():
    x = np.zeros((8, 16), np.float32)
    bs, y = assert_round_trip(x)
    assert not np.any(y)
    assert len(bs) < 60


def test_row_skipping_rows_and_flag_off():
    x = gaussian((12, 10))
    x[[1, 4, 5, 11]] = 0
    with_skip, y1 = assert_round_trip(x)
    without, y2 = assert_round_trip(x, row_skipping=False)
    np.testing.assert_array_equal(y1, y2)
    assert len(with_skip) <= len(without)


@pytest.mark.parametrize("scan_order", [1, 2, 3])
@pytest.mark.parametrize("use_dq", [True, False])
def test_block_scans_round_trip(scan_order, use_dq):
    x = gaussian((70, 45), seed=scan_order)
    x[9] = 0
    assert_round_trip(x, scan_order=scan_order, use_dq=use_dq)


def test_codebook_is_chosen_for_few_levels_and_decodes_to_float64():
    x = np.random.default_rng(7).choice(np.array([-3.0, 0, 1.5, 2.25], np.float32), size=(16, 16))
    bs, y = assert_round_trip(x, approx_method="codebook", qp=-40)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, x.astype(np.float64))


def test_codebook_not_chosen_for_gaussian():
    x = gaussian((32, 32))
    bs, y = assert_round_trip(x, approx_method="codebook")
    assert y.dtype == np.float32           # uniform coding won the comparison


@pytest.mark.parametrize("bitdepth", [4, 8])
def test_bitdepth_limits_levels(bitdepth):
    x = gaussian((64, 32))
    bs, recon = encode_with_reconstruction(x, bitdepth=bitdepth, use_dq=False)
    from nnc_core.codec import decode_stream
    (t,) = decode_stream(bs)
    assert t.levels.min() >= -(2 ** (bitdepth - 1)) and t.levels.max() <= 2 ** (bitdepth - 1) - 1
    np.testing.assert_array_equal(decode(bs), recon)


def test_bitdepth_unsigned_tensor():
    x = np.abs(gaussian((32, 32)))
    from nnc_core.codec import decode_stream
    (t,) = decode_stream(encode(x, bitdepth=4, use_dq=False))
    assert t.levels.min() >= 0 and t.levels.max() <= 15


def test_nonweight_qp_applies_to_vectors():
    x = gaussian((50,))
    coarse = decode(encode(x, nonweight_qp=-20))
    fine = decode(encode(x))                    # default -75
    assert len(np.unique(coarse)) < len(np.unique(fine))
    assert np.all(np.abs(coarse / float(step_size(-20)) % 1) < 1e-6)


def test_qp_per_tensor_overrides():
    x = gaussian((10, 10))
    a = encode(x, qp=-32, qp_per_tensor={"0": -20})
    b = encode(x, qp=-20)
    assert a == b


def test_overflow_guard_picks_a_coarser_qp():
    x = np.array([[3.0e6, -1.0], [2.0, 4.0]], np.float32)
    for use_dq in (True, False):
        bs, y = assert_round_trip(x, qp=-75, use_dq=use_dq)
        assert np.isclose(y[0, 0], x[0, 0], rtol=1e-6)


# ----------------------------------------------------------------------------- dtypes and containers

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, bool])
def test_integer_tensors_are_lossless(dtype):
    info = np.iinfo(dtype) if dtype is not bool else None
    lo, hi = (info.min, info.max) if info else (0, 1)
    lo, hi = max(lo, -(2**31)), min(hi, 2**31 - 1)
    x = RNG.integers(lo, hi, size=(9, 7), endpoint=True).astype(dtype)
    y = decode(encode(x))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, x.astype(np.int64))


def test_int32_extremes_are_lossless():
    x = np.array([[2**31 - 1, -(2**31), 0], [1, -1, 2**30]], np.int64)
    np.testing.assert_array_equal(decode(encode(x)), x)


def test_int64_out_of_range_raises():
    with pytest.raises(ValueError, match="int32"):
        encode(np.array([2**40], np.int64))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_dtypes_are_coded_as_float32(dtype):
    x = gaussian((20, 20)).astype(dtype)
    bs, y = assert_round_trip(x)
    assert y.dtype == np.float32
    assert bs == encode(x.astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64])
def test_torch_tensors(dtype):
    t = torch.from_numpy(gaussian((12, 6)) * (1000 if not dtype.is_floating_point else 1)).to(dtype)
    expected = t.float().numpy() if dtype.is_floating_point else t.numpy()
    assert encode(t) == encode(expected)


def test_non_contiguous_inputs():
    base = gaussian((30, 40))
    view = base.T
    assert not view.flags.c_contiguous
    assert encode(view) == encode(np.ascontiguousarray(view))
    t = torch.from_numpy(base).t()
    assert encode(t) == encode(np.ascontiguousarray(view))


def test_empty_tensors():
    for shape in [(0,), (0, 5), (5, 0), (2, 0, 3)]:
        bs, y = assert_round_trip(np.zeros(shape, np.float32))
        assert y.shape == shape


def test_zero_dim_tensor_travels_as_shape_1():
    bs, y = assert_round_trip(np.float32(0.25))
    assert y.shape == (1,)
    assert y[0] == pytest.approx(0.25, abs=float(step_size(-75)))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_raise_value_error_naming_the_tensor(bad):
    x = gaussian((4, 4))
    x[2, 3] = bad
    with pytest.raises(ValueError, match="'layer1.weight'.*NaN or Inf"):
        encode(x, tensor_id="layer1.weight")


def test_float64_beyond_float32_range_raises():
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode(np.array([1e300, 1.0]))


def test_unsupported_dtypes_raise_type_error():
    with pytest.raises(TypeError):
        encode(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        encode(np.array([1 + 2j]))


def test_unknown_option_raises_type_error():
    with pytest.raises(TypeError, match="unknown option"):
        encode(gaussian((4, 4)), qpp=-32)


def test_reference_args_dict_is_accepted():
    args = {"approx_method": "uniform", "bitdepth": None, "compress_differences": False,
            "cuda_device": None, "err_accumulation": False, "job_identifier": "TAIMP_coding",
            "nonweight_qp": -75, "opt_qp": False, "qp": -32, "quantize_only": False,
            "results": ".", "row_skipping": True, "sparsity": 0.0, "struct_spars_factor": 0.9,
            "tca": False, "pre_signalling": False, "tensor_id": "0", "tensor_path": None,
            "use_dq": True, "param_opt": True, "qp_per_tensor": None, "verbose": False}
    x = gaussian((8, 8))
    assert encode(x, **args) == encode(x)


@pytest.mark.parametrize("options,error", [
    ({"qp": 200}, ValueError), ({"qp_density": 9}, ValueError), ({"approx_method": "kmeans"}, ValueError),
    ({"bitdepth": 40}, ValueError), ({"scan_order": 5}, ValueError), ({"qp": 1.5}, TypeError),
    ({"sparsity": 1.0}, ValueError), ({"opt_qp": True}, NotImplementedError),
    ({"tca": True}, ValueError), ({"hdsp": True}, ValueError),
    ({"struct_spars_factor": 0.5}, ValueError),
])
def test_invalid_options(options, error):
    with pytest.raises(error):
        encode(gaussian((8, 8)), **options)


def test_decode_rejects_non_bytes():
    with pytest.raises(TypeError):
        decode("not bytes")


# ----------------------------------------------------------------------------- hostile bitstreams

def _streams():
    return [
        encode(gaussian((24, 20), seed=1)),
        encode(gaussian((24, 20), seed=2), use_dq=False, scan_order=1),
        encode(gaussian((50,), seed=3)),
        encode(np.arange(-20, 20, dtype=np.int32).reshape(5, 8)),
        encode(np.random.default_rng(7).choice(np.array([-3.0, 0, 1.5], np.float32), (8, 8)),
               approx_method="codebook", qp=-40),
    ]


def _decode_or_decode_error(data):
    try:
        decode(data)
    except DecodeError:
        pass


def test_every_truncation_raises_decode_error():
    for bs in _streams():
        for length in range(len(bs)):
            with pytest.raises(DecodeError):
                decode(bs[:length])


def test_random_bit_flips_never_crash():
    rng = np.random.default_rng(99)
    for bs in _streams():
        for _ in range(120):
            data = bytearray(bs)
            for _ in range(rng.integers(1, 4)):
                pos = rng.integers(0, len(data) * 8)
                data[pos // 8] ^= 0x80 >> (pos % 8)
            _decode_or_decode_error(bytes(data))


def test_trailing_garbage_raises():
    bs = encode(gaussian((8, 8)))
    with pytest.raises(DecodeError):
        decode(bs + b"\x00")


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_arbitrary_bytes_never_crash(data):
    _decode_or_decode_error(data)


# ----------------------------------------------------------------------------- properties

_shapes = st.one_of(
    hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=40),
    hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=9),
)


@settings(max_examples=120, deadline=None)
@given(shape=_shapes, qp=st.integers(-60, 10), use_dq=st.booleans(), row_skipping=st.booleans(),
       param_opt=st.booleans(), scan_order=st.integers(0, 2), std=st.sampled_from([1e-4, 0.05, 3.0]),
       seed=st.integers(0, 2**16), sparsity=st.sampled_from([0.0, 0.5, 0.9]))
def test_round_trip_property(shape, qp, use_dq, row_skipping, param_opt, scan_order, std, seed, sparsity):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, std, shape).astype(np.float32)
    x[rng.random(shape) < sparsity] = 0
    assert_round_trip(x, qp=qp, use_dq=use_dq, row_skipping=row_skipping, param_opt=param_opt,
                      scan_order=scan_order, nonweight_qp=qp)


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.int32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
                    elements=st.integers(-(2**31), 2**31 - 1)))
def test_integer_round_trip_property(x):
    np.testing.assert_array_equal(decode(encode(x)), x.reshape(x.shape or (1,)))


# ----------------------------------------------------------------------------- incremental coding

def test_incremental_updates_with_tca_round_trip():
    from nnc_core.codec import decode_stream
    from nnc_core.tensor import CodingState
    enc_state, dec_state = CodingState(), CodingState()
    rng = np.random.default_rng(5)
    base = gaussian((24, 16))
    sizes = []
    for step in range(4):
        update = (base * 0.2 + rng.normal(0, 0.002, base.shape)).astype(np.float32)
        update[3] = 0
        bs, recon = encode_with_reconstruction(update, enc_state, qp=-36, tca=True,
                                               compress_differences=True)
        (t,) = decode_stream(bs, dec_state)
        np.testing.assert_array_equal(t.values, recon)
        assert t.header.put_node_depth == step + 1
        assert t.header.temporal_context_modeling == (step > 0)
        sizes.append(len(bs))
    # correlated updates: the previous version as context saves bits
    assert max(sizes[1:]) < 0.9 * sizes[0]
    with pytest.raises(DecodeError, match="temporal context"):
        decode(bs)                      # a TCA stream needs the decoder's state


def test_all_zero_update_is_not_sent():
    from nnc_core.tensor import CodingState
    state = CodingState()
    bs = encode(np.zeros((8, 8), np.float32), state, compress_differences=True)
    assert len(bs) == 18                # start unit, parameter set and topology only
    assert state.previous("0") is None
    with pytest.raises(DecodeError, match="no tensor"):
        decode(bs)


@pytest.mark.parametrize("dims,row_skipping", [((2**15, 2**15), True), ((2**15, 2**15), False),
                                               ((2**31 - 1,), False), ((3, 2**29), True)])
def test_forged_huge_dims_are_refused_before_allocating(dims, row_skipping):
    """A header claiming a huge tensor over a tiny payload must fail fast, not allocate."""
    import dataclasses
    import resource

    from nnc_core.bitstream import UnitType, encode_ndu, parse_stream
    bs = encode(gaussian((4, 4)), row_skipping=row_skipping)
    units = parse_stream(bs)
    ndu = units[-1]
    forged = dataclasses.replace(ndu.content, dims=dims)
    mps = next(u.content for u in units if u.type == UnitType.MPS)
    data = bs[:ndu.offset] + encode_ndu(forged, bytes(ndu.payload), mps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError):
        decode(data)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


# ----------------------------------------------------------------------------- parallel decoding

@pytest.fixture
def small_parallel_chunks(monkeypatch):
    """Let small test tensors take the parallel path (normally reserved for big ones)."""
    from nnc_core.cabac import levels
    monkeypatch.setattr(levels, "PARALLEL_CHUNK_ELEMENTS", 64)


@pytest.mark.parametrize("scan_order", [1, 2, 4])
@pytest.mark.parametrize("use_dq", [True, False])
@pytest.mark.parametrize("row_skipping", [True, False])
def test_block_rows_decode_in_parallel_from_entry_points(scan_order, use_dq, row_skipping,
                                                         small_parallel_chunks):
    rng = np.random.default_rng(scan_order)
    x = gaussian((300, 77), seed=scan_order)
    x[rng.random(300) < 0.2] = 0
    bs, recon = encode_with_reconstruction(x, scan_order=scan_order, use_dq=use_dq,
                                           row_skipping=row_skipping)
    for threads in (1, 2, 3, 16):
        np.testing.assert_array_equal(decode(bs, threads=threads), recon)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_wrong_entry_points_are_detected_whatever_the_thread_count(threads, small_parallel_chunks):
    """Entry points are decoder states; one that does not match the payload is an error
    for sequential and parallel decoders alike, so results never depend on threads."""
    import dataclasses

    from nnc_core.bitstream import EntryPoint, UnitType, encode_ndu, parse_stream
    bs = encode(gaussian((200, 40)), scan_order=1)
    units = parse_stream(bs)
    ndu, mps = units[-1], next(u.content for u in units if u.type == UnitType.MPS)
    rng = np.random.default_rng(threads)
    for _ in range(30):
        points = list(ndu.content.entry_points)
        j = int(rng.integers(0, len(points)))
        good = points[j]
        points[j] = EntryPoint(good.bit_offset + int(rng.integers(-40, 40)) or 1,
                               int(rng.integers(0, 256)), int(rng.integers(0, 8)))
        if points[j] == good:
            continue
        forged = dataclasses.replace(ndu.content, entry_points=points)
        with pytest.raises(DecodeError):
            decode(bs[:ndu.offset] + encode_ndu(forged, bytes(ndu.payload), mps), threads=threads)


def test_several_tensors_decode_concurrently():
    from nnc_core.codec import QuantizedTensor, StreamSettings, decode_stream, encode_stream
    tensors = [QuantizedTensor(f"t{i}", (40, 30), np.arange(1200, dtype=np.int32) % (i + 3) - 1,
                               parameter_id=i) for i in range(6)]
    bs, recon = encode_stream(tensors, StreamSettings())
    for threads in (1, 4):
        decoded = decode_stream(bs, threads=threads)
        assert [t.name for t in decoded] == [f"t{i}" for i in range(6)]
        for t, expected in zip(decoded, recon):
            np.testing.assert_array_equal(t.values, expected)


def test_max_elements_is_a_decode_argument():
    bs = encode(np.zeros((64, 64), np.float32))
    with pytest.raises(DecodeError, match="decoder's limit of 1000"):
        decode(bs, max_elements=1000)
    assert decode(bs, max_elements=4096).shape == (64, 64)


def test_element_budget_covers_the_whole_stream():
    from nnc_core.codec import QuantizedTensor, StreamSettings, decode_stream, encode_stream
    tensors = [QuantizedTensor(f"t{i}", (32, 32), np.zeros(1024, np.int32), parameter_id=i)
               for i in range(4)]
    bs, _ = encode_stream(tensors, StreamSettings())
    with pytest.raises(DecodeError, match="stream's tensors hold 4096 elements"):
        decode_stream(bs, max_elements=3000)      # each tensor alone would fit
    assert len(decode_stream(bs, max_elements=4096)) == 4


def test_codebook_with_dq_out_of_range_index_is_a_decode_error():
    """Another encoder may combine a codebook with DQ; indices the codebook does not have
    must not reach the reconstruction."""
    import dataclasses

    from nnc_core.bitstream import UnitType, encode_ndu, parse_stream
    x = np.random.default_rng(7).choice(np.array([-3.0, 0, 1.5, 2.25], np.float32), (8, 8))
    bs = encode(x, approx_method="codebook", qp=-40)
    units = parse_stream(bs)
    ndu, mps = units[-1], next(u.content for u in units if u.type == UnitType.MPS)
    assert ndu.content.codebook is not None
    forged = dataclasses.replace(ndu.content, dq_flag=True)
    with pytest.raises(DecodeError):
        decode(bs[:ndu.offset] + encode_ndu(forged, bytes(ndu.payload), mps))


def test_compiled_uniform_quantizer_rounds_like_the_float32_formula():
    """The one-pass compiled uniform quantizer equals round_half_away(float32(x / step)) in
    float32, exact halves and signed zeros included."""
    from nnc_core.quant.step import step_size
    from nnc_core.quant.uniform import quantize_uniform, round_half_away, scaled
    rng = np.random.default_rng(0)
    for qp in (-80, -40, -32, -20, 0, 30):
        step = step_size(qp)
        x = (rng.standard_normal((60, 37)) * 0.1).astype(np.float32)
        x.flat[:50] = (np.arange(50) - 25) * step / 2
        x.flat[50:58] = [0.0, -0.0, 1e-30, -1e-30, 1, -1, 0.5, -0.5]
        x = np.clip(x, -1e6 * step, 1e6 * step).astype(np.float32)
        expected = round_half_away(scaled(x, step)).astype(np.int32)
        got = quantize_uniform(x, step)
        assert got.shape == x.shape and np.array_equal(got, expected), qp
    assert quantize_uniform(np.float32([3e38]), step_size(-80)) is None
