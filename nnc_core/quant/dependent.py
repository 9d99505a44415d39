"""Dependent quantization (trellis-coded, 8 states) along the coding scan (§5.4-5.5)."""
import numpy as np

from ..cabac.trellis import quantize_dependent as _trellis
from .scan import scan_positions
from .step import INT32_MAX
from .uniform import fits


def quantize_dependent(x: np.ndarray, step: np.float32, rows: int, cols: int,
                       scan_order: int = 0) -> np.ndarray | None:
    """Reconstruction integers of float32 ``x``; None if they could leave the int32 range.

    The trellis may pick the level next to the rounded one, hence the 2-level margin.
    """
    if not fits(x, step, -(INT32_MAX - 1), INT32_MAX - 2):
        return None
    order = scan_positions(rows, cols, scan_order)
    return _trellis(x.reshape(-1), float(step), order).reshape(x.shape)
