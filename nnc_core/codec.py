"""Quantized tensors <-> NNC bitstreams (NNC format note §3-§5, §11).

The layer between quantization and the bit syntax, shared by the tensor and model APIs:
:func:`encode_stream` turns already-quantized tensors into a complete bitstream
(start unit, model parameter set, topology, one NDU per tensor) and reports what a
decoder will reconstruct; :func:`decode_stream` parses and decodes any such stream.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .bitstream import (Codebook, EntryPoint, ModelParameterSet, NDUHeader, PayloadType,
                        Topology, UnitType, encode_mps, encode_ndu, encode_start_unit,
                        encode_topology, layer_shape, num_entry_points, parse_stream)
from .bitstream.ndu import CPT_BI, CPT_BN, CPT_DC, CPT_LS
from .cabac import PayloadDecoder, PayloadEncoder
from .errors import DecodeError
from .incremental import CodingState
from .options import TensorOptions
from .quant.step import step_size, step_size_exact
from .workers import ordered_map, pool, resolve_threads

PROFILE = 1

# Most elements a decoded stream may hold (all tensors together) unless the caller allows
# more: row skipping fills zeros for free, so a few bytes could otherwise claim gigabytes.
MAX_ELEMENTS = 1 << 28


@dataclass
class QuantizedTensor:
    """One tensor ready for entropy coding."""
    name: str
    dims: tuple[int, ...]
    levels: np.ndarray                   # int32: reconstruction integers, or codebook index - z
    qp: int | None = None                # None for integer (lossless) tensors
    dq: bool = False
    codebook: Codebook | None = None
    scan_order: int = 0
    parameter_id: int = 0
    data_format: int | None = None       # nnr_decompressed_data_format to signal, if any

    @property
    def payload_type(self) -> PayloadType:
        return PayloadType.INT if self.qp is None else PayloadType.FLOAT


# Members of a BLOCK NDU in payload order (format note 4.3); the id list in the header
# names the weight first, then the others in this order, with the bias last.
BN_ROLES = ("bn_beta", "bn_gamma", "bn_mean", "bn_var")


@dataclass
class QuantizedBlock:
    """A weight and the per-output-channel tensors that travel with it in one BLOCK NDU:
    local scales (LS), BatchNorm parameters (BN) and the bias (BI)."""
    weight: QuantizedTensor
    scaling: QuantizedTensor | None = None
    bn: tuple[QuantizedTensor, ...] | None = None    # beta, gamma, mean, var
    bias: QuantizedTensor | None = None

    @property
    def name(self) -> str:
        return self.weight.name

    @property
    def compressed_parameter_types(self) -> int:
        return ((CPT_LS if self.scaling else 0) | (CPT_BN if self.bn else 0)
                | (CPT_BI if self.bias else 0))

    def _by_role(self) -> dict[str, QuantizedTensor]:
        return {"weight": self.weight, "scaling": self.scaling, "bias": self.bias,
                **dict(zip(BN_ROLES, self.bn or ()))}

    def payload_members(self) -> list[tuple[str, QuantizedTensor]]:
        """(role, tensor) in the order of the CABAC payload: LS, BI, BN, weight."""
        tensors = self._by_role()
        return [(role, tensors[role]) for role in payload_roles(self.compressed_parameter_types)]

    def topology_names(self) -> list[str]:
        tensors = self._by_role()
        return [tensors[role].name for role in topology_roles(self.compressed_parameter_types)]


def payload_roles(compressed_parameter_types: int) -> list[str]:
    """Member roles of a BLOCK NDU in payload order."""
    cpt = compressed_parameter_types
    return ((["scaling"] if cpt & CPT_LS else []) + (["bias"] if cpt & CPT_BI else [])
            + (list(BN_ROLES) if cpt & CPT_BN else []) + ["weight"])


def topology_roles(compressed_parameter_types: int) -> list[str]:
    """Member roles of a BLOCK NDU in the order of its id list."""
    cpt = compressed_parameter_types
    return (["weight"] + (["scaling"] if cpt & CPT_LS else [])
            + (list(BN_ROLES) if cpt & CPT_BN else []) + (["bias"] if cpt & CPT_BI else []))


@dataclass
class EncodedUnit:
    """One NDU as written: its bytes, the payload size and what a decoder reconstructs
    (one array per tensor, in the order of ``names``)."""
    names: list[str]
    unit: bytes
    payload_bytes: int
    reconstructions: list[np.ndarray]


@dataclass
class StreamSettings:
    qp_density: int = 2
    param_opt: bool = True
    row_skipping: bool = True
    cabac_unary_length_minus1: int = 10
    compress_differences: bool = False
    pre_signalling: bool = False
    tca: bool = False
    hdsp: bool = False
    topology_format: int = 0
    topology_data: str = ""

    @classmethod
    def from_options(cls, opts: TensorOptions, topology_format: int = 0,
                     topology_data: str = "") -> "StreamSettings":
        """The stream-level signalling that the encoder options ask for."""
        return cls(qp_density=opts.qp_density, param_opt=opts.param_opt,
                   row_skipping=opts.row_skipping,
                   cabac_unary_length_minus1=opts.cabac_unary_length_minus1,
                   compress_differences=opts.compress_differences,
                   pre_signalling=opts.pre_signalling, tca=opts.tca, hdsp=opts.hdsp,
                   topology_format=topology_format, topology_data=topology_data)

    def mps(self) -> ModelParameterSet:
        return ModelParameterSet(
            parent_signalling_enabled=self.compress_differences or self.pre_signalling,
            pre_flag=self.pre_signalling, qp_density=self.qp_density, qp_base=0)


@dataclass
class DecodedTensor:
    name: str
    header: NDUHeader
    levels: np.ndarray | None            # None when decoded without keep_levels
    qp: int | None
    values: np.ndarray
    info: dict = field(default_factory=dict)
    role: str = "tensor"        # inside a BLOCK: "weight", "scaling", "bias", "bn_beta", ...


def reconstruct(levels: np.ndarray, dims, qp: int | None, qp_density: int,
                codebook: Codebook | None) -> np.ndarray:
    """Decoded values from integers (§5.3): float32 step products, float64 for codebooks,
    int32 for integer tensors."""
    if qp is None:
        return levels.astype(np.int32).reshape(dims)
    if codebook is not None:
        table = np.asarray(codebook.values, dtype=np.float64)
        return (table[levels + codebook.zero_offset] * step_size_exact(qp, qp_density)).reshape(dims)
    values = levels.astype(np.float32)
    values *= step_size(qp, qp_density)           # in place: one float32 array per tensor
    return values.reshape(dims)


def _qp_field(qp: int, qp_base: int, qp_density: int) -> int:
    bits = 6 + qp_density
    offset = qp - qp_base
    if not -(1 << (bits - 1)) <= offset < (1 << (bits - 1)):
        raise ValueError(f"qp {qp} is outside the range a {bits}-bit qp field can signal "
                         f"([{qp_base - (1 << (bits - 1))}, {qp_base + (1 << (bits - 1)) - 1}])")
    return offset & ((1 << bits) - 1)


def _coding_args(dims, *, dq: bool, scan_order: int, num_gt: int, codebook: Codebook | None,
                 parent_present: bool, tca_base: np.ndarray | None = None) -> tuple[int, int, dict]:
    """(rows, cols, keyword arguments) of the level coder for one tensor, the same for
    encoder and decoder."""
    rows, cols = layer_shape(dims)
    return rows, cols, dict(dq=dq, num_gt=num_gt, scan_order=scan_order, profile=PROFILE,
                            parent_present=parent_present, tca_base=tca_base,
                            cb_size=codebook.size if codebook else 0,
                            cb_zero=codebook.zero_offset if codebook else 0)


def _encode_member(encoder: PayloadEncoder, t: QuantizedTensor, s: StreamSettings,
                   mps: ModelParameterSet, scan_order: int, tca_base=None, history=None):
    """qp bins and levels of one tensor; returns the decoded integers and coder arguments."""
    rows, cols, args = _coding_args(t.dims, dq=t.dq, scan_order=scan_order,
                                    num_gt=s.cabac_unary_length_minus1 + 1, codebook=t.codebook,
                                    parent_present=s.compress_differences, tca_base=tca_base)
    if t.qp is not None:
        encoder.bypass_bits(_qp_field(t.qp, mps.qp_base, mps.qp_density), 6 + mps.qp_density)
    decoded = encoder.encode_tensor(t.levels, rows, cols, row_skipping=s.row_skipping,
                                    param_opt=s.param_opt, hdsp=history is not None,
                                    history=history, **args)
    return decoded, rows, cols, args


def encode_ndu_unit(t: QuantizedTensor, s: StreamSettings, mps: ModelParameterSet,
                    depth: int = 0, tca_base: np.ndarray | None = None,
                    history: np.ndarray | None = None, device_id: int = 0):
    """One NDU for one tensor; returns (unit bytes, payload size, decoded integers).

    ``depth`` is its put_node_depth and ``device_id`` the sender's node id; ``tca_base`` the
    integers of the previous version of the tensor when temporal context adaptation is used;
    ``history`` its significance history, with which HDSP is switched on for this NDU.
    """
    rows, cols = layer_shape(t.dims)
    scan_order = t.scan_order if len(t.dims) > 1 and rows > 1 and cols > 1 else 0
    encoder = PayloadEncoder()
    decoded, rows, cols, args = _encode_member(encoder, t, s, mps, scan_order, tca_base, history)
    payload = encoder.finish()
    header = NDUHeader(
        payload_type=t.payload_type, names=[t.name], parameter_id=t.parameter_id,
        device_id=device_id, put_node_depth=depth, parent_node_id_present=s.compress_differences,
        temporal_context_modeling=tca_base is not None, codebook=t.codebook, dq_flag=t.dq,
        dims=tuple(t.dims), cabac_unary_length_minus1=s.cabac_unary_length_minus1,
        scan_order=scan_order, decompressed_data_format=t.data_format)
    if num_entry_points(t.dims, scan_order):
        qp_bits = 6 + mps.qp_density if t.qp is not None else 0
        header.entry_points = _entry_points(payload, qp_bits, rows, cols, args)
    return encode_ndu(header, payload, mps, PROFILE), len(payload), decoded


def encode_block_unit(block: QuantizedBlock, s: StreamSettings, mps: ModelParameterSet,
                      depth: int = 0):
    """One BLOCK NDU (format note 4.3): every member's qp and levels in one CABAC payload,
    contexts re-initialised per member; raster scan, uniform or dependent quantization
    shared by all members. Returns (unit bytes, payload size, decoded integers per member
    in payload order)."""
    w = block.weight
    members = block.payload_members()
    for role, t in members:
        if t.qp is None or t.codebook is not None or t.dq != w.dq:
            raise ValueError(f"block {w.name!r}: member {t.name!r} must be a quantized tensor "
                             "without codebook sharing the weight's dq flag")
        if role != "weight" and tuple(t.dims) != (w.dims[0],):
            raise ValueError(f"block {w.name!r}: {role} {t.name!r} has shape {t.dims}, "
                             f"expected ({w.dims[0]},)")
    encoder = PayloadEncoder()
    decoded = [_encode_member(encoder, t, s, mps, 0)[0] for _, t in members]
    payload = encoder.finish()
    header = NDUHeader(
        payload_type=PayloadType.BLOCK, names=block.topology_names(), parameter_id=w.parameter_id,
        put_node_depth=depth, parent_node_id_present=s.compress_differences, dq_flag=w.dq,
        compressed_parameter_types=block.compressed_parameter_types, dims=tuple(w.dims),
        cabac_unary_length_minus1=s.cabac_unary_length_minus1)
    return encode_ndu(header, payload, mps, PROFILE), len(payload), decoded


def _entry_points(payload: bytes, qp_bits: int, rows: int, cols: int, args: dict) -> list[EntryPoint]:
    """Entry points are decoder states, so measure them by decoding the finished payload."""
    decoder = PayloadDecoder(payload)
    decoder.bypass_bits(qp_bits)
    _, info = decoder.decode_tensor(rows, cols, entry_points=True, **args)
    return [EntryPoint(offset, value, state) for offset, value, state in info["entry_points"]]


def _all_zero(t: QuantizedTensor) -> bool:
    return not np.any(t.levels) and t.codebook is None


def encode_units(items: list[QuantizedTensor | QuantizedBlock], settings: StreamSettings,
                 state: CodingState | None = None,
                 threads: int | None = 1) -> tuple[list[bytes], list[EncodedUnit | None]]:
    """The leading units (start, MPS, topology) and one NDU per item (None for an NDU that
    is omitted: an all-zero update under parent signalling).

    With a ``state``, NDUs carry their depth in the parameter update tree and, if
    ``settings.tca``, use the previous version of each tensor as context (§10); they are
    coded in order. Without one, the NDUs are coded on ``threads`` threads (None: all
    cores); the bytes do not depend on it.
    """
    mps = settings.mps()
    saved = state.snapshot() if state is not None else None
    try:
        if state is None:
            threads = resolve_threads(threads)     # the items are all in memory already
            units = list(ordered_map(lambda item: _encode_item(item, settings, mps, None), items,
                                     threads))
        else:
            units = [_encode_item(item, settings, mps, state) for item in items]
        return stream_head(settings), units
    except BaseException:
        if saved is not None:       # a failed encode leaves the state as it was
            state.restore(saved)
        raise


def stream_head(settings: StreamSettings) -> list[bytes]:
    """The units that start a stream: start unit, model parameter set, topology."""
    return [encode_start_unit(PROFILE), encode_mps(settings.mps(), PROFILE),
            encode_topology(Topology(storage_format=settings.topology_format,
                                     data=settings.topology_data))]


def encode_item(item: QuantizedTensor | QuantizedBlock, settings: StreamSettings) -> EncodedUnit | None:
    """The NDU of one tensor or block of a stream without incremental state (None if
    omitted, see :func:`encode_units`): with :func:`stream_head`, a stream can be written
    one tensor at a time."""
    return _encode_item(item, settings, settings.mps(), None)


def _encode_item(item, settings: StreamSettings, mps: ModelParameterSet,
                 state: CodingState | None) -> EncodedUnit | None:
    """The NDU of one tensor or block (None if omitted)."""
    if isinstance(item, QuantizedBlock):
        if state is not None:
            raise ValueError("incremental coding of BLOCK NDUs is not supported")
        unit, payload_bytes, decoded = encode_block_unit(item, settings, mps)
        members = [t for _, t in item.payload_members()]
        return EncodedUnit(
            [t.name for t in members], unit, payload_bytes,
            [reconstruct(d, t.dims, t.qp, mps.qp_density, None) for d, t in zip(decoded, members)])
    t = item
    if mps.parent_signalling_enabled and _all_zero(t):
        return None
    if state is None:
        unit, payload_bytes, decoded = encode_ndu_unit(t, settings, mps)
    else:
        unit, payload_bytes, decoded = _encode_incremental(t, settings, mps, state)
    return EncodedUnit([t.name], unit, payload_bytes,
                       [reconstruct(decoded, t.dims, t.qp, mps.qp_density, t.codebook)])


def _encode_incremental(t: QuantizedTensor, settings: StreamSettings, mps: ModelParameterSet,
                        state: CodingState):
    """One NDU in the parameter update tree of ``state``, which it then advances: depth one
    below the tensor's last NDU, TCA from that NDU's integers, and with ``settings.hdsp``
    the shorter of the NDU coded without and with the significance history (format note
    §10.3; the flag exists only under parent signalling; ties keep it off)."""
    depth = state.next_depth(t.name)
    previous = state.previous(t.name)
    fits = previous is not None and previous.levels.size == t.levels.size
    tca_base = previous.levels if settings.tca and fits else None
    device = state.device_id or 0
    coded = encode_ndu_unit(t, settings, mps, depth, tca_base, device_id=device)
    if settings.hdsp and settings.compress_differences and fits:
        with_history = encode_ndu_unit(t, settings, mps, depth, tca_base,
                                       history=previous.significant, device_id=device)
        if len(with_history[0]) < len(coded[0]):
            coded = with_history
    state.record(t.name, t.parameter_id, depth, coded[2])
    return coded


def encode_stream(tensors: list[QuantizedTensor], settings: StreamSettings,
                  state: CodingState | None = None, threads: int | None = 1) -> tuple[bytes, list]:
    """A complete bitstream of single-tensor NDUs and, per tensor, the values a decoder
    reconstructs (None for tensors whose NDU is omitted, see :func:`encode_units`)."""
    head, units = encode_units(tensors, settings, state, threads)
    body = [u.unit for u in units if u is not None]
    return b"".join(head + body), [u.reconstructions[0] if u else None for u in units]


# NDUs of fewer elements are decoded together in one task: handing a tiny tensor to another
# thread costs more than decoding it.
TASK_ELEMENTS = 1 << 15


def decode_stream(data: bytes, state: CodingState | None = None, transmitted: bool = False,
                  threads: int | None = None, max_elements: int | None = None,
                  units: list | None = None, keep_levels: bool = True) -> list[DecodedTensor]:
    """Decode every tensor of a bitstream, in stream order.

    ``state`` carries incremental-coding memory across calls; it is needed for NDUs that
    use temporal context adaptation or history-dependent significance. ``transmitted``
    also returns the coded levels (``info["transmitted"]``), e.g. to measure their entropy.
    ``threads`` (default: all cores) decode NDUs concurrently and, inside block-scanned
    tensors, block rows from their entry points; the result does not depend on it.
    Streams whose tensors hold more than ``max_elements`` elements in total (default
    :data:`MAX_ELEMENTS`) are refused before anything is decoded: a few bytes of row
    skipping can describe gigabytes of zeros. ``units`` is ``parse_stream(data)`` if the
    caller has it already. Without ``keep_levels`` the decoded integers are dropped as soon
    as a tensor is reconstructed (``levels`` is None): decoding a model then holds about the
    model, not the model and its integers.
    """
    limit = MAX_ELEMENTS if max_elements is None else int(max_elements)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"bitstream must be bytes, got {type(data).__name__}")
    threads = resolve_threads(threads)
    jobs = []
    for unit in (parse_stream(data) if units is None else units):
        if unit.type != UnitType.NDU:
            continue
        header: NDUHeader = unit.content
        where = f"unit {unit.index} (NDU '{_tensor_name(header)}', byte {unit.offset})"
        if header.payload_type not in (PayloadType.INT, PayloadType.FLOAT, PayloadType.BLOCK):
            raise DecodeError(f"{where}: payload type {PayloadType(header.payload_type).name} "
                              "is not supported by the decoder")
        jobs.append((where, unit))
    # the limit holds for the whole stream: many small NDUs cannot add up to a bomb either
    sizes = [_claimed_elements(unit.content) for _, unit in jobs]
    claimed = sum(sizes)
    if claimed > limit:
        raise DecodeError(f"the stream's tensors hold {claimed} elements, more than the "
                          f"decoder's limit of {limit} (pass max_elements= to allow it)")

    def run(job, block_row_threads=1):
        where, unit = job
        try:
            tensors = _decode_ndu(unit.payload, unit.content, unit.quantization_parameters(),
                                  state, transmitted, block_row_threads, limit)
            if not keep_levels:
                for t in tensors:
                    t.levels = None
            return tensors
        except DecodeError as error:
            raise DecodeError(f"{where}: {error}") from None

    if state is None:
        tasks = _tasks(jobs, sizes)
        if threads == 1 or len(tasks) == 1:
            return [t for job in jobs for t in run(job, threads)]
        per_task = pool(threads).map(lambda task: [t for job in task for t in run(job)], tasks)
        return [t for tensors in per_task for t in tensors]
    # incremental state advances in stream order (no NDU-level parallelism), and only if
    # the whole stream decodes: a damaged stream leaves the state as it was
    saved = state.snapshot()
    try:
        decoded = [t for job in jobs for t in run(job, threads)]
        names = [t.name for t in decoded]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise DecodeError(f"tensor(s) {twice[:4]} appear more than once in one update")
        return decoded
    except BaseException:
        state.restore(saved)
        raise


def _tasks(jobs: list, sizes: list[int]) -> list[list]:
    """Consecutive jobs grouped into tasks of at least TASK_ELEMENTS elements (the last
    may be smaller), in stream order."""
    tasks, current, elements = [], [], 0
    for job, size in zip(jobs, sizes):
        current.append(job)
        elements += size
        if elements >= TASK_ELEMENTS:
            tasks.append(current)
            current, elements = [], 0
    if current:
        tasks.append(current)
    return tasks


def _claimed_elements(header: NDUHeader) -> int:
    """Elements an NDU header announces (a BLOCK adds one vector of dims[0] per member)."""
    size = math.prod(header.dims)
    if header.is_block and header.dims:
        size += header.dims[0] * (len(payload_roles(header.compressed_parameter_types)) - 1)
    return size


def _tensor_names(header: NDUHeader) -> list[str]:
    """The tensor ids: names, or "#index" when the MPS uses topology-indexed references."""
    return list(header.names) or [f"#{i}" for i in header.element_indices] or [""]


def _tensor_name(header: NDUHeader) -> str:
    return _tensor_names(header)[0]


def _read_qp(decoder: PayloadDecoder, qp_density: int, qp_base: int) -> int:
    bits = 6 + qp_density
    raw = decoder.bypass_bits(bits)
    qp = (raw - (1 << bits) if raw >> (bits - 1) else raw) + qp_base
    # The step is (k + (qp mod k)) * 2^((qp >> d) - d) < 2^((qp >> d) + 1); beyond 2^128
    # it overflows float32 (no float32 tensor can need it).
    if qp >> qp_density > 127:
        raise DecodeError(f"qp {qp} (qp_density {qp_density}, qp base {qp_base}) gives a "
                          "step size beyond the float32 range")
    return qp


def _decode_block(payload, header: NDUHeader, quantization: tuple[int, int],
                  transmitted: bool, max_elements: int) -> list[DecodedTensor]:
    """Decode the members of a BLOCK NDU, in payload order (format note 4.3)."""
    qp_density, qp_base = quantization
    cpt = header.compressed_parameter_types
    for unsupported, why in ((cpt & CPT_DC, "decomposed weights (DC)"),
                             (header.codebook is not None, "a codebook"),
                             (header.scan_order, "block scan orders"),
                             (header.temporal_context_modeling, "temporal context adaptation")):
        if unsupported:
            raise DecodeError(f"BLOCK NDUs with {why} are not supported")
    if not header.dims:
        raise DecodeError("a BLOCK NDU needs the weight's dimensions")
    names = dict(zip(topology_roles(cpt), _tensor_names(header)))
    decoder = PayloadDecoder(payload)
    members = []
    for role in payload_roles(cpt):
        dims = tuple(header.dims) if role == "weight" else (header.dims[0],)
        qp = _read_qp(decoder, qp_density, qp_base)
        rows, cols, args = _coding_args(
            dims, dq=bool(header.dq_flag), scan_order=0, num_gt=header.cabac_unary_length_minus1 + 1,
            codebook=None, parent_present=header.parent_node_id_present)
        levels, info = decoder.decode_tensor(rows, cols, transmitted=transmitted,
                                             max_elements=max_elements, **args)
        values = reconstruct(levels, dims, qp, qp_density, None)
        members.append(DecodedTensor(names[role], header, levels, qp, values, info, role))
    decoder.finish()
    return members


def _decode_ndu(payload, header: NDUHeader, quantization: tuple[int, int],
                state: CodingState | None, transmitted: bool = False, threads: int = 1,
                max_elements: int = MAX_ELEMENTS) -> list[DecodedTensor]:
    """Decode one NDU; ``quantization`` is the (qp_density, qp_base) in force."""
    if header.is_block:
        if state is not None:
            raise DecodeError("incremental decoding of BLOCK NDUs is not supported")
        return _decode_block(payload, header, quantization, transmitted, max_elements)
    qp_density, qp_base = quantization
    dims = tuple(header.dims)
    name = _tensor_name(header)
    size = math.prod(dims) if dims else 0
    tca_base = history = None
    if header.temporal_context_modeling and state is None:
        raise DecodeError("temporal context adaptation needs the previous version of the "
                          "tensor: pass the decoder's incremental state")
    if state is not None:
        if header.node_id_present:
            state.check_device(header.device_id)
        state.check_node(name, header.parameter_id, header.put_node_depth, size)
        if header.temporal_context_modeling:
            tca_base = state.check_parent(name, header.parameter_id, header.put_node_depth,
                                          size).levels
        previous = state.previous(name)
        if previous is not None and previous.significant.size == size:
            history = previous.significant
    decoder = PayloadDecoder(payload)
    qp = None
    if header.payload_type == PayloadType.FLOAT:
        qp = _read_qp(decoder, qp_density, qp_base)
    codebook = header.codebook if header.payload_type == PayloadType.FLOAT else None
    rows, cols, args = _coding_args(
        dims, dq=bool(header.dq_flag) and header.payload_type == PayloadType.FLOAT,
        scan_order=header.scan_order if len(dims) > 1 else 0,
        num_gt=header.cabac_unary_length_minus1 + 1, codebook=codebook,
        parent_present=header.parent_node_id_present, tca_base=tca_base)
    entry_points = [(e.bit_offset, e.value, e.dq_state) for e in header.entry_points]
    levels, info = decoder.decode_tensor(rows, cols, history=history, transmitted=transmitted,
                                         max_elements=max_elements, entry_points_in=entry_points,
                                         threads=threads, **args)
    decoder.finish()
    if state is not None:
        state.record(name, header.parameter_id, header.put_node_depth, levels)
    values = reconstruct(levels, dims, qp, qp_density, codebook)
    return [DecodedTensor(name, header, levels, qp, values, info)]
