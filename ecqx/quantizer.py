"""Quantization state of a network under ECQ/ECQx training (Becking et al. 2022, Sec. 3).

The network's weight tensors (two or more dimensions; ResNet shortcut convolutions are left
in full precision) always hold centroid values; :class:`ModelQuantizer` keeps a
full-precision shadow copy of each, the fixed grids, and the current assignment. After each
optimizer step on the shadows it re-assigns every layer (ECQ, or ECQx when relevances are
given) and writes the centroids back into the network.

Options of the assignment: ``lambda_max`` (a key of :data:`ecqx.assign.LAMBDA_MAX`),
``beta_max`` (the cap of ECQx's exponent), ``relevance_on`` (a key of :data:`RELEVANCE_ON`:
which weights' zero cost the relevance factor scales) and ``ste`` (a key of
:data:`ecqx.ste.SCALES`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .assign import (LAMBDA_MAX, assign, cluster_probabilities, information_content, layer_lambda,
                     relevance_assign, sparsity)
from .grid import Grid, make_grid
from .ste import SCALES, shadow_gradient

EXCLUDED = ("downsample", "shortcut", "aux_classifier")


def quantizable(model: torch.nn.Module) -> list[str]:
    """Names of the parameters ECQ quantizes: weights of two or more dimensions, except
    those of shortcut branches."""
    return [name for name, p in model.named_parameters()
            if p.dim() > 1 and not any(tag in name for tag in EXCLUDED)]


@dataclass
class LayerState:
    grid: Grid
    shadow: torch.Tensor          # full-precision weights, trained
    indices: torch.Tensor         # cluster of every weight (flattened)
    beta: float = 0.0


# which weights the relevance factor applies to (None: all); from the current assignment
RELEVANCE_ON = {"all": lambda state: None,
                "nonzero": lambda state: state.indices != state.grid.zero_index}


def _choice(registry: dict, value: str, what: str):
    if value not in registry:
        raise ValueError(f"unknown {what} {value!r} ({', '.join(registry)})")
    return registry[value]


class ModelQuantizer:
    """ECQ/ECQx quantization of ``model``'s weights to ``bits`` bits with strength ``Lambda``."""

    def __init__(self, model: torch.nn.Module, bits: int = 4, Lambda: float = 0.05,
                 p: float = 0.1, names: list[str] | None = None, *, lambda_max: str = "ours",
                 beta_max: float = math.inf, relevance_on: str = "all", ste: str = "magnitude"):
        self.model, self.bits, self.Lambda, self.p = model, bits, Lambda, p
        self.lambda_max = _choice(LAMBDA_MAX, lambda_max, "lambda_max form")
        self.factor_on = _choice(RELEVANCE_ON, relevance_on, "relevance_on")
        _choice(SCALES, ste, "straight-through scale")
        if not beta_max > 0:
            raise ValueError(f"beta_max must be positive, got {beta_max}")
        self.beta_max, self.ste = beta_max, ste
        params = dict(model.named_parameters())
        self.names = names if names is not None else quantizable(model)
        self.layers = {}
        for name in self.names:
            w = params[name].detach()
            self.layers[name] = LayerState(make_grid(w, bits), w.clone(), torch.empty(0, dtype=torch.long))
        self.largest = max((params[n].numel() for n in self.names), default=1)
        self.quantize()

    def shadow_parameters(self) -> list[torch.Tensor]:
        """The full-precision shadows, to be handed to an optimizer."""
        for state in self.layers.values():
            state.shadow.requires_grad_(True)
        return [state.shadow for state in self.layers.values()]

    @torch.no_grad()
    def transfer_gradients(self) -> None:
        """Straight-through: the quantized weights' gradients, centroid-scaled, to the shadows."""
        params = dict(self.model.named_parameters())
        for name, state in self.layers.items():
            grad = params[name].grad
            if grad is not None:
                state.shadow.grad = shadow_gradient(grad, state.indices, state.grid, self.ste)

    @torch.no_grad()
    def quantize(self, relevances: dict[str, torch.Tensor] | None = None) -> None:
        """Assign every layer's shadow weights (ECQx where a relevance is given) and write the
        centroids into the model."""
        params = dict(self.model.named_parameters())
        for name, state in self.layers.items():
            w = state.shadow.detach()
            info = information_content(cluster_probabilities(w, state.grid))
            lam = layer_lambda(self.Lambda, w.numel(), self.largest, self.lambda_max(w, state.grid, info))
            relevance = relevances.get(name) if relevances else None
            if relevance is None:
                state.indices = assign(w, state.grid, lam, info)
            else:
                state.indices, state.beta, _ = relevance_assign(
                    w, state.grid, lam, info, relevance, self.p, beta_max=self.beta_max,
                    factor_on=self.factor_on(state))
            centroids = state.grid.centroids(dtype=w.dtype, device=w.device)
            params[name].copy_(centroids[state.indices].view_as(w))

    def levels(self) -> dict[str, torch.Tensor]:
        """Integer levels (centroid = level * step) of every quantized weight."""
        return {name: (s.indices + s.grid.low).view(s.shadow.shape).to(torch.int32)
                for name, s in self.layers.items()}

    def steps(self) -> dict[str, float]:
        return {name: s.grid.step for name, s in self.layers.items()}

    def sparsity(self) -> float:
        """Share of zeros over all quantized weights."""
        total = sum(s.indices.numel() for s in self.layers.values())
        zeros = sum(sparsity(s.indices, s.grid) * s.indices.numel() for s in self.layers.values())
        return zeros / max(total, 1)
