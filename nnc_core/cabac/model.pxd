# cython: language_level=3
"""Adaptive binary probability model of DeepCABAC (NNC format note §7.1-7.2, Annex A.1-A.3).

Each context keeps a fast and a slow estimate (two-rate estimator); only the fast one
(``s0``) and the combined state ``p = 16*s0 + s1`` are stored, so the slow one is derived.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, uint32_t

cdef extern from "tables.h" nogil:
    const uint8_t NNC_LPS_RANGE[256]
    const int32_t NNC_STEP[32]
    const uint8_t NNC_PARAM_SHIFT_FAST[9]
    const uint8_t NNC_PARAM_SHIFT_SLOW[9]
    const int16_t NNC_PARAM_INIT_P[9]
    const int8_t NNC_PARAM_INIT_S0[9]
    const uint8_t NNC_DQ_NEXT[16]
    const int32_t NNC_COST0[1024]     # bit costs, for encoder decisions (pricing.pxd)
    const int32_t NNC_COST1[1024]


ctypedef struct ContextModel:
    int16_t p            # combined state 16*s0 + s1; its sign is the MPS
    int16_t s0           # fast estimate (fits 8 bits; 16 keep stores from aliasing the coder)
    uint8_t shift_fast
    uint8_t shift_slow
    uint8_t param_set    # index e of the parameter set it was initialised with


cdef inline void model_init(ContextModel* m, int param_set) noexcept nogil:
    m.param_set = <uint8_t>param_set
    m.shift_fast = NNC_PARAM_SHIFT_FAST[param_set]
    m.shift_slow = NNC_PARAM_SHIFT_SLOW[param_set]
    m.p = NNC_PARAM_INIT_P[param_set]
    m.s0 = NNC_PARAM_INIT_S0[param_set]


cdef inline void model_reset(ContextModel* m) noexcept nogil:
    m.p = NNC_PARAM_INIT_P[m.param_set]
    m.s0 = NNC_PARAM_INIT_S0[m.param_set]


cdef inline int model_mps(const ContextModel* m) noexcept nogil:
    return m.p >= 0


cdef inline uint32_t model_lps_range(const ContextModel* m, uint32_t rng) noexcept nogil:
    cdef int cls = m.p >> 7
    if cls < 0:
        cls = -cls
    return NNC_LPS_RANGE[((rng >> 5) & 7) * 32 + cls]


cdef inline void model_update(ContextModel* m, int bin) noexcept nogil:
    cdef int s0 = m.s0
    cdef int s1 = m.p - 16 * s0
    if bin:
        s0 += NNC_STEP[16 + (s0 >> 3)] >> m.shift_fast
        s1 += NNC_STEP[16 + (s1 >> 7)] >> m.shift_slow
    else:
        s0 -= NNC_STEP[16 + ((-s0) >> 3)] >> m.shift_fast
        s1 -= NNC_STEP[16 + ((-s1) >> 7)] >> m.shift_slow
    m.s0 = <int16_t>s0
    m.p = <int16_t>(s1 + 16 * s0)


cdef inline int dq_next_state(int state, long long level) noexcept nogil:
    """Dependent-quantization state transition on the parity of the coded level (§5.4)."""
    return NNC_DQ_NEXT[2 * state + <int>(level & 1)]
