"""Quantization step sizes and qp choices (NNC format note §5.1, §5.5).

The step size of quantization parameter ``qp`` at density ``d`` (k = 2^d) is
``(k + (qp & (k - 1))) * 2^((qp >> d) - d)``: k steps per octave, linear inside an octave.
"""
import math

import numpy as np

INT32_MAX = 2**31 - 1


def step_size(qp: int, qp_density: int = 2) -> np.float32:
    """Step size of ``qp``, rounded to float32 as the decoder uses it."""
    k = 1 << qp_density
    mul = k + (qp & (k - 1))
    return np.float32(mul * 2.0 ** ((qp >> qp_density) - qp_density))


def step_size_exact(qp: int, qp_density: int = 2) -> float:
    """Step size in double precision (used by codebook reconstruction, §5.3)."""
    k = 1 << qp_density
    return (k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density)


def qp_from_step(step, qp_density: int = 2):
    """Inverse of :func:`step_size`, fractional: ``floor(log2 s) * k + (s*k / 2^floor(log2 s) - k)``.

    Evaluated in the dtype of ``step`` (float32 for float32 statistics), which matters for
    reproducing other encoders' integer choices.
    """
    k = 1 << qp_density
    octave = np.floor(np.log2(step)) * k
    return octave + ((step * k) / 2 ** (octave / k) - k)


def overflow_safe_qp(max_abs: float, qp_density: int = 2) -> int:
    """Smallest qp whose levels stay inside int32 for values up to ``max_abs`` (§5.5)."""
    k = 1 << qp_density
    min_step = float(max_abs) / (2**31 - 3)
    base = np.float32(math.floor(math.log2(min_step)) * k)
    new_qp = np.float32(base + (min_step * k) / 2 ** (float(base) / k) - k)
    return int(math.ceil(new_qp))


def bitdepth_qp(x: np.ndarray, bitdepth: int, qp_density: int = 2) -> tuple[int, int, int]:
    """qp and level range for integer-aligned coding at ``bitdepth`` bits (§5.5).

    The step maps the 99.95th percentile of |x| to the largest level of a signed (or, for
    non-negative tensors, unsigned) ``bitdepth``-bit integer. Returns ``(qp, lo, hi)``.
    """
    unsigned = not np.any(x < 0)
    lo, hi = (0, 2**bitdepth - 1) if unsigned else (-(2 ** (bitdepth - 1)), 2 ** (bitdepth - 1) - 1)
    if x.size == 0 or not np.any(x):
        return 0, lo, hi
    denom = hi
    magnitudes = np.abs(x)
    step = np.percentile(magnitudes, 99.95) / denom
    if step == 0:
        step = np.max(magnitudes) / denom
    qp = qp_from_step(step, qp_density)
    limit = 2 ** (5 + qp_density)
    qp = np.clip(qp, -limit, limit - 1)
    return int(np.round(qp)), lo, hi
