# cython: language_level=3
"""Binarization of one quantization level (NNC format note §8.1-8.2).

``sig_flag``, ``sign_flag``, up to G greater-than flags, then an Exp-Golomb-0 remainder
with a context-coded unary prefix. With a codebook (profile 1) the binarization is
truncated at the codebook bounds. The encoder side writes into a *bin sink*: either the
arithmetic encoder, or the recorder of the param_opt pre-pass, which logs every bin per
context for pricing under all nine parameter sets. Both share this one binarization.
"""
from .arith cimport (ArithDecoder, ArithEncoder, dec_bin, dec_bypass_bits, enc_bin,
                     enc_bypass_bits)
from .contexts cimport CTX_GT, MAX_PREFIX_BINS, ContextLayout, gt_context
from .model cimport ContextModel
from .pricing cimport BinLog, log_bin


ctypedef struct LevelBounds:
    long long max_pos    # largest positive magnitude (codebook) or "unbounded"
    long long max_neg    # largest negative magnitude
    bint sign_coded      # False for one-sided codebooks: the sign is implied


ctypedef struct BinWriter:          # real coding
    ArithEncoder* coder
    ContextModel* ctx


ctypedef struct BinRecorder:        # param_opt pre-pass, bin statistics
    BinLog* logs                    # one per context
    Py_ssize_t num_contexts
    Py_ssize_t* resets              # if not NULL: each context's bin count at every
    Py_ssize_t num_resets           # block-row boundary (num_contexts values per boundary)
    int failed                      # a log could not grow


ctypedef BinWriter* BinWriterPtr
ctypedef BinRecorder* BinRecorderPtr

ctypedef fused BinSink:
    BinWriterPtr
    BinRecorderPtr


cdef inline void sink_bin(BinSink sink, int c, int bin) noexcept nogil:
    if BinSink is BinWriterPtr:
        enc_bin(sink.coder, &sink.ctx[c], bin)
    else:
        if log_bin(&sink.logs[c], bin):
            sink.failed = 1


cdef inline void sink_bypass_bits(BinSink sink, unsigned long long value, int nbits) noexcept nogil:
    if BinSink is BinWriterPtr:
        enc_bypass_bits(sink.coder, value, nbits)
    # the pre-pass ignores bypass bins: they cost the same under every parameter set


cdef inline void encode_level(BinSink sink, const ContextLayout* L, long long level,
                              int sig_ctx, int sign_ctx, long long base,
                              const LevelBounds* bounds) noexcept nogil:
    cdef bint negative = level < 0
    cdef long long magnitude = -level if negative else level
    cdef long long bound, remainder, prefix_value, max_remainder
    cdef int j, t, i
    sink_bin(sink, sig_ctx, level != 0)
    if level == 0:
        return
    if bounds.sign_coded:
        sink_bin(sink, sign_ctx, negative)
    bound = bounds.max_neg if negative else bounds.max_pos
    for j in range(L.num_gt):
        if bound <= j + 1:                  # flag implied 0 by the codebook bound
            return
        sink_bin(sink, gt_context(L, j, negative, base), magnitude > j + 1)
        if magnitude <= j + 1:
            return
    if bound <= L.num_gt + 1:
        return
    remainder = magnitude - L.num_gt - 1
    max_remainder = bound - L.num_gt - 1
    if remainder == 0:
        sink_bin(sink, L.remainder, 0)
        return
    sink_bin(sink, L.remainder, 1)
    prefix_value = 1
    t = 1
    i = 1
    while remainder >= prefix_value + (1LL << t):
        sink_bin(sink, L.remainder + i, 1)
        prefix_value += 1LL << t
        t += 1
        i += 1
    if max_remainder >= prefix_value + (1LL << t):   # otherwise the closing 0 is implied
        sink_bin(sink, L.remainder + i, 0)
    sink_bypass_bits(sink, <unsigned long long>(remainder - prefix_value), t)


cdef inline long long decode_level(ArithDecoder* d, ContextModel* ctx, const ContextLayout* L,
                                   int sig_ctx, int sign_ctx, long long base,
                                   const LevelBounds* bounds) noexcept nogil:
    cdef bint negative
    cdef long long magnitude = 1
    cdef long long bound
    cdef int j = 0
    cdef int t = 0
    cdef int i = 0
    if not dec_bin(d, &ctx[sig_ctx]):
        return 0
    if bounds.sign_coded:
        negative = dec_bin(d, &ctx[sign_ctx])
    else:
        negative = bounds.max_pos == 0
    bound = bounds.max_neg if negative else bounds.max_pos
    while True:
        if bound <= magnitude:
            return -magnitude if negative else magnitude
        if j == L.num_gt:
            break
        if not dec_bin(d, &ctx[gt_context(L, j, negative, base)]):
            return -magnitude if negative else magnitude
        magnitude += 1
        j += 1
    while bound >= magnitude + (1LL << t):
        if not dec_bin(d, &ctx[L.remainder + i]):
            break
        magnitude += 1LL << t
        t += 1
        if i == MAX_PREFIX_BINS - 1:
            break
        i += 1
    magnitude += <long long>dec_bypass_bits(d, t)
    return -magnitude if negative else magnitude


cdef inline long long decode_level_plain(ArithDecoder* d, ContextModel* ctx, const ContextLayout* L,
                                         int sig_ctx, int sign_ctx) noexcept nogil:
    """:func:`decode_level` without a codebook bound and without temporal context (base 0):
    the same bins in the same contexts, with the branches that cannot apply taken out."""
    cdef bint negative
    cdef long long magnitude = 1
    cdef int j
    cdef int t = 0
    cdef int i = 0
    if not dec_bin(d, &ctx[sig_ctx]):
        return 0
    negative = dec_bin(d, &ctx[sign_ctx])
    for j in range(L.num_gt):
        if not dec_bin(d, &ctx[CTX_GT + 2 * j + negative]):
            return -magnitude if negative else magnitude
        magnitude += 1
    while True:
        if not dec_bin(d, &ctx[L.remainder + i]):
            break
        magnitude += 1LL << t
        t += 1
        if i == MAX_PREFIX_BINS - 1:
            break
        i += 1
    magnitude += <long long>dec_bypass_bits(d, t)
    return -magnitude if negative else magnitude


cdef inline void encode_level_plain(BinSink sink, const ContextLayout* L, long long level,
                                    int sig_ctx, int sign_ctx) noexcept nogil:
    """:func:`encode_level` without a codebook bound and without temporal context (base 0):
    the same bins in the same contexts, with the branches that cannot apply taken out."""
    cdef bint negative = level < 0
    cdef long long magnitude = -level if negative else level
    cdef long long remainder, prefix_value
    cdef int j, t, i
    sink_bin(sink, sig_ctx, level != 0)
    if level == 0:
        return
    sink_bin(sink, sign_ctx, negative)
    for j in range(L.num_gt):
        sink_bin(sink, CTX_GT + 2 * j + negative, magnitude > j + 1)
        if magnitude <= j + 1:
            return
    remainder = magnitude - L.num_gt - 1
    if remainder == 0:
        sink_bin(sink, L.remainder, 0)
        return
    sink_bin(sink, L.remainder, 1)
    prefix_value = 1
    t = 1
    i = 1
    while remainder >= prefix_value + (1LL << t):
        sink_bin(sink, L.remainder + i, 1)
        prefix_value += 1LL << t
        t += 1
        i += 1
    sink_bin(sink, L.remainder + i, 0)
    sink_bypass_bits(sink, <unsigned long long>(remainder - prefix_value), t)
