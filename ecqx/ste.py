"""Straight-through gradients of the quantized weights (Becking et al. 2022, Sec. 3.3;
after EC2T, Marban et al. 2020).

The network runs on quantized weights ``q = c_{A(w)}`` while full-precision shadow weights
``w`` are trained. The gradient of the loss with respect to ``q`` is passed to ``w`` scaled by
the magnitude ``|c|`` of the centroid the weight sits on (1 on the zero centroid), as EC2T
does for its ternary centroids: weights on large centroids move in larger steps. The
magnitude, not the signed value, is used, so the shadow weight always descends the loss
(scaling by a negative centroid would make it climb).
"""
from __future__ import annotations

import torch

from .grid import Grid


def shadow_gradient(grad: torch.Tensor, indices: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Gradient for the shadow weights from ``grad`` (w.r.t. the quantized weights) and the
    flattened cluster ``indices`` of the weights."""
    scale = grid.centroids(dtype=grad.dtype, device=grad.device).abs()
    scale[grid.zero_index] = 1.0
    return grad * scale[indices].view_as(grad)
