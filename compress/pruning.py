"""Filter pruning, the ``filter_pruning`` algorithm of a config (NNCF 2.x), with the pruned
filters really removed: the result is a smaller dense network.

The prunable channels come in groups (:mod:`.channels`: the filters of layers whose outputs
are added share one group, so residual connections stay aligned). In each prunable group
the ``level`` share of channels of least importance is pruned (at most all but one), the
level following a schedule (:mod:`.schedules`; ``pruning_init`` to ``pruning_target`` over
``pruning_steps`` epochs after ``num_init_steps`` epochs without pruning). Importance of
filter ``F_i`` of a layer (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017;
He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
Acceleration", CVPR 2019):

- ``L1``: ``||F_i||_1``;  ``L2``: ``||F_i||_2``;
- ``geometric_median``: ``sum_j ||F_i - F_j||_2``, small for the filters nearest the
  geometric median of the layer's filters, which the others represent best.

A group's importance is the mean over its producers. With ``all_weights`` the pruned share
is taken over all groups together instead of in each.

While fine-tuning, a pruned channel is masked (parametrizations) in every producer's
weight and bias and every BatchNorm's scale and shift on it, so that it is exactly zero
everywhere and its parameters get no gradient; a mask may change at every epoch of the
schedule and is fixed after it. :meth:`FilterPruning.finalize` then slices the masked
channels out of producers, BatchNorms and consumers: the smaller network computes what the
masked one did. BatchNorm adaptation (``initializer.batchnorm_adaptation``) re-estimates the
statistics whenever the masks change.

A schedule that prunes everything at once (``baseline`` with ``num_init_steps`` 0, or
``pruning_steps`` 0) removes the filters immediately, so that a following algorithm
(quantization) works on the smaller network; any other schedule must be the config's only
algorithm.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .base import CompressionAlgorithm, Context
from .calibrate import adapt_batchnorm
from .channels import CONVS, ChannelGroup, channel_groups
from .config import ConfigError, adaptation_samples, check_keys, register_algorithm
from .layers import matches_scope, quantized_layers, select_layers
from .schedules import make_schedule

__all__ = ["FilterPruning", "CRITERIA", "ChannelMask", "prune_channels", "filter_importance"]

SECTION_KEYS = {"algorithm", "pruning_init", "params", "ignored_scopes", "target_scopes", "initializer"}
PARAM_KEYS = {"schedule", "pruning_target", "pruning_steps", "num_init_steps", "filter_importance",
              "all_weights", "prune_first_conv", "prune_downsample_convs", "prune_batch_norms",
              "zero_grad", "power", "concave"}


def _l1(filters: torch.Tensor) -> torch.Tensor:
    return filters.abs().sum(1)


def _l2(filters: torch.Tensor) -> torch.Tensor:
    return filters.norm(dim=1)


def _geometric_median(filters: torch.Tensor) -> torch.Tensor:
    return torch.cdist(filters.double(), filters.double()).sum(1).to(filters.dtype)


# filter_importance -> importance of each filter, from the filters as rows
CRITERIA = {"L1": _l1, "L2": _l2, "geometric_median": _geometric_median}


def filter_importance(weight: torch.Tensor, criterion: str) -> torch.Tensor:
    """Importance of each output filter (row) of a layer's weight."""
    return CRITERIA[criterion](weight.detach().reshape(weight.shape[0], -1).float())


class ChannelMask(nn.Module):
    """A tensor times a 0/1 mask over its first dimension (output channels)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x):
        return x * self.mask.reshape((-1,) + (1,) * (x.dim() - 1))


def _flag(params: dict, key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: params.{key} must be true or false, got {value!r}")
    return value


def _stored(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor stored for a (possibly masked) parameter."""
    if parametrize.is_parametrized(module, name):
        return getattr(module.parametrizations, name).original
    return getattr(module, name)


def _masked_tensors(model: nn.Module, group: ChannelGroup):
    """(module, parameter name) of every tensor a pruned channel of ``group`` zeroes."""
    for name in group.producers:
        layer = model.get_submodule(name)
        yield layer, "weight"
        if layer.bias is not None:
            yield layer, "bias"
    for name in group.norms:
        norm = model.get_submodule(name)
        if norm.affine:
            yield norm, "weight"
            yield norm, "bias"


@torch.no_grad()
def _slice(module: nn.Module, name: str, keep: torch.Tensor, dim: int = 0) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    sliced = tensor.index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, sliced)


def _input_features(keep: torch.Tensor, factor: int) -> torch.Tensor:
    return (keep[:, None] * factor + torch.arange(factor)).flatten()


@torch.no_grad()
def prune_channels(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Keep only channels ``keep`` (sorted indices) of ``group``: slice the producers'
    filters and biases, the BatchNorms and the consumers' inputs, in place."""
    for name in group.producers:
        layer = model.get_submodule(name)
        _slice(layer, "weight", keep)
        _slice(layer, "bias", keep)
        setattr(layer, "out_channels" if hasattr(layer, "out_channels") else "out_features", len(keep))
    for name in group.norms:
        norm = model.get_submodule(name)
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            _slice(norm, tensor, keep)
        norm.num_features = len(keep)
    for name, factor in group.consumers:
        layer = model.get_submodule(name)
        _slice(layer, "weight", _input_features(keep, factor), dim=1)
        if hasattr(layer, "in_channels"):
            layer.in_channels = len(keep)
        else:
            layer.in_features = len(keep) * factor


@register_algorithm("filter_pruning")
class FilterPruning(CompressionAlgorithm):
    """The section's keys: ``pruning_init`` (default 0), ``params`` (``schedule``
    ``exponential`` (default), ``polynomial`` or ``baseline``; ``pruning_target`` 0.5,
    ``pruning_steps`` 100, ``num_init_steps`` 0, ``filter_importance`` ``L2`` / ``L1`` /
    ``geometric_median``, ``all_weights`` false, ``prune_first_conv`` false,
    ``prune_downsample_convs`` false), ``ignored_scopes``, ``target_scopes`` and
    ``initializer.batchnorm_adaptation.num_bn_adaptation_samples`` (default 0)."""

    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        check_keys(section, SECTION_KEYS, where)
        params = check_keys(section.get("params", {}), PARAM_KEYS, f"{where}: params")
        for key in ("prune_batch_norms", "zero_grad"):
            if not _flag(params, key, True, where):
                raise ConfigError(f"{where}: params.{key} must be true: a pruned channel is zero "
                                  "in its BatchNorm too and gets no gradient")
        kind = params.get("schedule", "exponential")
        steps, start = params.get("pruning_steps", 100), params.get("num_init_steps", 0)
        self.schedule = make_schedule(
            kind, init=section.get("pruning_init", 0.0), target=params.get("pruning_target", 0.5),
            target_epoch=0 if kind == "baseline" else steps, start_epoch=start,
            power=params.get("power", 0.9), concave=params.get("concave", True),
            where=f"{where}: params")
        self.last_change = self.schedule.start_epoch + (0 if kind == "baseline" else self.schedule.target_epoch)
        self.criterion = params.get("filter_importance", "L2")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"{where}: params.filter_importance {self.criterion!r} is unknown "
                              f"(known: {', '.join(CRITERIA)})")
        self.all_weights = _flag(params, "all_weights", False, where)
        self.prune_first_conv = _flag(params, "prune_first_conv", False, where)
        self.prune_downsample_convs = _flag(params, "prune_downsample_convs", False, where)
        self.ignored, self.targets = section.get("ignored_scopes", []), section.get("target_scopes")
        init = check_keys(section.get("initializer", {}), {"batchnorm_adaptation"}, f"{where}: initializer")
        self.num_bn_adaptation_samples = adaptation_samples(init, 0, where)
        self.groups: list[ChannelGroup] = []
        self.masks: list[list[ChannelMask]] = []
        self.level = 0.0
        self.pruned = False
        self.report: list[dict] = []
        self._context: Context | None = None

    @property
    def one_shot(self) -> bool:
        """Whether the level is final from the first epoch on."""
        return self.last_change == 0

    def check_with(self, others: list[CompressionAlgorithm]) -> None:
        if others and not self.one_shot:
            raise ConfigError(f"{self.where}: a pruning schedule over epochs cannot be combined with "
                              f"{', '.join(a.name for a in others)}; prune at once (schedule "
                              "'baseline', num_init_steps 0) before quantizing")

    def _fix_excluded(self, model: nn.Module) -> None:
        first = next((n for n, m in model.named_modules() if isinstance(m, CONVS)), None)
        for group in self.groups:
            for name in group.producers:
                layer = model.get_submodule(name)
                if matches_scope(name, self.ignored) or (self.targets and not matches_scope(name, self.targets)):
                    group.fixed = group.fixed or f"{name} is not in the pruning scopes"
                elif name == first and not self.prune_first_conv:
                    group.fixed = group.fixed or "holds the first convolution (prune_first_conv)"
                elif any(s > 1 for s in getattr(layer, "stride", (1,))) and not self.prune_downsample_convs:
                    group.fixed = group.fixed or f"holds the downsampling {name} (prune_downsample_convs)"

    def apply(self, model: nn.Module, context: Context) -> None:
        if quantized_layers(model):
            raise ConfigError(f"{self.where}: filter_pruning must come before quantization or "
                              "binarization in the config")
        try:
            select_layers(model, ignored_scopes=self.ignored, target_scopes=self.targets)
        except ValueError as error:
            raise ConfigError(f"{self.where}: {error}") from None
        sample = next(iter(context.calibration))[0][:2].to(context.device)
        model.eval()
        self.groups = channel_groups(model, sample)
        self._fix_excluded(model)
        prunable = [g for g in self.groups if g.prunable]
        if not prunable:
            raise ConfigError(f"{self.where}: no prunable channel group: " +
                              "; ".join(f"{g.producers[0]}: {g.fixed}" for g in self.groups))
        self.masks = []
        for group in prunable:
            masks = []
            for module, name in _masked_tensors(model, group):
                mask = ChannelMask(group.channels).to(context.device)
                parametrize.register_parametrization(module, name, mask)
                masks.append(mask)
            self.masks.append(masks)
        self._context = context
        self.set_level(model, self.schedule.level(0))
        if self.one_shot:
            self.finalize(model)

    def group_importance(self, model: nn.Module, group: ChannelGroup) -> torch.Tensor:
        scores = [filter_importance(_stored(model.get_submodule(n), "weight"), self.criterion)
                  for n in group.producers]
        return torch.stack(scores).mean(0)

    @torch.no_grad()
    def set_level(self, model: nn.Module, level: float) -> None:
        """Mask the ``level`` share of each prunable group's channels of least importance
        (over all groups with ``all_weights``), then adapt the BatchNorms if asked."""
        self.level = level
        prunable = [g for g in self.groups if g.prunable]
        scores = [self.group_importance(model, g) for g in prunable]
        if self.all_weights:
            flat = torch.cat(scores)
            count = int(level * flat.numel())
            order = torch.argsort(flat, stable=True)
            pruned = torch.zeros(flat.numel(), dtype=torch.bool)
            pruned[order[:count]] = True
            chunks = list(pruned.split([len(s) for s in scores]))
        else:
            chunks = []
            for s in scores:
                pruned = torch.zeros(len(s), dtype=torch.bool)
                pruned[torch.argsort(s, stable=True)[:int(level * len(s))]] = True
                chunks.append(pruned)
        for s, pruned, masks in zip(scores, chunks, self.masks):
            if pruned.all():                       # keep the most important channel
                pruned[torch.argmax(s)] = False
            for mask in masks:
                mask.mask.copy_((~pruned).to(mask.mask.dtype))
        if self.num_bn_adaptation_samples and level > 0:
            c = self._context
            adapt_batchnorm(model, c.calibration, c.device, self.num_bn_adaptation_samples, c.verbose)

    def epoch_start(self, model: nn.Module, epoch: int, optimizer) -> None:
        if not self.pruned and epoch <= self.last_change and self.schedule.level(epoch) != self.level:
            self.set_level(model, self.schedule.level(epoch))

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> None:
        """Remove the masked channels: slice producers, BatchNorms and consumers."""
        if self.pruned:
            return
        prunable = [g for g in self.groups if g.prunable]
        kept = [torch.nonzero(masks[0].mask.cpu()).flatten() for masks in self.masks]
        for group in prunable:          # all masks first: a consumer may be another group's producer
            for module, name in _masked_tensors(model, group):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        self.report = []
        for group, keep in zip(prunable, kept):
            prune_channels(model, group, keep)
            self.report.append({"layer": "+".join(group.producers), "filters": group.channels,
                                "kept": len(keep)})
        self.pruned = True

    def layer_report(self, model: nn.Module) -> list[dict]:
        return [{"layer": r["layer"], "filters": r["filters"], "kept_filters": r["kept"],
                 "pruned": 1 - r["kept"] / r["filters"]} for r in self.report]
