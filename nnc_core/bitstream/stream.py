"""Walking a bitstream unit by unit (ISO/IEC 15938-17; format note 3.1 framing and 11).

:func:`parse_stream` splits a byte string into NNR units, parses every header it understands and
keeps track of the profile and parameter sets that later units depend on. It is safe on untrusted
input: whatever the bytes, it returns or raises :class:`~nnc_core.errors.DecodeError`.
"""
from __future__ import annotations

from dataclasses import dataclass

from nnc_core.errors import DecodeError

from .bits import BitReader
from .ndu import NDUHeader, read_ndu_header
from .units import (LayerParameterSet, ModelParameterSet, PayloadType, Topology, UnitType,
                    read_lps, read_mps, read_start_unit, read_topology)

UnitContent = int | ModelParameterSet | LayerParameterSet | Topology | NDUHeader | None


@dataclass
class Unit:
    """One NNR unit of a stream.

    ``content`` is the parsed header: the profile (int) for STR, a ModelParameterSet,
    LayerParameterSet, Topology or NDUHeader. ``header_size`` counts the bytes from the unit start
    to the end of the parsed syntax; ``payload`` is everything after that up to the unit end (the
    CABAC payload of an NDU, normally empty for the other types). ``profile``, ``mps`` and
    ``lps`` are the ones in force for this unit.
    """

    index: int
    type: UnitType
    offset: int
    size: int
    content: UnitContent
    header_size: int
    payload: memoryview | bytes
    independently_decodable: bool = True
    profile: int | None = None
    mps: ModelParameterSet | None = None
    lps: LayerParameterSet | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size

    def quantization_parameters(self) -> tuple[int, int]:
        """``(qp_density, qp_base)`` for this NDU: from the LPS if it has them, else the MPS."""
        if self.lps is not None and self.lps.has_quantization_parameters:
            return self.lps.qp_density, self.lps.qp_base
        if self.mps is None:
            raise ValueError(f"unit {self.index} has no parameter set")
        return self.mps.qp_density, self.mps.qp_base


@dataclass
class _State:
    profile: int | None = None
    mps: ModelParameterSet | None = None
    lps: LayerParameterSet | None = None


def _read_framing(data: bytes, pos: int, index: int) -> tuple[int, int, int, bool, bool]:
    """Returns (size, framing bytes, unit type code, independently decodable, pdc present)."""
    left = len(data) - pos
    long_form = data[pos] >> 7
    framing = 5 if long_form else 3
    where = f"unit {index} at byte {pos}"
    if left < framing:
        raise DecodeError(f"{where}: truncated unit ({left} bytes left, its framing needs "
                          f"{framing})")
    size = int.from_bytes(data[pos:pos + framing - 1], "big") & ((1 << (8 * framing - 9)) - 1)
    if size < framing:
        raise DecodeError(f"{where}: nnr_unit_size {size} is smaller than the unit framing "
                          f"({framing} bytes)")
    if size > left:
        raise DecodeError(f"{where}: truncated unit: nnr_unit_size {size} runs past the end of "
                          f"the stream ({left} bytes left)")
    flags = data[pos + framing - 1]
    return size, framing, flags >> 2, bool(flags & 2), bool(flags & 1)


def _parse_unit(data: bytes, pos: int, index: int, state: _State) -> Unit:
    size, framing, type_code, independent, pdc_present = _read_framing(data, pos, index)
    try:
        unit_type = UnitType(type_code)
    except ValueError:
        raise DecodeError(f"unit {index} at byte {pos}: unknown nnr_unit_type "
                          f"{type_code}") from None
    context = f"unit {index} ({unit_type.name})"
    reader = BitReader(data, pos + framing, pos + size, context)
    if pdc_present:
        raise reader.error("partial data counters (units split into parts) are not supported")

    def require(what: str, present: object) -> None:
        if present is None:
            raise reader.error(f"{unit_type.name} unit before the {what}")

    content: UnitContent
    if unit_type == UnitType.STR:
        content = state.profile = read_start_unit(reader)
    elif unit_type == UnitType.MPS:
        require("start unit", state.profile)
        content = state.mps = read_mps(reader, state.profile)
        state.lps = None
    elif unit_type == UnitType.LPS:
        require("start unit", state.profile)
        content = state.lps = read_lps(reader)
    elif unit_type == UnitType.TPL:
        content = read_topology(reader)
    elif unit_type == UnitType.NDU:
        require("start unit", state.profile)
        require("model parameter set", state.mps)
        content = read_ndu_header(reader, state.profile, state.mps)
    else:
        raise reader.error(f"{unit_type.name} units are not supported")

    header_size = reader.byte_position - pos
    payload = memoryview(data)[pos + header_size:pos + size]
    if unit_type == UnitType.NDU:
        _check_ndu_payload(content, payload, reader)
    return Unit(index, unit_type, pos, size, content, header_size, payload, independent,
                state.profile, state.mps, state.lps)


def _check_ndu_payload(header: NDUHeader, payload: memoryview, reader: BitReader) -> None:
    if header.payload_type == PayloadType.RAW_FLOAT:
        expected = 4 * header.element_count
        if len(payload) != expected:
            raise reader.error(f"RAW_FLOAT payload has {len(payload)} bytes, dims "
                               f"{list(header.dims)} need {expected}")
    elif len(payload) < 2:
        raise reader.error(f"CABAC payload of {len(payload)} bytes (at least 2 are needed)")


def parse_stream(data: bytes | bytearray | memoryview) -> list[Unit]:
    """Splits ``data`` into NNR units and parses their headers (format note 11)."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty bitstream (zero bytes)")
    units: list[Unit] = []
    state = _State()
    pos = 0
    while pos < len(data):
        index = len(units)
        try:
            unit = _parse_unit(data, pos, index, state)
        except DecodeError:
            raise
        except (ArithmeticError, IndexError, LookupError, TypeError, ValueError,
                UnicodeError, MemoryError) as exc:
            # Defensive: any slip in a header reader must still surface as a DecodeError.
            raise DecodeError(f"unit {index} at byte {pos}: malformed unit "
                              f"({type(exc).__name__}: {exc})") from exc
        units.append(unit)
        pos += unit.size
    return units
