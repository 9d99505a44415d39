"""BatchNorm folding (NNC's BNF tool; NNCodec, Becker et al. 2023).

A BatchNorm layer after a convolution or linear layer computes, per output channel c,

    y_c = gamma_c * (z_c - mu_c) / sqrt(var_c + eps) + beta_c,   z_c = (W x)_c + b_c.

With g_c = gamma_c / sqrt(var_c + eps) this is y_c = g_c (W x)_c + (b_c - mu_c) g_c + beta_c,
so the four BatchNorm vectors collapse into a per-channel scale and a bias. The weight is
coded unchanged; the scale travels as the block's local-scaling (LS) member, multiplied
into the weight rows by the decoder, and the folded bias as its bias (BI) member. Four
vectors become two, and the decoded model needs no BatchNorm statistics.
"""
from __future__ import annotations

import numpy as np


def fold_batchnorm(gamma, beta, mean, var, eps: float, bias=None, scale=None):
    """(scale, bias) of the folded layer, float32; ``bias`` / ``scale`` are the layer's
    existing bias and local scales (zeros / ones when absent)."""
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float32) for a in (gamma, beta, mean, var))
    g = gamma / np.sqrt(var + np.float32(eps))
    scale = g if scale is None else np.asarray(scale, dtype=np.float32) * g
    bias = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float32)
    return scale.astype(np.float32), ((bias - mean) * g + beta).astype(np.float32)
