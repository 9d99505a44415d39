"""The per-tensor QP at the start of a CABAC payload (ISO/IEC 15938-17; format note 5.2, 6.6).

The QP is not in the NDU header: it is the first ``6 + qp_density`` bypass bins of the payload
(two's complement, relative to the QP base of the parameter set). Bypass bins do not depend on any
context, so they can be read with the few decoder steps of 6.6 without the full CABAC decoder;
this is what tools that only inspect a stream need.
"""
from __future__ import annotations

from nnc_core.errors import DecodeError

_START_RANGE = 510


def read_bypass_prefix(payload: bytes | memoryview, nbits: int) -> int:
    """Unsigned value of the first ``nbits`` bypass bins of a CABAC payload (MSB first)."""
    if len(payload) < 2:
        raise DecodeError(f"CABAC payload of {len(payload)} bytes is too short (needs 2)")
    value = (payload[0] << 8) | payload[1]
    next_byte = 2
    bits_needed = -8
    threshold = _START_RANGE << 7
    result = 0
    for _ in range(nbits):
        value <<= 1
        bits_needed += 1
        if bits_needed == 0:
            if next_byte >= len(payload):
                raise DecodeError(f"CABAC payload ends after {len(payload)} bytes inside the "
                                  f"first {nbits} bypass bins")
            value += payload[next_byte]
            next_byte += 1
            bits_needed = -8
        bit = value >= threshold
        if bit:
            value -= threshold
        result = (result << 1) | bit
    return result


def read_qp(payload: bytes | memoryview, qp_density: int, qp_base: int) -> int:
    """QP of the first tensor of a FLOAT or BLOCK payload."""
    nbits = 6 + qp_density
    raw = read_bypass_prefix(payload, nbits)
    offset = raw - (1 << nbits) if raw >> (nbits - 1) else raw
    return offset + qp_base
