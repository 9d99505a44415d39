"""Bit-level writer and reader for NNR header syntax (ISO/IEC 15938-17, descriptors of 2.2/2.3).

Implements ``u(n)``, ``i(n)``, ``ue(k)``, ``ie(k)``, ``st``, ``flt(32)`` and ``byte_alignment()``.
Bits are packed MSB first. The writer works on whole fields (big-integer shifts and masks), so
the cost is per syntax element, not per bit; the reader used by the parser, :class:`BitReader`,
is compiled (``nnc_core.cabac.bitreader``), :class:`PyBitReader` is the same reader in Python.

The reader is meant for untrusted input: every read is bounds-checked against an end position and
fails with :class:`~nnc_core.errors.DecodeError` naming the field and the byte offset; Exp-Golomb
codes with more than :data:`MAX_EXP_GOLOMB_ZEROS` leading zeros are rejected.
"""
from __future__ import annotations

import operator
import struct

from nnc_core.errors import DecodeError

# A longer zero run cannot come from any sane header value (31-bit sizes need at most 31 zeros),
# and capping it keeps the reader from scanning or allocating on hostile input.
MAX_EXP_GOLOMB_ZEROS = 32


def ue_bit_length(k: int, value: int) -> int:
    """Number of bits of ``ue(k)`` for ``value`` (without writing anything)."""
    zeros = ((value >> k) + 1).bit_length() - 1
    return 2 * zeros + 1 + k


def ie_to_ue(value: int) -> int:
    """Signed-to-unsigned mapping of ``ie(k)``: 1 -> 1, -1 -> 2, 2 -> 3, 0 -> 0."""
    return 2 * value - 1 if value > 0 else -2 * value


def ue_to_ie(code: int) -> int:
    """Inverse of :func:`ie_to_ue`."""
    return (code + 1) >> 1 if code & 1 else -(code >> 1)


def ie_bit_length(k: int, value: int) -> int:
    """Number of bits of ``ie(k)`` for ``value``."""
    return ue_bit_length(k, ie_to_ue(value))


def _as_int(value: object, what: str) -> int:
    try:
        return operator.index(value)  # accepts numpy integers and bools, rejects floats
    except TypeError:
        raise ValueError(f"{what}: expected an integer, got {type(value).__name__}") from None


class BitWriter:
    """Accumulates header syntax elements MSB first into a byte buffer."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0  # pending bits not yet forming a whole byte (fewer than 8 after each call)
        self._nacc = 0

    @property
    def bit_length(self) -> int:
        return 8 * len(self._out) + self._nacc

    @property
    def is_aligned(self) -> bool:
        return self._nacc == 0

    def u(self, nbits: int, value: int) -> None:
        """Unsigned integer in ``nbits`` bits."""
        value = _as_int(value, f"u({nbits})")
        if nbits < 0:
            raise ValueError(f"u({nbits}): negative bit count")
        if value < 0 or value >> nbits:
            raise ValueError(f"u({nbits}): value {value} out of range")
        if nbits == 0:
            return
        acc = (self._acc << nbits) | value
        nacc = self._nacc + nbits
        if nacc >= 8:
            rem = nacc & 7
            self._out += (acc >> rem).to_bytes(nacc >> 3, "big")
            acc &= (1 << rem) - 1
            nacc = rem
        self._acc, self._nacc = acc, nacc

    def i(self, nbits: int, value: int) -> None:
        """Signed integer, ``nbits``-bit two's complement."""
        value = _as_int(value, f"i({nbits})")
        if nbits <= 0 or not -(1 << (nbits - 1)) <= value < (1 << (nbits - 1)):
            raise ValueError(f"i({nbits}): value {value} out of range")
        self.u(nbits, value & ((1 << nbits) - 1))

    def ue(self, k: int, value: int) -> None:
        """k-th order Exp-Golomb code of an unsigned value."""
        value = _as_int(value, f"ue({k})")
        if k < 0 or value < 0:
            raise ValueError(f"ue({k}): value {value} out of range")
        # The textbook loop subtracts 2^k, 2^(k+1), ... ; in closed form the number of leading
        # zeros is bit_length((value >> k) + 1) - 1, and zeros + '1' + suffix fit one u() call.
        zeros = ((value >> k) + 1).bit_length() - 1
        suffix_bits = k + zeros
        suffix = value - (((1 << zeros) - 1) << k)
        self.u(zeros + 1 + suffix_bits, (1 << suffix_bits) | suffix)

    def ie(self, k: int, value: int) -> None:
        """k-th order Exp-Golomb code of a signed value (mapping of 2.2)."""
        self.ue(k, ie_to_ue(_as_int(value, f"ie({k})")))

    def st(self, text: str) -> None:
        """UTF-8 string followed by one zero byte; must start byte aligned."""
        if not self.is_aligned:
            raise ValueError("st: string must start at a byte boundary")
        raw = text.encode("utf-8")
        if b"\x00" in raw:
            raise ValueError(f"st: string {text!r} contains a NUL character")
        self._out += raw
        self._out.append(0)

    def flt(self, value: float) -> None:
        """IEEE-754 float32, its four bytes in little-endian order, each as u(8)."""
        try:
            raw = struct.pack("<f", value)
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"flt: {value!r} is not representable as float32") from exc
        self.u(32, int.from_bytes(raw, "big"))

    def byte_alignment(self) -> None:
        """One '1' bit, then '0' bits up to the next byte boundary (always at least one bit)."""
        self.u(1, 1)
        if self._nacc:
            self.u(8 - self._nacc, 0)

    def to_bytes(self) -> bytes:
        if not self.is_aligned:
            raise ValueError(f"to_bytes: {self._nacc} bits past the last byte boundary")
        return bytes(self._out)


class PyBitReader:
    """Reads header syntax elements from ``data[start_byte:end_byte]``.

    The readable statement of the reader: :class:`BitReader` is the compiled one
    (``nnc_core.cabac.bitreader``), with the same fields, positions and errors.

    ``context`` (for example ``"unit 3 (NDU)"``) prefixes every error message.
    Reader positions and error offsets are absolute byte positions in ``data``.
    """

    def __init__(self, data: bytes | bytearray | memoryview, start_byte: int = 0,
                 end_byte: int | None = None, context: str = "") -> None:
        # bytes (not a memoryview) so that st() can search for the terminator without copying.
        self._data = data if isinstance(data, bytes) else bytes(data)
        size = len(self._data)
        end = size if end_byte is None else end_byte
        if not 0 <= start_byte <= end <= size:
            raise ValueError(f"invalid reader window [{start_byte}, {end}) for {size} bytes")
        self._pos = 8 * start_byte
        self._end = 8 * end
        self.context = context

    # -- positions ---------------------------------------------------------------------------
    @property
    def bit_position(self) -> int:
        """Absolute bit position in ``data``."""
        return self._pos

    @property
    def is_aligned(self) -> bool:
        return self._pos & 7 == 0

    @property
    def byte_position(self) -> int:
        """Absolute byte position; only meaningful at a byte boundary."""
        if self._pos & 7:
            raise ValueError(f"reader is not byte aligned (bit {self._pos})")
        return self._pos >> 3

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    # -- errors ------------------------------------------------------------------------------
    def error(self, message: str, field: str = "") -> DecodeError:
        """A DecodeError located at the current position."""
        where = f"byte {self._pos >> 3}" + (f" bit {self._pos & 7}" if self._pos & 7 else "")
        prefix = f"{self.context}: " if self.context else ""
        what = f" ({field})" if field else ""
        return DecodeError(f"{prefix}{message}{what} at {where}")

    def _truncated(self, field: str, descriptor: str) -> DecodeError:
        return self.error(f"data ends (at byte {self._end >> 3}) while reading {descriptor}", field)

    # -- descriptors -------------------------------------------------------------------------
    def _peek(self, nbits: int) -> int:
        first = self._pos >> 3
        stop = self._pos + nbits
        last = (stop + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        return (chunk >> ((last << 3) - stop)) & ((1 << nbits) - 1)

    def u(self, nbits: int, field: str = "") -> int:
        """Unsigned integer in ``nbits`` bits."""
        if nbits <= 0:
            return 0
        if self._pos + nbits > self._end:
            raise self._truncated(field, f"u({nbits})")
        value = self._peek(nbits)
        self._pos += nbits
        return value

    def i(self, nbits: int, field: str = "") -> int:
        """Signed integer, ``nbits``-bit two's complement."""
        if self._pos + nbits > self._end:
            raise self._truncated(field, f"i({nbits})")
        value = self.u(nbits, field)
        return value - (1 << nbits) if value >> (nbits - 1) else value

    def ue(self, k: int, field: str = "") -> int:
        """k-th order Exp-Golomb code of an unsigned value."""
        window_bits = min(MAX_EXP_GOLOMB_ZEROS + 1, self._end - self._pos)
        window = self._peek(window_bits) if window_bits > 0 else 0
        if window == 0:
            if window_bits > MAX_EXP_GOLOMB_ZEROS:
                raise self.error(f"ue({k}) with more than {MAX_EXP_GOLOMB_ZEROS} leading zeros",
                                 field)
            raise self._truncated(field, f"ue({k})")
        zeros = window_bits - window.bit_length()
        start = self._pos
        self._pos += zeros + 1
        if self._pos + k + zeros > self._end:
            self._pos = start
            raise self._truncated(field, f"ue({k})")
        return (((1 << zeros) - 1) << k) + self.u(k + zeros, field)

    def ie(self, k: int, field: str = "") -> int:
        """k-th order Exp-Golomb code of a signed value."""
        return ue_to_ie(self.ue(k, field))

    def st(self, field: str = "") -> str:
        """Zero-terminated UTF-8 string starting at a byte boundary."""
        if self._pos & 7:
            raise self.error("string does not start at a byte boundary", field)
        start = self._pos >> 3
        end = self._data.find(b"\x00", start, self._end >> 3)
        if end < 0:
            raise self._truncated(field, "st (no terminating zero byte)")
        try:
            text = self._data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"string is not valid UTF-8 ({exc.reason})", field) from None
        self._pos = 8 * (end + 1)
        return text

    def flt(self, field: str = "") -> float:
        """IEEE-754 float32 stored as four little-endian bytes."""
        raw = self.u(32, field).to_bytes(4, "big")
        return struct.unpack("<f", raw)[0]

    def byte_alignment(self, field: str = "byte_alignment") -> None:
        """Reads one '1' bit and '0' bits up to the next byte boundary."""
        start = self._pos
        one = self.u(1, field)
        zeros = self.u((8 - (self._pos & 7)) & 7, field)
        if one != 1 or zeros != 0:
            self._pos = start
            raise self.error("invalid byte_alignment() bits (expected '1' then '0's)", field)

    def read_bytes(self, count: int, field: str = "") -> bytes:
        """The next ``count`` whole bytes; the reader must be byte aligned."""
        if self._pos & 7:
            raise self.error("byte string does not start at a byte boundary", field)
        if count < 0 or self._pos + 8 * count > self._end:
            raise self._truncated(field, f"{count} bytes")
        start = self._pos >> 3
        self._pos += 8 * count
        return self._data[start:start + count]


from nnc_core.cabac.bitreader import BitReader  # noqa: E402  (the compiled PyBitReader)

__all__ = ["BitReader", "BitWriter", "PyBitReader", "MAX_EXP_GOLOMB_ZEROS", "ie_bit_length",
           "ie_to_ue", "ue_bit_length", "ue_to_ie"]
