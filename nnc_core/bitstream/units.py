"""NNR unit framing and the non-data units (ISO/IEC 15938-17; format note 3.1 - 3.5).

* 3.1 ``nnr_unit()`` framing: size (15- or 31-bit, counting the size field), type, flags;
* 3.2 start unit (profile), 3.3 model parameter set, 3.4 topology unit, 3.5 layer parameter set.

Encoders return complete units including the framing; readers take a :class:`BitReader`
positioned just after the framing.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .bits import BitReader, BitWriter
from .perfmaps import PerformanceMap, read_performance_map, write_performance_map

SUPPORTED_PROFILES = (0, 1)
SHORT_SIZE_LIMIT = (1 << 15) - 1  # largest unit that fits the 2-byte size form
LONG_SIZE_LIMIT = (1 << 31) - 1


class UnitType(IntEnum):
    """``nnr_unit_type`` codes."""

    STR = 0  # start unit
    MPS = 1  # model parameter set
    LPS = 2  # layer parameter set
    TPL = 3  # topology
    QNT = 4  # quantization
    NDU = 5  # compressed data unit
    AGG = 6  # aggregate


class PayloadType(IntEnum):
    """``nnr_compressed_data_unit_payload_type`` codes."""

    INT = 0  # integer tensor, coded losslessly
    FLOAT = 1  # quantized float tensor
    RAW_FLOAT = 2  # uncompressed float32 values
    BLOCK = 3  # several tensors of one layer in one unit


class TopologyFormat(IntEnum):
    """``topology_storage_format`` codes."""

    UNREC = 0
    NNEF = 1
    ONNX = 2
    PYTORCH = 3
    TENSORFLOW = 4
    PRUN = 5
    REFLIST = 6


def check_profile(profile: int) -> None:
    if profile not in SUPPORTED_PROFILES:
        raise ValueError(f"unsupported profile {profile} (expected one of {SUPPORTED_PROFILES})")


# -- 3.1 framing ---------------------------------------------------------------------------------
def frame_unit(unit_type: UnitType, body: bytes) -> bytes:
    """Prefixes ``body`` (everything after the first header byte) with the nnr_unit framing.

    Writes independently_decodable_flag = 1 and no partial data counter. The 2-byte size form is
    used whenever the whole unit fits in 32767 bytes, as the reference encoder does.
    """
    type_byte = bytes([(int(unit_type) << 2) | 0b10])
    total = 2 + 1 + len(body)
    if total <= SHORT_SIZE_LIMIT:
        return total.to_bytes(2, "big") + type_byte + body
    total += 2
    if total > LONG_SIZE_LIMIT:
        raise ValueError(f"unit of {total} bytes exceeds the 31-bit nnr_unit_size")
    return ((1 << 31) | total).to_bytes(4, "big") + type_byte + body


# -- 3.2 start unit ------------------------------------------------------------------------------
def encode_start_unit(profile: int = 1) -> bytes:
    """NNR_STR unit carrying ``general_profile_idc``."""
    check_profile(profile)
    return frame_unit(UnitType.STR, bytes([profile]))


def read_start_unit(reader: BitReader) -> int:
    profile = reader.u(8, "general_profile_idc")
    if profile not in SUPPORTED_PROFILES:
        raise reader.error(f"unsupported general_profile_idc {profile}")
    return profile


# -- shared by MPS and LPS -----------------------------------------------------------------------
def _read_maps(reader: BitReader, kinds: list[str]) -> dict[str, PerformanceMap]:
    return {kind: read_performance_map(reader, kind) for kind in kinds}


def _write_maps(writer: BitWriter, maps: list[PerformanceMap | None]) -> None:
    for perf_map in maps:
        if perf_map is not None:
            write_performance_map(writer, perf_map)


# -- 3.3 model parameter set ---------------------------------------------------------------------
@dataclass
class ModelParameterSet:
    """Model parameter set. Each ``*_map`` field doubles as the corresponding presence flag."""

    topology_carriage: bool = True
    quantization_method_flags: int = 1  # bit 0: scalar uniform, bit 1: codebook
    topology_indexed_reference: bool = False
    parent_signalling_enabled: bool = False
    pre_flag: bool = False
    qp_density: int = 2
    qp_base: int = 0
    base_model_id: str | None = None
    metric_type_performance_map_valid: bool = False
    performance_metric_type: str | None = None
    validation_set_performance: float | None = None
    sparsification_map: PerformanceMap | None = None
    pruning_map: PerformanceMap | None = None
    unification_map: PerformanceMap | None = None
    decomposition_performance_map: PerformanceMap | None = None

    @property
    def has_quantization_parameters(self) -> bool:
        """Whether qp_density and the QP base are transmitted (methods 1 or 2)."""
        return bool(self.quantization_method_flags & 3)


def encode_mps(mps: ModelParameterSet, profile: int = 1) -> bytes:
    """NNR_MPS unit."""
    check_profile(profile)
    w = BitWriter()
    w.u(1, mps.topology_carriage)
    w.u(1, mps.sparsification_map is not None)
    w.u(1, mps.pruning_map is not None)
    w.u(1, mps.unification_map is not None)
    w.u(1, mps.decomposition_performance_map is not None)
    w.u(3, mps.quantization_method_flags)
    w.u(1, mps.topology_indexed_reference)
    has_validation = mps.validation_set_performance is not None
    if profile == 1:
        w.u(1, mps.base_model_id is not None)
        w.u(1, has_validation)
        w.u(1, mps.metric_type_performance_map_valid)
        w.u(1, mps.parent_signalling_enabled)
        w.u(1, mps.pre_flag if mps.parent_signalling_enabled else 0)
        w.u(2, 0)
    else:
        if mps.base_model_id is not None or has_validation or mps.parent_signalling_enabled \
                or mps.metric_type_performance_map_valid:
            raise ValueError("base model id, performance and parent signalling need profile 1")
        w.u(7, 0)
    if mps.base_model_id is not None:
        w.st(mps.base_model_id)
    if profile == 1 and (has_validation or mps.metric_type_performance_map_valid):
        w.st(mps.performance_metric_type or "")
    if mps.has_quantization_parameters:
        w.u(3, mps.qp_density)
        w.i(13, mps.qp_base)
    _write_maps(w, [mps.sparsification_map, mps.pruning_map, mps.unification_map,
                    mps.decomposition_performance_map])
    if has_validation:
        w.flt(mps.validation_set_performance)
    w.byte_alignment()
    return frame_unit(UnitType.MPS, w.to_bytes())


def read_mps(reader: BitReader, profile: int) -> ModelParameterSet:
    r = reader
    mps = ModelParameterSet()
    mps.topology_carriage = bool(r.u(1, "topology_carriage_flag"))
    map_flags = [r.u(1, f"mps_{kind}_flag")
                 for kind in ("sparsification", "pruning", "unification", "decomposition")]
    mps.quantization_method_flags = r.u(3, "mps_quantization_method_flags")
    mps.topology_indexed_reference = bool(r.u(1, "mps_topology_indexed_reference_flag"))
    base_model_present = has_validation = False
    if profile == 1:
        base_model_present = bool(r.u(1, "base_model_id_present_flag"))
        has_validation = bool(r.u(1, "validation_set_performance_present_flag"))
        mps.metric_type_performance_map_valid = bool(r.u(1, "metric_type_performance_map_valid"))
        mps.parent_signalling_enabled = bool(r.u(1, "mps_parent_signalling_enabled_flag"))
        bit = r.u(1, "nnr_pre_flag")  # nnr_reserved_zero_1bit when parent signalling is off
        mps.pre_flag = bool(bit) and mps.parent_signalling_enabled
        r.u(2, "nnr_reserved_zero_2bits")
    else:
        r.u(7, "nnr_reserved_zero_7bits")
    if base_model_present:
        mps.base_model_id = r.st("base_model_id")
    if has_validation or mps.metric_type_performance_map_valid:
        mps.performance_metric_type = r.st("performance_metric_type")
    if mps.has_quantization_parameters:
        mps.qp_density = r.u(3, "mps_qp_density")
        mps.qp_base = r.i(13, "mps_quantization_parameter")
    kinds = [kind for kind, flag in
             zip(("sparsification", "pruning", "unification", "decomposition"), map_flags) if flag]
    maps = _read_maps(r, kinds)
    mps.sparsification_map = maps.get("sparsification")
    mps.pruning_map = maps.get("pruning")
    mps.unification_map = maps.get("unification")
    mps.decomposition_performance_map = maps.get("decomposition")
    if has_validation:
        mps.validation_set_performance = r.flt("validation_set_performance")
    r.byte_alignment()
    return mps


# -- 3.5 layer parameter set ---------------------------------------------------------------------
@dataclass
class LayerParameterSet:
    """Layer parameter set; when it carries quantization parameters they replace the MPS ones."""

    self_contained: bool = True
    quantization_method_flags: int = 1
    qp_density: int = 2
    qp_base: int = 0
    sparsification_map: PerformanceMap | None = None
    pruning_map: PerformanceMap | None = None
    unification_map: PerformanceMap | None = None

    @property
    def has_quantization_parameters(self) -> bool:
        return bool(self.quantization_method_flags & 3)


def encode_lps(lps: LayerParameterSet) -> bytes:
    """NNR_LPS unit."""
    w = BitWriter()
    w.u(1, lps.self_contained)
    w.u(7, 0)
    w.u(1, 0)
    w.u(1, lps.sparsification_map is not None)
    w.u(1, lps.pruning_map is not None)
    w.u(1, lps.unification_map is not None)
    w.u(3, lps.quantization_method_flags)
    w.u(1, 0)
    if lps.has_quantization_parameters:
        w.u(3, lps.qp_density)
        w.i(13, lps.qp_base)
    _write_maps(w, [lps.sparsification_map, lps.pruning_map, lps.unification_map])
    w.byte_alignment()
    return frame_unit(UnitType.LPS, w.to_bytes())


def read_lps(reader: BitReader) -> LayerParameterSet:
    r = reader
    lps = LayerParameterSet()
    lps.self_contained = bool(r.u(1, "lps_self_contained_flag"))
    r.u(7, "reserved")
    r.u(1, "reserved")
    map_flags = [r.u(1, f"lps_{kind}_flag") for kind in ("sparsification", "pruning",
                                                          "unification")]
    lps.quantization_method_flags = r.u(3, "lps_quantization_method_flags")
    r.u(1, "reserved")
    if lps.has_quantization_parameters:
        lps.qp_density = r.u(3, "lps_qp_density")
        lps.qp_base = r.i(13, "lps_quantization_parameter")
    kinds = [kind for kind, flag in zip(("sparsification", "pruning", "unification"), map_flags)
             if flag]
    maps = _read_maps(r, kinds)
    lps.sparsification_map = maps.get("sparsification")
    lps.pruning_map = maps.get("pruning")
    lps.unification_map = maps.get("unification")
    r.byte_alignment()
    return lps


# -- 3.4 topology unit ---------------------------------------------------------------------------
@dataclass
class Topology:
    """Topology unit.

    ``data`` is the topology_data string of the plain formats; ``element_ids`` the name list of
    the REFLIST format. Payloads this reader does not interpret (compressed topology data, the
    pruning container) are kept verbatim in ``raw`` and written back unchanged.
    """

    storage_format: int = 0
    compression_format: int = 0
    data: str = ""
    element_ids: list[str] | None = None
    raw: bytes | None = None


def write_element_id_list(writer: BitWriter, names: list[str]) -> None:
    """Non-indexed topology element id list (count, alignment, names); at least two names."""
    if len(names) < 2:
        raise ValueError(f"a topology element list needs at least 2 names, got {len(names)}")
    writer.ue(7, len(names) - 2)
    writer.byte_alignment()
    for name in names:
        writer.st(name)


def read_element_id_list(reader: BitReader) -> list[str]:
    count = reader.ue(7, "count_topology_elements_minus2") + 2
    reader.byte_alignment()
    # Each name takes at least one byte, so the loop ends at the unit end for hostile counts.
    return [reader.st("topology_elem_id_list") for _ in range(count)]


def _topology_is_opaque(storage_format: int, compression_format: int) -> bool:
    return compression_format != 0 or storage_format == TopologyFormat.PRUN


def encode_topology(topology: Topology) -> bytes:
    """NNR_TPL unit."""
    w = BitWriter()
    w.u(8, topology.storage_format)
    w.u(8, topology.compression_format)
    if _topology_is_opaque(topology.storage_format, topology.compression_format):
        body = w.to_bytes() + bytes(topology.raw or b"")
        return frame_unit(UnitType.TPL, body)
    if topology.storage_format == TopologyFormat.REFLIST:
        write_element_id_list(w, topology.element_ids or [])
    else:
        w.st(topology.data)
    return frame_unit(UnitType.TPL, w.to_bytes())


def read_topology(reader: BitReader) -> Topology:
    """Reads a TPL header and payload; ``reader`` must end at the unit end."""
    storage_format = reader.u(8, "topology_storage_format")
    compression_format = reader.u(8, "topology_compression_format")
    topology = Topology(storage_format, compression_format)
    if _topology_is_opaque(storage_format, compression_format):
        topology.raw = reader.read_bytes(reader.bits_left // 8, "topology payload")
    elif storage_format == TopologyFormat.REFLIST:
        topology.element_ids = read_element_id_list(reader)
    else:
        topology.data = reader.st("topology_data")
    return topology
