"""Measures of coded tensors: reconstruction quality and the entropy bound of the levels."""
import math

import numpy as np


def snr_db(x, y) -> float:
    """Signal-to-noise ratio ``10 log10(sum x^2 / sum (x - y)^2)`` in dB; inf when ``y``
    reconstructs ``x`` exactly."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(x.shape)
    signal = float(np.sum(x * x))
    noise = float(np.sum((x - y) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def entropy_bits(levels) -> float:
    """Zeroth-order empirical entropy of integer ``levels``, in bits per element: the size
    a memoryless entropy coder of these levels could reach."""
    k = np.asarray(levels).ravel()
    if k.size == 0:
        return 0.0
    lo, hi = int(k.min()), int(k.max())
    if hi - lo < 1 << 22:
        counts = np.bincount(k.astype(np.int64) - lo)
        counts = counts[counts > 0]
    else:
        counts = np.unique(k, return_counts=True)[1]
    p = counts / k.size
    return float(-(p * np.log2(p)).sum())
