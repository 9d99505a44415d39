"""Straight-through gradients of the quantized weights (Becking et al. 2022, Sec. 3.3;
after EC2T, Marban et al. 2020).

The network runs on quantized weights ``q = c_{A(w)}`` while full-precision shadow weights
``w`` are trained. The gradient of the loss with respect to ``q`` is passed to ``w`` scaled by
the centroid the weight sits on (1 on the zero centroid), as EC2T does for its ternary
centroids: weights on large centroids move in larger steps. ``"magnitude"`` (the default)
scales by ``|c|``, so the shadow weight always descends the loss; ``"signed"`` scales by ``c``
as the official release does, which makes weights on negative centroids climb it.
"""
from __future__ import annotations

import torch

from .grid import Grid

SCALES = {"magnitude": torch.abs, "signed": lambda c: c}


def shadow_gradient(grad: torch.Tensor, indices: torch.Tensor, grid: Grid,
                    scale: str = "magnitude") -> torch.Tensor:
    """Gradient for the shadow weights from ``grad`` (w.r.t. the quantized weights) and the
    flattened cluster ``indices`` of the weights; ``scale`` is a key of :data:`SCALES`."""
    if scale not in SCALES:
        raise ValueError(f"unknown straight-through scale {scale!r} ({', '.join(SCALES)})")
    factor = SCALES[scale](grid.centroids(dtype=grad.dtype, device=grad.device))
    factor[grid.zero_index] = 1.0
    return grad * factor[indices].view_as(grad)
