"""Uniform reconstruction quantizer (NNC format note §5.5, lambda = 0).

``r = round_half_away_from_zero(float32(float32(1/step) * x))``: the product is taken in
float32 like other NNC encoders do, so the levels match theirs bit for bit.
"""
import numpy as np

from .step import INT32_MAX


def rounded_levels(x: np.ndarray, step: np.float32) -> np.ndarray:
    """``round(x / step)`` as float64, computed the standard encoder's way."""
    scale = np.float32(1.0) / np.float32(step)
    scaled = (scale * x.astype(np.float32, copy=False)).astype(np.float64)
    return np.trunc(scaled + np.copysign(0.5, scaled))


def fits(rounded: np.ndarray, lowest: int, highest: int) -> bool:
    return rounded.size == 0 or (rounded.max() <= highest and rounded.min() >= lowest)


def quantize_uniform(x: np.ndarray, step: np.float32) -> np.ndarray | None:
    """Levels of float32 ``x`` at ``step``; None if any level leaves the int32 range."""
    rounded = rounded_levels(x, step)
    if not fits(rounded, -INT32_MAX - 1, INT32_MAX):
        return None
    return rounded.astype(np.int32)
