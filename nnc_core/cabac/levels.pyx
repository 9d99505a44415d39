# cython: language_level=3
"""Coding the quantization levels of tensors inside one NDU payload.

Implements, for each tensor of an NDU (NNC format note §4.4, §7.4-7.5, §8, §9):
the tensor-level flags (HDSP, row skipping), the context-parameter signalling
("param_opt") with the encoder's cost pre-pass, the level scan (raster or block scan),
dependent-quantization state tracking, block-row resets and the entry points a decoder
needs to start mid-tensor.

The Python surface is two classes, :class:`PayloadEncoder` and :class:`PayloadDecoder`,
each wrapping one arithmetic-coded segment that may hold several tensors.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from nnc_core.errors import DecodeError
from nnc_core.workers import pool

from .arith cimport (ArithDecoder, ArithEncoder, dec_bin, dec_bit_position, dec_bypass,
                     dec_bypass_bits, dec_seek, dec_start, dec_terminate, enc_bin, enc_bypass,
                     enc_bypass_bits, enc_finish, enc_start)
from .binarization cimport (BinRecorder, BinSink, BinWriter, BinWriterPtr, LevelBounds,
                            decode_level, decode_level_plain, encode_level,
                            encode_level_plain)
from .contexts cimport (CTX_SIG, CTX_SIGN, NUM_PARAM_SETS, ContextLayout, layout_init,
                        sig_context, sign_context)
from .model cimport ContextModel, dq_next_state, model_init, model_reset
from .pricing cimport BinLog, nnc_have_avx512, nnc_init_transition_tables, price_logs

cnp.import_array()
nnc_init_transition_tables()

cdef bint SIMD = nnc_have_avx512()     # vectorised pricing (same results), where the CPU has it


def simd_enabled() -> bool:
    """Whether the param_opt pricing runs vectorised (AVX-512) on this CPU."""
    return bool(SIMD)


def _use_simd(bint on):
    """Switch the vectorised pricing off (or back on where the CPU has it); for tests that
    compare both paths."""
    global SIMD
    SIMD = on and nnc_have_avx512()


cdef long long UNBOUNDED = 1LL << 62
cdef long long INT32_MAX = 2147483647
cdef int PARAM_SET_PENALTY = 3 * 32768     # signalling cost of a non-default set, 1/32768 bit

# Decoders refuse tensors larger than this unless told otherwise: row skipping and
# single-entry codebooks code zeros for free, so a few bytes could claim gigabytes.
DEFAULT_MAX_ELEMENTS = 1 << 28
PARALLEL_CHUNK_ELEMENTS = 1 << 16    # smallest share of a tensor worth a thread


cdef inline Py_ssize_t max_bins(size_t payload_bytes) noexcept nogil:
    """Upper bound on the context-coded bins a payload can hold: a bin shrinks the range by
    at least 2 of at most 510, so 128 bins cost at least one bit."""
    return 1024 * <Py_ssize_t>payload_bytes + 1024


# decoder error codes, turned into DecodeError messages by the Python wrappers
cdef enum:
    DEC_OK = 0
    DEC_PAST_END = 1
    DEC_LEVEL_RANGE = 2
    DEC_CODEBOOK_RANGE = 3


ctypedef struct Segment:
    Py_ssize_t start          # raster index of the first element
    Py_ssize_t length
    Py_ssize_t row
    bint ends_block_row       # the scan leaves a block row that is not the last one


ctypedef struct TensorCoding:
    Py_ssize_t rows           # H = dims[0]
    Py_ssize_t cols           # W = product of the other dims
    bint dq
    int block                 # side of the block scan, 0 for raster order
    int num_block_rows
    bint tensor_flags         # HDSP / row-skip flags present (§9.2)
    bint parent_present
    int cb_size
    int cb_zero
    ContextLayout layout
    LevelBounds bounds
    bint hdsp
    bint row_skip
    const int32_t* tca_base   # NULL when temporal context adaptation is off
    const uint8_t* history    # NULL when HDSP is off
    int skip_state[8]         # DQ state after a skipped row: W even transitions


cdef int configure(TensorCoding* t, Py_ssize_t rows, Py_ssize_t cols, bint dq, int num_gt,
                   int scan_order, int profile, bint parent_present, int cb_size,
                   int cb_zero) except -1:
    cdef int s, i
    if rows < 0 or cols < 0:
        raise ValueError("negative tensor dimensions")
    if not 1 <= num_gt <= 256:
        raise ValueError(f"number of greater-than flags must be in 1..256, got {num_gt}")
    if not 0 <= scan_order <= 4:
        raise ValueError(f"scan_order must be in 0..4, got {scan_order}")
    if cb_size < 0 or (cb_size > 0 and not 0 <= cb_zero < cb_size):
        raise ValueError("codebook zero offset outside the codebook")
    memset(t, 0, sizeof(TensorCoding))
    t.rows = rows
    t.cols = cols
    t.dq = dq
    # block scans apply to true matrices only (§9.1)
    t.block = (4 << scan_order) if (scan_order > 0 and rows > 1 and cols > 1) else 0
    t.num_block_rows = <int>((rows + t.block - 1) // t.block) if t.block else 1
    t.tensor_flags = profile == 1 and rows > 1 and cols > 1 and cb_size != 1
    t.parent_present = parent_present
    t.cb_size = cb_size if profile == 1 else 0
    t.cb_zero = cb_zero
    layout_init(&t.layout, num_gt)
    if t.cb_size > 0:
        t.bounds.max_pos = t.cb_size - 1 - cb_zero
        t.bounds.max_neg = cb_zero
        t.bounds.sign_coded = cb_zero != 0 and cb_zero != t.cb_size - 1
    else:
        t.bounds.max_pos = UNBOUNDED
        t.bounds.max_neg = UNBOUNDED
        t.bounds.sign_coded = True
    for s in range(8):
        t.skip_state[s] = s
        for i in range(cols % 4):      # the even-parity transitions cycle with period 4
            t.skip_state[s] = dq_next_state(t.skip_state[s], 0)
    return 0


cdef Segment* build_segments(const TensorCoding* t, Py_ssize_t* count) noexcept nogil:
    """The scan as contiguous runs of one row inside one block (§9.1-9.3)."""
    cdef Py_ssize_t n, y, x, i = 0
    cdef Py_ssize_t width = t.block if t.block else t.cols
    cdef Segment* segs
    cdef int block_row
    if not t.block and not t.row_skip:       # one run over the whole tensor
        segs = <Segment*>malloc(sizeof(Segment))
        if segs != NULL:
            segs[0].start = 0
            segs[0].length = t.rows * t.cols
            segs[0].row = 0
            segs[0].ends_block_row = False
        count[0] = 1
        return segs
    if not t.block:
        n = t.rows
        segs = <Segment*>malloc(sizeof(Segment) * (n if n > 0 else 1))
        if segs == NULL:
            return NULL
        for y in range(t.rows):
            segs[y].start = y * t.cols
            segs[y].length = t.cols
            segs[y].row = y
            segs[y].ends_block_row = False
        count[0] = n
        return segs
    n = t.rows * ((t.cols + width - 1) // width)
    segs = <Segment*>malloc(sizeof(Segment) * (n if n > 0 else 1))
    if segs == NULL:
        return NULL
    for block_row in range(t.num_block_rows):
        x = 0
        while x < t.cols:
            for y in range(block_row * width, min((block_row + 1) * width, t.rows)):
                segs[i].start = y * t.cols + x
                segs[i].length = min(width, t.cols - x)
                segs[i].row = y
                segs[i].ends_block_row = False
                i += 1
            x += width
        if block_row < t.num_block_rows - 1:
            segs[i - 1].ends_block_row = True
    count[0] = i
    return segs


cdef Py_ssize_t param_list(const TensorCoding* t, int* ctx, bint* present) noexcept nogil:
    """Contexts whose parameter set is signalled, in bitstream order (§7.4)."""
    cdef int G = t.layout.num_gt
    cdef bint tca = t.tca_base != NULL
    cdef bint bounded = t.cb_size > 0
    cdef long long M = 0
    cdef bint levels_coded = t.cb_size != 1
    cdef bint sign_coded = levels_coded and t.bounds.sign_coded
    cdef Py_ssize_t n = 0
    cdef int c, a
    if bounded:
        M = t.cb_zero if t.cb_zero > t.cb_size - 1 - t.cb_zero else t.cb_size - 1 - t.cb_zero
    for c in range(0, 24 if t.dq else 3):
        ctx[n] = c; present[n] = levels_coded; n += 1
    if tca:
        for c in range(24, 40 if t.dq else 26):
            ctx[n] = c; present[n] = levels_coded; n += 1
    if t.hdsp:
        for c in range(40, 48 if t.dq else 41):
            ctx[n] = c; present[n] = levels_coded; n += 1
    for c in range(48, 53 if tca else 51):
        ctx[n] = c; present[n] = sign_coded; n += 1
    for a in range(2 * G):
        ctx[n] = 53 + a; present[n] = not bounded or a < 2 * M; n += 1
    if tca:
        for a in range(2 * G, 4 * G):
            ctx[n] = 53 + a; present[n] = not bounded or a < 2 * (M - 1) + 2 * G; n += 1
    for a in range(31):
        ctx[n] = t.layout.remainder + a
        present[n] = not bounded or G + (1LL << (a + 1)) - 2 < M
        n += 1
    return n


cdef inline long long dq_transmitted(long long r, int state) noexcept nogil:
    """Reconstruction integer -> transmitted level in a DQ state (encoder rule of §5.4)."""
    if r == 0:
        return 0
    return (r + (state & 1)) >> 1 if r > 0 else (r - (state & 1)) >> 1


cdef inline long long dq_reconstruction(long long k, int state) noexcept nogil:
    if k == 0:
        return 0
    return 2 * k - (state & 1) if k > 0 else 2 * k + (state & 1)


cdef void mark_zero_rows(const int32_t* r, Py_ssize_t rows, Py_ssize_t cols,
                         uint8_t* skip) noexcept nogil:
    """skip[y] = 1 where row y of the H x W matrix is all zero: such rows are skipped (§9.2)."""
    cdef Py_ssize_t y, x
    for y in range(rows):
        skip[y] = 1
        for x in range(cols):
            if r[y * cols + x] != 0:
                skip[y] = 0
                break


cdef inline bint row_is_skipped(const TensorCoding* t, const uint8_t* skip, Py_ssize_t row) noexcept nogil:
    return t.row_skip and skip[row]


# ----------------------------------------------------------------------------- encoder side

cdef int choose_param_sets(const TensorCoding* t, const int32_t* r, const uint8_t* skip,
                           const Segment* segs, Py_ssize_t nseg, uint8_t* chosen) noexcept nogil:
    """Param_opt pre-pass (§7.5): price every context's bins under the 9 parameter sets."""
    cdef Py_ssize_t count = t.layout.count, c
    cdef BinRecorder recorder
    cdef int e, best, status = 0
    cdef long long best_cost
    cdef long long* cost = NULL
    recorder.num_contexts = count
    recorder.num_resets = 0
    recorder.failed = 0
    recorder.resets = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * count * t.num_block_rows)
    recorder.logs = <BinLog*>calloc(count, sizeof(BinLog))
    if recorder.resets == NULL or recorder.logs == NULL:
        free(recorder.resets)
        free(recorder.logs)
        return -1
    if plain_tensor(t):
        encode_segments_plain(t, &recorder, r, skip, segs, nseg, NULL, True)
    else:
        encode_segments(t, &recorder, r, skip, segs, nseg, NULL, True)
    if recorder.failed:
        status = -1
    if status == 0:
        cost = <long long*>malloc(sizeof(long long) * NUM_PARAM_SETS * count)
        if cost == NULL or price_logs(recorder.logs, count, recorder.resets, recorder.num_resets,
                                      cost, SIMD):
            status = -1
    if status == 0:
        for c in range(count):
            best = 0
            best_cost = cost[NUM_PARAM_SETS * c]
            for e in range(1, NUM_PARAM_SETS):
                if cost[NUM_PARAM_SETS * c + e] + PARAM_SET_PENALTY < best_cost:
                    best = e
                    best_cost = cost[NUM_PARAM_SETS * c + e] + PARAM_SET_PENALTY
            chosen[c] = <uint8_t>best
    for c in range(count):
        free(recorder.logs[c].words)
    free(cost)
    free(recorder.logs)
    free(recorder.resets)
    return status


cdef void encode_scan(const TensorCoding* t, ArithEncoder* coder, ContextModel* ctx,
                      const int32_t* r, const uint8_t* skip, const Segment* segs,
                      Py_ssize_t nseg, int32_t* decoded) noexcept nogil:
    cdef ArithEncoder local = coder[0]    # a private copy stays in registers
    cdef BinWriter writer
    writer.coder = &local
    writer.ctx = ctx
    if plain_tensor(t):
        encode_segments_plain(t, &writer, r, skip, segs, nseg, decoded, False)
    else:
        encode_segments(t, &writer, r, skip, segs, nseg, decoded, False)
    coder[0] = local


cdef inline bint plain_tensor(const TensorCoding* t) noexcept nogil:
    """No temporal context, no significance history, no codebook: the specialised loops apply."""
    return t.tca_base == NULL and not t.hdsp and t.cb_size == 0


cdef inline void encode_segments_plain(const TensorCoding* t, BinSink w, const int32_t* r,
                                       const uint8_t* skip, const Segment* segs,
                                       Py_ssize_t nseg, int32_t* decoded,
                                       bint prepass) noexcept nogil:
    """:func:`encode_segments` for a :func:`plain_tensor`: the same bins, with the branches
    of the tools that are off taken out of the per-element loop."""
    cdef Py_ssize_t si, p, end, c
    cdef int state = 0, neighbour = 0
    cdef long long k, coded
    cdef bint dq = t.dq
    cdef const ContextLayout* layout = &t.layout
    for si in range(nseg):
        if row_is_skipped(t, skip, segs[si].row):
            if dq:
                state = t.skip_state[state]
        else:
            end = segs[si].start + segs[si].length
            for p in range(segs[si].start, end):
                k = dq_transmitted(r[p], state) if dq else r[p]
                coded = r[p] if prepass else k
                encode_level_plain(w, layout, coded, CTX_SIG + 3 * state + neighbour,
                                   CTX_SIGN + neighbour)
                if decoded != NULL:
                    decoded[p] = <int32_t>(dq_reconstruction(k, state) if dq else k)
                if dq:
                    state = dq_next_state(state, k)
                neighbour = 0 if coded == 0 else (1 if coded < 0 else 2)
        if segs[si].ends_block_row:
            if BinSink is BinWriterPtr:
                for c in range(t.layout.count):
                    model_reset(&w.ctx[c])
                w.coder.range = 256
            elif w.resets != NULL:
                for c in range(w.num_contexts):
                    w.resets[w.num_resets * w.num_contexts + c] = w.logs[c].count
                w.num_resets += 1
            if not prepass:
                neighbour = 0


cdef inline void encode_segments(const TensorCoding* t, BinSink w, const int32_t* r,
                                 const uint8_t* skip, const Segment* segs, Py_ssize_t nseg,
                                 int32_t* decoded, bint prepass) noexcept nogil:
    """The level scan of the encoder, into a bin sink; ``decoded`` (if not NULL) receives
    what a decoder will reconstruct.

    ``prepass`` gives the param_opt pre-pass of §7.5 as other encoders run it: it
    binarizes the reconstruction integer r instead of the transmitted k, is never truncated
    by a codebook and keeps the neighbour across block rows -- what makes the parameter
    set choices, and so the bytes, match theirs.
    """
    cdef Py_ssize_t si, p, end, c
    cdef int state = 0
    cdef long long k, coded, previous = 0, base = 0
    cdef bint hd
    cdef LevelBounds open_bounds
    cdef const LevelBounds* bounds = &t.bounds
    if prepass:
        open_bounds.max_pos = UNBOUNDED
        open_bounds.max_neg = UNBOUNDED
        open_bounds.sign_coded = True
        bounds = &open_bounds
    for si in range(nseg):
        if row_is_skipped(t, skip, segs[si].row):
            if t.dq:
                state = t.skip_state[state]
        else:
            end = segs[si].start + segs[si].length
            for p in range(segs[si].start, end):
                k = dq_transmitted(r[p], state) if t.dq else r[p]
                coded = r[p] if prepass else k
                if t.tca_base != NULL:
                    base = t.tca_base[p]
                hd = t.hdsp and t.history[p]
                encode_level(w, &t.layout, coded, sig_context(state, previous, base, hd),
                             sign_context(previous, base), base, bounds)
                if decoded != NULL:
                    decoded[p] = <int32_t>(dq_reconstruction(k, state) if t.dq else k)
                if t.dq:
                    state = dq_next_state(state, k)
                previous = coded
        if segs[si].ends_block_row:
            if BinSink is BinWriterPtr:
                for c in range(t.layout.count):
                    model_reset(&w.ctx[c])
                w.coder.range = 256
            elif w.resets != NULL:
                for c in range(w.num_contexts):
                    w.resets[w.num_resets * w.num_contexts + c] = w.logs[c].count
                w.num_resets += 1
            if not prepass:
                previous = 0


def bin_statistics(r, Py_ssize_t rows, Py_ssize_t cols, *, bint dq=False, int num_gt=11,
                   int scan_order=0, bint row_skipping=True):
    """How often each context codes a 0 and a 1 when the integers ``r`` are coded:
    an int64 array of shape (2, contexts). Used to estimate bit costs for rate-distortion
    optimised quantization."""
    cdef const int32_t[::1] rv = np.ascontiguousarray(r, dtype=np.int32).reshape(-1)
    cdef TensorCoding t
    cdef BinRecorder recorder
    cdef Segment* segs = NULL
    cdef uint8_t* skip = NULL
    cdef Py_ssize_t nseg = 0, c, i
    if rv.shape[0] != rows * cols:
        raise ValueError(f"expected {rows * cols} levels, got {rv.shape[0]}")
    configure(&t, rows, cols, dq, num_gt, scan_order, 1, False, 0, 0)
    t.row_skip = row_skipping and t.tensor_flags
    counts = np.zeros((2, t.layout.count), dtype=np.int64)
    cdef long long[:, ::1] cv = counts
    recorder.logs = <BinLog*>calloc(t.layout.count, sizeof(BinLog))
    recorder.num_contexts = t.layout.count
    recorder.resets = NULL
    recorder.num_resets = 0
    recorder.failed = 0
    skip = <uint8_t*>calloc(rows if rows > 0 else 1, 1)
    try:
        if recorder.logs == NULL or skip == NULL:
            raise MemoryError()
        if t.row_skip:
            mark_zero_rows(&rv[0], rows, cols, skip)
        segs = build_segments(&t, &nseg)
        if segs == NULL:
            raise MemoryError()
        if rows * cols:
            with nogil:
                encode_segments(&t, &recorder, &rv[0], skip, segs, nseg, NULL, False)
        if recorder.failed:
            raise MemoryError()
        for c in range(t.layout.count):
            ones = 0
            for i in range((recorder.logs[c].count + 63) // 64):
                ones += int(recorder.logs[c].words[i]).bit_count()
            cv[1, c] = ones
            cv[0, c] = recorder.logs[c].count - ones
    finally:
        if recorder.logs != NULL:
            for c in range(t.layout.count):
                free(recorder.logs[c].words)
        free(recorder.logs)
        free(skip)
        free(segs)
    return counts


cdef class PayloadEncoder:
    """One arithmetic-coded NDU payload: bypass fields and tensors, then ``finish()``."""
    cdef ArithEncoder coder
    cdef bint finished

    def __cinit__(self):
        memset(&self.coder, 0, sizeof(ArithEncoder))
        enc_start(&self.coder)

    def __dealloc__(self):
        free(self.coder.out)

    def bypass_bits(self, unsigned long long value, int nbits):
        """Write a fixed-length field (e.g. the qp offset) as ``nbits`` bypass bins."""
        if not 0 <= nbits <= 64:
            raise ValueError("nbits must be in 0..64")
        enc_bypass_bits(&self.coder, value, nbits)

    def encode_tensor(self, r, Py_ssize_t rows, Py_ssize_t cols, *, bint dq=False,
                      int num_gt=11, int scan_order=0, bint row_skipping=True,
                      bint param_opt=True, int profile=1, bint parent_present=False,
                      bint hdsp=False, int cb_size=0, int cb_zero=0, tca_base=None,
                      history=None):
        """Code one tensor's reconstruction integers ``r`` (raster order, int32).

        With ``dq`` the integers are mapped to transmitted levels along the scan. Returns
        the integers a decoder will reconstruct (equal to ``r`` except for the documented
        DQ + block-scan + row-skip corner case). With a codebook, ``r`` holds the
        transmitted indices ``index - cb_zero``.
        """
        cdef const int32_t[::1] rv = np.ascontiguousarray(r, dtype=np.int32).reshape(-1)
        cdef const int32_t[::1] base_v
        cdef const uint8_t[::1] hist_v
        cdef TensorCoding t
        cdef Py_ssize_t n = rows * cols, nseg = 0, nlist, i, y
        cdef Segment* segs = NULL
        cdef int* list_ctx = NULL
        cdef bint* list_present = NULL
        cdef uint8_t* chosen = NULL
        cdef uint8_t* skip = NULL
        cdef ContextModel* ctx = NULL
        cdef int e, status = 0
        if self.finished:
            raise RuntimeError("payload already finished")
        if rv.shape[0] != n:
            raise ValueError(f"expected {n} levels, got {rv.shape[0]}")
        configure(&t, rows, cols, dq, num_gt, scan_order, profile, parent_present, cb_size, cb_zero)
        if tca_base is not None:
            base_v = np.ascontiguousarray(tca_base, dtype=np.int32).reshape(-1)
            if base_v.shape[0] != n:
                raise ValueError("tca_base has the wrong size")
            if n:
                t.tca_base = &base_v[0]
        if history is not None and hdsp:
            hist_v = np.ascontiguousarray(history, dtype=np.uint8).reshape(-1)
            if hist_v.shape[0] != n:
                raise ValueError("history has the wrong size")
            if n:
                t.history = &hist_v[0]
        t.hdsp = hdsp and t.tensor_flags and parent_present and t.history != NULL
        t.row_skip = row_skipping and t.tensor_flags
        decoded = np.zeros(n, dtype=np.int32)
        cdef int32_t[::1] dv = decoded
        cdef const int32_t* rp = &rv[0] if n else NULL
        cdef int32_t* dp = &dv[0] if n else NULL
        try:
            ctx = <ContextModel*>malloc(sizeof(ContextModel) * t.layout.count)
            skip = <uint8_t*>calloc(rows if rows > 0 else 1, 1)
            list_ctx = <int*>malloc(sizeof(int) * t.layout.count)
            list_present = <bint*>malloc(sizeof(bint) * t.layout.count)
            chosen = <uint8_t*>calloc(t.layout.count, 1)
            if not (ctx and skip and list_ctx and list_present and chosen):
                raise MemoryError()
            with nogil:
                for i in range(t.layout.count):
                    model_init(&ctx[i], 0)
                if t.tensor_flags:
                    if parent_present:
                        enc_bypass(&self.coder, t.hdsp)
                    enc_bypass(&self.coder, t.row_skip)
                    if t.row_skip:
                        mark_zero_rows(rp, rows, cols, skip)
                        for y in range(rows):
                            enc_bin(&self.coder, &ctx[t.layout.row_skip], skip[y])
                segs = build_segments(&t, &nseg)
                if segs == NULL:
                    status = -1
                elif param_opt and t.cb_size != 1:
                    status = choose_param_sets(&t, rp, skip, segs, nseg, chosen)
            if status:
                raise MemoryError()
            nlist = param_list(&t, list_ctx, list_present)
            with nogil:
                for i in range(nlist):
                    e = chosen[list_ctx[i]]
                    if list_present[i]:
                        enc_bin(&self.coder, &ctx[t.layout.param_opt_flag], e != 0)
                        if e != 0:
                            enc_bypass_bits(&self.coder, e - 1, 3)
                    else:
                        e = 0
                    model_init(&ctx[list_ctx[i]], e)
                if t.num_block_rows > 1:
                    self.coder.range = 256
                if t.cb_size != 1:
                    encode_scan(&t, &self.coder, ctx, rp, skip, segs, nseg, dp)
            if self.coder.failed:
                raise MemoryError("arithmetic coder output buffer")
        finally:
            free(ctx)
            free(skip)
            free(list_ctx)
            free(list_present)
            free(chosen)
            free(segs)
        return decoded

    def finish(self):
        """Terminating bin and flush; returns the payload bytes."""
        if not self.finished:
            enc_finish(&self.coder)
            self.finished = True
        if self.coder.failed:
            raise MemoryError("arithmetic coder output buffer")
        if self.coder.size == 0:
            return b""
        return (<char*>self.coder.out)[:self.coder.size]


# ----------------------------------------------------------------------------- decoder side

cdef int decode_scan(const TensorCoding* t, ArithDecoder* d, ContextModel* ctx,
                     const uint8_t* skip, const Segment* segs, Py_ssize_t seg_begin,
                     Py_ssize_t seg_end, int* state, int32_t* out, int32_t* transmitted,
                     long long* entry_points, Py_ssize_t* bad_index) noexcept nogil:
    """Decode segments ``[seg_begin, seg_end)`` of one tensor, starting and ending in DQ
    state ``state[0]``, into ``out`` (reconstruction integers) and, if not NULL,
    ``transmitted`` (the coded levels k). ``entry_points`` (3 values per block row)
    records where block rows start."""
    cdef ArithDecoder local = d[0]     # a private copy stays in registers
    cdef int status
    if t.tca_base == NULL and not t.hdsp and t.cb_size == 0 and transmitted == NULL:
        status = decode_segments_plain(t, &local, ctx, skip, segs, seg_begin, seg_end, state,
                                       out, entry_points, bad_index)
    else:
        status = decode_segments(t, &local, ctx, skip, segs, seg_begin, seg_end, state,
                                 out, transmitted, entry_points, bad_index)
    d[0] = local
    return status


cdef inline int decode_segments_plain(const TensorCoding* t, ArithDecoder* d, ContextModel* ctx,
                                      const uint8_t* skip, const Segment* segs,
                                      Py_ssize_t seg_begin, Py_ssize_t seg_end, int* state_io,
                                      int32_t* out, long long* entry_points,
                                      Py_ssize_t* bad_index) noexcept nogil:
    """:func:`decode_segments` for the common case: no temporal context, no significance
    history, no codebook, no transmitted levels asked for. The same decoding with the
    branches of those tools taken out of the per-element loop."""
    cdef Py_ssize_t si, p, end, c
    cdef int block_row = 0, state = state_io[0], neighbour = 0
    cdef long long k, r
    cdef bint dq = t.dq
    cdef const ContextLayout* layout = &t.layout
    if entry_points != NULL:
        entry_points[0] = dec_bit_position(d)
        entry_points[1] = d.value >> 7
        entry_points[2] = state
    for si in range(seg_begin, seg_end):
        if row_is_skipped(t, skip, segs[si].row):
            if dq:
                state = t.skip_state[state]
        else:
            end = segs[si].start + segs[si].length
            for p in range(segs[si].start, end):
                # contexts of §7.3 with base 0 and no history: CTX_SIG + 3 s + n, CTX_SIGN + n
                k = decode_level_plain(d, ctx, layout, CTX_SIG + 3 * state + neighbour,
                                       CTX_SIGN + neighbour)
                if d.fetched > d.size:
                    bad_index[0] = p
                    return DEC_PAST_END
                if dq:
                    r = dq_reconstruction(k, state)
                    state = dq_next_state(state, k)
                else:
                    r = k
                if r > INT32_MAX or r < -INT32_MAX - 1:
                    bad_index[0] = p
                    return DEC_LEVEL_RANGE
                out[p] = <int32_t>r
                neighbour = 0 if k == 0 else (1 if k < 0 else 2)
        if segs[si].ends_block_row:
            for c in range(t.layout.count):
                model_reset(&ctx[c])
            neighbour = 0
            d.range = 256
            block_row += 1
            if entry_points != NULL:
                entry_points[3 * block_row] = dec_bit_position(d)
                entry_points[3 * block_row + 1] = d.value >> 7
                entry_points[3 * block_row + 2] = state
    state_io[0] = state
    return DEC_OK


cdef inline int decode_segments(const TensorCoding* t, ArithDecoder* d, ContextModel* ctx,
                                const uint8_t* skip, const Segment* segs, Py_ssize_t seg_begin,
                                Py_ssize_t seg_end, int* state_io, int32_t* out,
                                int32_t* transmitted, long long* entry_points,
                                Py_ssize_t* bad_index) noexcept nogil:
    cdef Py_ssize_t si, p, end, c
    cdef int block_row = 0, state = state_io[0]
    cdef long long k, r, previous = 0, base = 0
    cdef bint hd
    if entry_points != NULL:
        entry_points[0] = dec_bit_position(d)
        entry_points[1] = d.value >> 7
        entry_points[2] = state
    for si in range(seg_begin, seg_end):
        if row_is_skipped(t, skip, segs[si].row):
            if t.dq:
                state = t.skip_state[state]
        else:
            end = segs[si].start + segs[si].length
            for p in range(segs[si].start, end):
                if t.tca_base != NULL:
                    base = t.tca_base[p]
                hd = t.hdsp and t.history[p]
                k = decode_level(d, ctx, &t.layout, sig_context(state, previous, base, hd),
                                 sign_context(previous, base), base, &t.bounds)
                if d.fetched > d.size:
                    bad_index[0] = p
                    return DEC_PAST_END
                if t.dq:
                    r = dq_reconstruction(k, state)
                    state = dq_next_state(state, k)
                else:
                    r = k
                if r > INT32_MAX or r < -INT32_MAX - 1:
                    bad_index[0] = p
                    return DEC_LEVEL_RANGE
                # with DQ the codebook bounds the transmitted k, not the index r it yields
                if t.cb_size and (r < -t.cb_zero or r > t.cb_size - 1 - t.cb_zero):
                    bad_index[0] = p
                    return DEC_CODEBOOK_RANGE
                out[p] = <int32_t>r
                if transmitted != NULL:
                    transmitted[p] = <int32_t>k
                previous = k
        if segs[si].ends_block_row:
            for c in range(t.layout.count):
                model_reset(&ctx[c])
            previous = 0
            d.range = 256
            block_row += 1
            if entry_points != NULL:
                entry_points[3 * block_row] = dec_bit_position(d)
                entry_points[3 * block_row + 1] = d.value >> 7
                entry_points[3 * block_row + 2] = state
    state_io[0] = state
    return DEC_OK


def check_entry_points(starts, passed, bint dq):
    """Entry points are decoder states (§9.3): ``starts[b]`` from the header must equal the
    (bit position, value >> 7, DQ state) ``passed[b]`` the decoder had at block row b."""
    for block_row, (position, value, state) in sorted(passed.items()):
        expected = starts[block_row]
        if (position, value, state if dq else 0) != (expected[0], expected[1],
                                                    expected[2] if dq else 0):
            raise DecodeError(f"entry point of block row {block_row} does not match the payload")


cdef class _BlockRowJobs:
    """Block rows of one tensor split into chunks that decode independently (§9.3).

    Chunk 0 continues from the sequential decoder's state; every other chunk starts at
    its entry point. The last chunk runs on the caller's decoder so that decoding can go
    on after the tensor. ``run(i)`` releases the GIL, so a thread pool decodes on all cores.
    """
    cdef const TensorCoding* t
    cdef const ContextModel* initial_ctx
    cdef const uint8_t* skip
    cdef const Segment* segs
    cdef int32_t* out
    cdef int32_t* transmitted
    cdef ArithDecoder* decoders        # one per chunk; the last points to the caller's
    cdef ArithDecoder* caller
    cdef Py_ssize_t* seg_bounds        # chunk i covers segments [seg_bounds[i], seg_bounds[i+1])
    cdef int* states                   # DQ state of each chunk: at its start, then at its end
    cdef long long* points             # block-row starts each chunk passed (3 values each)
    cdef Py_ssize_t* point_offsets     # where chunk i records them in ``points``
    cdef int* status
    cdef Py_ssize_t* bad
    cdef int count

    def __dealloc__(self):
        free(self.decoders)
        free(self.seg_bounds)
        free(self.states)
        free(self.points)
        free(self.point_offsets)
        free(self.status)
        free(self.bad)

    def run(self, int i):
        cdef ContextModel* ctx = <ContextModel*>malloc(sizeof(ContextModel) * self.t.layout.count)
        cdef ArithDecoder* d = self.caller if i == self.count - 1 else &self.decoders[i]
        cdef Py_ssize_t c
        if ctx == NULL:
            raise MemoryError()
        with nogil:
            for c in range(self.t.layout.count):
                ctx[c] = self.initial_ctx[c]
            if i == self.count - 1:
                self.caller[0] = self.decoders[i]
            self.status[i] = decode_scan(self.t, d, ctx, self.skip, self.segs, self.seg_bounds[i],
                                         self.seg_bounds[i + 1], &self.states[i], self.out,
                                         self.transmitted, &self.points[self.point_offsets[i]],
                                         &self.bad[i])
        free(ctx)


cdef class PayloadDecoder:
    """Reads one NDU payload: bypass fields and tensors, then ``finish()``."""
    cdef ArithDecoder decoder
    cdef bytes data

    def __cinit__(self, data):
        self.data = bytes(data)
        dec_start(&self.decoder, <const uint8_t*><char*>self.data, len(self.data))

    @property
    def bytes_fetched(self):
        return self.decoder.fetched

    def bypass_bits(self, int nbits):
        if not 0 <= nbits <= 64:
            raise ValueError("nbits must be in 0..64")
        value = dec_bypass_bits(&self.decoder, nbits)
        self._check_overrun("a fixed-length field")
        return value

    def _check_overrun(self, what):
        if self.decoder.fetched > self.decoder.size:
            raise DecodeError(f"payload ends inside {what} "
                              f"(payload is {self.decoder.size} bytes)")

    def decode_tensor(self, Py_ssize_t rows, Py_ssize_t cols, *, bint dq=False, int num_gt=11,
                      int scan_order=0, int profile=1, bint parent_present=False,
                      int cb_size=0, int cb_zero=0, tca_base=None, history=None,
                      bint entry_points=False, bint transmitted=False,
                      Py_ssize_t max_elements=DEFAULT_MAX_ELEMENTS, entry_points_in=None,
                      int threads=1):
        """Decode one tensor; returns ``(r, info)`` with the reconstruction integers
        (int32, raster order) and a dict of the tensor-level flags (``hdsp``,
        ``row_skip``) and, if asked, the ``entry_points`` as (offset, value, dq_state) and
        the ``transmitted`` levels k (equal to r without dependent quantization).

        Nothing proportional to the tensor size is allocated before the header's claim is
        checked against ``max_elements`` and against what the payload can hold.

        With the header's ``entry_points_in`` (offset, value, dq_state) of a block-scanned
        tensor and ``threads > 1``, block rows decode in parallel; the result is identical.
        """
        cdef TensorCoding t
        cdef Py_ssize_t n = rows * cols, nseg = 0, nlist, i, y, bad = 0, coded_rows
        cdef const int32_t[::1] base_v
        cdef const uint8_t[::1] hist_v
        cdef int32_t[::1] ov
        cdef int32_t[::1] kv
        cdef int32_t* op = NULL
        cdef int32_t* kp = NULL
        cdef Segment* segs = NULL
        cdef int* list_ctx = NULL
        cdef bint* list_present = NULL
        cdef uint8_t* skip = NULL
        cdef ContextModel* ctx = NULL
        cdef long long* points = NULL
        cdef int e, status = DEC_OK, final_state = 0
        cdef bint hdsp_flag = False
        configure(&t, rows, cols, dq, num_gt, scan_order, profile, parent_present, cb_size, cb_zero)
        if n > max_elements:
            raise DecodeError(f"tensor of {n} elements exceeds the decoder's limit of "
                              f"{max_elements} (raise nnc_core.codec.MAX_ELEMENTS to allow it)")
        if t.tensor_flags and rows > max_bins(self.decoder.size):
            raise DecodeError(f"{rows} rows cannot be signalled in a payload of "
                              f"{self.decoder.size} bytes")
        if tca_base is not None:
            base_v = np.ascontiguousarray(tca_base, dtype=np.int32).reshape(-1)
            if base_v.shape[0] != n:
                raise DecodeError("temporal context base has the wrong size for this tensor")
            if n:
                t.tca_base = &base_v[0]
        try:
            ctx = <ContextModel*>malloc(sizeof(ContextModel) * t.layout.count)
            skip = <uint8_t*>calloc(rows if t.tensor_flags else 1, 1)
            list_ctx = <int*>malloc(sizeof(int) * t.layout.count)
            list_present = <bint*>malloc(sizeof(bint) * t.layout.count)
            if not (ctx and skip and list_ctx and list_present):
                raise MemoryError()
            for i in range(t.layout.count):
                model_init(&ctx[i], 0)
            coded_rows = rows
            if t.tensor_flags:
                if parent_present:
                    hdsp_flag = dec_bypass(&self.decoder)
                t.row_skip = dec_bypass(&self.decoder)
                if t.row_skip:
                    with nogil:
                        for y in range(rows):
                            skip[y] = dec_bin(&self.decoder, &ctx[t.layout.row_skip])
                            coded_rows -= skip[y]
                            if self.decoder.fetched > self.decoder.size:
                                break
                self._check_overrun("the row-skip flags")
            # every coded element costs at least one context-coded bin
            if t.cb_size != 1 and coded_rows * cols > max_bins(self.decoder.size):
                raise DecodeError(f"{coded_rows * cols} coded elements cannot fit in a payload "
                                  f"of {self.decoder.size} bytes")
            if hdsp_flag:
                if history is None:
                    raise DecodeError("tensor uses history-dependent significance (HDSP) "
                                      "but no history was given")
                hist_v = np.ascontiguousarray(history, dtype=np.uint8).reshape(-1)
                if hist_v.shape[0] != n:
                    raise DecodeError("HDSP history has the wrong size for this tensor")
                if n:
                    t.history = &hist_v[0]
                t.hdsp = True
            nlist = param_list(&t, list_ctx, list_present)
            for i in range(nlist):
                e = 0
                if list_present[i] and dec_bin(&self.decoder, &ctx[t.layout.param_opt_flag]):
                    e = 1 + <int>dec_bypass_bits(&self.decoder, 3)
                model_init(&ctx[list_ctx[i]], e)
            self._check_overrun("the context parameter signalling")
            out = np.zeros(n, dtype=np.int32)
            coded = np.zeros(n, dtype=np.int32) if transmitted else None
            if n:
                ov = out
                op = &ov[0]
                if transmitted:
                    kv = coded
                    kp = &kv[0]
            if t.cb_size != 1:             # single-entry codebooks code no levels at all
                segs = build_segments(&t, &nseg)
                if segs == NULL:
                    raise MemoryError()
            if entry_points:
                points = <long long*>malloc(sizeof(long long) * 3 * t.num_block_rows)
                if points == NULL:
                    raise MemoryError()
            if t.num_block_rows > 1:
                self.decoder.range = 256
            check_points = bool(entry_points_in) and t.num_block_rows > 1 and t.cb_size != 1
            if check_points and len(entry_points_in) != t.num_block_rows - 1:
                raise DecodeError(f"{len(entry_points_in)} entry points for "
                                  f"{t.num_block_rows} block rows")
            if check_points and not entry_points:
                points = <long long*>malloc(sizeof(long long) * 3 * t.num_block_rows)
                if points == NULL:
                    raise MemoryError()
            # a chunk below PARALLEL_CHUNK_ELEMENTS costs more in hand-off than it gains
            workers = min(threads, t.num_block_rows, n // PARALLEL_CHUNK_ELEMENTS)
            if check_points and workers > 1:
                status, bad = self._decode_parallel(&t, ctx, skip, segs, nseg, op, kp,
                                                    entry_points_in, workers)
            elif t.cb_size != 1:
                with nogil:
                    status = decode_scan(&t, &self.decoder, ctx, skip, segs, 0, nseg, &final_state,
                                         op, kp, points, &bad)
                if status == DEC_OK and check_points:
                    # the decoder passed every block-row start: the header must agree
                    position = points[0]
                    starts = [(position, points[1], 0)]
                    for offset, value, state in entry_points_in:
                        position += offset
                        starts.append((position, value, state))
                    check_entry_points(starts, {b: (points[3 * b], points[3 * b + 1], points[3 * b + 2])
                                                for b in range(1, t.num_block_rows)}, dq)
            if t.cb_size == 1 and points != NULL:     # no bins: every block row starts alike
                for i in range(t.num_block_rows):
                    points[3 * i] = dec_bit_position(&self.decoder)
                    points[3 * i + 1] = self.decoder.value >> 7
                    points[3 * i + 2] = 0
            if status == DEC_PAST_END:
                raise DecodeError(f"payload ends inside the levels, at element {bad} of {n} "
                                  f"(payload is {self.decoder.size} bytes)")
            if status == DEC_LEVEL_RANGE:
                raise DecodeError(f"decoded level at element {bad} exceeds the int32 range")
            if status == DEC_CODEBOOK_RANGE:
                raise DecodeError(f"decoded codebook index at element {bad} lies outside the "
                                  f"codebook of {cb_size} entries")
            info = {"hdsp": bool(hdsp_flag), "row_skip": bool(t.row_skip)}
            if transmitted:
                info["transmitted"] = coded
            if entry_points:
                info["entry_points"] = [
                    (points[3 * (j + 1)] - points[3 * j], points[3 * (j + 1) + 1], points[3 * (j + 1) + 2])
                    for j in range(t.num_block_rows - 1)]
            return out, info
        finally:
            free(ctx)
            free(skip)
            free(list_ctx)
            free(list_present)
            free(segs)
            free(points)

    cdef tuple _decode_parallel(self, const TensorCoding* t, const ContextModel* ctx,
                                const uint8_t* skip, const Segment* segs, Py_ssize_t nseg,
                                int32_t* out, int32_t* transmitted, entry_points_in, int workers):
        cdef _BlockRowJobs jobs = _BlockRowJobs()
        cdef int chunks = workers
        cdef int i, j, block_row
        cdef Py_ssize_t si
        cdef long long position = dec_bit_position(&self.decoder)
        starts = [(position, self.decoder.value >> 7, 0)]
        for offset, value, state in entry_points_in:
            position += offset
            starts.append((position, value, state))
        first_seg = [0]
        for si in range(nseg):
            if segs[si].ends_block_row:
                first_seg.append(si + 1)
        first_seg.append(nseg)
        jobs.t, jobs.initial_ctx, jobs.skip, jobs.segs = t, ctx, skip, segs
        jobs.out, jobs.transmitted, jobs.caller, jobs.count = out, transmitted, &self.decoder, chunks
        jobs.decoders = <ArithDecoder*>calloc(chunks, sizeof(ArithDecoder))
        jobs.seg_bounds = <Py_ssize_t*>calloc(chunks + 1, sizeof(Py_ssize_t))
        jobs.states = <int*>calloc(chunks, sizeof(int))
        jobs.points = <long long*>calloc(3 * (t.num_block_rows + chunks), sizeof(long long))
        jobs.point_offsets = <Py_ssize_t*>calloc(chunks, sizeof(Py_ssize_t))
        jobs.status = <int*>calloc(chunks, sizeof(int))
        jobs.bad = <Py_ssize_t*>calloc(chunks, sizeof(Py_ssize_t))
        if not (jobs.decoders and jobs.seg_bounds and jobs.states and jobs.points
                and jobs.point_offsets and jobs.status and jobs.bad):
            raise MemoryError()
        first_rows = [i * t.num_block_rows // chunks for i in range(chunks)]
        for i in range(chunks):
            block_row = first_rows[i]
            jobs.seg_bounds[i] = first_seg[block_row]
            jobs.point_offsets[i] = 3 * (block_row + i)
            jobs.decoders[i] = self.decoder
            if block_row > 0:
                position, value, state = starts[block_row]
                if not 0 <= state < 8 or dec_seek(&jobs.decoders[i], position, value) != 0:
                    raise DecodeError(f"entry point of block row {block_row} lies outside the payload")
                jobs.states[i] = state
        jobs.seg_bounds[chunks] = nseg
        list(pool(workers).map(jobs.run, range(chunks)))
        for i in range(chunks):
            if jobs.status[i] != DEC_OK:
                return jobs.status[i], jobs.bad[i]
        # every block-row start some chunk decoded through must agree with the header
        first_rows.append(t.num_block_rows)
        passed = {}
        for i in range(chunks):
            for k in range(1, first_rows[i + 1] - first_rows[i] + (i < chunks - 1)):
                o = jobs.point_offsets[i] + 3 * k
                passed[first_rows[i] + k] = (jobs.points[o], jobs.points[o + 1], jobs.points[o + 2])
        check_entry_points(starts, passed, t.dq)
        return DEC_OK, 0

    def finish(self):
        """Read the terminating bin and check that the payload was consumed exactly."""
        if not dec_terminate(&self.decoder):
            raise DecodeError("terminating bin missing at the end of the payload")
        if self.decoder.fetched != self.decoder.size:
            raise DecodeError(f"payload length mismatch: {self.decoder.size} bytes in the unit, "
                              f"{self.decoder.fetched} consumed by the arithmetic decoder")
