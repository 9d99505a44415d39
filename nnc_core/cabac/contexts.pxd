# cython: language_level=3
"""Context index layout and context selection of the level coder (NNC format note §7.3, §8.3).

All models of one tensor live in one array of ``90 + 4G`` entries (G = number of
greater-than flags). The fixed part is laid out below; the greater-than, remainder,
param-opt and row-skip contexts move with G.
"""

cdef enum:
    CTX_SIG = 0          # 3*state + neighbour class
    CTX_SIG_TCA = 24     # 24 + 2*state + (|base| > 1)
    CTX_SIG_HDSP = 40    # 40 + state
    CTX_SIGN = 48        # 48 + neighbour class
    CTX_SIGN_TCA = 51    # 51 + (base > 0)
    CTX_GT = 53          # 53 + 2j + (level < 0)
    MAX_PREFIX_BINS = 31 # the remainder prefix never exceeds 31 bins (§8.1)
    NUM_PARAM_SETS = 9


ctypedef struct ContextLayout:
    int num_gt           # G
    int gt_tca           # 53 + 2G
    int remainder        # 53 + 4G, prefix bin i at remainder + i
    int param_opt_flag   # 87 + 4G ("parameter set index != 0" flags)
    int row_skip         # 89 + 4G
    int count            # 90 + 4G


cdef inline void layout_init(ContextLayout* L, int num_gt) noexcept nogil:
    L.num_gt = num_gt
    L.gt_tca = CTX_GT + 2 * num_gt
    L.remainder = CTX_GT + 4 * num_gt
    L.param_opt_flag = 87 + 4 * num_gt
    L.row_skip = 89 + 4 * num_gt
    L.count = 90 + 4 * num_gt


cdef inline int neighbour_class(long long previous) noexcept nogil:
    if previous == 0:
        return 0
    return 1 if previous < 0 else 2


cdef inline int sig_context(int state, long long previous, long long base, bint hdsp) noexcept nogil:
    if hdsp:
        return CTX_SIG_HDSP + state
    if base != 0:
        return CTX_SIG_TCA + 2 * state + (1 if (base > 1 or base < -1) else 0)
    return CTX_SIG + 3 * state + neighbour_class(previous)


cdef inline int sign_context(long long previous, long long base) noexcept nogil:
    if base != 0:
        return CTX_SIGN_TCA + (1 if base > 0 else 0)
    return CTX_SIGN + neighbour_class(previous)


cdef inline int gt_context(const ContextLayout* L, int j, bint negative, long long base) noexcept nogil:
    if base != 0:
        if base < 0:
            base = -base
        return L.gt_tca + 2 * j + (0 if base >= j else 1)
    return CTX_GT + 2 * j + (1 if negative else 0)
