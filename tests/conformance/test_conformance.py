"""Conformance of ``nnc_core.tensor`` with the reference NNC software (NNCodec 2.1.3).

Every case of the matrix below is coded by both implementations with the same settings and
checked three ways:

(a) ``test_reference_decodes_ours``   the reference decodes our bitstream to exactly the
                                      reconstruction our encoder reports (bitwise, same dtype);
(b) ``test_we_decode_reference``      our decoder reproduces the reference's own decode of the
                                      reference bitstream (bitwise, same dtype);
(c) ``test_bytes_match_reference``    our bitstream is byte-identical to the reference's.

plus ``test_our_roundtrip`` (our decoder reproduces our encoder's reconstruction) and
``test_shared_vectors`` (the vectors of ``tests/data/nnc_vectors.json``).

All reference work (encodes, decodes of our bitstreams, vectors) runs in ONE subprocess of the
reference environment, from the module-scoped ``batch`` fixture; the tests only read the
cached results. Inputs use fixed seeds.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

import reference as ref

pytestmark = pytest.mark.conformance

DATA = Path(__file__).resolve().parent.parent / "data"
VECTORS_FILE = DATA / "nnc_vectors.json"

# Our tensor API options and their defaults (the reference tensor API's names and defaults,
# plus scan_order).
DEFAULTS = dict(qp=-32, nonweight_qp=-75, qp_density=2, use_dq=True, approx_method="uniform",
                bitdepth=None, row_skipping=True, param_opt=True, tensor_id="0", scan_order=0,
                lambda_scale=0.0)
# options that nncodec.tensor.encode forwards (nonweight_qp and qp_density it ignores: it
# always codes 1-D tensors with -75 and uses qp_density 2)
TENSOR_API_ARGS = ("qp", "use_dq", "approx_method", "bitdepth", "row_skipping", "param_opt", "tensor_id")


# ----------------------------------------------------------------------------------------
# the matrix


@dataclasses.dataclass(repr=False)
class Case:
    name: str
    x: np.ndarray
    opts: dict = dataclasses.field(default_factory=dict)   # our options (non-defaults)
    torch_input: bool = False    # hand our encoder a torch tensor instead of the array
    expect_dtype: Optional[str] = None   # dtype the reference's decode must have (coverage)
    quirk: Optional[str] = None  # documented reference quirk this case exercises
    # an encoder-side option the reference lacks (it encodes these cases without it): its
    # bitstream must decode exactly everywhere, but bytes are not expected to match
    extension: Optional[str] = None

    @property
    def full_opts(self) -> dict:
        return {**DEFAULTS, **self.opts}

    @property
    def api(self) -> str:
        return "compress" if self.full_opts["scan_order"] else "tensor"

    @property
    def tensor_id(self) -> str:
        return str(self.full_opts["tensor_id"])

    def __repr__(self) -> str:
        return f"Case({self.name}: {self.x.dtype}{list(self.x.shape)}, {self.opts})"

    def ref_args(self) -> dict:
        o = self.full_opts
        if self.api == "tensor":
            if o["nonweight_qp"] != -75 or o["qp_density"] != 2:
                raise ValueError(f"{self.name}: the reference tensor API cannot express these options")
            return {k: o[k] for k in TENSOR_API_ARGS if k in self.opts}
        # nncodec.nnc.compress has other defaults (qp -38, row_skipping off): pass everything
        return dict(qp=o["qp"], nonweight_qp=o["nonweight_qp"], qp_density=o["qp_density"],
                    use_dq=o["use_dq"], row_skipping=o["row_skipping"], param_opt=o["param_opt"],
                    scan_order=o["scan_order"],
                    codebook_mode=2 if o["approx_method"] == "codebook" else 0,
                    int_quant_bw=o["bitdepth"] if o["bitdepth"] else False)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _gauss(name: str, shape, std: float = 0.05) -> np.ndarray:
    return _rng(name).normal(0.0, std, shape).astype(np.float32)


def _zero_rows(x: np.ndarray, rows) -> np.ndarray:
    x = x.copy()
    x[list(rows)] = 0
    return x


def _few_values(name: str, shape, values) -> np.ndarray:
    return _rng(name).choice(np.asarray(values, np.float32), size=shape).astype(np.float32)


def build_cases() -> list[Case]:
    cases: list[Case] = []

    def add(name, x, **kw):
        cases.append(Case(name, x, **kw))

    # plain gaussian tensors over qp and DQ
    shapes = {"1d37": (37,), "2d64x48": (64, 48), "tall300x2": (300, 2), "wide3x200": (3, 200),
              "conv16x8x3x3": (16, 8, 3, 3)}
    for sname, shape in shapes.items():
        x = _gauss(sname, shape)
        for qp in (-20, -32, -40):
            for dq in (True, False):
                add(f"{sname}_qp{qp}_{'dq' if dq else 'nodq'}", x, opts=dict(qp=qp, use_dq=dq),
                    expect_dtype="float32")

    # row skipping with all-zero rows (and zero output channels of a conv tensor)
    x = _zero_rows(_gauss("rows32x24", (32, 24)), [0, 1, 5, 6, 20, 31])
    xc = _zero_rows(_gauss("rowsconv", (12, 4, 3, 3)), [2, 3, 11])
    for rs in (True, False):
        for dq in (True, False):
            tag = f"{'rs' if rs else 'nors'}_{'dq' if dq else 'nodq'}"
            add(f"zero_rows_32x24_{tag}", x, opts=dict(row_skipping=rs, use_dq=dq, qp=-30))
            add(f"zero_rows_conv12x4x3x3_{tag}", xc, opts=dict(row_skipping=rs, use_dq=dq))
    # rows that quantize to zero without being zero
    add("tiny_rows_16x10", _gauss("tiny", (16, 10)) * np.float32([1e-4 if i % 3 else 1.0 for i in range(16)])[:, None],
        opts=dict(qp=-28))

    # all-zero tensors
    for dq in (True, False):
        tag = "dq" if dq else "nodq"
        add(f"all_zero_8x8_{tag}", np.zeros((8, 8), np.float32), opts=dict(use_dq=dq))
        add(f"all_zero_conv4x2x3x3_{tag}", np.zeros((4, 2, 3, 3), np.float32), opts=dict(use_dq=dq))
        add(f"all_zero_1d10_{tag}", np.zeros(10, np.float32), opts=dict(use_dq=dq))
    add("all_zero_8x8_rowskip_off", np.zeros((8, 8), np.float32), opts=dict(row_skipping=False))

    # codebook: few distinct values (codebook chosen), and gaussians (codebook rejected)
    few = _few_values("cb8x8", (8, 8), [-3.0, 0.0, 1.5, 2.25])
    add("codebook_few_8x8_qp-40", few, opts=dict(approx_method="codebook", qp=-40), expect_dtype="float64")
    add("codebook_few_8x8_qp-40_nodq", few, opts=dict(approx_method="codebook", qp=-40, use_dq=False),
        expect_dtype="float64")
    add("codebook_few_conv8x4x3x3", _few_values("cbconv", (8, 4, 3, 3), [-0.5, -0.125, 0.0, 0.25, 0.75]),
        opts=dict(approx_method="codebook", qp=-36), expect_dtype="float64")
    fewrows = _zero_rows(_few_values("cbrows", (12, 9), [-2.0, 0.0, 1.0, 4.0]), [3, 4, 10])
    add("codebook_few_zero_rows_12x9", fewrows, opts=dict(approx_method="codebook", qp=-40),
        expect_dtype="float64")
    add("codebook_few_zero_rows_12x9_nors", fewrows,
        opts=dict(approx_method="codebook", qp=-40, row_skipping=False), expect_dtype="float64")
    add("codebook_single_value_6x5", np.full((6, 5), 0.75, np.float32),
        opts=dict(approx_method="codebook", qp=-40), expect_dtype="float64")
    # the reference applies codebooks to weights (>= 2 dims) only: a 1-D tensor stays uniform
    add("codebook_few_1d40", _few_values("cb1d", (40,), [-1.0, 0.0, 2.0]),
        opts=dict(approx_method="codebook"), expect_dtype="float32")
    for qp in (-20, -32):
        add(f"codebook_gauss_32x16_qp{qp}", _gauss("cbgauss", (32, 16)),
            opts=dict(approx_method="codebook", qp=qp), expect_dtype="float32")
    add("codebook_gauss_32x16_nodq", _gauss("cbgauss", (32, 16)),
        opts=dict(approx_method="codebook", use_dq=False), expect_dtype="float32")

    # bitdepth mode
    for b in (4, 8):
        add(f"bitdepth{b}_2d40x30", _gauss("bd2d", (40, 30)), opts=dict(bitdepth=b))
        add(f"bitdepth{b}_2d40x30_nonneg", np.abs(_gauss("bd2d", (40, 30))), opts=dict(bitdepth=b))
        add(f"bitdepth{b}_conv8x4x3x3_nodq", _gauss("bdconv", (8, 4, 3, 3)), opts=dict(bitdepth=b, use_dq=False))
        add(f"bitdepth{b}_1d37", _gauss("bd1d", (37,)), opts=dict(bitdepth=b))
    add("bitdepth4_all_zero_8x8", np.zeros((8, 8), np.float32), opts=dict(bitdepth=4))

    # float64 input (coded as float32 values)
    add("float64_2d20x12", _gauss("f64", (20, 12)).astype(np.float64) + 1e-9, expect_dtype="float32")
    add("float64_1d37", _gauss("f641d", (37,)).astype(np.float64), expect_dtype="float32")

    # integer inputs: INT payload, lossless
    r = _rng("ints")
    add("int32_2d12x10", r.integers(-1000, 1000, (12, 10)).astype(np.int32), expect_dtype="int32")
    add("int32_2d_large", r.integers(-(2**31) + 1, 2**31 - 1, (6, 7), dtype=np.int64).astype(np.int32),
        expect_dtype="int32")
    add("int32_zero_rows_9x8", _zero_rows(r.integers(-5, 6, (9, 8)).astype(np.int32), [2, 3]),
        expect_dtype="int32")
    add("int64_conv6x3x3x3", r.integers(-300, 300, (6, 3, 3, 3)).astype(np.int64), expect_dtype="int32")
    add("int8_1d50", r.integers(-128, 128, (50,)).astype(np.int8), expect_dtype="int32")
    add("int8_2d9x7_nodq_norowskip", r.integers(-128, 128, (9, 7)).astype(np.int8),
        opts=dict(use_dq=False, row_skipping=False), expect_dtype="int32")
    add("int32_all_zero_5x5", np.zeros((5, 5), np.int32), expect_dtype="int32")

    # param_opt off
    add("noparamopt_2d64x48_dq", _gauss("2d64x48", (64, 48)), opts=dict(param_opt=False))
    add("noparamopt_conv16x8x3x3_nodq_qp-20", _gauss("conv16x8x3x3", (16, 8, 3, 3)),
        opts=dict(param_opt=False, use_dq=False, qp=-20))
    add("noparamopt_1d37", _gauss("1d37", (37,)), opts=dict(param_opt=False))
    add("noparamopt_int32_2d", r.integers(-50, 50, (10, 10)).astype(np.int32), opts=dict(param_opt=False))

    # other inputs: torch tensor, named tensor, larger values (remainder bins), wide std
    add("torch_input_2d24x16", _gauss("torch", (24, 16)), torch_input=True)
    add("tensor_id_named_2d", _gauss("named", (10, 6)), opts=dict(tensor_id="features.0.weight"))
    add("large_levels_2d16x16_qp-60", _gauss("large", (16, 16), std=1.0), opts=dict(qp=-60))
    add("small_2x3", _gauss("small", (2, 3)))
    add("single_row_1x20", _gauss("row", (1, 20)))
    add("single_col_20x1", _gauss("col", (20, 1)))
    add("single_element_1", np.array([0.3], np.float32))

    # block scans with entry points (reference: nnc.compress(scan_order=...))
    quirk3 = ("Annex C quirk 3: DQ + block scan + row skipping with W mod 4 != 0, the reference "
              "decoder's output differs from its encoder's quantized values (decoders must agree)")
    blk45 = _zero_rows(_gauss("blk45", (40, 45)), [3, 9, 17, 30, 31])
    blk48 = _zero_rows(_gauss("blk48", (40, 48)), [3, 9, 17, 30, 31])
    blkconv = _zero_rows(_gauss("blkconv", (70, 5, 3, 3)), [0, 16, 40, 41, 69])
    for dq in (True, False):
        tag = "dq" if dq else "nodq"
        q3 = quirk3 if dq else None
        add(f"scan1_40x45_rs_{tag}", blk45, opts=dict(scan_order=1, use_dq=dq, qp=-30), quirk=q3)
        add(f"scan1_40x45_nors_{tag}", blk45, opts=dict(scan_order=1, use_dq=dq, row_skipping=False))
        add(f"scan1_40x48_rs_{tag}", blk48, opts=dict(scan_order=1, use_dq=dq))
        add(f"scan2_conv70x5x3x3_rs_{tag}", blkconv, opts=dict(scan_order=2, use_dq=dq), quirk=q3)
        add(f"scan2_conv70x5x3x3_nors_{tag}", blkconv, opts=dict(scan_order=2, use_dq=dq, row_skipping=False))
    add("scan1_6x20_one_block_row", _gauss("blk1", (6, 20)), opts=dict(scan_order=1))
    add("scan1_17x9_qp-20", _zero_rows(_gauss("blk17", (17, 9)), [9]), opts=dict(scan_order=1, qp=-20),
        quirk=quirk3)
    add("scan1_40x45_noparamopt", blk45, opts=dict(scan_order=1, param_opt=False))
    add("scan1_int32_20x20", _rng("blkint").integers(-100, 100, (20, 20)).astype(np.int32),
        opts=dict(scan_order=1), expect_dtype="int32")
    add("scan1_codebook_24x16", _few_values("blkcb", (24, 16), [-2.0, 0.0, 1.0, 3.0]),
        opts=dict(scan_order=1, approx_method="codebook", qp=-40), expect_dtype="float64")
    add("scan3_70x40", _gauss("blk3", (70, 40)), opts=dict(scan_order=3))
    add("scan4_130x70_rs", _zero_rows(_gauss("blk4", (130, 70)), [64, 65, 100]), opts=dict(scan_order=4),
        quirk=quirk3)

    # rate-distortion optimised quantization: our encoder's extension, standard syntax
    rdoq = "RDOQ (lambda_scale) is an encoder-side extension"
    xr = _zero_rows(_gauss("rdoq", (48, 40)), [5, 6])
    for dq in (True, False):
        tag = "dq" if dq else "nodq"
        add(f"rdoq_48x40_{tag}", xr, opts=dict(lambda_scale=1.0, use_dq=dq), extension=rdoq)
        add(f"rdoq_48x40_qp-24_{tag}", xr, opts=dict(lambda_scale=4.0, use_dq=dq, qp=-24),
            extension=rdoq)
        add(f"rdoq_scan1_80x36_{tag}", _gauss("rdoqblk", (80, 36)),
            opts=dict(lambda_scale=1.0, use_dq=dq, scan_order=1), extension=rdoq)
    add("rdoq_conv16x8x3x3", _gauss("rdoqconv", (16, 8, 3, 3)), opts=dict(lambda_scale=2.0),
        extension=rdoq)
    return cases


CASES = build_cases()
CASE_IDS = [c.name for c in CASES]
SAME_BYTES_CASES = [c for c in CASES if c.extension is None]
assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate case names"


# ----------------------------------------------------------------------------------------
# shared vectors


def _load_vectors() -> list[dict]:
    if not VECTORS_FILE.exists():
        return []
    with open(VECTORS_FILE) as f:
        return json.load(f)


VECTORS = _load_vectors()
VECTOR_IDS = [v["name"] for v in VECTORS] or ["missing"]


def _vector_array(d: dict) -> np.ndarray:
    shape = d["shape"] if isinstance(d["shape"], list) else json.loads(d["shape"])
    dtype = np.dtype(d["dtype"])
    vals = np.array(d["values"], dtype=np.int64 if dtype.kind in "iu" else np.float64)
    return vals.astype(dtype).reshape(shape)


def _is_incremental(v: dict) -> bool:
    return "approx_param_base" in v["api"] or "STATE" in v["api"]


def _vector_api(v: dict) -> str:
    return "compress" if "nnc.compress" in v["api"] else "tensor"


def _vector_ref_args(v: dict) -> dict:
    return dict(v["args"])  # merged into the defaults of the API the vector names


def _vector_our_opts(v: dict) -> dict:
    args = dict(v["args"])
    if _vector_api(v) == "compress":
        # nncodec.nnc.compress defaults that differ from the tensor API
        args.setdefault("qp", -38)
        args.setdefault("row_skipping", False)
    return args


# ----------------------------------------------------------------------------------------
# running both implementations once


@dataclasses.dataclass(repr=False)
class Ours:
    bitstream: Optional[bytes] = None
    recon: Optional[np.ndarray] = None
    error: Optional[BaseException] = None

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Ours(error={self.error!r})"
        return f"Ours({len(self.bitstream)} bytes, {self.recon.dtype}{list(self.recon.shape)})"

    def unwrap(self) -> "Ours":
        if self.error is not None:
            raise AssertionError(f"our encoder failed: {type(self.error).__name__}: {self.error}") from self.error
        return self


@dataclasses.dataclass(repr=False)
class Batch:
    ours: dict            # case name -> Ours
    ref_encode: dict      # case name -> RefResult (reference bitstream + its own decode)
    ref_decode_ours: dict  # case name -> RefResult (reference decode of our bitstream)
    vec_decode: dict      # vector name -> RefResult
    vec_encode: dict      # vector name -> RefResult
    seconds: float

    def __repr__(self) -> str:
        return f"Batch({len(self.ours)} cases, reference batch {self.seconds:.1f} s)"


def _tensor_module():
    return importlib.import_module("nnc_core.tensor")


def _our_encode(case: Case) -> Ours:
    try:
        api = _tensor_module()
        x: Any = case.x
        if case.torch_input:
            import torch
            x = torch.from_numpy(case.x.copy())
        bs, recon = api.encode_with_reconstruction(x, **case.opts)
        return Ours(bytes(bs), np.asarray(recon))
    except Exception as e:  # reported by the tests that need our side
        return Ours(error=e)


@pytest.fixture(scope="module")
def batch(reference, tmp_path_factory) -> Batch:
    ours = {c.name: _our_encode(c) for c in CASES}

    jobs: list = []
    keys: list[tuple[str, str]] = []
    for c in CASES:
        jobs.append(ref.EncodeCase(c.x, c.ref_args(), api=c.api, tensor_id=c.tensor_id, id=c.name))
        keys.append(("ref_encode", c.name))
        if ours[c.name].error is None:
            jobs.append(ref.DecodeCase(ours[c.name].bitstream, tensor_id=c.tensor_id, id=c.name + "/ours"))
            keys.append(("ref_decode_ours", c.name))
    # vectors: incremental ones in file order with shared state (encoder and decoder apart)
    for v in VECTORS:
        inc = _is_incremental(v)
        jobs.append(ref.DecodeCase(bytes.fromhex(v["bitstream_hex"]), tensor_id="0",
                                   state="vectors-dec" if inc else None, id=v["name"] + "/dec"))
        keys.append(("vec_decode", v["name"]))
        jobs.append(ref.EncodeCase(_vector_array(v["input"]), _vector_ref_args(v), api=_vector_api(v),
                                   state="vectors-enc" if inc else None, id=v["name"] + "/enc"))
        keys.append(("vec_encode", v["name"]))

    t0 = time.perf_counter()
    results = reference.run_cases(jobs, workdir=tmp_path_factory.mktemp("reference"))
    seconds = time.perf_counter() - t0
    out: dict = {"ref_encode": {}, "ref_decode_ours": {}, "vec_decode": {}, "vec_encode": {}}
    for (kind, name), r in zip(keys, results):
        out[kind][name] = r
    print(f"\nreference batch: {len(jobs)} jobs in {seconds:.1f} s (one subprocess)")
    return Batch(ours=ours, seconds=seconds, **out)


# ----------------------------------------------------------------------------------------
# comparisons


def assert_same_array(actual, expected, what: str) -> None:
    """Bitwise equality, same dtype and shape."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    a = np.ascontiguousarray(actual).view(np.uint8).reshape(actual.size, -1) if actual.size else actual
    b = np.ascontiguousarray(expected).view(np.uint8).reshape(expected.size, -1) if expected.size else expected
    if actual.size and not np.array_equal(a, b):
        bad = np.flatnonzero((a != b).any(axis=1))
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {actual.size} elements differ; first at flat index {i}: "
            f"{actual.ravel()[i]!r} vs expected {expected.ravel()[i]!r}"
        )


def _first_diff(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    return (f"lengths {len(a)} vs {len(b)}; first difference at byte {i}: "
            f"ours ...{a[max(0, i - 4):i + 8].hex()} reference ...{b[max(0, i - 4):i + 8].hex()}")


# ----------------------------------------------------------------------------------------
# the matrix tests


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reference_decodes_ours(batch: Batch, case: Case):
    """(a) the reference decodes our bitstream to exactly our reconstruction."""
    ours = batch.ours[case.name].unwrap()
    r = batch.ref_decode_ours[case.name].unwrap()
    what = f"{case.name}: reference decode of our bitstream vs our reconstruction"
    if case.quirk:
        what += f" (note: {case.quirk})"
    assert_same_array(r.decoded, ours.recon, what)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_we_decode_reference(batch: Batch, case: Case):
    """(b) our decoder reproduces the reference's decode of the reference bitstream."""
    r = batch.ref_encode[case.name].unwrap()
    ours = np.asarray(_tensor_module().decode(r.bitstream))
    assert_same_array(ours, r.decoded, f"{case.name}: our decode of the reference bitstream vs reference decode")


@pytest.mark.parametrize("case", SAME_BYTES_CASES, ids=[c.name for c in SAME_BYTES_CASES])
def test_bytes_match_reference(batch: Batch, case: Case):
    """(c) our bitstream is byte-identical to the reference's for the same settings."""
    ours = batch.ours[case.name].unwrap()
    r = batch.ref_encode[case.name].unwrap()
    assert ours.bitstream == r.bitstream, f"{case.name}: {_first_diff(ours.bitstream, r.bitstream)}"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_our_roundtrip(batch: Batch, case: Case):
    """Our decoder reproduces the reconstruction our encoder reports."""
    ours = batch.ours[case.name].unwrap()
    assert_same_array(_tensor_module().decode(ours.bitstream), ours.recon, f"{case.name}: our decode vs our reconstruction")


def test_matrix_coverage(batch: Batch):
    """The matrix exercises what it claims (codebook chosen / rejected, INT payloads)."""
    wrong = []
    for c in CASES:
        r = batch.ref_encode[c.name]
        if c.expect_dtype and r.ok and str(r.decoded.dtype) != c.expect_dtype:
            wrong.append(f"{c.name}: reference decodes to {r.decoded.dtype}, case expects {c.expect_dtype}")
    assert not wrong, "\n".join(wrong)


# ----------------------------------------------------------------------------------------
# shared vectors


@pytest.mark.parametrize("name", VECTOR_IDS)
def test_shared_vectors(batch: Batch, name: str):
    """Both decoders reproduce the decoded values stored with every vector."""
    assert VECTORS, f"{VECTORS_FILE} is missing"
    v = next(v for v in VECTORS if v["name"] == name)
    expected = _vector_array(v["decoded"])
    r = batch.vec_decode[name].unwrap()
    assert_same_array(r.decoded, expected, f"{name}: reference decode vs vector")

    if not _is_incremental(v):
        assert_same_array(_tensor_module().decode(bytes.fromhex(v["bitstream_hex"])), expected,
                          f"{name}: our decode vs vector")
        return
    api = _tensor_module()
    state = api.CodingState()
    got = None
    for u in VECTORS:  # replay the incremental sequence up to this vector
        if _is_incremental(u):
            got = api.decode(bytes.fromhex(u["bitstream_hex"]), state=state)
            if u["name"] == name:
                break
    assert_same_array(got, expected, f"{name}: our decode (with state) vs vector")


@pytest.mark.parametrize("name", VECTOR_IDS)
def test_shared_vectors_reference_encode(batch: Batch, name: str):
    """The reference, called as the conformance driver calls it, reproduces every vector's bytes
    (guards the way the matrix drives the reference)."""
    assert VECTORS, f"{VECTORS_FILE} is missing"
    v = next(v for v in VECTORS if v["name"] == name)
    r = batch.vec_encode[name].unwrap()
    assert r.bitstream.hex() == v["bitstream_hex"], _first_diff(r.bitstream, bytes.fromhex(v["bitstream_hex"]))


@pytest.mark.parametrize("name", VECTOR_IDS)
def test_shared_vectors_our_encode(name: str):
    """Our encoder reproduces every (non-incremental) vector's bytes from its input."""
    assert VECTORS, f"{VECTORS_FILE} is missing"
    v = next(v for v in VECTORS if v["name"] == name)
    api = _tensor_module()
    state = api.CodingState() if _is_incremental(v) else None
    for u in VECTORS:  # an incremental vector is encoded after its predecessors
        if state is not None and _is_incremental(u) and u["name"] != name:
            api.encode(_vector_array(u["input"]), state=state, **_vector_our_opts(u))
        if u["name"] == name:
            break
    bs = bytes(api.encode(_vector_array(v["input"]), state=state, **_vector_our_opts(v)))
    expected = bytes.fromhex(v["bitstream_hex"])
    assert bs == expected, f"{name}: {_first_diff(bs, expected)}"
