"""Which output channels of a network can be removed together: the channel groups of filter
pruning, found by tracing the model with ``torch.fx`` and following every layer's output
channels to where they are consumed.

A group is a set of channels that must stay aligned: the filters of its *producers* (the
convolution or linear layers that make them; layers whose outputs are added or multiplied
together share one group, which is how residual connections are handled), the BatchNorms
on them (*norms*) and the layers that take them as inputs (*consumers*, with the number of
input features per channel when a flatten lies between). Removing channel ``c`` of a group
removes filter ``c`` of every producer, channel ``c`` of every norm and input channel (or
input features) ``c`` of every consumer.

A group cannot be pruned (``fixed``, with the reason) when its channels reach the model's
output, mix with the model's input, pass an operation whose channel layout is not followed
here (a concatenation, a channel padding, a grouped convolution, ...), or are made by a
layer the caller excludes.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .fold import BATCHNORMS
from .layers import layer_kind

__all__ = ["ChannelGroup", "channel_groups"]

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# modules and functions that keep every channel where it is
PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
                nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool2d)
PASS_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.dropout, torch.relu,
                  torch.sigmoid, torch.tanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                  F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d}
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float"}
JOIN = {operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub, operator.iadd}
FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass
class ChannelGroup:
    channels: int
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    fixed: str = ""                 # why it cannot be pruned ("" if it can)

    @property
    def prunable(self) -> bool:
        return not self.fixed


class _Tracer(fx.Tracer):
    """Layers and BatchNorms stay whole (also when wrapped or parametrized)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, CONVS + (nn.Linear,) + BATCHNORMS) or super().is_leaf_module(m, qualname)


@dataclass
class _Channels:
    """Where a traced value's channels come from: a group id, the axis they lie on and the
    features per channel (after a flatten)."""
    group: int
    axis: int
    factor: int = 1


class _Groups:
    """Union-find over channel groups."""

    def __init__(self):
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, channels: int, fixed: str = "") -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(channels, fixed=fixed))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def get(self, i: int) -> ChannelGroup:
        return self.groups[self.find(i)]

    def fix(self, i: int, reason: str) -> None:
        group = self.get(i)
        group.fixed = group.fixed or reason

    def union(self, i: int, j: int) -> int:
        i, j = self.find(i), self.find(j)
        if i == j:
            return i
        a, b = self.groups[i], self.groups[j]
        a.producers += b.producers
        a.norms += b.norms
        a.consumers += b.consumers
        a.fixed = a.fixed or b.fixed
        if a.channels != b.channels:
            a.fixed = a.fixed or "channels of different counts are joined"
        self.parent[j] = i
        return i


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def channel_groups(model: nn.Module, sample: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of ``model`` (traced with ``sample`` as input for the shapes)."""
    graph = _Tracer().trace(model)
    traced = fx.GraphModule(model, graph)
    ShapeProp(traced).propagate(sample)
    modules = dict(model.named_modules())
    groups = _Groups()
    seen: dict[fx.Node, _Channels] = {}

    def opaque(node, reason):
        """Every tracked input fixed; the output gets a fixed group of its own."""
        for arg in node.all_input_nodes:
            if arg in seen:
                groups.fix(seen[arg].group, reason)
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            seen[node] = _Channels(groups.new(shape[1], fixed=reason), 1)

    for node in graph.nodes:
        if node.op == "placeholder":
            shape = _shape(node)
            if shape is not None and len(shape) >= 2:
                seen[node] = _Channels(groups.new(shape[1], fixed="mixes with the model's input"), 1)
        elif node.op == "output":
            for arg in node.all_input_nodes:
                if arg in seen:
                    groups.fix(seen[arg].group, "reaches the model's output")
        elif node.op == "call_module":
            _module(node, modules[node.target], seen, groups, opaque)
        elif node.op == "call_function" and node.target in JOIN or \
                node.op == "call_method" and node.target in ("add", "mul", "sub", "add_", "mul_"):
            _join(node, seen, groups, opaque)
        elif node.op == "call_function" and node.target in PASS_FUNCTIONS or \
                node.op == "call_method" and node.target in PASS_METHODS:
            _pass(node, seen, opaque)
        elif node.op == "call_function" and node.target is operator.getitem:
            _getitem(node, seen, opaque)
        elif node.op == "call_function" and node.target is torch.flatten or \
                node.op == "call_method" and node.target in FLATTEN_METHODS:
            _flatten(node, seen, opaque)
        elif node.op == "get_attr":
            continue
        else:
            opaque(node, f"passes {getattr(node.target, '__name__', node.target)}, whose "
                         "channel layout is not followed")
    roots = sorted({groups.find(i) for i in range(len(groups.parent))})
    return [groups.groups[r] for r in roots if groups.groups[r].producers]


def _input(node, seen):
    arg = node.args[0] if node.args else None
    return seen.get(arg) if isinstance(arg, fx.Node) else None


def _module(node, module, seen, groups, opaque) -> None:
    kind = layer_kind(module)
    source = _input(node, seen)
    if issubclass(kind, CONVS + (nn.Linear,)):
        axis_ok = source is not None and (source.axis == 1 if kind in CONVS else
                                          source.axis == len(_shape(node.args[0])) - 1)
        grouped = kind in CONVS and module.groups != 1
        if source is not None:
            if grouped or not axis_ok or (kind in CONVS and source.factor != 1):
                groups.fix(source.group, f"feeds {node.target} in a way not followed (grouped "
                                         "or on another axis)")
            else:
                groups.get(source.group).consumers.append((node.target, source.factor))
        shape = _shape(node)
        out = groups.new(shape[1] if kind in CONVS else shape[-1],
                         fixed=f"made by the grouped convolution {node.target}" if grouped else "")
        groups.get(out).producers.append(node.target)
        seen[node] = _Channels(out, 1 if kind in CONVS else len(shape) - 1)
    elif isinstance(module, BATCHNORMS):
        if source is None or source.axis != 1 or source.factor != 1:
            opaque(node, f"the BatchNorm {node.target} is not on a layer's channels")
            return
        groups.get(source.group).norms.append(node.target)
        seen[node] = source
    elif isinstance(module, PASS_MODULES):
        _pass(node, seen, opaque)
    else:
        opaque(node, f"passes the module {node.target} ({type(module).__name__}), whose "
                     "channel layout is not followed")


def _pass(node, seen, opaque) -> None:
    source = _input(node, seen)
    if source is None:
        return
    before, after = _shape(node.args[0]), _shape(node)
    if after is not None and len(after) == len(before) and after[source.axis] == before[source.axis]:
        seen[node] = source
    else:
        opaque(node, f"{node.target} changes the channel count")


def _join(node, seen, groups, opaque) -> None:
    tracked = [seen[a] for a in node.all_input_nodes if a in seen]
    shape = _shape(node)
    if not tracked:
        return
    first = tracked[0]
    if any((t.axis, t.factor) != (first.axis, first.factor) for t in tracked):
        opaque(node, "joins channels on different axes")
        return
    for other in tracked[1:]:
        groups.union(first.group, other.group)
    broadcast = [a for a in node.all_input_nodes if a in seen and _shape(a) is not None
                 and _shape(a)[first.axis] != shape[first.axis]]
    if broadcast:
        opaque(node, "broadcasts a channel dimension")
        return
    seen[node] = _Channels(groups.find(first.group), first.axis, first.factor)


def _getitem(node, seen, opaque) -> None:
    source = _input(node, seen)
    if source is None:
        return
    index = node.args[1]
    index = index if isinstance(index, tuple) else (index,)
    full = slice(None)
    if len(index) > source.axis and all(isinstance(i, slice) and i == full for i in index[:source.axis + 1]) \
            or index == (Ellipsis,):
        seen[node] = source
    else:
        opaque(node, "indexes the channel dimension")


def _flatten(node, seen, opaque) -> None:
    source = _input(node, seen)
    if source is None:
        return
    before, after = _shape(node.args[0]), _shape(node)
    if before is not None and after is not None and source.axis == 1 and len(after) == 2 \
            and after[0] == before[0] and after[1] == math.prod(before[1:]):
        seen[node] = _Channels(source.group, 1, source.factor * math.prod(before[2:]))
    elif before is not None and before == after:
        seen[node] = source
    else:
        opaque(node, "reshapes the channel dimension")
