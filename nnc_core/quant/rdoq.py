"""Rate-distortion optimised quantization (RDOQ) with CABAC bit estimates.

Plain quantization (and the standard's reference encoder, whose trellis runs with a rate
weight of zero) minimises the squared error alone. RDOQ minimises the Lagrangian

    J = (x / step - r)^2 + lam * R(k)

per element (uniform) or along the trellis (dependent quantization), where R(k) is the
estimated number of bits of the transmitted level k in its context. The estimates come from
the bins the tensor itself produces when coded: a first pass quantizes without the rate
term, the bin counts of each context give its probabilities, and the tensor is quantized
again against them (repeated ``passes`` times). Only the choice of levels changes; the
bitstream syntax does not, so every NNC decoder reads the result.

``lambda_scale`` sets ``lam = lambda_scale * ln(2) / 6 * g``: at high rate a uniform
quantizer's distortion falls by ``ln(2) / 6`` step^2 per extra bit, so ``lambda_scale = 1``
weighs a bit like that slope; ``g = 4`` for dependent quantization, whose reconstruction
levels in one quantizer are two steps apart (distortions are in units of the finer step).
"""
import math

import numpy as np

from ..cabac.levels import bin_statistics
from ..cabac.trellis import RateTables, quantize_dependent, quantize_uniform_rd
from .scan import scan_positions

_MAX_TABLE_LEVEL = 1 << 16
_CTX_SIG, _CTX_SIGN, _CTX_GT = 0, 48, 53


def bit_costs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bits of a 0 and of a 1 per context from bin counts (shape (2, contexts)), with a
    half-count prior so unseen bins are expensive but finite."""
    n0, n1 = counts.astype(np.float64) + 0.5
    total = n0 + n1
    return -np.log2(n0 / total), -np.log2(n1 / total)


def rate_model(levels: np.ndarray, rows: int, cols: int, *, dq: bool, scan_order: int = 0,
               row_skipping: bool = True, num_gt: int = 11) -> RateTables:
    """Bit-cost tables of levels in context, measured on how ``levels`` code."""
    counts = bin_statistics(levels, rows, cols, dq=dq, num_gt=num_gt, scan_order=scan_order,
                            row_skipping=row_skipping)
    cost0, cost1 = bit_costs(counts)
    costs = (cost0, cost1)
    states = 8 if dq else 1
    sig = np.zeros((8, 3, 2))
    for s in range(8):
        for n in range(3):
            c = _CTX_SIG + 3 * min(s, states - 1) + n
            sig[s, n] = cost0[c], cost1[c]
    sign = np.array([[cost0[_CTX_SIGN + n], cost1[_CTX_SIGN + n]] for n in range(3)])
    transmitted = np.abs(levels.astype(np.int64)) // (2 if dq else 1) + 2
    largest = int(min(max(int(transmitted.max(initial=1)), 2), _MAX_TABLE_LEVEL))
    magnitude = np.zeros((2, largest + 1))
    remainder_ctx = _CTX_GT + 4 * num_gt
    for negative in (0, 1):
        gt = [(costs[0][_CTX_GT + 2 * j + negative], costs[1][_CTX_GT + 2 * j + negative])
              for j in range(num_gt)]
        for m in range(1, largest + 1):
            bits = 0.0
            for j in range(num_gt):
                if m > j + 1:
                    bits += gt[j][1]
                else:
                    bits += gt[j][0]
                    break
            else:
                bits += _remainder_bits(m - num_gt - 1, cost0, cost1, remainder_ctx)
            magnitude[negative, m] = bits
    return RateTables(sig, sign, magnitude)


def _remainder_bits(remainder: int, cost0, cost1, first_ctx: int) -> float:
    """Exp-Golomb-0 remainder: unary prefix on contexts first_ctx + i, then t plain bits."""
    t = int(math.floor(math.log2(remainder + 1)))
    prefix = sum(cost1[first_ctx + i] for i in range(min(t, 31)))
    if t < 31:
        prefix += cost0[first_ctx + t]
    return prefix + t


def lagrange_multiplier(lambda_scale: float, dq: bool) -> float:
    return lambda_scale * math.log(2) / 6 * (4 if dq else 1)


def quantize_rd(x: np.ndarray, step, levels: np.ndarray, rows: int, cols: int, *, dq: bool,
                lambda_scale: float, scan_order: int = 0, row_skipping: bool = True,
                num_gt: int = 11, passes: int = 2) -> np.ndarray:
    """Re-quantize ``x`` starting from its rate-blind ``levels``; returns reconstruction
    integers with the shape of ``x``."""
    lam = lagrange_multiplier(lambda_scale, dq)
    order = scan_positions(rows, cols, scan_order)
    flat = x.reshape(-1)
    for _ in range(passes):
        tables = rate_model(levels.reshape(-1), rows, cols, dq=dq, scan_order=scan_order,
                            row_skipping=row_skipping, num_gt=num_gt)
        if dq:
            levels = quantize_dependent(flat, float(step), order, tables, lam)
        else:
            levels = quantize_uniform_rd(flat, float(step), tables, lam, order)
    return levels.reshape(x.shape)
