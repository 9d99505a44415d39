"""BatchNorm folding before quantization: a convolution or linear layer followed by a
BatchNorm in inference mode computes ``gamma * (W x + b - mean) / sqrt(var + eps) + beta``,
which is the layer with weights ``W * g`` and bias ``(b - mean) * g + beta``, where
``g = gamma / sqrt(var + eps)`` per output channel (Jacob et al., CVPR 2018, section 3.2).

Quantizing the folded weights is what an integer engine runs and what the ONNX export holds
(exporters fold BatchNorm too). The pairs are found by tracing the model with ``torch.fx``
(a layer whose only user is a BatchNorm); a model that does not trace falls back to the
pairing of NNC's encoder (:func:`nnc_core.nn.batchnorm_blocks`, parameter order).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from nnc_core.nn import batchnorm_blocks

__all__ = ["fold_batchnorm", "batchnorm_pairs", "FOLDABLE"]

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
            continue
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), FOLDABLE) and len(source.users) == 1):
            pairs.append((source.target, node.target))
    return pairs


def _encoder_pairs(model: nn.Module) -> list[tuple[str, str]]:
    return [(b.weight.rsplit(".", 1)[0], b.gamma.rsplit(".", 1)[0]) for b in batchnorm_blocks(model)]


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` module names of the foldable pairs."""
    try:
        return _traced_pairs(model)
    except Exception:          # fx cannot trace data-dependent control flow; fall back
        return _encoder_pairs(model)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm into its layer, in place (the BatchNorm becomes an
    ``nn.Identity``; a layer without bias gets one); returns the folded pairs."""
    pairs = batchnorm_pairs(model)
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        stored = layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") \
            else layer.weight         # under a sparsity mask, fold into the masked tensor
        stored.mul_(gain.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        layer.bias = nn.Parameter((bias - bn.running_mean) * gain + bn.bias)
        _replace(model, bn_name, nn.Identity())
    return pairs
