# cython: language_level=3
"""Binary arithmetic coder of DeepCABAC (NNC format note §6).

A 9-bit-range CABAC engine with table-based LPS sub-ranges and byte-wise output with
carry propagation. Encoder and decoder are plain structs driven by inline functions so
that the level coder compiles into one tight loop.
"""
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport realloc
from .model cimport ContextModel, model_lps_range, model_mps, model_update

cdef extern from *:
    int __builtin_clz(unsigned int) nogil


# ----------------------------------------------------------------------------- encoder

ctypedef struct ArithEncoder:
    uint32_t low
    uint32_t range
    int bits_left       # free bit positions in ``low`` before a byte must go out
    uint32_t buf_byte   # last byte not yet written: a carry may still reach it
    int n_buf           # held-back bytes: buf_byte plus following 0xFF bytes
    uint8_t* out
    size_t size
    size_t capacity
    int failed          # set when the output buffer could not grow


cdef inline void enc_start(ArithEncoder* e) noexcept nogil:
    e.low = 0
    e.range = 510
    e.bits_left = 23
    e.buf_byte = 0
    e.n_buf = 0


cdef inline void enc_emit(ArithEncoder* e, uint32_t byte) noexcept nogil:
    cdef size_t new_capacity
    cdef uint8_t* grown
    if e.size == e.capacity:
        new_capacity = e.capacity * 2 if e.capacity else 4096
        grown = <uint8_t*>realloc(e.out, new_capacity)
        if grown == NULL:
            e.failed = 1
            return
        e.out = grown
        e.capacity = new_capacity
    e.out[e.size] = <uint8_t>byte
    e.size += 1


cdef inline void enc_write_out(ArithEncoder* e) noexcept nogil:
    cdef uint32_t lead = e.low >> (24 - e.bits_left)
    cdef uint32_t carry
    cdef int i
    e.bits_left += 8
    e.low &= 0xFFFFFFFFu >> e.bits_left
    if lead == 0xFF:
        e.n_buf += 1
    elif e.n_buf > 0:
        carry = lead >> 8
        enc_emit(e, (e.buf_byte + carry) & 0xFF)
        for i in range(e.n_buf - 1):
            enc_emit(e, (0xFF + carry) & 0xFF)
        e.buf_byte = lead & 0xFF
        e.n_buf = 1
    else:
        e.buf_byte = lead
        e.n_buf = 1


cdef inline void enc_bin(ArithEncoder* e, ContextModel* m, int bin) noexcept nogil:
    # Branch-free: the encoder knows the bin, so MPS and LPS differ only in selected values,
    # and a mispredicted MPS/LPS branch would cost more than computing both.
    cdef uint32_t lps = model_lps_range(m, e.range)
    cdef uint32_t rmps = e.range - lps
    cdef bint is_lps = bin != model_mps(m)
    cdef uint32_t r = lps if is_lps else rmps
    cdef int shift = __builtin_clz(r) - 23    # 0 or 1 for an MPS, up to 7 for an LPS
    e.low += rmps if is_lps else 0
    e.range = r << shift
    e.low <<= shift
    e.bits_left -= shift
    if e.bits_left < 12:
        enc_write_out(e)
    model_update(m, bin)


cdef inline void enc_bypass(ArithEncoder* e, int bin) noexcept nogil:
    e.low <<= 1
    e.low += e.range & (0u - <uint32_t>(bin != 0))     # selected: bypass bits are even bets
    e.bits_left -= 1
    if e.bits_left < 12:
        enc_write_out(e)


cdef inline void enc_bypass_bits(ArithEncoder* e, unsigned long long value, int nbits) noexcept nogil:
    """A fixed-length field, MSB first."""
    cdef int i
    for i in range(nbits - 1, -1, -1):
        enc_bypass(e, <int>((value >> i) & 1))


cdef inline void enc_finish(ArithEncoder* e) noexcept nogil:
    """Code the terminating bin (value 1) and flush, ending with a stop bit (§6.5)."""
    cdef int i, pending, nbits
    cdef unsigned long long tail
    e.range -= 2
    e.low += e.range
    e.low <<= 7
    e.range = 256
    e.bits_left -= 7
    if e.bits_left < 12:
        enc_write_out(e)
    if (e.low >> (32 - e.bits_left)) != 0:
        enc_emit(e, (e.buf_byte + 1) & 0xFF)
        for i in range(e.n_buf - 1):
            enc_emit(e, 0x00)
        e.low -= 1u << (32 - e.bits_left)
    else:
        if e.n_buf > 0:
            enc_emit(e, e.buf_byte)
        for i in range(e.n_buf - 1):
            enc_emit(e, 0xFF)
    pending = 24 - e.bits_left
    tail = ((<unsigned long long>(e.low >> 8)) << 1) | 1      # pending bits, then the stop bit
    nbits = pending + 1
    tail <<= (8 - nbits % 8) % 8
    nbits += (8 - nbits % 8) % 8
    for i in range(nbits - 8, -1, -8):
        enc_emit(e, <uint32_t>((tail >> i) & 0xFF))


# ----------------------------------------------------------------------------- decoder

ctypedef struct ArithDecoder:
    uint32_t range
    uint32_t value
    int bits_needed     # in [-8, -1]: bits to shift in before the next byte is due
    const uint8_t* data
    size_t size
    size_t fetched      # bytes fetched so far, may run past ``size`` on bad input


cdef inline uint32_t dec_next_byte(ArithDecoder* d) noexcept nogil:
    cdef uint32_t byte = 0
    if d.fetched < d.size:
        byte = d.data[d.fetched]
    d.fetched += 1
    return byte


cdef inline void dec_start(ArithDecoder* d, const uint8_t* data, size_t size) noexcept nogil:
    d.data = data
    d.size = size
    d.fetched = 0
    d.range = 510
    d.value = dec_next_byte(d) << 8
    d.value |= dec_next_byte(d)
    d.bits_needed = -8


cdef inline void dec_renormalize_once(ArithDecoder* d) noexcept nogil:
    """Double the range (an MPS never needs more than one step), shifting in one bit."""
    d.range <<= 1
    d.value <<= 1
    d.bits_needed += 1
    if d.bits_needed == 0:
        d.value += dec_next_byte(d)
        d.bits_needed = -8


cdef inline int dec_bin(ArithDecoder* d, ContextModel* m) noexcept nogil:
    cdef uint32_t lps = model_lps_range(m, d.range)
    cdef uint32_t rmps = d.range - lps
    cdef uint32_t scaled = rmps << 7
    cdef uint32_t r
    cdef int bin, shift
    if d.value < scaled:
        bin = model_mps(m)
        r = rmps
        shift = rmps < 256           # an MPS needs at most one renormalisation step
    else:
        bin = 1 - model_mps(m)
        d.value -= scaled
        r = lps
        shift = __builtin_clz(lps) - 23
    d.range = r << shift
    d.value <<= shift
    d.bits_needed += shift
    if d.bits_needed >= 0:     # at most one byte boundary is crossed (shift <= 7)
        d.value += dec_next_byte(d) << d.bits_needed
        d.bits_needed -= 8
    model_update(m, bin)
    return bin


cdef inline int dec_bypass(ArithDecoder* d) noexcept nogil:
    cdef uint32_t scaled
    cdef int bin
    d.value <<= 1
    d.bits_needed += 1
    if d.bits_needed >= 0:
        d.value += dec_next_byte(d)
        d.bits_needed = -8
    scaled = d.range << 7
    bin = d.value >= scaled          # an even bet: selected, not branched on
    d.value -= scaled & (0u - <uint32_t>bin)
    return bin


cdef inline unsigned long long dec_bypass_bits(ArithDecoder* d, int nbits) noexcept nogil:
    cdef unsigned long long value = 0
    cdef int i
    for i in range(nbits):
        value = (value << 1) | <unsigned long long>dec_bypass(d)
    return value


cdef inline int dec_terminate(ArithDecoder* d) noexcept nogil:
    cdef uint32_t scaled
    d.range -= 2
    scaled = d.range << 7
    if d.value >= scaled:
        return 1
    if d.range < 256:
        dec_renormalize_once(d)
    return 0


cdef inline int dec_seek(ArithDecoder* d, long long bit_position, uint32_t value_high) noexcept nogil:
    """Resume decoding at an entry point (§9.3): ``bit_position`` in the consumed-bit count
    of :func:`dec_bit_position`, ``value_high`` = value >> 7 right after a range reset.

    The 7 low bits of ``value`` are the payload bits that follow the 9 bits replaced by
    ``value_high``; bits of a byte not yet due stay zero until that byte is fetched.
    Returns -1 if the position lies outside the payload.
    """
    cdef long long window_end = bit_position + 16
    cdef int missing = <int>(window_end % 8)
    cdef long long loaded_end = window_end - missing
    cdef long long p
    cdef uint32_t low = 0
    if bit_position < 0 or value_high > 255 or loaded_end > 8 * <long long>d.size:
        return -1
    for p in range(bit_position + 9, bit_position + 16):
        low <<= 1
        if p < loaded_end:
            low |= (d.data[p >> 3] >> (7 - (p & 7))) & 1
    d.range = 256
    d.value = (value_high << 7) | low
    d.bits_needed = missing - 8
    d.fetched = <size_t>(loaded_end // 8)
    return 0


cdef inline long long dec_bit_position(const ArithDecoder* d) noexcept nogil:
    """Bits consumed so far; the unit of entry-point offsets (§6.6, §9.3)."""
    return 8 * <long long>d.fetched - 16 + (d.bits_needed + 8)
