"""Measures of coded tensors: reconstruction quality, the entropy bound of the levels and the
classic lossless baselines (Huffman, bzip2) that DeepCABAC is compared with."""
import bz2
import heapq
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


def huffman_bits(levels) -> int:
    """Payload size in bits of a static Huffman code built for these integer ``levels``
    (Huffman 1952), code table not included: the classic baseline DeepCABAC is compared
    with. A single distinct symbol still costs one bit per element."""
    counts = np.unique(np.asarray(levels).ravel(), return_counts=True)[1]
    if counts.size == 0:
        return 0
    if counts.size == 1:
        return int(counts[0])
    # The total code length equals the sum of the merged weights (each merge adds one bit
    # to every symbol beneath it), so the tree itself is never built.
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def bzip2_bytes(levels) -> int:
    """Size of the integer ``levels`` compressed by bzip2 (level 9), stored in the narrowest
    signed integer type that holds them: the general-purpose lossless baseline."""
    k = np.asarray(levels).ravel()
    dtype = np.int32
    for candidate in (np.int8, np.int16):
        info = np.iinfo(candidate)
        if k.size == 0 or (k.min() >= info.min and k.max() <= info.max):
            dtype = candidate
            break
    return len(bz2.compress(k.astype(dtype).tobytes(), 9))
