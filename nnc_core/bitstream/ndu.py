"""Compressed data unit (NDU) header (ISO/IEC 15938-17; format note 4.1 - 4.3, 5.6, 9.3, 10.1).

* 4.1 the header field order and its profile / MPS dependent conditions,
* 4.2 / 4.3 single tensor ids and BLOCK id lists (by name or by topology index),
* 5.6 ``codebook()`` syntax and the codebook_egk choice,
* 9.3 entry points of block scans,
* 10.1 parameter update tree fields (node ids, parent ids, temporal context modeling flag).

:func:`encode_ndu` writes a complete NNR unit (framing, header, byte alignment, payload);
:func:`read_ndu_header` parses the header from a reader positioned after the framing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .bits import BitReader, BitWriter, ie_bit_length, ue_bit_length
from .units import (ModelParameterSet, PayloadType, UnitType, check_profile, frame_unit,
                    read_element_id_list, write_element_id_list)

MAX_TENSOR_DIMENSIONS = 16
MAX_TENSOR_ELEMENTS = (1 << 31) - 1  # element counts must stay below 2**31
MAX_SCAN_ORDER = 4  # 1..4: square blocks of 8, 16, 32, 64
MAX_CODEBOOK_EGK = 15

# compressed_parameter_types bits (4.1 field 22)
CPT_DC = 1  # decomposition: weight sent as two factors G, H
CPT_LS = 2  # local scaling
CPT_BN = 4  # batch-norm beta, gamma, mean, var
CPT_BI = 8  # bias

PARENT_ID_NDU = 0  # parent identified by device id / parameter id / depth
PARENT_HASH_BITS = {1: 256, 2: 512}  # SHA-256 / SHA-512 of the parent payload


# -- tensor geometry (9.1, 9.3) ------------------------------------------------------------------
def layer_shape(dims: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """The ``(H, W)`` matrix view of a tensor: rows = dims[0], width = product of the rest."""
    if not dims:
        raise ValueError("a tensor needs at least one dimension")
    return int(dims[0]), math.prod(int(d) for d in dims[1:])


def block_side(scan_order: int) -> int:
    """Side ``B`` of the square blocks of a block scan."""
    return 4 << scan_order


def header_entry_point_count(dims: tuple[int, ...] | list[int], scan_order: int) -> int:
    """Entry points the header syntax carries: NBm1 when there are 2+ dims and scan_order > 0.

    This depends only on header fields; it also applies to H x 1 tensors, for which 9.1 treats
    the scan as raster order and the entries carry no information.
    """
    if len(dims) <= 1 or scan_order <= 0 or not dims[0]:
        return 0
    return -(-int(dims[0]) // block_side(scan_order)) - 1


def num_entry_points(dims: tuple[int, ...] | list[int], scan_order: int) -> int:
    """Block-row boundaries that really occur: ``ceil(H / B) - 1`` for block scans, else 0.

    9.1 treats the scan order as 0 when ``H == 1`` or ``W == 1``; for every tensor an encoder
    can produce (W > 1 whenever scan_order > 0) this equals :func:`header_entry_point_count`.
    """
    if len(dims) <= 1 or scan_order <= 0:
        return 0
    height, width = layer_shape(dims)
    if height <= 1 or width <= 1:
        return 0
    return header_entry_point_count(dims, scan_order)


def block_member_count(compressed_parameter_types: int) -> int:
    """Number of tensors of a BLOCK NDU (4.3): weight (G and H with DC), LS, 4 x BN, bias."""
    cpt = compressed_parameter_types
    return ((2 if cpt & CPT_DC else 1) + (1 if cpt & CPT_LS else 0)
            + (4 if cpt & CPT_BN else 0) + (1 if cpt & CPT_BI else 0))


# -- 5.6 codebook --------------------------------------------------------------------------------
@dataclass
class Codebook:
    """Codebook of reconstruction integers; ``values[zero_offset]`` is selected by level 0."""

    values: list[int]
    zero_offset: int
    egk: int = 0

    @staticmethod
    def header_bits(values: Sequence[int], zero_offset: int, egk: int) -> int:
        """Size in bits of the ``codebook()`` syntax for these entries."""
        return _codebook_bits([int(v) for v in values], int(zero_offset), int(egk))

    @staticmethod
    def best_egk(values: Sequence[int], zero_offset: int) -> int:
        """The codebook_egk in 0..15 giving the fewest header bits (first minimum)."""
        values = [int(v) for v in values]
        costs = [_codebook_bits(values, int(zero_offset), egk)
                 for egk in range(MAX_CODEBOOK_EGK + 1)]
        return costs.index(min(costs))

    @classmethod
    def create(cls, values: Sequence[int], zero_offset: int) -> "Codebook":
        """A codebook with the bit-optimal codebook_egk."""
        values = [int(v) for v in values]
        return cls(values, int(zero_offset), cls.best_egk(values, zero_offset))

    @property
    def size(self) -> int:
        return len(self.values)

    def validate(self) -> None:
        if not self.values:
            raise ValueError("codebook: no entries")
        if any(b <= a for a, b in zip(self.values, self.values[1:])):
            raise ValueError("codebook: entries must be strictly increasing")
        if not 0 <= self.zero_offset < len(self.values):
            raise ValueError(f"codebook: zero offset {self.zero_offset} outside the codebook")
        if not 0 <= self.egk <= MAX_CODEBOOK_EGK:
            raise ValueError(f"codebook: egk {self.egk} outside 0..{MAX_CODEBOOK_EGK}")


def _codebook_bits(values: list[int], zero_offset: int, egk: int) -> int:
    size = len(values)
    bits = (4 + ue_bit_length(2, size) + ie_bit_length(2, zero_offset - (size >> 1))
            + ie_bit_length(7, values[zero_offset]))
    # Left and right deltas together cover every pair of neighbouring entries once.
    return bits + sum(ue_bit_length(egk, values[j + 1] - values[j] - 1) for j in range(size - 1))


def write_codebook(writer: BitWriter, codebook: Codebook) -> None:
    codebook.validate()
    values, z = codebook.values, codebook.zero_offset
    writer.u(4, codebook.egk)
    writer.ue(2, len(values))
    writer.ie(2, z - (len(values) >> 1))
    writer.ie(7, values[z])
    for j in range(z - 1, -1, -1):
        writer.ue(codebook.egk, values[j + 1] - values[j] - 1)
    for j in range(z + 1, len(values)):
        writer.ue(codebook.egk, values[j] - values[j - 1] - 1)


def read_codebook(reader: BitReader, suffix: str = "") -> Codebook:
    r = reader
    egk = r.u(4, f"codebook_egk{suffix}")
    size = r.ue(2, f"codebook_size{suffix}")
    z = (size >> 1) + r.ie(2, f"codebook_center_offset{suffix}")
    if not 0 <= z < size:
        raise r.error(f"codebook zero offset {z} outside a codebook of size {size}")
    if size - 1 > r.bits_left:  # every delta takes at least one bit
        raise r.error(f"codebook size {size} cannot fit in the rest of the unit")
    values = [0] * size
    values[z] = r.ie(7, f"codebook_zero_value{suffix}")
    for j in range(z - 1, -1, -1):
        values[j] = values[j + 1] - r.ue(egk, f"codebook_delta_left{suffix}") - 1
    for j in range(z + 1, size):
        values[j] = values[j - 1] + r.ue(egk, f"codebook_delta_right{suffix}") + 1
    return Codebook(values, z, egk)


# -- 9.3 entry points ----------------------------------------------------------------------------
@dataclass
class EntryPoint:
    """Decoder state at the start of a block row (9.3).

    ``bit_offset`` is ``offset_j``: consumed payload bits from the start of block row j to the
    start of block row j+1 (the header codes the differences of consecutive offsets).
    """

    bit_offset: int
    value: int  # decoder value >> 7 right after the range reset
    dq_state: int = 0  # only transmitted with dependent quantization


def write_entry_points(writer: BitWriter, entry_points: list[EntryPoint], dq_flag: bool) -> None:
    previous = 0
    for j, ep in enumerate(entry_points):
        writer.u(8, ep.value)
        if dq_flag:
            writer.u(3, ep.dq_state)
        if ep.bit_offset < 0:
            raise ValueError(f"entry point {j}: negative bit offset {ep.bit_offset}")
        if j == 0:
            writer.ue(11, ep.bit_offset)
        else:
            writer.ie(7, ep.bit_offset - previous)
        previous = ep.bit_offset


def read_entry_points(reader: BitReader, count: int, dq_flag: bool) -> list[EntryPoint]:
    if count * 9 > reader.bits_left:  # each entry takes at least 9 bits
        raise reader.error(f"{count} entry points cannot fit in the rest of the unit")
    entry_points = []
    offset = 0
    for j in range(count):
        value = reader.u(8, "ep_value")
        dq_state = reader.u(3, "ep_dq_state") if dq_flag else 0
        if j == 0:
            offset = reader.ue(11, "ep_bit_offset")
        else:
            offset += reader.ie(7, "ep_bit_offset_delta")
        if offset < 0:
            raise reader.error(f"entry point {j} has a negative bit offset {offset}")
        entry_points.append(EntryPoint(offset, value, dq_state))
    return entry_points


# -- 4.1 the header ------------------------------------------------------------------------------
@dataclass
class NDUHeader:
    """NDU header fields in syntax order (4.1). Absent fields keep the values given here, except
    that the reader fills in the reference decoder defaults for absent input parameters
    (cabac_unary_length_minus1 = 9, compressed_parameter_types = 0).

    ``names`` holds one tensor name, or the BLOCK name list (4.3 order: weight, LS, BN, bias).
    With ``mps.topology_indexed_reference`` the ids are topology indices in ``element_indices``
    and ``names`` is empty. ``codebook is not None`` is codebook_present_flag;
    ``decompressed_data_format is not None`` is its presence flag.
    """

    payload_type: PayloadType
    names: list[str]
    node_id_present: bool = True
    device_id: int = 0
    parameter_id: int = 0
    put_node_depth: int = 0
    parent_node_id_present: bool = False
    parent_node_id_type: int = PARENT_ID_NDU
    temporal_context_modeling: bool = False
    parent_device_id: int = 0
    codebook: Codebook | None = None
    dq_flag: bool = False
    tensor_dimensions_flag: bool = True
    cabac_unary_length_flag: bool = True
    compressed_parameter_types: int = 0
    dims: tuple[int, ...] = ()
    cabac_unary_length_minus1: int = 10
    first_tensor_dimension_shift: int = 0
    scan_order: int = 0
    entry_points: list[EntryPoint] = field(default_factory=list)
    decompressed_data_format: int | None = None
    input_parameters_present: bool = True
    element_indices: list[int] = field(default_factory=list)
    parent_node_payload_hash: bytes | None = None
    decomposition_rank: int = 0
    g_number_of_rows: int = 0
    codebook_dc: Codebook | None = None  # second codebook of a decomposed (DC) BLOCK

    @property
    def is_block(self) -> bool:
        return self.payload_type == PayloadType.BLOCK

    @property
    def cabac_unary_length(self) -> int:
        """``G``, the number of greater-than flags of the level binarization."""
        return self.cabac_unary_length_minus1 + 1

    @property
    def has_qp(self) -> bool:
        """Whether each tensor's payload starts with qp bins (FLOAT and BLOCK)."""
        return self.payload_type in (PayloadType.FLOAT, PayloadType.BLOCK)

    @property
    def element_count(self) -> int:
        return math.prod(self.dims) if self.dims else 0


def _check_dims(dims: tuple[int, ...], fail) -> None:
    if not 1 <= len(dims) <= MAX_TENSOR_DIMENSIONS:
        raise fail(f"{len(dims)} tensor dimensions (supported: 1..{MAX_TENSOR_DIMENSIONS})")
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise fail(f"tensor dimensions {list(dims)} hold 2**31 or more elements")
    # A zero dimension empties the tensor, but the others still size its H x W view (9.1).
    if math.prod(d for d in dims if d) > MAX_TENSOR_ELEMENTS:
        raise fail(f"tensor dimensions {list(dims)} without their zeros hold 2**31 or more "
                   "elements")


def _check_id_count(header: NDUHeader, count: int, fail) -> None:
    if not header.is_block:
        if count != 1:
            raise fail(f"a {header.payload_type.name} NDU carries exactly one tensor id, "
                       f"got {count}")
    elif count != block_member_count(header.compressed_parameter_types):
        raise fail(f"a BLOCK with compressed_parameter_types {header.compressed_parameter_types} "
                   f"has {block_member_count(header.compressed_parameter_types)} tensors, "
                   f"the id list has {count}")


def encode_ndu(header: NDUHeader, payload: bytes, mps: ModelParameterSet,
               profile: int = 1) -> bytes:
    """Complete NNR_NDU unit: framing, header (4.1), byte_alignment(), then ``payload``."""
    check_profile(profile)
    h = header
    ptype = PayloadType(h.payload_type)
    w = BitWriter()
    w.u(5, ptype)
    w.u(1, h.is_block)
    w.u(1, h.decompressed_data_format is not None)
    w.u(1, h.input_parameters_present)
    if not (h.input_parameters_present and h.tensor_dimensions_flag):
        raise ValueError("tensor dimensions must be transmitted (out-of-band parameters are "
                         "not supported)")
    dims = tuple(int(d) for d in h.dims)
    _check_dims(dims, ValueError)

    # 4.2 / 4.3 tensor ids
    ids = h.element_indices if mps.topology_indexed_reference else h.names
    _check_id_count(h, len(ids), ValueError)
    if not h.is_block:
        if mps.topology_indexed_reference:
            w.ue(7, ids[0])
        else:
            w.st(ids[0])
    elif mps.topology_indexed_reference:
        w.ue(7, len(ids) - 2)
        for index in ids:
            w.ue(7, index)
        w.byte_alignment()
    else:
        write_element_id_list(w, ids)

    # 10.1 parameter update tree
    node_id_present = profile == 1 and h.node_id_present
    if profile == 1:
        w.u(1, h.node_id_present)
        if h.node_id_present:
            w.ue(1, h.device_id)
            w.ue(5, h.parameter_id)
            w.ue(4, h.put_node_depth)
    if profile == 1 and mps.parent_signalling_enabled:
        w.u(1, h.parent_node_id_present)
        if h.parent_node_id_present:
            w.u(2, h.parent_node_id_type)
            w.u(1, h.temporal_context_modeling)
            if h.parent_node_id_type == PARENT_ID_NDU:
                w.ue(1, h.parent_device_id)
                if not node_id_present:
                    w.ue(5, h.parameter_id)
                    w.ue(4, h.put_node_depth)
            elif h.parent_node_id_type in PARENT_HASH_BITS:
                nbits = PARENT_HASH_BITS[h.parent_node_id_type]
                digest = h.parent_node_payload_hash or b""
                if len(digest) * 8 != nbits:
                    raise ValueError(f"parent payload hash must be {nbits // 8} bytes")
                w.u(nbits, int.from_bytes(digest, "big"))
            else:
                raise ValueError(f"reserved parent_node_id_type {h.parent_node_id_type}")

    # quantization
    if h.has_qp:
        w.u(1, h.codebook is not None)
        if h.codebook is not None:
            write_codebook(w, h.codebook)
    elif h.codebook is not None:
        raise ValueError(f"payload type {ptype.name} cannot carry a codebook")
    if ptype != PayloadType.RAW_FLOAT:
        w.u(1, h.dq_flag)
    if h.decompressed_data_format is not None:
        w.u(7, h.decompressed_data_format)

    # input parameters
    cpt = h.compressed_parameter_types
    w.u(1, h.tensor_dimensions_flag)
    w.u(1, h.cabac_unary_length_flag)
    w.u(4, cpt)
    if cpt & CPT_DC:
        w.ue(3, h.decomposition_rank)
        w.ue(3, h.g_number_of_rows)
    w.ue(1, len(dims))
    for d in dims:
        w.ue(7, d)
    if h.cabac_unary_length_flag:
        w.u(8, h.cabac_unary_length_minus1)
    if h.is_block and cpt & CPT_DC and h.codebook is not None:
        if h.codebook_dc is None:
            raise ValueError("a decomposed BLOCK with a codebook needs codebook_dc as well")
        write_codebook(w, h.codebook_dc)

    # scan order and entry points
    if len(dims) > 1:
        if profile == 1:
            w.ue(1, h.first_tensor_dimension_shift)
        if not 0 <= h.scan_order <= MAX_SCAN_ORDER:
            raise ValueError(f"scan_order {h.scan_order} outside 0..{MAX_SCAN_ORDER}")
        w.u(4, h.scan_order)
    expected = header_entry_point_count(dims, h.scan_order)
    if len(h.entry_points) != expected:
        raise ValueError(f"dims {list(dims)} with scan_order {h.scan_order} need {expected} "
                         f"entry points, got {len(h.entry_points)}")
    if expected and h.is_block and cpt & CPT_DC:
        raise ValueError("entry points of decomposed (DC) blocks are not supported")
    write_entry_points(w, h.entry_points, h.dq_flag)
    w.byte_alignment()
    return frame_unit(UnitType.NDU, w.to_bytes() + bytes(payload))


def read_ndu_header(reader: BitReader, profile: int, mps: ModelParameterSet) -> NDUHeader:
    """Parses an NDU header (after the framing) up to and including its byte_alignment()."""
    r = reader
    raw_type = r.u(5, "nnr_compressed_data_unit_payload_type")
    try:
        h = NDUHeader(PayloadType(raw_type), [])
    except ValueError:
        raise r.error(f"unsupported payload type {raw_type}") from None
    multiple = bool(r.u(1, "nnr_multiple_topology_elements_present_flag"))
    if multiple != h.is_block:
        raise r.error(f"multiple-topology-elements flag {int(multiple)} with payload type "
                      f"{h.payload_type.name} is not supported")
    ddf_present = bool(r.u(1, "nnr_decompressed_data_format_present_flag"))
    h.input_parameters_present = bool(r.u(1, "input_parameters_present_flag"))

    # 4.2 / 4.3 tensor ids
    if not multiple:
        if mps.topology_indexed_reference:
            h.element_indices = [r.ue(7, "topology_elem_id_index")]
        else:
            h.names = [r.st("topology_elem_id")]
    elif mps.topology_indexed_reference:
        count = r.ue(7, "count_topology_elements_minus2") + 2
        if count * 8 > r.bits_left:  # each ue(7) takes at least 8 bits
            raise r.error(f"{count} topology element indices cannot fit in the unit")
        h.element_indices = [r.ue(7, "topology_elem_id_index_list") for _ in range(count)]
        r.byte_alignment()
    else:
        h.names = read_element_id_list(r)

    # 10.1 parameter update tree
    h.node_id_present = False
    if profile == 1:
        h.node_id_present = bool(r.u(1, "node_id_present_flag"))
        if h.node_id_present:
            h.device_id = r.ue(1, "device_id")
            h.parameter_id = r.ue(5, "parameter_id")
            h.put_node_depth = r.ue(4, "put_node_depth")
    if profile == 1 and mps.parent_signalling_enabled:
        h.parent_node_id_present = bool(r.u(1, "parent_node_id_present_flag"))
        if h.parent_node_id_present:
            h.parent_node_id_type = r.u(2, "parent_node_id_type")
            h.temporal_context_modeling = bool(r.u(1, "temporal_context_modeling_flag"))
            if h.parent_node_id_type == PARENT_ID_NDU:
                h.parent_device_id = r.ue(1, "parent_device_id")
                if not h.node_id_present:
                    h.parameter_id = r.ue(5, "parameter_id")
                    h.put_node_depth = r.ue(4, "put_node_depth")
            elif h.parent_node_id_type in PARENT_HASH_BITS:
                nbits = PARENT_HASH_BITS[h.parent_node_id_type]
                h.parent_node_payload_hash = r.u(nbits, "parent_node_payload_hash").to_bytes(
                    nbits // 8, "big")
            else:
                raise r.error(f"reserved parent_node_id_type {h.parent_node_id_type}")

    # quantization
    if h.has_qp and r.u(1, "codebook_present_flag"):
        h.codebook = read_codebook(r)
    if h.payload_type != PayloadType.RAW_FLOAT:
        h.dq_flag = bool(r.u(1, "dq_flag"))
    if ddf_present:
        h.decompressed_data_format = r.u(7, "nnr_decompressed_data_format")

    # input parameters; absent ones take the reference decoder defaults
    h.tensor_dimensions_flag = h.cabac_unary_length_flag = False
    h.cabac_unary_length_minus1 = 9
    h.compressed_parameter_types = 0
    if h.input_parameters_present:
        h.tensor_dimensions_flag = bool(r.u(1, "tensor_dimensions_flag"))
        h.cabac_unary_length_flag = bool(r.u(1, "cabac_unary_length_flag"))
        h.compressed_parameter_types = r.u(4, "compressed_parameter_types")
        if h.compressed_parameter_types & CPT_DC:
            h.decomposition_rank = r.ue(3, "decomposition_rank")
            h.g_number_of_rows = r.ue(3, "g_number_of_rows")
    if not h.tensor_dimensions_flag:
        raise r.error("tensor dimensions are not transmitted (out-of-band parameters are "
                      "not supported)")
    count = r.ue(1, "count_tensor_dimensions")
    if not 1 <= count <= MAX_TENSOR_DIMENSIONS:
        raise r.error(f"count_tensor_dimensions {count} outside 1..{MAX_TENSOR_DIMENSIONS}")
    h.dims = tuple(r.ue(7, "tensor_dimensions") for _ in range(count))
    _check_dims(h.dims, r.error)
    ids = h.element_indices if mps.topology_indexed_reference else h.names
    _check_id_count(h, len(ids), r.error)
    if h.cabac_unary_length_flag:
        h.cabac_unary_length_minus1 = r.u(8, "cabac_unary_length_minus1")
    if h.is_block and h.compressed_parameter_types & CPT_DC and h.codebook is not None:
        h.codebook_dc = read_codebook(r, "_dc")

    # scan order and entry points
    if count > 1:
        if profile == 1:
            h.first_tensor_dimension_shift = r.ue(1, "first_tensor_dimension_shift")
        h.scan_order = r.u(4, "scan_order")
        if h.scan_order > MAX_SCAN_ORDER:
            raise r.error(f"unsupported scan_order {h.scan_order}")
        n_entry = header_entry_point_count(h.dims, h.scan_order)
        if n_entry and h.is_block and h.compressed_parameter_types & CPT_DC:
            raise r.error("entry points of decomposed (DC) blocks are not supported")
        h.entry_points = read_entry_points(r, n_entry, h.dq_flag)
    r.byte_alignment()
    return h
