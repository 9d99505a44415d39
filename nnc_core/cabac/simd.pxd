# cython: language_level=3
"""Vectorised encoder loops of the DeepCABAC core, with run-time dispatch (C code below).

``nnc_price_logs_avx512``: the param_opt pricing of pricing.pxd (NNC format note §7.5) with
the nine parameter sets in nine lanes of one 512-bit register; ``nnc_viterbi_forward_*``:
the forward pass of the 8-state trellis of trellis.pyx (§5.4) with the eight path costs in
one register. Both do the same integer / double arithmetic as the scalar loops, so their
results are bit-identical; they run only where the CPU has AVX-512 (``nnc_have_avx512``),
through per-function target attributes, so the module itself runs on any CPU.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint64_t

cdef extern from *:
    """
/* Vectorised encoder loops of the DeepCABAC core, with run-time dispatch.
 *
 * nnc_price_logs_avx512: the param_opt pricing of pricing.pxd (NNC format note 7.5) with the
 * nine parameter sets in nine lanes of one 512-bit register, two contexts' logs side by side. The estimator update of 7.1,
 * s += C[16 + (s >> k)] >> shift for a 1 and s -= C[16 + ((-s) >> k)] >> shift for a 0,
 * is written for both bins at once by mirroring the state: with m = 0 for a 1 and -1 for a
 * 0, v = (s ^ m) - m is s or -s, and the new state is ((v + C[16 + (v >> k)] >> shift) ^ m) - m.
 * The 32 step sizes fit one two-register permute (rotated by 16, so that the low five bits
 * of s >> k index it directly); the bit costs are looked up lane by lane (faster than a
 * gather on current x86 cores), the sums kept in 64 bits. Integer
 * arithmetic throughout, so the totals equal the scalar pricing exactly.
 *
 * nnc_viterbi_forward_*: the forward pass of the 8-state trellis of trellis.pyx (note 5.4)
 * with the eight path costs in one register: the three branches into every state are
 * permutes of the costs and of the five candidate distortions, the first minimum wins as in
 * the scalar code (strict comparisons in branch order), and the same double additions are
 * made, so the decisions are bit-identical.
 *
 * Built with per-function target attributes: the module runs on any x86-64 (or other) CPU
 * and takes these paths only where the CPU has AVX-512F (nnc_have_avx512).
 */
#ifndef NNC_SIMD_H
#define NNC_SIMD_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNC_NO_SIMD)
#define NNC_SIMD_X86 1
#include <immintrin.h>
#endif

static inline int nnc_have_avx512(void)
{
#ifdef NNC_SIMD_X86
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return known;
#else
    return 0;
#endif
}

#ifdef NNC_SIMD_X86

#define NNC_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

/* Pricing state of one context: the nine estimators (lanes 0-8) and their cost sums. */
typedef struct {
    __m512i s0, s1;
    ptrdiff_t reset;
    uint64_t word;
    long long cost[9];
} nnc_pricer;

typedef struct {
    __m512i shf, shs, init_s0, init_s1, steps_lo, steps_hi;
    const int32_t* cost0;
    const int32_t* cost1;
} nnc_price_tables;

NNC_AVX512 static inline void nnc_price_setup(nnc_price_tables* T, const int32_t* step32,
    const uint8_t* shift_fast, const uint8_t* shift_slow, const int16_t* init_p,
    const int8_t* init_s0, const int32_t* cost0, const int32_t* cost1)
{
    int32_t sf[16], ss[16], p0[16], q0[16], rotated[32];
    for (int e = 0; e < 16; e++) {
        int k = e < 9 ? e : 0;
        sf[e] = shift_fast[k];
        ss[e] = shift_slow[k];
        q0[e] = init_s0[k];
        p0[e] = init_p[k] - 16 * init_s0[k];
    }
    /* C[16 + j] for j = s >> k in [-16, 15] sits at index j & 31 of the rotated table,
     * which is what the permute takes from the low five bits of j */
    for (int j = 0; j < 32; j++)
        rotated[j] = step32[(j + 16) & 31];
    T->shf = _mm512_loadu_si512(sf);
    T->shs = _mm512_loadu_si512(ss);
    T->init_s0 = _mm512_loadu_si512(q0);
    T->init_s1 = _mm512_loadu_si512(p0);
    T->steps_lo = _mm512_loadu_si512(rotated);
    T->steps_hi = _mm512_loadu_si512(rotated + 16);
    T->cost0 = cost0;
    T->cost1 = cost1;
}

NNC_AVX512 static inline void nnc_pricer_start(nnc_pricer* P, const nnc_price_tables* T)
{
    P->s0 = T->init_s0;
    P->s1 = T->init_s1;
    P->reset = 0;
    P->word = 0;
    for (int e = 0; e < 9; e++)
        P->cost[e] = 0;
}

/* Price bin i of a log (and apply the resets due before it). */
NNC_AVX512 static inline void nnc_pricer_bin(nnc_pricer* P, const nnc_price_tables* T,
    const uint64_t* words, ptrdiff_t i, const ptrdiff_t* resets, ptrdiff_t num_resets,
    ptrdiff_t stride)
{
    while (P->reset < num_resets && resets[P->reset * stride] == i) {
        P->s0 = T->init_s0;
        P->s1 = T->init_s1;
        P->reset++;
    }
    if ((i & 63) == 0)
        P->word = words[i >> 6];
    int x = (int)(P->word & 1);
    P->word >>= 1;
    /* cost of the bin in the current state: table[512 + ((s1 + 16 s0) >> 3)] */
    __m512i idx = _mm512_add_epi32(_mm512_srai_epi32(
        _mm512_add_epi32(P->s1, _mm512_slli_epi32(P->s0, 4)), 3), _mm512_set1_epi32(512));
    int32_t lane[16];
    _mm512_storeu_si512(lane, idx);
    const int32_t* table = x ? T->cost1 : T->cost0;
    for (int e = 0; e < 9; e++)
        P->cost[e] += table[lane[e]];
    /* estimator updates, mirrored for a 0 */
    __m512i m = _mm512_set1_epi32(x - 1);
    __m512i v0 = _mm512_sub_epi32(_mm512_xor_si512(P->s0, m), m);
    __m512i d0 = _mm512_srav_epi32(_mm512_permutex2var_epi32(
        T->steps_lo, _mm512_srai_epi32(v0, 3), T->steps_hi), T->shf);
    P->s0 = _mm512_sub_epi32(_mm512_xor_si512(_mm512_add_epi32(v0, d0), m), m);
    __m512i v1 = _mm512_sub_epi32(_mm512_xor_si512(P->s1, m), m);
    __m512i d1 = _mm512_srav_epi32(_mm512_permutex2var_epi32(
        T->steps_lo, _mm512_srai_epi32(v1, 7), T->steps_hi), T->shs);
    P->s1 = _mm512_sub_epi32(_mm512_xor_si512(_mm512_add_epi32(v1, d1), m), m);
}

NNC_AVX512 static inline void nnc_pricer_finish(nnc_pricer* P, long long* cost)
{
    for (int e = 0; e < 9; e++)
        cost[e] += P->cost[e];
}

/* cost[c * 9 + e] += price of the bins of log c (counts[c] bins, bit i in words[c][i / 64])
 * under parameter set e, for c = 0 .. n_logs - 1; at bin counts resets[r * stride + c]
 * every estimator of log c restarts. Two logs are priced side by side, so that the
 * dependency chains of their estimator updates overlap. */
NNC_AVX512 static void nnc_price_logs_avx512(
    uint64_t* const* words, const ptrdiff_t* counts, ptrdiff_t n_logs, const ptrdiff_t* resets,
    ptrdiff_t num_resets, ptrdiff_t stride, long long* cost, const int32_t* step32,
    const uint8_t* shift_fast, const uint8_t* shift_slow, const int16_t* init_p,
    const int8_t* init_s0, const int32_t* cost0, const int32_t* cost1)
{
    nnc_price_tables T;
    nnc_price_setup(&T, step32, shift_fast, shift_slow, init_p, init_s0, cost0, cost1);
    ptrdiff_t c = 0;
    for (; c + 1 < n_logs; c += 2) {
        nnc_pricer A, B;
        nnc_pricer_start(&A, &T);
        nnc_pricer_start(&B, &T);
        ptrdiff_t na = counts[c], nb = counts[c + 1];
        ptrdiff_t both = na < nb ? na : nb, i = 0;
        for (; i < both; i++) {
            nnc_pricer_bin(&A, &T, words[c], i, resets + c, num_resets, stride);
            nnc_pricer_bin(&B, &T, words[c + 1], i, resets + c + 1, num_resets, stride);
        }
        for (ptrdiff_t j = i; j < na; j++)
            nnc_pricer_bin(&A, &T, words[c], j, resets + c, num_resets, stride);
        for (ptrdiff_t j = i; j < nb; j++)
            nnc_pricer_bin(&B, &T, words[c + 1], j, resets + c + 1, num_resets, stride);
        nnc_pricer_finish(&A, cost + 9 * c);
        nnc_pricer_finish(&B, cost + 9 * (c + 1));
    }
    for (; c < n_logs; c++) {
        nnc_pricer A;
        nnc_pricer_start(&A, &T);
        for (ptrdiff_t i = 0; i < counts[c]; i++)
            nnc_pricer_bin(&A, &T, words[c], i, resets + c, num_resets, stride);
        nnc_pricer_finish(&A, cost + 9 * c);
    }
}

/* One trellis step: new_cost[t] = min over the three branches b of
 * cost[prev[t][b]] + dist[slot[t][b]] (first minimum), decision[t] = prev << 3 | slot. */
NNC_AVX512 static inline __m512d nnc_viterbi_step_avx512(
    __m512d cost, __m512d dist, const __m512i* prev_idx, const __m512i* slot_idx,
    const __m512i* decision_code, uint8_t* decision)
{
    __m512d best = _mm512_add_pd(_mm512_permutexvar_pd(prev_idx[0], cost),
                                 _mm512_permutexvar_pd(slot_idx[0], dist));
    __m512d c1 = _mm512_add_pd(_mm512_permutexvar_pd(prev_idx[1], cost),
                               _mm512_permutexvar_pd(slot_idx[1], dist));
    __m512i code = decision_code[0];
    __mmask8 take = _mm512_cmp_pd_mask(c1, best, _CMP_LT_OQ);
    best = _mm512_mask_blend_pd(take, best, c1);
    code = _mm512_mask_blend_epi64(take, code, decision_code[1]);
    __m512d c2 = _mm512_add_pd(_mm512_permutexvar_pd(prev_idx[2], cost),
                               _mm512_permutexvar_pd(slot_idx[2], dist));
    take = _mm512_cmp_pd_mask(c2, best, _CMP_LT_OQ);
    best = _mm512_mask_blend_pd(take, best, c2);
    code = _mm512_mask_blend_epi64(take, code, decision_code[2]);
    _mm_storel_epi64((__m128i*)decision, _mm512_cvtepi64_epi8(code));
    return best;
}

/* The forward pass of the trellis without a rate term (trellis.pyx _viterbi) over the n
 * values x[scan[i]] (scan NULL: raster order): decisions (8 per value) and the final path
 * costs. The candidates of a value are formed as the scalar candidates() forms them. */
#define NNC_VITERBI_FORWARD(NAME, T)                                                        \\
NNC_AVX512 static void NAME(const T* x, const int64_t* scan, ptrdiff_t n, double qscale,    \\
                            const uint8_t prev[8][3], const uint8_t slot[8][3],             \\
                            uint8_t* decisions, double* final_cost)                         \\
{                                                                                           \\
    __m512i prev_idx[3], slot_idx[3], code[3];                                              \\
    for (int b = 0; b < 3; b++) {                                                           \\
        int64_t p[8], s[8], c[8];                                                           \\
        for (int t = 0; t < 8; t++) {                                                       \\
            p[t] = prev[t][b];                                                              \\
            s[t] = slot[t][b];                                                              \\
            c[t] = (prev[t][b] << 3) | slot[t][b];                                          \\
        }                                                                                   \\
        prev_idx[b] = _mm512_loadu_si512(p);                                                \\
        slot_idx[b] = _mm512_loadu_si512(s);                                                \\
        code[b] = _mm512_loadu_si512(c);                                                    \\
    }                                                                                       \\
    const double half_max = 0.5 * DBL_MAX;                                                  \\
    __m512d cost = _mm512_set_pd(half_max, half_max, half_max, half_max, half_max,          \\
                                 half_max, half_max, 0.0);                                  \\
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);                          \\
    const __m512i three = _mm512_set1_epi64(3);                                             \\
    for (ptrdiff_t i = 0; i < n; i++) {                                                     \\
        double v = (double)x[scan ? scan[i] : i];                                           \\
        int sign = v < 0 ? -1 : 1;                                                          \\
        double a = qscale * v * sign;                                                       \\
        int64_t lo = (int64_t)trunc(a) - 1;                                                 \\
        if (lo < 1)                                                                         \\
            lo = 1;                                                                         \\
        /* slot k < 4 holds index lo + ((k - lo) & 3); slot 4 (and lanes 5-7) zero */       \\
        __m512i first = _mm512_set1_epi64(lo);                                              \\
        __m512i q = _mm512_maskz_add_epi64(0x0F, first,                                     \\
                                           _mm512_and_si512(_mm512_sub_epi64(lane, first), three)); \\
        __m512d diff = _mm512_sub_pd(_mm512_set1_pd(a), _mm512_cvtepi64_pd(q));            \\
        __m512d dist = _mm512_mul_pd(diff, diff);                                           \\
        cost = nnc_viterbi_step_avx512(cost, dist, prev_idx, slot_idx, code, decisions + 8 * i); \\
    }                                                                                       \\
    _mm512_storeu_pd(final_cost, cost);                                                     \\
}

NNC_VITERBI_FORWARD(nnc_viterbi_forward_f32_avx512, float)
NNC_VITERBI_FORWARD(nnc_viterbi_forward_f64_avx512, double)

#else  /* no x86 SIMD: the callers use their scalar loops */

static void nnc_price_logs_avx512(
    uint64_t* const* words, const ptrdiff_t* counts, ptrdiff_t n_logs, const ptrdiff_t* resets,
    ptrdiff_t num_resets, ptrdiff_t stride, long long* cost, const int32_t* step32,
    const uint8_t* shift_fast, const uint8_t* shift_slow, const int16_t* init_p,
    const int8_t* init_s0, const int32_t* cost0, const int32_t* cost1)
{
    (void)words; (void)counts; (void)n_logs; (void)resets; (void)num_resets; (void)stride;
    (void)cost; (void)step32; (void)shift_fast; (void)shift_slow; (void)init_p; (void)init_s0;
    (void)cost0; (void)cost1;
}

static void nnc_viterbi_forward_f32_avx512(const float* x, const int64_t* scan, ptrdiff_t n,
    double qscale, const uint8_t prev[8][3], const uint8_t slot[8][3], uint8_t* decisions,
    double* final_cost)
{
    (void)x; (void)scan; (void)n; (void)qscale; (void)prev; (void)slot; (void)decisions;
    (void)final_cost;
}

static void nnc_viterbi_forward_f64_avx512(const double* x, const int64_t* scan, ptrdiff_t n,
    double qscale, const uint8_t prev[8][3], const uint8_t slot[8][3], uint8_t* decisions,
    double* final_cost)
{
    (void)x; (void)scan; (void)n; (void)qscale; (void)prev; (void)slot; (void)decisions;
    (void)final_cost;
}

#endif
#endif

    """
    int nnc_have_avx512() nogil
    void nnc_price_logs_avx512(uint64_t** words, const Py_ssize_t* counts, Py_ssize_t n_logs,
                               const Py_ssize_t* resets, Py_ssize_t num_resets, Py_ssize_t stride,
                               long long* cost, const int32_t* step32, const uint8_t* shift_fast,
                               const uint8_t* shift_slow, const int16_t* init_p,
                               const int8_t* init_s0, const int32_t* cost0,
                               const int32_t* cost1) nogil
    void nnc_viterbi_forward_f32_avx512(const float* x, const int64_t* scan, Py_ssize_t n,
                                        double qscale, const uint8_t prev[8][3],
                                        const uint8_t slot[8][3], uint8_t* decisions,
                                        double* final_cost) nogil
    void nnc_viterbi_forward_f64_avx512(const double* x, const int64_t* scan, Py_ssize_t n,
                                        double qscale, const uint8_t prev[8][3],
                                        const uint8_t slot[8][3], uint8_t* decisions,
                                        double* final_cost) nogil
