# cython: language_level=3
"""Compiled reader of NNR header syntax (descriptors of format note 2.2 / 2.3).

The same reader as :class:`nnc_core.bitstream.bits.PyBitReader`, field for field and error
for error, with the bit arithmetic in C: a header field costs tens of nanoseconds instead
of microseconds, which keeps the header layer a small part of coding small tensors
(biases, norms) and lets a stream of thousands of units be listed at once.
:mod:`nnc_core.bitstream.bits` exports it as ``BitReader``.
"""
import struct

from libc.string cimport memchr

from nnc_core.errors import DecodeError

cdef int MAX_EXP_GOLOMB_ZEROS = 32
cdef int FAST_BITS = 57          # fields up to this width are read with one 64-bit load


cdef class BitReader:
    """Reads header syntax elements from ``data[start_byte:end_byte]``.

    ``context`` (for example ``"unit 3 (NDU)"``) prefixes every error message.
    Reader positions and error offsets are absolute byte positions in ``data``.
    """
    cdef bytes _data
    cdef const unsigned char* _buf
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _end
    cdef public object context

    def __init__(self, data, Py_ssize_t start_byte=0, end_byte=None, context=""):
        self._data = data if isinstance(data, bytes) else bytes(data)
        cdef Py_ssize_t size = len(self._data)
        cdef Py_ssize_t end = size if end_byte is None else end_byte
        if not 0 <= start_byte <= end <= size:
            raise ValueError(f"invalid reader window [{start_byte}, {end}) for {size} bytes")
        self._buf = <const unsigned char*><const char*>self._data
        self._pos = 8 * start_byte
        self._end = 8 * end
        self.context = context

    # -- positions ---------------------------------------------------------------------------
    @property
    def bit_position(self):
        """Absolute bit position in ``data``."""
        return self._pos

    @property
    def is_aligned(self):
        return self._pos & 7 == 0

    @property
    def byte_position(self):
        """Absolute byte position; only meaningful at a byte boundary."""
        if self._pos & 7:
            raise ValueError(f"reader is not byte aligned (bit {self._pos})")
        return self._pos >> 3

    @property
    def bits_left(self):
        return self._end - self._pos

    # -- errors ------------------------------------------------------------------------------
    def error(self, message, field=""):
        """A DecodeError located at the current position."""
        where = f"byte {self._pos >> 3}" + (f" bit {self._pos & 7}" if self._pos & 7 else "")
        prefix = f"{self.context}: " if self.context else ""
        what = f" ({field})" if field else ""
        return DecodeError(f"{prefix}{message}{what} at {where}")

    def _truncated(self, field, descriptor):
        return self.error(f"data ends (at byte {self._end >> 3}) while reading {descriptor}", field)

    # -- bit access --------------------------------------------------------------------------
    cdef inline unsigned long long _peek_small(self, int nbits) noexcept:
        """The next ``nbits`` (1..57) bits; the caller checked that they are there."""
        cdef Py_ssize_t first = self._pos >> 3
        cdef int shift = <int>(self._pos & 7)
        cdef int nbytes = (shift + nbits + 7) >> 3
        cdef unsigned long long acc = 0
        cdef int i
        for i in range(nbytes):
            acc = (acc << 8) | self._buf[first + i]
        return (acc >> (8 * nbytes - shift - nbits)) & ((1ULL << nbits) - 1)

    cdef object _peek(self, Py_ssize_t nbits):
        if nbits <= FAST_BITS:
            return self._peek_small(<int>nbits)
        first = self._pos >> 3
        stop = self._pos + nbits
        last = (stop + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        one = 1                                      # Python ints: no width limit
        return (chunk >> ((last << 3) - stop)) & ((one << nbits) - 1)

    # -- descriptors -------------------------------------------------------------------------
    cpdef object u(self, Py_ssize_t nbits, field=""):
        """Unsigned integer in ``nbits`` bits."""
        if nbits <= 0:
            return 0
        if self._pos + nbits > self._end:
            raise self._truncated(field, f"u({nbits})")
        value = self._peek(nbits)
        self._pos += nbits
        return value

    def i(self, Py_ssize_t nbits, field=""):
        """Signed integer, ``nbits``-bit two's complement."""
        if self._pos + nbits > self._end:
            raise self._truncated(field, f"i({nbits})")
        value = self.u(nbits, field)
        one = 1                                      # Python ints: no width limit
        return value - (one << nbits) if value >> (nbits - 1) else value

    cpdef object ue(self, int k, field=""):
        """k-th order Exp-Golomb code of an unsigned value."""
        cdef Py_ssize_t window = self._end - self._pos
        cdef Py_ssize_t zeros = 0, start, p
        cdef int n
        cdef unsigned long long suffix = 0
        if window > MAX_EXP_GOLOMB_ZEROS + 1:
            window = MAX_EXP_GOLOMB_ZEROS + 1
        p = self._pos
        while zeros < window and not (self._buf[p >> 3] >> (7 - (p & 7))) & 1:
            zeros += 1
            p += 1
        if zeros == window:
            if window > MAX_EXP_GOLOMB_ZEROS:
                raise self.error(f"ue({k}) with more than {MAX_EXP_GOLOMB_ZEROS} leading zeros",
                                 field)
            raise self._truncated(field, f"ue({k})")
        start = self._pos
        self._pos += zeros + 1
        if self._pos + k + zeros > self._end:
            self._pos = start
            raise self._truncated(field, f"ue({k})")
        n = <int>(k + zeros)
        if n <= FAST_BITS:
            if n > 0:
                suffix = self._peek_small(n)
            self._pos += n
            return (((1ULL << zeros) - 1) << k) + suffix
        one = 1                                      # Python ints: no width limit
        return (((one << zeros) - 1) << k) + self.u(n, field)

    def ie(self, int k, field=""):
        """k-th order Exp-Golomb code of a signed value."""
        code = self.ue(k, field)
        return (code + 1) >> 1 if code & 1 else -(code >> 1)

    def st(self, field=""):
        """Zero-terminated UTF-8 string starting at a byte boundary."""
        if self._pos & 7:
            raise self.error("string does not start at a byte boundary", field)
        cdef Py_ssize_t start = self._pos >> 3
        cdef Py_ssize_t stop = self._end >> 3
        cdef const void* hit = NULL
        if stop > start:
            hit = memchr(self._buf + start, 0, stop - start)
        if hit == NULL:
            raise self._truncated(field, "st (no terminating zero byte)")
        cdef Py_ssize_t end = <const unsigned char*>hit - self._buf
        try:
            text = self._data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"string is not valid UTF-8 ({exc.reason})", field) from None
        self._pos = 8 * (end + 1)
        return text

    def flt(self, field=""):
        """IEEE-754 float32 stored as four little-endian bytes."""
        raw = self.u(32, field).to_bytes(4, "big")
        return struct.unpack("<f", raw)[0]

    def byte_alignment(self, field="byte_alignment"):
        """Reads one '1' bit and '0' bits up to the next byte boundary."""
        cdef Py_ssize_t start = self._pos
        one = self.u(1, field)
        zeros = self.u((8 - (self._pos & 7)) & 7, field)
        if one != 1 or zeros != 0:
            self._pos = start
            raise self.error("invalid byte_alignment() bits (expected '1' then '0's)", field)

    def read_bytes(self, Py_ssize_t count, field=""):
        """The next ``count`` whole bytes; the reader must be byte aligned."""
        if self._pos & 7:
            raise self.error("byte string does not start at a byte boundary", field)
        if count < 0 or self._pos + 8 * count > self._end:
            raise self._truncated(field, f"{count} bytes")
        cdef Py_ssize_t start = self._pos >> 3
        self._pos += 8 * count
        return self._data[start:start + count]
