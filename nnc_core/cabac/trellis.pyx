# cython: language_level=3
"""Dependent (trellis-coded) quantization: an 8-state Viterbi search (NNC format note §5.4-5.5),
and rate-distortion optimised quantization for both quantizers.

The two scalar quantizers Q0 (even reconstruction integers) and Q1 (odd ones, plus zero)
are switched by the parity of the transmitted levels through the 8-state machine. For each
value the search keeps four candidate indices around ``|x| / step`` plus zero, and for every
state the cheapest path into it. Distortion is the squared error in units of the step.
Without a rate model the rate term is left out (lambda = 0), which is what reproduces other
NNC encoders exactly; with one, each branch also pays ``lam`` times its estimated bits
(Lagrangian cost D + lam * R), the context of a branch being its DQ state and the last level
on its survivor path.

Memory is one byte per element and state (the surviving branch), not per-candidate levels:
the level is recomputed from the input during trace-back.
"""
import numpy as np
cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.math cimport fabsf, log2, trunc, truncf
from libc.stdint cimport int32_t, int64_t, uint8_t
from cython cimport floating


cnp.import_array()

cdef enum:
    ZERO_SLOT = 4

cdef extern from "tables.h" nogil:
    # the three branches into each state, in tie-break order: source state, candidate slot
    const uint8_t NNC_DQ_BRANCH_PREV[8][3]
    const uint8_t NNC_DQ_BRANCH_SLOT[8][3]

from .simd cimport (nnc_have_avx512, nnc_viterbi_forward_f32_avx512,
                   nnc_viterbi_forward_f64_avx512)

cdef bint SIMD = nnc_have_avx512()     # vectorised forward pass (same decisions), where available


def simd_enabled() -> bool:
    """Whether the trellis' forward pass runs vectorised (AVX-512) on this CPU."""
    return bool(SIMD)


def _use_simd(bint on):
    """Switch the vectorised forward pass off (or back on where the CPU has it); for tests."""
    global SIMD
    SIMD = on and nnc_have_avx512()


cdef inline int64_t slot_index(int slot, int64_t first_index) noexcept nogil:
    """The candidate index q in [first, first + 3] stored in slot q & 3."""
    return first_index + ((slot - first_index) & 3)


cdef inline void candidates(double x, double qscale, double* dist, int64_t* first_index, int* sign) noexcept nogil:
    """Squared errors of the 4 candidate indices q (slot q & 3) and of zero (slot 4)."""
    cdef int s = -1 if x < 0 else 1
    cdef double a = qscale * x * s
    cdef int64_t lo = <int64_t>trunc(a) - 1
    if lo < 1:
        lo = 1
    dist[0] = (a - slot_index(0, lo)) * (a - slot_index(0, lo))
    dist[1] = (a - slot_index(1, lo)) * (a - slot_index(1, lo))
    dist[2] = (a - slot_index(2, lo)) * (a - slot_index(2, lo))
    dist[3] = (a - slot_index(3, lo)) * (a - slot_index(3, lo))
    dist[ZERO_SLOT] = a * a
    first_index[0] = lo
    sign[0] = s


cdef inline int64_t slot_level(int slot, int64_t first_index, int sign) noexcept nogil:
    """Transmitted level of a slot: index q -> sign * ((q + 1) >> 1)."""
    if slot == ZERO_SLOT:
        return 0
    return sign * ((slot_index(slot, first_index) + 1) >> 1)


cdef inline void relax(const double* cost, const double* dist, double* new_cost,
                       uint8_t* decision, int t) noexcept nogil:
    """Cheapest of the three branches into state ``t`` (first minimum wins)."""
    cdef double best = cost[NNC_DQ_BRANCH_PREV[t][0]] + dist[NNC_DQ_BRANCH_SLOT[t][0]]
    cdef double c
    cdef int chosen = 0
    c = cost[NNC_DQ_BRANCH_PREV[t][1]] + dist[NNC_DQ_BRANCH_SLOT[t][1]]
    if c < best:
        best = c
        chosen = 1
    c = cost[NNC_DQ_BRANCH_PREV[t][2]] + dist[NNC_DQ_BRANCH_SLOT[t][2]]
    if c < best:
        best = c
        chosen = 2
    new_cost[t] = best
    decision[t] = <uint8_t>((NNC_DQ_BRANCH_PREV[t][chosen] << 3) | NNC_DQ_BRANCH_SLOT[t][chosen])


cdef inline void relax_all(const double* cost, const double* dist, double* new_cost,
                           uint8_t* decision) noexcept nogil:
    # constant states: the tables fold into the code and the costs stay in registers
    relax(cost, dist, new_cost, decision, 0)
    relax(cost, dist, new_cost, decision, 1)
    relax(cost, dist, new_cost, decision, 2)
    relax(cost, dist, new_cost, decision, 3)
    relax(cost, dist, new_cost, decision, 4)
    relax(cost, dist, new_cost, decision, 5)
    relax(cost, dist, new_cost, decision, 6)
    relax(cost, dist, new_cost, decision, 7)


def quantize_dependent(values, double step, order=None, rate=None, double lam=0.0):
    """Trellis-quantize ``values`` (any float dtype) with step size ``step``.

    ``order`` (int64 indices) gives the scan order the state machine runs along; default
    is the raster order. Returns the reconstruction integers r (int32, original layout),
    i.e. value ~ r * step with r even in even states and odd (or 0) in odd states.
    With a ``rate`` model (see :class:`RateTables`) and ``lam > 0`` the search minimises
    squared error (in steps) plus ``lam`` times the estimated bits.
    """
    flat, scan = _inputs(values, step, order)
    result = np.zeros(flat.shape[0], dtype=np.int32)
    decisions = np.empty(flat.shape[0] * 8, dtype=np.uint8)
    if flat.shape[0]:
        if rate is not None and lam > 0:
            _viterbi_rd(flat, scan, 1.0 / step, rate, lam, decisions, result)
        else:
            _viterbi(flat, scan, 1.0 / step, decisions, result)
    return result


def _inputs(values, double step, order):
    """Flat values (float32 as they are, without a copy; others as float64) and the scan."""
    if not step > 0:
        raise ValueError(f"step size must be positive, got {step}")
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float64)
    scan = None
    if order is not None:
        scan = np.ascontiguousarray(order, dtype=np.int64).reshape(-1)
        if scan.shape[0] != flat.shape[0]:
            raise ValueError("order must have one index per value")
    return flat, scan


cdef inline Py_ssize_t position(const int64_t* scan, Py_ssize_t i) noexcept nogil:
    return scan[i] if scan != NULL else i


def _viterbi(const floating[::1] x, scan_array, double qscale, uint8_t[::1] decisions,
             int32_t[::1] out):
    cdef const int64_t[::1] scan_view
    cdef const int64_t* scan = NULL
    cdef Py_ssize_t i
    cdef double cost[8]
    cdef double new_cost[8]
    cdef double dist[5]
    cdef int64_t first_index
    cdef int sign, t
    if scan_array is not None:
        scan_view = scan_array
        scan = &scan_view[0]
    with nogil:
        if SIMD:
            if floating is float:
                nnc_viterbi_forward_f32_avx512(&x[0], scan, x.shape[0], qscale, NNC_DQ_BRANCH_PREV,
                                               NNC_DQ_BRANCH_SLOT, &decisions[0], cost)
            else:
                nnc_viterbi_forward_f64_avx512(&x[0], scan, x.shape[0], qscale, NNC_DQ_BRANCH_PREV,
                                               NNC_DQ_BRANCH_SLOT, &decisions[0], cost)
        else:
            start_costs(cost)
            for i in range(x.shape[0]):
                candidates(x[position(scan, i)], qscale, dist, &first_index, &sign)
                relax_all(cost, dist, new_cost, &decisions[8 * i])
                for t in range(8):
                    cost[t] = new_cost[t]
        trace_back(x, scan, qscale, &decisions[0], cost, &out[0])


cdef inline void start_costs(double* cost) noexcept nogil:
    """Paths start in state 0; the others are unreachable (half of the largest double,
    so that adding a distortion cannot overflow)."""
    cdef int t
    cost[0] = 0.0
    for t in range(1, 8):
        cost[t] = 0.5 * DBL_MAX


cdef void trace_back(const floating[::1] x, const int64_t* scan, double qscale,
                     const uint8_t* decisions, const double* cost, int32_t* out) noexcept nogil:
    """Follow the surviving branches back from the cheapest final state (lowest on ties)
    and write each value's reconstruction integer in the state it was coded in."""
    cdef int state = 0, t, slot, sign
    cdef Py_ssize_t i, pos
    cdef double dist[5]
    cdef int64_t first_index, level
    for t in range(1, 8):
        if cost[t] < cost[state]:
            state = t
    for i in range(x.shape[0] - 1, -1, -1):
        pos = position(scan, i)
        slot = decisions[8 * i + state] & 7
        state = decisions[8 * i + state] >> 3
        candidates(x[pos], qscale, dist, &first_index, &sign)
        level = slot_level(slot, first_index, sign)
        if level == 0:
            out[pos] = 0
        else:
            out[pos] = <int32_t>(2 * level - (state & 1) if level > 0 else 2 * level + (state & 1))


# ----------------------------------------------------------------------------- rate-distortion

cdef class RateTables:
    """Estimated bits of a transmitted level k given its context (DQ state s, neighbour
    class n of the previous level), built by :func:`nnc_core.quant.rdoq.rate_model`.

    ``sig[s, n, b]``: significance flag b; ``sign[n, negative]``; ``magnitude[negative, m]``
    for |k| = m >= 1 (greater-than flags, remainder); beyond the table each further octave
    costs two more bits, as Exp-Golomb does.
    """
    cdef double[:, :, ::1] sig
    cdef double[:, ::1] sign
    cdef double[:, ::1] magnitude
    cdef Py_ssize_t largest

    def __init__(self, sig, sign, magnitude):
        self.sig = np.ascontiguousarray(sig, dtype=np.float64).reshape(8, 3, 2)
        self.sign = np.ascontiguousarray(sign, dtype=np.float64).reshape(3, 2)
        self.magnitude = np.ascontiguousarray(magnitude, dtype=np.float64)
        if self.magnitude.shape[0] != 2 or self.magnitude.shape[1] < 2:
            raise ValueError("magnitude table must have shape (2, M + 1) with M >= 1")
        self.largest = self.magnitude.shape[1] - 1

    cdef inline double bits(self, int state, int neighbour, int64_t level) noexcept nogil:
        cdef int negative
        cdef int64_t m
        cdef double extra = 0.0
        if level == 0:
            return self.sig[state, neighbour, 0]
        negative = level < 0
        m = -level if negative else level
        if m > self.largest:
            extra = 2.0 * log2(<double>m / self.largest)
            m = self.largest
        return (self.sig[state, neighbour, 1] + self.sign[neighbour, negative]
                + self.magnitude[negative, m] + extra)


cdef inline int neighbour_of(int64_t level) noexcept nogil:
    if level == 0:
        return 0
    return 1 if level < 0 else 2


def _viterbi_rd(const floating[::1] x, scan_array, double qscale, RateTables rate, double lam,
                uint8_t[::1] decisions, int32_t[::1] out):
    """The Viterbi search with a rate term: each state also remembers the neighbour class
    of the last level on its survivor path, which selects the contexts of the next level."""
    cdef const int64_t[::1] scan_view
    cdef const int64_t* scan = NULL
    cdef Py_ssize_t i
    cdef double cost[8]
    cdef double new_cost[8]
    cdef int neighbour[8]
    cdef int new_neighbour[8]
    cdef double dist[5]
    cdef int64_t level[5]
    cdef double c, best
    cdef int64_t first_index
    cdef int sign, t, b, best_branch, slot, prev
    if scan_array is not None:
        scan_view = scan_array
        scan = &scan_view[0]
    with nogil:
        start_costs(cost)
        for t in range(8):
            neighbour[t] = 0
        for i in range(x.shape[0]):
            candidates(x[position(scan, i)], qscale, dist, &first_index, &sign)
            for slot in range(5):
                level[slot] = slot_level(slot, first_index, sign)
            for t in range(8):
                best_branch = -1
                best = 0.0
                for b in range(3):
                    prev = NNC_DQ_BRANCH_PREV[t][b]
                    slot = NNC_DQ_BRANCH_SLOT[t][b]
                    c = cost[prev] + dist[slot] + lam * rate.bits(prev, neighbour[prev], level[slot])
                    if best_branch < 0 or c < best:
                        best = c
                        best_branch = b
                new_cost[t] = best
                slot = NNC_DQ_BRANCH_SLOT[t][best_branch]
                new_neighbour[t] = neighbour_of(level[slot])
                decisions[8 * i + t] = <uint8_t>((NNC_DQ_BRANCH_PREV[t][best_branch] << 3) | slot)
            for t in range(8):
                cost[t] = new_cost[t]
                neighbour[t] = new_neighbour[t]
        trace_back(x, scan, qscale, &decisions[0], cost, &out[0])


def quantize_uniform_rd(values, double step, RateTables rate, double lam, order=None):
    """Uniform quantization choosing, per value, among zero and the two nearest levels the
    one with the least squared error (in steps) plus ``lam`` times its estimated bits; the
    context is the level chosen just before in coding ``order`` (default raster order)."""
    flat, scan = _inputs(values, step, order)
    result = np.zeros(flat.shape[0], dtype=np.int32)
    if flat.shape[0]:
        _uniform_rd(flat, scan, 1.0 / step, rate, lam, result)
    return result


def _uniform_rd(const floating[::1] x, scan_array, double qscale, RateTables rate, double lam,
                int32_t[::1] out):
    cdef const int64_t[::1] scan_view
    cdef const int64_t* scan = NULL
    cdef Py_ssize_t i, pos
    cdef double a, c, best
    cdef int64_t lo, m, best_level
    cdef int sign, neighbour = 0
    if scan_array is not None:
        scan_view = scan_array
        scan = &scan_view[0]
    with nogil:
        for i in range(x.shape[0]):
            pos = position(scan, i)
            sign = -1 if x[pos] < 0 else 1
            a = x[pos] * sign * qscale
            best_level = 0
            best = a * a + lam * rate.bits(0, neighbour, 0)
            lo = <int64_t>trunc(a)
            for m in range(lo if lo > 1 else 1, lo + 2):
                c = (a - m) * (a - m) + lam * rate.bits(0, neighbour, sign * m)
                if c < best:
                    best = c
                    best_level = sign * m
            out[pos] = <int32_t>best_level
            neighbour = neighbour_of(best_level)


# ----------------------------------------------------------------------------- float32 statistics

cdef float pairwise_sum_f32(const float* a, Py_ssize_t n) noexcept nogil:
    """Pairwise float32 sum: eight running sums over blocks of up to 128 values, blocks
    combined by halving (rounded to a multiple of 8), the order numpy 1.x sums float32."""
    cdef float res, r0, r1, r2, r3, r4, r5, r6, r7
    cdef Py_ssize_t i, n2
    if n < 8:
        res = 0.0
        for i in range(n):
            res = res + a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        while i < n - (n % 8):
            r0 = r0 + a[i]
            r1 = r1 + a[i + 1]
            r2 = r2 + a[i + 2]
            r3 = r3 + a[i + 3]
            r4 = r4 + a[i + 4]
            r5 = r5 + a[i + 5]
            r6 = r6 + a[i + 6]
            r7 = r7 + a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res = res + a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum_f32(a, n2) + pairwise_sum_f32(a + n2, n - n2)


cdef enum:
    STAT_CHUNK = 8192          # numpy's buffer size: a reduction sums chunk by chunk


def float32_mean_std(values):
    """Mean and standard deviation of float32 ``values`` rounded as the reference software's
    numpy (1.x) computes ``np.mean`` and ``np.std`` of a float32 array: float32 pairwise sums
    chunk by chunk, float32 division, deviations and squares in float32, float32 square
    root. Sparsification thresholds are formed from these, so they must match exactly;
    numpy 2 sums in another order."""
    cdef const float[::1] x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    cdef Py_ssize_t n = x.shape[0], i, j, m
    cdef float total = 0.0, mean, var_sum = 0.0
    cdef float buf[STAT_CHUNK]
    cdef float d
    if n == 0:
        return float("nan"), float("nan")
    with nogil:
        i = 0
        while i < n:
            m = STAT_CHUNK if n - i > STAT_CHUNK else n - i
            total = total + pairwise_sum_f32(&x[i], m)
            i += m
        mean = total / <float>n
        i = 0
        while i < n:
            m = STAT_CHUNK if n - i > STAT_CHUNK else n - i
            for j in range(m):
                d = x[i + j] - mean
                buf[j] = d * d
            var_sum = var_sum + pairwise_sum_f32(buf, m)
            i += m
    return float(mean), float(np.sqrt(np.float32(var_sum / <float>n)))


# ----------------------------------------------------------------------------- uniform quantization

def quantize_uniform_f32(values, float scale):
    """Uniform reconstruction quantizer (§5.5, lambda = 0) on float32 ``values``:
    ``round_half_away_from_zero(float32(scale * x))`` as int32, in one pass without the GIL.
    ``scale`` is the float32 inverse step; the product and the rounding are float32
    operations, as in other NNC encoders. The caller checks that the levels fit int32."""
    cdef const float[::1] x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    out = np.empty(x.shape[0], dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef Py_ssize_t i
    cdef float s, w, f
    with nogil:
        for i in range(x.shape[0]):
            s = scale * x[i]
            w = truncf(s)
            f = s - w
            if fabsf(f) >= 0.5:
                w = w + (-1.0 if f < 0 else 1.0)
            o[i] = <int32_t>w
    return out
