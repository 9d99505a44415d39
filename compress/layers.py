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

__all__ = ["QuantizedLayer", "wrap_layers", "quantized_layers", "matches_scope", "LAYER_TYPES"]


def _conv(layer, x, weight):
    return layer._conv_forward(x, weight, layer.bias)


def _linear(layer, x, weight):
    return F.linear(x, weight, layer.bias)


# layer type -> its forward with a given weight
LAYER_TYPES = {nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv, nn.Linear: _linear}


class QuantizedLayer(nn.Module):
    """``layer`` computed with ``weight_quantizer(weight)`` on ``input_quantizer(x)``."""

    def __init__(self, layer: nn.Module, weight_quantizer: nn.Module, input_quantizer: nn.Module):
        super().__init__()
        self.layer, self.weight_quantizer, self.input_quantizer = layer, weight_quantizer, input_quantizer
        self._forward = LAYER_TYPES[type(layer)]

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


def wrap_layers(model: nn.Module, make_weight: Callable[[str, nn.Module], nn.Module],
                make_input: Callable[[str, nn.Module], nn.Module], *, ignored_scopes=(),
                target_scopes=None) -> list[str]:
    """Replace the layers of ``LAYER_TYPES`` (not in ``ignored_scopes``; only those in
    ``target_scopes`` if given) by :class:`QuantizedLayer` s, in place; ``make_weight`` and
    ``make_input`` build the quantizers from the layer's name and module. Returns the names.
    A scope that matches no layer is an error (it is most likely a typo)."""
    candidates = [(n, m) for n, m in model.named_modules() if type(m) in LAYER_TYPES]
    names = [n for n, _ in candidates]
    for label, scopes in (("ignored_scopes", ignored_scopes), ("target_scopes", target_scopes or ())):
        unknown = [s for s in scopes if not any(matches_scope(n, [s]) for n in names)]
        if unknown:
            raise ValueError(f"{label}: {', '.join(map(repr, unknown))} match no layer "
                             f"(layers: {', '.join(names)})")
    wrapped = []
    for name, layer in candidates:
        if matches_scope(name, ignored_scopes) or (target_scopes and not matches_scope(name, target_scopes)):
            continue
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, QuantizedLayer(layer, make_weight(name, layer), make_input(name, layer)))
        wrapped.append(name)
    if not wrapped:
        raise ValueError("no layer to quantize: the model has no convolution or linear layer "
                         "outside the ignored scopes")
    return wrapped


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    """The :class:`QuantizedLayer` s of a model by the name of the layer they wrap."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLayer)}
