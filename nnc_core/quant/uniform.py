"""Uniform reconstruction quantizer (NNC format note §5.5, lambda = 0).

``r = round_half_away_from_zero(float32(float32(1/step) * x))``: the product is taken in
float32 like other NNC encoders do, so the levels match theirs bit for bit. Rounding stays
in float32 too (``x - trunc(x)`` is exact), so no float64 copy of the tensor is made.
"""
import numpy as np

from ..cabac.trellis import quantize_uniform_f32
from .step import INT32_MAX


def scaled(x: np.ndarray, step) -> np.ndarray:
    """``float32(1/step) * x`` in float32."""
    return np.float32(np.float32(1.0) / np.float32(step)) * x.astype(np.float32, copy=False)


def round_half_away(values: np.ndarray) -> np.ndarray:
    """Round float32 ``values`` half away from zero, exactly (consumes ``values``)."""
    whole = np.trunc(values)
    np.subtract(values, whole, out=values)              # exact fractional part, sign kept
    half = np.abs(values) >= 0.5
    np.copysign(half, values, out=values)               # +-1 where it rounds away, else +-0
    np.add(whole, values, out=whole)
    return whole


def level_range(x: np.ndarray, step) -> tuple[float, float]:
    """Smallest and largest rounded level of ``x``: scaling by a positive factor and rounding
    are monotonic, so these are the levels of the smallest and the largest value."""
    if x.size == 0:
        return 0.0, 0.0
    ends = np.array([x.min(), x.max()], dtype=np.float32)
    return tuple(float(v) for v in round_half_away(scaled(ends, step)))


def fits(x: np.ndarray, step, lowest: int, highest: int) -> bool:
    lo, hi = level_range(x, step)
    return lo >= lowest and hi <= highest


def quantize_uniform(x: np.ndarray, step) -> np.ndarray | None:
    """Levels of float32 ``x`` at ``step``; None if any level leaves the int32 range.
    The compiled loop does what ``round_half_away(scaled(x, step))`` does, in one pass."""
    if not fits(x, step, -INT32_MAX - 1, INT32_MAX):
        return None
    inverse = np.float32(np.float32(1.0) / np.float32(step))
    return quantize_uniform_f32(x, inverse).reshape(x.shape)
