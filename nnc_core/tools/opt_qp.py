"""Layer-wise quantization parameters from relative size and spread (``opt_qp``).

The NNCodec heuristic (Becker et al., ICML 2023 workshop, Sec. 3): large layers and
layers with a narrow weight distribution tolerate a coarser step. For the weight tensors
of a model, with ``n_i`` elements and standard deviation ``sigma_i``,

    w_i = n_i / sum_j n_j + 0.1 * (1 - sigma_i / max_j sigma_j),   w_i := 0.15 if w_i > 0.5,
    qp_i = round(qp_i * (1 - w_i))                                  (round half to even)

so a layer holding most of the parameters is capped at a 15 % reduction of |qp|.
"""
from __future__ import annotations

import numpy as np


def optimise_qps(weights: dict[str, np.ndarray], qps: dict[str, int]) -> dict[str, int]:
    """New qps for the tensors in ``weights`` (other entries of ``qps`` are kept)."""
    if not weights:
        return dict(qps)
    names = list(weights)
    sizes = np.array([weights[n].size for n in names], dtype=np.float64)
    spread = np.array([np.std(weights[n]) for n in names], dtype=np.float32)
    top = spread.max()
    relative_spread = spread / top if top > 0 else np.zeros_like(spread)
    shares = sizes / sizes.sum() + 0.1 * (1 - relative_spread)
    out = dict(qps)
    for name, share in zip(names, shares):
        share = 0.15 if share > 0.5 else float(share)
        out[name] = int(np.round(qps[name] * (1 - share)))
    return out
