"""Coding order of a tensor's elements (NNC format note §9.1).

The tensor is an H x W matrix (rows = first dimension). Scan order 0 is raster order;
1..4 visit square blocks of side 8, 16, 32, 64 block-row by block-row, each block in
raster order. Quantizers with memory (the DQ trellis) must run along the same order.
"""
import numpy as np


def block_side(scan_order: int, rows: int, cols: int) -> int:
    """Side of the scan blocks, 0 for raster order (also for vectors, where blocks don't apply)."""
    if scan_order == 0 or rows <= 1 or cols <= 1:
        return 0
    return 4 << scan_order


def scan_positions(rows: int, cols: int, scan_order: int) -> np.ndarray | None:
    """Raster indices in coding order, or None when the order is plain raster order."""
    side = block_side(scan_order, rows, cols)
    if side == 0:
        return None
    index = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    parts = [index[y:y + side, x:x + side].reshape(-1)
             for y in range(0, rows, side) for x in range(0, cols, side)]
    return np.concatenate(parts)
