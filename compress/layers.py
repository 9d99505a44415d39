"""Quantized layers: a convolution or linear layer with quantizers on its weight and its
input, which is where NNCF places them (weights and the activations that enter a
multiplication; Krishnamoorthi, "Quantizing deep convolutional networks for efficient
inference: A whitepaper", 2018, section 3).

:func:`wrap_layers` walks the module tree and replaces each targeted layer by a
:class:`QuantizedLayer`, which works for any model (no tracing needed). The quantizers are
any modules (fake quantizers, binarizers) made by the caller's factories.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["QuantizedLayer", "wrap_layers", "select_layers", "quantized_layers", "matches_scope",
           "layer_kind", "LAYER_TYPES"]


def _conv(layer, x, weight):
    return layer._conv_forward(x, weight, layer.bias)


def _linear(layer, x, weight):
    return F.linear(x, weight, layer.bias)


# layer type -> its forward with a given weight
LAYER_TYPES = {nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv, nn.Linear: _linear}


def layer_kind(module: nn.Module) -> type:
    """The module's class, seen through a parametrization (a sparsity mask on the weight
    makes ``Conv2d`` a subclass ``ParametrizedConv2d``)."""
    kind = type(module)
    return kind.__bases__[0] if parametrize.is_parametrized(module) else kind


class QuantizedLayer(nn.Module):
    """``layer`` computed with ``weight_quantizer(weight)`` on ``input_quantizer(x)``."""

    def __init__(self, layer: nn.Module, weight_quantizer: nn.Module, input_quantizer: nn.Module):
        super().__init__()
        self.layer, self.weight_quantizer, self.input_quantizer = layer, weight_quantizer, input_quantizer
        self._forward = LAYER_TYPES[layer_kind(layer)]

    def quantized_weight(self):
        return self.weight_quantizer(self.layer.weight)

    def forward(self, x):
        return self._forward(self.layer, self.input_quantizer(x), self.quantized_weight())


def matches_scope(name: str, scopes: Iterable[str]) -> bool:
    """NNCF-style scopes: a module name, or ``{re}<pattern>`` matched against the name."""
    for scope in scopes:
        if scope.startswith("{re}"):
            if re.fullmatch(scope[4:], name):
                return True
        elif name == scope:
            return True
    return False


def _scope_name(name: str, model: nn.Module) -> str:
    """The name a layer is addressed by in scopes: a layer already wrapped in a
    :class:`QuantizedLayer` (``<name>.layer``) keeps the name it had before."""
    parent, _, child = name.rpartition(".")
    if child == "layer" and isinstance(model.get_submodule(parent), QuantizedLayer):
        return parent
    return name


def select_layers(model: nn.Module, *, ignored_scopes=(), target_scopes=None) -> dict[str, nn.Module]:
    """The layers of ``LAYER_TYPES`` by scope name, without those in ``ignored_scopes``
    (only those in ``target_scopes`` if given). A scope that matches no layer is a
    ValueError (it is most likely a typo), and so is a selection without any layer."""
    candidates = {_scope_name(n, model): m for n, m in model.named_modules()
                  if layer_kind(m) in LAYER_TYPES}
    for label, scopes in (("ignored_scopes", ignored_scopes), ("target_scopes", target_scopes or ())):
        unknown = [s for s in scopes if not any(matches_scope(n, [s]) for n in candidates)]
        if unknown:
            raise ValueError(f"{label}: {', '.join(map(repr, unknown))} match no layer "
                             f"(layers: {', '.join(candidates)})")
    selected = {n: m for n, m in candidates.items() if not matches_scope(n, ignored_scopes)
                and (not target_scopes or matches_scope(n, target_scopes))}
    if not selected:
        raise ValueError("no layer to compress: the model has no convolution or linear layer "
                         "outside the ignored scopes")
    return selected


def wrap_layers(model: nn.Module, make_weight: Callable[[str, nn.Module], nn.Module],
                make_input: Callable[[str, nn.Module], nn.Module], *, ignored_scopes=(),
                target_scopes=None) -> list[str]:
    """Replace the layers :func:`select_layers` selects by :class:`QuantizedLayer` s, in
    place; ``make_weight`` and ``make_input`` build the quantizers from the layer's name and
    module. Returns the names."""
    selected = select_layers(model, ignored_scopes=ignored_scopes, target_scopes=target_scopes)
    for name, layer in selected.items():
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        if isinstance(getattr(holder, child), QuantizedLayer):
            raise ValueError(f"{name} is quantized twice: give each layer to one quantizing algorithm")
        setattr(holder, child, QuantizedLayer(layer, make_weight(name, layer), make_input(name, layer)))
    return list(selected)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    """The :class:`QuantizedLayer` s of a model by the name of the layer they wrap."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLayer)}
