"""Tests of the NNR header syntax layer (nnc_core.bitstream)."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc_core.bitstream import (BitReader, BitWriter, Codebook, EntryPoint, LayerParameterSet,
                                ModelParameterSet, NDUHeader, PayloadType, PerformanceMap,
                                Topology, Unit, UnitType, encode_lps, encode_mps, encode_ndu,
                                encode_start_unit, encode_topology, header_entry_point_count,
                                layer_shape, num_entry_points, parse_stream, read_qp)
from nnc_core.bitstream.ndu import write_codebook
from nnc_core.errors import DecodeError

VECTORS = json.loads((Path(__file__).parent / "data" / "nnc_vectors.json").read_text())
VECTOR_IDS = [v["name"] for v in VECTORS]
PREAMBLE = encode_start_unit() + encode_mps(ModelParameterSet()) + encode_topology(Topology())


def bit_string(write) -> str:
    """Bits produced by ``write(writer)`` as a '0'/'1' string."""
    w = BitWriter()
    write(w)
    n = w.bit_length
    if n % 8:
        w.u(8 - n % 8, 0)
    return "".join(f"{b:08b}" for b in w.to_bytes())[:n]


def reader_for(bits: str, context: str = "") -> BitReader:
    padded = bits + "0" * (-len(bits) % 8)
    data = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
    return BitReader(data, context=context)


def reencode(units: list[Unit]) -> bytes:
    out = bytearray()
    for unit in units:
        if unit.type == UnitType.STR:
            out += encode_start_unit(unit.content)
        elif unit.type == UnitType.MPS:
            out += encode_mps(unit.content, unit.profile)
        elif unit.type == UnitType.LPS:
            out += encode_lps(unit.content)
        elif unit.type == UnitType.TPL:
            out += encode_topology(unit.content)
        elif unit.type == UnitType.NDU:
            out += encode_ndu(unit.content, unit.payload, unit.mps, unit.profile)
        out += unit.payload if unit.type != UnitType.NDU else b""
    return bytes(out)


# -- descriptors (2.2) ---------------------------------------------------------------------------
@pytest.mark.parametrize("k, value, bits", [
    (0, 0, "1"), (0, 1, "010"), (0, 2, "011"), (1, 0, "10"), (1, 1, "11"), (1, 2, "0100"),
    (7, 2, "10000010"), (11, 165, "100010100101"), (0, 6, "00111"), (2, 4, "01000"),
])
def test_ue_examples(k, value, bits):
    assert bit_string(lambda w: w.ue(k, value)) == bits
    assert reader_for(bits).ue(k) == value


@pytest.mark.parametrize("value, mapped", [(0, 0), (1, 1), (-1, 2), (2, 3), (-2, 4), (3, 5)])
def test_ie_mapping(value, mapped):
    for k in (0, 2, 7):
        assert bit_string(lambda w: w.ie(k, value)) == bit_string(lambda w: w.ue(k, mapped))
        assert reader_for(bit_string(lambda w: w.ie(k, value))).ie(k) == value


def test_fixed_length_and_alignment_bits():
    assert bit_string(lambda w: w.u(5, 9)) == "01001"
    assert bit_string(lambda w: w.i(4, -3)) == "1101"
    assert bit_string(lambda w: (w.u(3, 0), w.byte_alignment())) == "00010000"
    assert bit_string(lambda w: w.byte_alignment()) == "10000000"  # aligned: a full 0x80 byte
    w = BitWriter()
    w.flt(1.0)
    assert w.to_bytes() == b"\x00\x00\x80\x3f"  # float32 bytes in little-endian order
    w = BitWriter()
    w.st("ab")
    assert w.to_bytes() == b"ab\x00"


@pytest.mark.parametrize("call", [
    lambda w: w.u(8, 300), lambda w: w.u(3, -1), lambda w: w.i(4, 8), lambda w: w.i(4, -9),
    lambda w: w.ue(0, -1), lambda w: w.u(4, 1.5), lambda w: w.flt(1e40),
    lambda w: (w.u(1, 0), w.st("x")), lambda w: (w.u(1, 0), w.to_bytes()), lambda w: w.st("a\0"),
])
def test_writer_rejects_bad_values(call):
    with pytest.raises(ValueError):
        call(BitWriter())


_FIELDS = st.one_of(
    st.tuples(st.just("u"), st.integers(1, 64)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, (1 << t[1]) - 1))),
    st.tuples(st.just("i"), st.integers(1, 40)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]),
                            st.integers(-(1 << (t[1] - 1)), (1 << (t[1] - 1)) - 1))),
    st.tuples(st.just("ue"), st.integers(0, 15), st.integers(0, (1 << 31) - 1)),
    st.tuples(st.just("ie"), st.integers(0, 15), st.integers(-(1 << 30), 1 << 30)),
    st.tuples(st.just("flt"), st.just(0),
              st.floats(width=32, allow_nan=False)),
    st.tuples(st.just("st"), st.just(0),
              st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                      max_size=12)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELDS, max_size=30))
def test_writer_reader_round_trip(fields):
    w = BitWriter()
    for kind, param, value in fields:
        if kind == "st":
            if w.bit_length % 8:
                w.byte_alignment()
            w.st(value)
        elif kind == "flt":
            w.flt(value)
        else:
            getattr(w, kind)(param, value)
    w.byte_alignment()
    data = w.to_bytes()
    r = BitReader(data)
    for kind, param, value in fields:
        if kind == "st":
            if r.bit_position % 8:
                r.byte_alignment()
            assert r.st() == value
        elif kind == "flt":
            assert r.flt() == value
        else:
            assert getattr(r, kind)(param) == value
    r.byte_alignment()
    assert r.byte_position == len(data) and r.bits_left == 0


def test_reader_errors_name_field_and_offset():
    r = BitReader(b"\x00\x07", start_byte=1, context="unit 3 (NDU)")
    r.u(5)
    with pytest.raises(DecodeError, match=r"unit 3 \(NDU\).*u\(8\).*dims.*byte 1"):
        r.u(8, "dims")
    assert r.bit_position == 13  # a failed read does not move the reader


def test_reader_caps_exp_golomb_zeros():
    assert reader_for("0" * 32 + "1" + "0" * 32).ue(0) == (1 << 32) - 1
    with pytest.raises(DecodeError, match="leading zeros"):
        reader_for("0" * 40 + "1" + "0" * 40).ue(0)
    with pytest.raises(DecodeError, match="ends"):
        reader_for("00000001").ue(0, "x")  # suffix missing
    with pytest.raises(DecodeError, match="ends"):
        BitReader(b"\x00").ue(3)


def test_reader_string_and_alignment_errors():
    with pytest.raises(DecodeError, match="UTF-8"):
        BitReader(b"\xff\xfe\x00").st("name")
    with pytest.raises(DecodeError, match="terminating"):
        BitReader(b"abc").st("name")
    with pytest.raises(DecodeError, match="byte boundary"):
        r = BitReader(b"a\x00\x00")
        r.u(1)
        r.st()
    with pytest.raises(DecodeError, match="byte_alignment"):
        r = BitReader(b"\x41")  # 0 1000001: '1' then a stray '1'
        r.u(1)
        r.byte_alignment()
    with pytest.raises(DecodeError, match="byte_alignment"):
        BitReader(b"\x00").byte_alignment()
    assert BitReader(b"\x00\x00\x80\x3f").flt() == 1.0


# -- section 3 byte examples ---------------------------------------------------------------------
def test_section3_examples():
    assert encode_start_unit() == bytes.fromhex("00040201")
    assert encode_mps(ModelParameterSet()) == bytes.fromhex("0008068100400080")
    assert encode_mps(ModelParameterSet(parent_signalling_enabled=True)) == \
        bytes.fromhex("0008068108400080")
    assert encode_mps(ModelParameterSet(parent_signalling_enabled=True, pre_flag=True)) == \
        bytes.fromhex("000806810c400080")
    assert encode_topology(Topology()) == bytes.fromhex("00060e000000")
    assert encode_topology(Topology(storage_format=3)) == bytes.fromhex("00060e030000")
    for hex_mps, ps, pre in [("0008068100400080", False, False), ("0008068108400080", True, False),
                             ("000806810c400080", True, True)]:
        (_, unit) = parse_stream(bytes.fromhex("00040201" + hex_mps))
        assert unit.content == ModelParameterSet(parent_signalling_enabled=ps, pre_flag=pre)
        assert unit.header_size == 8 and len(unit.payload) == 0


def test_ndu_header_built_from_fields():
    vec = {v["name"]: v for v in VECTORS}
    data = bytes.fromhex(vec["zeros_2x3"]["bitstream_hex"])
    header = NDUHeader(PayloadType.FLOAT, ["0"], dq_flag=True, dims=(2, 3))
    assert encode_ndu(header, data[32:], ModelParameterSet()) == data[18:]
    data = bytes.fromhex(vec["incremental_step2_tca"]["bitstream_hex"])
    header = NDUHeader(PayloadType.FLOAT, ["0"], put_node_depth=2, parent_node_id_present=True,
                       temporal_context_modeling=True, dq_flag=True, dims=(4, 4))
    mps = ModelParameterSet(parent_signalling_enabled=True)
    assert encode_ndu(header, data[32:], mps) == data[18:]


# -- test vectors --------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_vector_units(vector):
    data = bytes.fromhex(vector["bitstream_hex"])
    assert len(data) == vector["bitstream_len"]
    units = parse_stream(data)
    assert len(units) == len(vector["units"])
    for index, (unit, expected) in enumerate(zip(units, vector["units"])):
        assert unit.index == index
        assert (int(unit.type), unit.offset, unit.size) == \
            (expected["nnr_unit_type"], expected["offset"], expected["size"])
        assert unit.independently_decodable
        if unit.type == UnitType.STR:
            assert unit.content == 1
        if unit.type != UnitType.NDU:
            assert len(unit.payload) == 0
            continue
        h: NDUHeader = unit.content
        assert unit.header_size == expected["header_bytes"]
        assert unit.payload_offset == expected["cabac_payload_offset"]
        assert bytes(unit.payload) == data[expected["cabac_payload_offset"]:unit.end]
        assert int(h.payload_type) == expected["payload_type"]
        assert h.names == [vector["args"].get("tensor_id", "0")]
        assert h.dq_flag == bool(expected["dq_flag"])
        assert list(h.dims) == expected["dims"]
        assert h.put_node_depth == expected["put_node_depth"]
        assert h.temporal_context_modeling == \
            bool(expected.get("temporal_context_modeling_flag", 0))
        assert h.parent_node_id_present == bool(vector["args"].get("compress_differences"))
        assert (h.node_id_present, h.device_id, h.parameter_id) == (True, 0, 0)
        assert h.cabac_unary_length_minus1 == 10 and h.compressed_parameter_types == 0
        assert [[e.bit_offset, e.value, e.dq_state] for e in h.entry_points] == \
            expected.get("entry_points", [])
        assert h.scan_order == vector["args"].get("scan_order", 0)
        if "codebook" in expected:
            assert h.codebook == Codebook(expected["codebook"], expected["CbZeroOffset"],
                                          expected["codebook_egk"])
            assert Codebook.best_egk(h.codebook.values, h.codebook.zero_offset) == \
                h.codebook.egk
            assert Codebook.create(expected["codebook"], expected["CbZeroOffset"]) == h.codebook
        else:
            assert h.codebook is None
        qp = read_qp(unit.payload, *unit.quantization_parameters()) if h.has_qp else None
        assert qp == expected["qp"]


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_vector_reencodes_exactly(vector):
    data = bytes.fromhex(vector["bitstream_hex"])
    assert reencode(parse_stream(data)) == data


def test_codebook_header_bits_match_writer():
    rng = random.Random(5)
    for _ in range(200):
        values = sorted(rng.sample(range(-5000, 5000), rng.randint(1, 12)))
        zero_offset = rng.randrange(len(values))
        for egk in (0, 3, 15):
            w = BitWriter()
            write_codebook(w, Codebook(values, zero_offset, egk))
            assert w.bit_length == Codebook.header_bits(values, zero_offset, egk)
        best = Codebook.best_egk(values, zero_offset)
        costs = [Codebook.header_bits(values, zero_offset, e) for e in range(16)]
        assert costs[best] == min(costs) and costs.index(min(costs)) == best


# -- geometry ------------------------------------------------------------------------------------
def test_layer_shape_and_entry_point_counts():
    assert layer_shape((7,)) == (7, 1)
    assert layer_shape((4, 3, 2)) == (4, 6)
    assert num_entry_points((17, 9), 1) == 2
    assert num_entry_points((17, 9), 0) == 0
    assert num_entry_points((17,), 1) == 0
    assert num_entry_points((64, 64), 4) == 0
    assert num_entry_points((65, 64), 4) == 1
    assert num_entry_points((1, 100), 1) == 0
    assert num_entry_points((17, 1), 1) == 0  # scan treated as raster order (9.1)
    assert header_entry_point_count((17, 1), 1) == 2  # ... but the syntax still carries them
    assert header_entry_point_count((17, 9), 2) == 1


# -- unit size forms -----------------------------------------------------------------------------
@pytest.mark.parametrize("payload_len", [2, 32767 - 14, 32767 - 13, 40000, 70000])
def test_unit_size_forms_round_trip(payload_len):
    header = NDUHeader(PayloadType.FLOAT, ["0"], dq_flag=True, dims=(2, 3))
    payload = bytes(random.Random(payload_len).randrange(256) for _ in range(payload_len))
    unit = encode_ndu(header, payload, ModelParameterSet())
    long_form = len(unit) > 32767
    assert unit[0] >> 7 == long_form
    size_bytes = 4 if long_form else 2
    assert int.from_bytes(unit[:size_bytes], "big") & 0x7FFFFFFF == len(unit)
    units = parse_stream(PREAMBLE + unit)
    ndu = units[-1]
    assert ndu.size == len(unit) and bytes(ndu.payload) == payload
    assert ndu.content == header
    assert reencode(units) == PREAMBLE + unit


# -- syntax not produced by the vectors ----------------------------------------------------------
def _round_trip(stream: bytes) -> list[Unit]:
    units = parse_stream(stream)
    assert reencode(units) == stream
    return units


def test_profile0_round_trip():
    mps = ModelParameterSet(quantization_method_flags=3, qp_density=3, qp_base=-5)
    header = NDUHeader(PayloadType.FLOAT, ["w"], node_id_present=False, dims=(4, 8),
                       scan_order=0, first_tensor_dimension_shift=0)
    stream = encode_start_unit(0) + encode_mps(mps, 0) + encode_ndu(header, b"\x12\x34", mps, 0)
    units = _round_trip(stream)
    assert units[0].content == 0 and units[1].content == mps and units[2].content == header
    assert units[2].quantization_parameters() == (3, -5)


def test_mps_optional_fields_round_trip():
    maps = dict(
        sparsification_map=PerformanceMap("sparsification", 2, [
            {"threshold": 0.5, "non_zero_ratio": 0.25, "accuracy": 0.75, "class_bitmask": 5,
             "class_accuracies": [0.5, 1.0]}]),
        pruning_map=PerformanceMap("pruning", 1, []),
        unification_map=PerformanceMap("unification", 2, [
            {"count_reshaped": 3, "reshaped": [4, 5], "count_super_block": 0, "super_block": [],
             "count_block": 2, "block": [8], "threshold": 0.125, "accuracy": 0.5, "n_classes": 3,
             "class_bitmask": 2, "class_accuracies": [0.25, 0.5]}]),
        decomposition_performance_map=PerformanceMap("decomposition", 3, [
            {"mse": 1.5, "accuracy": 0.5, "reduction": 0.25, "class_accuracies": []},
            {"mse": 2.0, "accuracy": 0.5, "reduction": 0.5, "class_accuracies": [1.0]}]),
    )
    mps = ModelParameterSet(base_model_id="base-ü", performance_metric_type="top1",
                            validation_set_performance=0.875,
                            metric_type_performance_map_valid=True, **maps)
    units = _round_trip(encode_start_unit() + encode_mps(mps))
    assert units[1].content == mps
    mps = ModelParameterSet(quantization_method_flags=0, topology_carriage=False)
    assert _round_trip(encode_start_unit() + encode_mps(mps))[1].content == mps


def test_lps_round_trip_and_qp_override():
    lps = LayerParameterSet(self_contained=False, qp_density=1, qp_base=7,
                            pruning_map=PerformanceMap("pruning", 2, [
                                {"ratio": 0.5, "accuracy": 0.25, "class_bitmask": 0,
                                 "class_accuracies": [0.5]}]))
    header = NDUHeader(PayloadType.FLOAT, ["0"], dims=(3,))
    stream = PREAMBLE + encode_lps(lps) + encode_ndu(header, b"\x00\x00\x00", ModelParameterSet())
    units = _round_trip(stream)
    assert units[3].content == lps
    assert units[4].lps == lps and units[4].quantization_parameters() == (1, 7)


def test_topology_variants_round_trip():
    for topology in [Topology(6, 0, element_ids=["a", "bb", "c"]), Topology(2, 1, raw=b"\x01\x00z"),
                     Topology(5, 0, raw=b""), Topology(3, 0, data="net")]:
        units = _round_trip(encode_start_unit() + encode_topology(topology))
        assert units[1].content == topology


def test_block_and_optional_ndu_fields_round_trip():
    names = ["w", "beta", "gamma", "mean", "var", "b"]
    mps = ModelParameterSet(parent_signalling_enabled=True)
    header = NDUHeader(PayloadType.BLOCK, names, parameter_id=40, put_node_depth=3, device_id=2,
                       parent_node_id_present=True, parent_node_id_type=2,
                       parent_node_payload_hash=bytes(range(64)),
                       codebook=Codebook([-3, 0, 5, 9], 1, 1), compressed_parameter_types=12,
                       dims=(20, 3, 3), scan_order=1, cabac_unary_length_flag=False,
                       cabac_unary_length_minus1=9, decompressed_data_format=1,
                       entry_points=[EntryPoint(300, 17), EntryPoint(250, 255)])
    stream = encode_start_unit() + encode_mps(mps) + encode_ndu(header, b"\xaa\xbb\xcc", mps)
    assert _round_trip(stream)[2].content == header
    # parameter ids inside the parent branch when node ids are absent
    header = NDUHeader(PayloadType.INT, ["t"], node_id_present=False, parameter_id=3,
                       put_node_depth=4, parent_node_id_present=True, parent_device_id=1,
                       dims=(5,))
    stream = encode_start_unit() + encode_mps(mps) + encode_ndu(header, b"\x01\x02", mps)
    assert _round_trip(stream)[2].content == header


def test_indexed_references_and_decomposition_round_trip():
    mps = ModelParameterSet(topology_indexed_reference=True, quantization_method_flags=3)
    single = NDUHeader(PayloadType.FLOAT, [], element_indices=[1234], dims=(2, 2))
    block = NDUHeader(PayloadType.BLOCK, [], element_indices=[1, 2, 3, 400],
                      compressed_parameter_types=1 | 2 | 8, decomposition_rank=5,
                      g_number_of_rows=6, codebook=Codebook([0, 2], 0, 0),
                      codebook_dc=Codebook([-1, 0], 1, 3), dims=(4, 4))
    stream = (encode_start_unit() + encode_mps(mps) + encode_ndu(single, b"\x00\x01", mps)
              + encode_ndu(block, b"\x00\x01", mps))
    units = _round_trip(stream)
    assert units[2].content == single and units[3].content == block


def test_empty_tensor_dims_round_trip():
    for dims in [(0,), (0, 5), (5, 0), (2, 0, 3)]:
        header = NDUHeader(PayloadType.FLOAT, ["e"], dims=dims, scan_order=1 if dims[0] else 0,
                           entry_points=[])
        units = _round_trip(PREAMBLE + encode_ndu(header, b"\x00\x00", ModelParameterSet()))
        assert units[-1].content == header and units[-1].content.element_count == 0


def test_raw_float_payload():
    header = NDUHeader(PayloadType.RAW_FLOAT, ["r"], dims=(2, 2))
    payload = struct.pack("<4f", 1, 2, 3, 4)
    units = _round_trip(PREAMBLE + encode_ndu(header, payload, ModelParameterSet()))
    assert units[-1].content == header
    with pytest.raises(DecodeError, match="RAW_FLOAT"):
        parse_stream(PREAMBLE + encode_ndu(header, payload[:-4], ModelParameterSet()))


@pytest.mark.parametrize("header", [
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(17, 9), scan_order=1),  # missing entry points
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(17, 9), entry_points=[EntryPoint(1, 1)]),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(4, 4), scan_order=5),
    NDUHeader(PayloadType.FLOAT, ["0", "1"], dims=(4,)),
    NDUHeader(PayloadType.BLOCK, ["w", "b"], dims=(4, 4), compressed_parameter_types=4),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=()),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(1 << 16, 1 << 15)),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(2,) * 17),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(4,), codebook=Codebook([1, 1], 0)),
    NDUHeader(PayloadType.INT, ["0"], dims=(4,), codebook=Codebook([1, 2], 0)),
    NDUHeader(PayloadType.FLOAT, ["0"], dims=(4,), tensor_dimensions_flag=False),
])
def test_encode_ndu_rejects_invalid_headers(header):
    with pytest.raises(ValueError):
        encode_ndu(header, b"\x00\x00", ModelParameterSet())


# -- malformed and hostile input -----------------------------------------------------------------
def _ndu_with(write_tail, name: bytes = b"0") -> bytes:
    """A FLOAT NDU whose header is written by hand from the dims fields on (profile 1)."""
    w = BitWriter()
    w.u(1, 1)  # node_id_present_flag
    w.ue(1, 0)
    w.ue(5, 0)
    w.ue(4, 0)
    w.u(1, 0)  # codebook_present_flag
    w.u(3, 0b111)  # dq_flag, tensor_dimensions_flag, cabac_unary_length_flag
    w.u(4, 0)
    write_tail(w)
    w.byte_alignment()
    body = b"\x09" + name + b"\x00" + w.to_bytes() + b"\x00\x00"
    return (len(body) + 3).to_bytes(2, "big") + b"\x16" + body


def _dims(*dims: int, count: int | None = None):
    def write(w: BitWriter) -> None:
        w.ue(1, len(dims) if count is None else count)
        for d in dims:
            w.ue(7, d)
        w.u(8, 10)
    return write


@pytest.mark.parametrize("stream, message", [
    (b"", "empty"),
    (b"\x00", "truncated unit"),
    (b"\x00\x02\x02", "smaller than the unit framing"),
    (b"\x00\x09\x02\x01", "runs past the end"),
    (bytes.fromhex("0004fe01"), "unknown nnr_unit_type 63"),
    (bytes.fromhex("00040203"), "profile"),
    (bytes.fromhex("00040302"), "partial data"),
    (bytes.fromhex("000306"), r"unit 0 \(MPS\).*before the start unit"),
    (bytes.fromhex("00040201") + bytes.fromhex("001316093000d041c120a0c2a080dfb4400414"),
     r"unit 1 \(NDU\).*before the model parameter set"),
    (bytes.fromhex("0004020100031a"), "AGG units are not supported"),
    (bytes.fromhex("00040201000312"), "QNT units are not supported"),
    (PREAMBLE + _ndu_with(_dims(*[2] * 17)), "count_tensor_dimensions 17"),
    (PREAMBLE + _ndu_with(_dims(1 << 16, 1 << 15)), r"2\*\*31"),
    (PREAMBLE + _ndu_with(_dims(2, 2), name=b"\xc3("), "UTF-8"),
    (PREAMBLE + _ndu_with(lambda w: (w.u(40, 0), w.u(8, 0xff))), "leading zeros"),
    (PREAMBLE + bytes.fromhex("000616093000"),
     r"unit 3 \(NDU\): data ends \(at byte 24\).*node_id_present_flag.*at byte 24"),
    (PREAMBLE + bytes.fromhex("001316f13000d041c120a0c2a080dfb4400414"), "payload type 30"),
    (PREAMBLE + bytes.fromhex("000e16093000d041c120a0c2a080"), "CABAC payload of 0 bytes"),
])
def test_malformed_streams(stream, message):
    with pytest.raises(DecodeError, match=message):
        parse_stream(stream)


def _parse_or_decode_error(data: bytes) -> None:
    try:
        parse_stream(data)
    except DecodeError as exc:
        assert str(exc)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_every_truncation(vector):
    data = bytes.fromhex(vector["bitstream_hex"])
    for length in range(len(data)):
        _parse_or_decode_error(data[:length])


def test_random_mutations():
    rng = random.Random(1234)
    streams = [bytearray.fromhex(v["bitstream_hex"]) for v in VECTORS]
    for trial in range(3000):
        data = bytearray(rng.choice(streams))
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(4)
            pos = rng.randrange(len(data)) if data else 0
            if action == 0 and data:
                data[pos] ^= 1 << rng.randrange(8)
            elif action == 1 and data:
                data[pos] = rng.randrange(256)
            elif action == 2:
                data.insert(pos, rng.randrange(256))
            elif data:
                del data[pos]
        _parse_or_decode_error(bytes(data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data):
    _parse_or_decode_error(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([0x06, 0x0A, 0x0E, 0x16]), st.booleans())
def test_fuzz_after_valid_preamble(tail, type_byte, float_ndu):
    # Frames random bodies correctly so that the fuzzer reaches the MPS / LPS / TPL / NDU readers.
    body = (b"\x09" if float_ndu else b"") + tail
    short_unit = (len(body) + 3).to_bytes(2, "big") + bytes([type_byte]) + body
    long_unit = ((1 << 31) | (len(body) + 5)).to_bytes(4, "big") + bytes([type_byte]) + body
    for head in (encode_start_unit(), PREAMBLE,
                 encode_start_unit(0) + encode_mps(ModelParameterSet(), 0)):
        _parse_or_decode_error(head + short_unit)
        _parse_or_decode_error(head + long_unit)


def test_compiled_reader_matches_the_python_reader():
    """BitReader (compiled) and PyBitReader agree on every value, position and error, also
    on random (hostile) bytes."""
    from nnc_core.bitstream.bits import PyBitReader
    rng = random.Random(7)
    ops = [("u", 1), ("u", 3), ("u", 8), ("u", 31), ("u", 64), ("u", 0), ("i", 5), ("i", 31),
           ("i", 40), ("ue", 0), ("ue", 1), ("ue", 7), ("ue", 11), ("ie", 2), ("ie", 7), ("st", None),
           ("flt", None), ("byte_alignment", None), ("read_bytes", 2)]
    for trial in range(400):
        n = rng.randrange(0, 24)
        data = bytes(rng.choice([0, 0, 0, 255, rng.randrange(256)]) for _ in range(n))
        start = rng.randrange(0, n + 1)
        end = rng.randrange(start, n + 1)
        readers = [cls(data, start, end, context="unit 1 (NDU)") for cls in (BitReader, PyBitReader)]
        for _ in range(12):
            name, arg = rng.choice(ops)
            outcomes = []
            for r in readers:
                try:
                    args = () if arg is None else (arg,)
                    value = getattr(r, name)(*args, "field")
                    if name == "flt":
                        value = struct.pack("<f", value)      # NaN != NaN: compare bits
                    outcomes.append(("ok", value, r.bit_position, r.bits_left, r.is_aligned))
                except Exception as exc:          # noqa: BLE001  (compared, not swallowed)
                    outcomes.append((type(exc).__name__, str(exc), r.bit_position))
            assert outcomes[0] == outcomes[1], (trial, name, arg, data.hex(), start, end)
