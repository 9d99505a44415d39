"""The per-layer centroid grid of ECQ/ECQx.

A layer quantized to ``b`` bits gets ``2^b`` uniformly spaced centroids ``c_k = k * step``
that include zero. The step comes from the 99.9th percentile ``q`` of ``|w|`` (outliers do
not stretch the grid): for a signed layer ``step = q / (2^(b-1) - 1)`` and the levels run
over ``-2^(b-1) .. 2^(b-1) - 1`` or its mirror image, the extra level going to the side
where the weights reach further; a layer without negative weights uses the unsigned grid
``0 .. 2^b - 1`` with ``step = q / (2^b - 1)``. The grid is computed once from the
pretrained weights and stays fixed during training; only the assignment changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """Centroids ``k * step`` for the integer levels ``k = low .. high`` (``low <= 0 <= high``)."""
    step: float
    low: int
    high: int

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    @property
    def zero_index(self) -> int:
        """Index of the zero centroid in :attr:`levels`."""
        return -self.low

    @property
    def levels(self) -> torch.Tensor:
        return torch.arange(self.low, self.high + 1)

    def centroids(self, dtype=torch.float32, device=None) -> torch.Tensor:
        return self.levels.to(device=device, dtype=dtype) * self.step


def _positive_side_wins(w: torch.Tensor) -> bool:
    """Majority vote of five statistics of the positive weights against the magnitudes of
    the negative ones: extreme value, mean, count, sum and spread."""
    pos, neg = w[w > 0], -w[w < 0]
    if neg.numel() == 0 or pos.numel() == 0:
        return pos.numel() >= neg.numel()
    votes = [pos.max() > neg.max(), pos.mean() > neg.mean(), pos.numel() > neg.numel(),
             pos.sum() > neg.sum(),
             (pos.std() if pos.numel() > 1 else pos.new_zeros(())) >
             (neg.std() if neg.numel() > 1 else neg.new_zeros(()))]
    return sum(bool(v) for v in votes) >= 3


def make_grid(weight: torch.Tensor, bits: int, percentile: float = 99.9) -> Grid:
    """The grid of ``2^bits`` centroids for ``weight`` (see the module docstring)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    w = weight.detach().float().flatten()
    if w.numel() == 0:
        raise ValueError("cannot make a grid for an empty tensor")
    magnitude = w.abs()
    reach = torch.quantile(magnitude, percentile / 100.0).item() if w.numel() > 1 else magnitude.item()
    if reach == 0.0:
        reach = magnitude.max().item() or 1.0
    if bool((w >= 0).all()):                       # unsigned grid
        top = (1 << bits) - 1
        return Grid(reach / top, 0, top)
    if bits == 1:                                  # {0, +-step}: one side only
        return Grid(reach, 0, 1) if _positive_side_wins(w) else Grid(reach, -1, 0)
    half = 1 << (bits - 1)
    step = reach / (half - 1)
    return Grid(step, -(half - 1), half) if _positive_side_wins(w) else Grid(step, -half, half - 1)
