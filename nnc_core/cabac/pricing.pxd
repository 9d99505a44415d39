# cython: language_level=3
"""Pricing recorded bins under the nine context parameter sets (NNC format note §7.5).

The param_opt pre-pass needs, for every context, the cost its bin sequence would have
under each of the nine parameter sets. Rather than updating nine shadow models per bin
during the scan, the scan only appends each bin to its context's :c:type:`BinLog`; each
log is then priced on its own, all nine estimators side by side with their states in
registers and branch-free updates. The arithmetic is the estimator update of §7.1 and the cost
table of Annex A.5, so the totals equal a bin-by-bin shadow simulation exactly.
"""
from libc.stdint cimport int16_t, int32_t, uint64_t
from libc.stdlib cimport realloc

from .model cimport (NNC_COST0, NNC_COST1, NNC_PARAM_INIT_P, NNC_PARAM_INIT_S0,
                     NNC_PARAM_SHIFT_FAST, NNC_PARAM_SHIFT_SLOW, NNC_STEP)
from libc.stdint cimport int8_t, uint8_t

cdef extern from "tables.h" nogil:
    const int NNC_S0_OFFSET
    const int NNC_S1_OFFSET
    int16_t NNC_NEXT_S0[8][2][256]
    int16_t NNC_NEXT_S1[7][2][4096]
    void nnc_init_transition_tables()


from .simd cimport nnc_have_avx512, nnc_price_logs_avx512
from libc.stdlib cimport free, malloc


ctypedef struct BinLog:
    uint64_t* words
    Py_ssize_t count         # bins logged
    Py_ssize_t capacity      # bins that fit in ``words``


cdef inline int log_bin(BinLog* log, int bin) noexcept nogil:
    """Append one bin; returns -1 if the log could not grow."""
    cdef Py_ssize_t capacity
    cdef uint64_t* grown
    if log.count == log.capacity:
        capacity = log.capacity * 2 if log.capacity else 256
        grown = <uint64_t*>realloc(log.words, (capacity // 64) * sizeof(uint64_t))
        if grown == NULL:
            return -1
        log.words = grown
        log.capacity = capacity
    if log.count % 64 == 0:
        log.words[log.count // 64] = 0
    log.words[log.count // 64] |= (<uint64_t>bin) << (log.count % 64)
    log.count += 1
    return 0


cdef inline void price_bin(int* s0, int* s1, long long* cost, const int32_t* bin_cost,
                           int x, int e) noexcept nogil:
    """Cost of bin ``x`` under parameter set ``e``, then the estimator update of §7.1
    by table look-up.

    Called with a constant ``e`` on local arrays: after inlining, the states live in
    registers and the table rows are constants.
    """
    cost[e] += bin_cost[512 + ((s1[e] + 16 * s0[e]) >> 3)]
    s0[e] = NNC_NEXT_S0[NNC_PARAM_SHIFT_FAST[e]][x][s0[e] + NNC_S0_OFFSET]
    s1[e] = NNC_NEXT_S1[NNC_PARAM_SHIFT_SLOW[e]][x][s1[e] + NNC_S1_OFFSET]


cdef inline void initial_state(int* s0, int* s1, int e) noexcept nogil:
    s0[e] = NNC_PARAM_INIT_S0[e]
    s1[e] = NNC_PARAM_INIT_P[e] - 16 * s0[e]


cdef inline void initial_states(int* s0, int* s1) noexcept nogil:
    # constant indices only, so that the states can live in registers
    initial_state(s0, s1, 0)
    initial_state(s0, s1, 1)
    initial_state(s0, s1, 2)
    initial_state(s0, s1, 3)
    initial_state(s0, s1, 4)
    initial_state(s0, s1, 5)
    initial_state(s0, s1, 6)
    initial_state(s0, s1, 7)
    initial_state(s0, s1, 8)


cdef inline void price_log(const BinLog* log, const Py_ssize_t* resets, Py_ssize_t num_resets,
                           Py_ssize_t reset_stride, long long* cost) noexcept nogil:
    """Add to ``cost[e]`` (e = 0..8, in 1/32768 bit) the cost of the logged bins under
    parameter set e. ``resets[i * reset_stride]`` are bin counts at which all estimators
    return to their initial states (block-row boundaries)."""
    cdef int x
    cdef Py_ssize_t i, r = 0
    cdef uint64_t word = 0
    cdef int s0[9]
    cdef int s1[9]
    cdef const int32_t* bin_cost
    initial_states(s0, s1)
    for i in range(log.count):
        while r < num_resets and resets[r * reset_stride] == i:
            initial_states(s0, s1)
            r += 1
        if i & 63 == 0:
            word = log.words[i >> 6]
        x = <int>(word & 1)
        word >>= 1
        bin_cost = &NNC_COST1[0] if x else &NNC_COST0[0]
        price_bin(s0, s1, cost, bin_cost, x, 0)
        price_bin(s0, s1, cost, bin_cost, x, 1)
        price_bin(s0, s1, cost, bin_cost, x, 2)
        price_bin(s0, s1, cost, bin_cost, x, 3)
        price_bin(s0, s1, cost, bin_cost, x, 4)
        price_bin(s0, s1, cost, bin_cost, x, 5)
        price_bin(s0, s1, cost, bin_cost, x, 6)
        price_bin(s0, s1, cost, bin_cost, x, 7)
        price_bin(s0, s1, cost, bin_cost, x, 8)


cdef inline int price_logs(BinLog* logs, Py_ssize_t n_logs, const Py_ssize_t* resets,
                           Py_ssize_t num_resets, long long* cost, bint simd) noexcept nogil:
    """:func:`price_log` for every log: ``cost[9 * c + e]`` (zeroed first) is the price of
    log c under parameter set e; ``resets[r * n_logs + c]`` are log c's restart points.
    Where the CPU has AVX-512 (``simd``) the nine sets run in nine lanes and two logs side
    by side: the same integer arithmetic, so the same totals. Returns -1 if out of memory."""
    cdef Py_ssize_t c
    cdef uint64_t** words
    cdef Py_ssize_t* counts
    for c in range(9 * n_logs):
        cost[c] = 0
    if not simd:
        for c in range(n_logs):
            price_log(&logs[c], &resets[c], num_resets, n_logs, &cost[9 * c])
        return 0
    words = <uint64_t**>malloc(sizeof(uint64_t*) * (n_logs if n_logs > 0 else 1))
    counts = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (n_logs if n_logs > 0 else 1))
    if words == NULL or counts == NULL:
        free(words)
        free(counts)
        return -1
    for c in range(n_logs):
        words[c] = logs[c].words
        counts[c] = logs[c].count
    nnc_price_logs_avx512(words, counts, n_logs, resets, num_resets, n_logs, cost,
                          &NNC_STEP[0], &NNC_PARAM_SHIFT_FAST[0], &NNC_PARAM_SHIFT_SLOW[0],
                          &NNC_PARAM_INIT_P[0], &NNC_PARAM_INIT_S0[0], &NNC_COST0[0],
                          &NNC_COST1[0])
    free(words)
    free(counts)
    return 0
