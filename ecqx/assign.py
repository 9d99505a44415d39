"""Entropy-constrained assignment of weights to centroids (ECQ) and its relevance-adjusted
form (ECQx); Becking et al. 2022, Sec. 3.

ECQ assigns weight ``w`` of layer ``l`` to the centroid of least cost

    A(w) = argmin_c  (w - c)^2 + lambda_l * I_c,     I_c = -log2 P_c,

where ``P_c`` is the share of the layer's weights nearest to ``c``. The zero cluster's
share is raised to at least 1/2 (the others shrink in proportion), so zero always carries
the least information and the entropy term drives weights to zero; a cluster nobody is
nearest to has ``I_c = inf`` and receives nothing. ``lambda_l`` is ``--Lambda`` times the
layer's ``lambda_max`` (the lambda at which its outermost weight would move to zero) times
its relative size ``(N_l / N_max + 0.05) / 1.05``, so larger layers are pushed harder.

ECQx multiplies the zero cluster's cost by ``rho * R^beta``, with ``R`` the weight's LRP
relevance normalised to [0, 1] in its layer: relevant weights find zero expensive and stay
(or regrow), irrelevant ones are pruned. ``beta`` is searched so that the layer's sparsity
stays within ``p`` below the plain ECQ sparsity.

Two choices of the official release (d-becking/ECQx) are offered beside ours: its form of
``lambda_max`` (:data:`LAMBDA_MAX`) and a cap on ``beta`` (``beta_max``, 1 there). The factor
may also be restricted to the weights that are non-zero now (``factor_on``): relevances
computed on the quantized network give every zero weight relevance 0, which shrinks its zero
cost so that a pruned weight hardly ever regrows; restricted, a zero weight regrows exactly
when ECQ's would, and the relevance only decides which non-zero weights are pruned.
"""
from __future__ import annotations

import math

import torch

from .grid import Grid

ZERO_SHARE = 0.5          # the least share of the zero cluster
SIZE_SUSTAIN = 0.05       # keeps small layers' lambda above zero
RHO = 2.0                 # zero-cost factor at normalised relevance 1 (beta = 1)


def nearest(weight: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Indices (into ``grid.levels``) of the nearest centroids."""
    k = torch.round(weight.detach().flatten().float() / grid.step)
    return (k.clamp(grid.low, grid.high) - grid.low).long()


def cluster_probabilities(weight: torch.Tensor, grid: Grid, zero_share: float = ZERO_SHARE) -> torch.Tensor:
    """``P_c`` of every centroid from the nearest-centroid assignment, with the zero
    cluster raised to at least ``zero_share``."""
    counts = torch.bincount(nearest(weight, grid), minlength=grid.size).double()
    p = counts / counts.sum()
    z = grid.zero_index
    if p[z] < zero_share:
        others = 1.0 - p[z]
        p = p * ((1.0 - zero_share) / others)
        p[z] = zero_share
    return p


def information_content(p: torch.Tensor) -> torch.Tensor:
    """``-log2 P_c`` in bits; infinite for empty clusters."""
    with torch.no_grad():
        return torch.where(p > 0, -torch.log2(p.clamp_min(1e-300)), torch.full_like(p, math.inf))


def _extreme_lambda(weight: torch.Tensor, grid: Grid, info: torch.Tensor, gain_of) -> float:
    """The larger over the two sides of ``gain_of(w, c) / (I_c - I_0)`` for the extreme
    weight ``w`` of the side and its nearest centroid ``c`` (0 if neither side has a
    non-zero centroid in use)."""
    w = weight.detach().flatten().double()
    centroids = grid.centroids(torch.float64)
    z, best = grid.zero_index, 0.0
    for extreme in (w.max(), w.min()):
        c = int(nearest(extreme.reshape(1), grid)[0])
        gain = info[c] - info[z]
        if c != z and torch.isfinite(gain) and gain > 0:
            best = max(best, float(gain_of(extreme, centroids[c]) / gain))
    return best


def lambda_max(weight: torch.Tensor, grid: Grid, info: torch.Tensor) -> float:
    """The lambda at which the outermost weights would move to zero: for the extreme weight
    ``w`` of each side and its nearest centroid ``c``, ``(w^2 - (w - c)^2) / (I_c - I_0)``;
    the larger of the two sides (0 if neither side has a non-zero centroid in use)."""
    return _extreme_lambda(weight, grid, info, lambda w, c: w ** 2 - (w - c) ** 2)


def lambda_max_official(weight: torch.Tensor, grid: Grid, info: torch.Tensor) -> float:
    """``lambda_max`` as the official release computes it: ``((c - w)^2 - (0 - w))^2 / (I_c - I_0)``
    for the extreme weight ``w`` of each side and its nearest centroid ``c`` (the larger side).
    Close to :func:`lambda_max` while ``w`` is small and near ``c``, it is not the lambda at
    which the extreme weight's cost on ``c`` equals its cost on zero."""
    return _extreme_lambda(weight, grid, info, lambda w, c: ((c - w) ** 2 + w) ** 2)


LAMBDA_MAX = {"ours": lambda_max, "official": lambda_max_official}


def layer_lambda(Lambda: float, size: int, largest: int, lam_max: float,
                 sustain: float = SIZE_SUSTAIN) -> float:
    """``lambda_l = Lambda * lambda_max * (N_l / N_max + sustain) / (1 + sustain)``."""
    return Lambda * lam_max * (size / largest + sustain) / (1.0 + sustain)


def assignment_costs(weight: torch.Tensor, grid: Grid, lam: float, info: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` costs ``(w - c)^2 + lam * I_c`` of every weight and centroid."""
    w = weight.detach().flatten().float()[:, None]
    c = grid.centroids(device=w.device)[None, :]
    info = info.to(device=w.device, dtype=torch.float32)
    # empty clusters are closed whatever lambda is (0 * inf would be undefined)
    rate = torch.where(torch.isinf(info), info, lam * info)
    return (w - c) ** 2 + rate[None, :]


def assign(weight: torch.Tensor, grid: Grid, lam: float, info: torch.Tensor,
           zero_factor: torch.Tensor | None = None) -> torch.Tensor:
    """Cluster index of every weight (flattened); ``zero_factor`` scales each weight's cost
    of the zero cluster (ECQx)."""
    costs = assignment_costs(weight, grid, lam, info)
    if zero_factor is not None:
        costs[:, grid.zero_index] *= zero_factor.flatten().to(costs)
    return costs.argmin(dim=1)


def sparsity(indices: torch.Tensor, grid: Grid) -> float:
    return float((indices == grid.zero_index).double().mean()) if indices.numel() else 0.0


def normalised_relevance(relevance: torch.Tensor) -> torch.Tensor:
    """``|R| / max |R|`` in [0, 1]."""
    r = relevance.detach().abs().flatten().float()
    top = r.max()
    return r / top if top > 0 else r


def zero_factor(relevance: torch.Tensor, beta: float, rho: float = RHO,
                factor_on: torch.Tensor | None = None) -> torch.Tensor:
    """ECQx's factor ``rho * R^beta`` on each weight's zero cost (``R`` normalised); 1, the ECQ
    cost, where ``factor_on`` (flattened, boolean) is False."""
    factor = rho * relevance.clamp_min(1e-12) ** beta
    if factor_on is None:
        return factor
    return torch.where(factor_on.flatten().to(factor.device), factor, torch.ones_like(factor))


def relevance_assign(weight: torch.Tensor, grid: Grid, lam: float, info: torch.Tensor,
                     relevance: torch.Tensor, p: float, rho: float = RHO,
                     max_iterations: int = 50, beta_max: float = math.inf,
                     factor_on: torch.Tensor | None = None) -> tuple[torch.Tensor, float, bool]:
    """ECQx assignment: ``(indices, beta, converged)``.

    ``beta`` starts where the mean relevance gets the factor ``rho / 2`` and moves (by 10 %,
    later 50 % and 75 % steps) until the layer's sparsity lies in ``[s - p, s]``, ``s`` being
    the plain ECQ sparsity of the same weights: a larger ``beta`` shrinks ``R^beta`` and makes
    zero cheaper. ``beta`` never exceeds ``beta_max``; ``factor_on`` limits the factor to
    some weights (:func:`zero_factor`). Without any relevance the ECQ assignment is returned.
    """
    plain = assign(weight, grid, lam, info)
    r = normalised_relevance(relevance)
    mean = float(r.mean()) if r.numel() else 0.0
    if not 0.0 < mean < 1.0:
        return plain, 0.0, True
    target = sparsity(plain, grid)
    beta = min(math.log(0.5) / math.log(mean), beta_max)
    indices = plain
    for iteration in range(max_iterations):
        indices = assign(weight, grid, lam, info, zero_factor(r, beta, rho, factor_on))
        s = sparsity(indices, grid)
        if target - p <= s <= target:
            return indices, beta, True
        step = 0.1 if iteration < 20 else 0.5 if iteration < 40 else 0.75
        moved = min(beta * (1.0 + step * (1.0 if s < target - p else -1.0)), beta_max)
        if moved == beta:               # pinned at the cap: every further try is this one
            break
        beta = moved
    return indices, beta, False
