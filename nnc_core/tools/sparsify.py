"""Sparsification of weights or weight updates before coding (NNC second edition; Becking et
al., "Neural Network Coding of Difference Updates for Efficient Distributed Learning
Communication", IEEE TMM 2024, Sec. III-B).

Zeros cost almost nothing to DeepCABAC (one significance bin, whole rows one row-skip bin),
so zeroing the least important values before quantization trades a little accuracy for a
large share of the rate. Two steps, with the semantics of NNCodec's sparsification so that
the same ``args`` dict gives the same tensors:

1. *Unstructured.* Every weight tensor (two or more dimensions) first loses what
   quantization at ``qp`` would round to zero anyway, ``|w| < Delta/2``. While the share of
   zeros over *all* tensors is below ``sparsity``, the threshold of each tensor is raised to
   ``t = max(|mu - d*sigma|, |mu + d*sigma|, Delta/2)`` (mu, sigma: mean and standard deviation
   of that tensor after the first step), ``d`` growing from 0.25 in steps of 0.2, 0.1, 0.05
   and 0.01 as the target comes closer, at most 500 times; values with ``|w| < t`` become 0.
2. *Structured* (with ``struct_spars_factor = g > 0``). Per weight tensor, the share ``p`` of
   output channels whose mean magnitude ``m_c`` is below ``g * mean(m)``; the ``floor(p*C)``
   channels with the smallest ``m_c`` are zeroed whole.

Vectors (biases, norms), all-zero tensors and local scales (``*.weight_scaling``) are left
as they are. The arithmetic follows NNCodec's float32/float64 mix exactly (thresholds are
formed in float64 from float32 statistics and compared in float32); the statistics are
summed in the order of the reference's numpy 1.x (``float32_mean_std``), which numpy 2 does
not keep.
"""
from __future__ import annotations

import numpy as np

from ..cabac.trellis import float32_mean_std

__all__ = ["sparsify", "sparsify_unstructured", "sparsify_structured", "zero_share"]

MAX_ROUNDS = 500
START_DELTA = 0.25


def zero_share(tensors: dict[str, np.ndarray]) -> float:
    """Share of exact zeros over all elements of all tensors."""
    total = sum(int(np.size(v)) for v in tensors.values())
    zeros = sum(int(np.size(v)) - int(np.count_nonzero(v)) for v in tensors.values())
    return zeros / total if total else 0.0


def _prunable(name: str, w: np.ndarray) -> bool:
    return w.ndim >= 2 and w.dtype.kind == "f" and ".weight_scaling" not in name and w.any()


def _half_step(qp: int, qp_density: int) -> float:
    k = 1 << qp_density
    return (k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density) / 2


def _threshold(w: np.ndarray, delta: float, floor: float, stats=None) -> np.float32:
    mu, sigma = stats if stats is not None else float32_mean_std(w)
    t = max(abs(mu - delta * sigma), abs(mu + delta * sigma))
    return np.float32(max(t, floor))


def _cut(w: np.ndarray, threshold: np.float32) -> np.ndarray:
    """``w`` with every value outside ``w >= t or w <= -t`` (NaN included) set to 0."""
    return np.where(np.abs(w) >= threshold, w, np.float32(0)).astype(w.dtype, copy=False)


def _kept(w: np.ndarray, threshold: np.float32) -> int:
    """How many values :func:`_cut` keeps, without making the cut tensor."""
    return int(np.count_nonzero(np.abs(w) >= threshold))


def _next_increment(gap: float) -> float:
    for below, increment in ((0.05, 0.01), (0.10, 0.05), (0.30, 0.10)):
        if gap < below:
            return increment
    return 0.2


def sparsify_unstructured(tensors: dict[str, np.ndarray], target: float, qp: int,
                          qp_density: int = 2) -> dict[str, np.ndarray]:
    """Step 1 of the module docstring: zero below half a step of ``qp``, then raise the
    per-tensor thresholds until ``target`` of all elements are zero (or 500 rounds).

    The rounds only count what each threshold would keep; the tensors are cut once, at the
    thresholds of the last round."""
    floor = _half_step(qp, qp_density)
    base = {k: _cut(v, np.float32(floor)) if _prunable(k, v) else v for k, v in tensors.items()}
    is_prunable = {k: _prunable(k, v) for k, v in base.items()}
    prunable = [k for k, p in is_prunable.items() if p]
    total = sum(int(np.size(v)) for v in base.values())
    fixed_nonzeros = sum(int(np.count_nonzero(v)) for k, v in base.items() if not is_prunable[k])
    thresholds: dict[str, np.float32] | None = None      # None: the base tensors as they are
    delta = START_DELTA
    stats: dict[str, tuple[float, float]] = {}          # of the base tensors: fixed over rounds
    for _ in range(MAX_ROUNDS + 1):
        if thresholds is None:
            share = zero_share(base)
        else:
            kept = fixed_nonzeros + sum(_kept(base[k], t) for k, t in thresholds.items())
            share = (total - kept) / total if total else 0.0
        if share >= target:
            break
        delta += _next_increment(target - share)
        if not stats:
            stats = {k: float32_mean_std(base[k]) for k in prunable}
        thresholds = {k: _threshold(base[k], delta, floor, stats[k]) for k in prunable}
    if thresholds is None:
        return base
    return {k: _cut(v, thresholds[k]) if k in thresholds else v for k, v in base.items()}


def sparsify_structured(tensors: dict[str, np.ndarray], gain: float) -> dict[str, np.ndarray]:
    """Step 2 of the module docstring: zero the weakest output channels of each weight."""
    out = {}
    for name, w in tensors.items():
        if not _prunable(name, w):
            out[name] = w
            continue
        channels = len(w)
        means = np.array([np.mean(np.abs(w[c])) for c in range(channels)], dtype=np.float32)
        below = int(np.count_nonzero(means < np.float32(float(np.mean(means)) * gain)))
        count = int(below / channels * channels)
        weakest = np.argsort(means / np.abs(means).max())[:count]
        w = w.copy()
        w[weakest] = 0
        out[name] = w
    return out


def sparsify(tensors: dict[str, np.ndarray], sparsity: float, qp: int, qp_density: int = 2,
             struct_spars_factor: float = 0.9) -> dict[str, np.ndarray]:
    """Both steps (structured only if ``struct_spars_factor > 0``); nothing if ``sparsity``
    is 0. Returns new arrays for the tensors it changes; the input is not modified."""
    if sparsity <= 0:
        return dict(tensors)
    sparse = sparsify_unstructured(tensors, sparsity, qp, qp_density)
    return sparsify_structured(sparse, struct_spars_factor) if struct_spars_factor > 0 else sparse
