"""Unstructured sparsity, the ``magnitude_sparsity`` and ``rb_sparsity`` algorithms of a config
(NNCF 2.x): a 0/1 mask multiplies the weight of every convolution and linear layer
(a ``torch.nn.utils.parametrize`` parametrization, so that quantizers, BatchNorm folding and
the optimizer see the masked weight) while fine-tuning; :meth:`finalize` multiplies it in,
leaving plain weights with exact zeros, which NNC codes almost for free.

- **Magnitude** (Han et al., "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015): at the start of every epoch the weights of least importance are
  masked, as many as the schedule's level (:mod:`.schedules`) asks; importance is ``|w|``
  (``abs``) or ``|w| / ||W||_2`` (``normed_abs``, comparable across layers), ranked over all
  layers together (``global``) or in each layer (``local``). The masked weights keep their
  values and may come back at a later epoch; from ``sparsity_freeze_epoch`` the mask stays.
- **RB, regularisation-based** (an L0 relaxation: Louizos et al., "Learning Sparse Neural
  Networks through L0 Regularization", ICLR 2018): every weight has a learnable logit ``s``
  of its keep probability ``p = sigmoid(s)``. In training the mask is sampled once per
  forward, ``eps = [sigmoid(s + logit(u)) > 1/2]``, ``u ~ U(0, 1)`` (so ``P(eps = 1) = p``),
  its gradient the sigmoid's (a straight-through threshold); in evaluation ``eps = [s > 0]``.
  The loss term ``((d - (1 - level)) / 0.05)^2`` pulls the share ``d`` of kept weights to
  the scheduled one; 0.05 is the density error that costs as much as a unit of task loss.
  ``d`` is the share of the evaluation mask, ``mean [s > 0]``, with the gradient of
  ``mean sigmoid(s)`` (straight through): NNCF's expected share of sampled masks,
  ``mean p``, is met by probabilities that have not yet separated (all near the target
  density), and the final mask ``[s > 0]`` then prunes far more than asked (measured
  here: 91 % zeros for a 61 % target in 1,200 steps). From ``sparsity_freeze_epoch`` the
  mask is fixed at ``[s > 0]`` and the term is off.

BatchNorm adaptation (``initializer.batchnorm_adaptation``) re-estimates the statistics after
the initial masks are set, for the network as it will run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .base import CompressionAlgorithm, Context
from .calibrate import adapt_batchnorm
from .config import ConfigError, adaptation_samples, check_keys, integer_option, register_algorithm
from .fold import BATCHNORMS
from .layers import select_layers
from .schedules import make_schedule

__all__ = ["WeightMask", "RBMask", "MagnitudeSparsity", "RBSparsity", "IMPORTANCES",
           "magnitude_masks"]

SECTION_KEYS = {"algorithm", "sparsity_init", "params", "ignored_scopes", "target_scopes",
                "initializer"}
PARAM_KEYS = {"schedule", "sparsity_target", "sparsity_target_epoch", "sparsity_freeze_epoch",
              "multistep_steps", "multistep_sparsity_levels", "power", "concave",
              "update_per_optimizer_step"}
DENSITY_TOLERANCE = 0.05        # RB: the density error that costs one unit of loss


class WeightMask(nn.Module):
    """``w * mask``; the mask is a 0/1 buffer that the algorithm sets."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight))

    def forward(self, w):
        return w * self.mask


class RBMask(nn.Module):
    """``w * eps`` with ``eps`` sampled from learnable keep logits in training and
    ``[logits > 0]`` in evaluation or once ``frozen``. The parameter is the logit divided
    by ``speed``: under Adam, whose steps have about the learning rate's size whatever the
    gradient, the logits then move ``speed`` times faster than the weights."""

    def __init__(self, weight: torch.Tensor, init_logit: float, speed: float = 1.0):
        super().__init__()
        self.speed = speed
        self.scaled_logits = nn.Parameter(torch.full_like(weight, init_logit / speed))
        self.frozen = False

    @property
    def logits(self) -> torch.Tensor:
        return self.scaled_logits * self.speed

    def keep(self) -> torch.Tensor:
        return (self.scaled_logits.detach() > 0).to(self.scaled_logits.dtype)

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid(self.logits + torch.log(u) - torch.log1p(-u))
        return (soft > 0.5).to(soft.dtype) + soft - soft.detach()

    def forward(self, w):
        return w * (self.sample() if self.training and not self.frozen else self.keep())


def _abs(w: torch.Tensor) -> torch.Tensor:
    return w.abs()


def _normed_abs(w: torch.Tensor) -> torch.Tensor:
    return w.abs() / w.norm().clamp_min(torch.finfo(w.dtype).tiny)


# weight_importance -> importance of every weight of one tensor
IMPORTANCES = {"abs": _abs, "normed_abs": _normed_abs}


def _keep_largest(scores: torch.Tensor, level: float) -> torch.Tensor:
    """0/1 mask zeroing the ``floor(level * n)`` smallest scores (ties by position)."""
    zeros = int(level * scores.numel())
    mask = torch.ones(scores.numel(), dtype=scores.dtype, device=scores.device)
    if zeros:
        mask[torch.argsort(scores.flatten(), stable=True)[:zeros]] = 0
    return mask.reshape(scores.shape)


@torch.no_grad()
def magnitude_masks(weights: list[torch.Tensor], level: float, importance: str = "normed_abs",
                    mode: str = "global") -> list[torch.Tensor]:
    """The masks that zero a ``level`` share of the weights of least importance, over all
    ``weights`` together (``global``) or in each (``local``)."""
    scores = [IMPORTANCES[importance](w.detach()) for w in weights]
    if mode == "local":
        return [_keep_largest(s, level) for s in scores]
    flat = _keep_largest(torch.cat([s.flatten() for s in scores]), level)
    return [m.reshape(s.shape) for m, s in zip(flat.split([s.numel() for s in scores]), scores)]


class _Sparsity(CompressionAlgorithm):
    """What both sparsity algorithms share: the config, masks on the selected layers, the
    schedule's level at each epoch, the report and :meth:`finalize`."""

    default_schedule = "polynomial"
    extra_params: set = set()

    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        check_keys(section, SECTION_KEYS, where)
        params = check_keys(section.get("params", {}), PARAM_KEYS | self.extra_params, f"{where}: params")
        if params.get("update_per_optimizer_step", False) is not False:
            raise ConfigError(f"{where}: params.update_per_optimizer_step: the masks change once "
                              "per epoch here; set it to false")
        self.schedule = make_schedule(
            params.get("schedule", self.default_schedule), init=section.get("sparsity_init", 0.0),
            target=params.get("sparsity_target", 0.5),
            target_epoch=params.get("sparsity_target_epoch", 90), power=params.get("power", 0.9),
            concave=params.get("concave", True), steps=params.get("multistep_steps", ()),
            levels=params.get("multistep_sparsity_levels", ()), where=f"{where}: params")
        self.freeze_epoch = integer_option(params, "sparsity_freeze_epoch", 100, 0, f"{where}: params")
        self.params = params
        self.ignored, self.targets = section.get("ignored_scopes", []), section.get("target_scopes")
        init = check_keys(section.get("initializer", {}), {"batchnorm_adaptation"}, f"{where}: initializer")
        self.num_bn_adaptation_samples = adaptation_samples(init, 0, where)
        self.layers: dict[str, nn.Module] = {}
        self.level = self.schedule.level(0)
        self.frozen = False

    def make_mask(self, weight: torch.Tensor) -> nn.Module:
        raise NotImplementedError

    def set_level(self, level: float) -> None:
        self.level = level

    def masks(self) -> dict[str, nn.Module]:
        return {n: layer.parametrizations.weight[0] for n, layer in self.layers.items()
                if parametrize.is_parametrized(layer, "weight")}

    def check_with(self, others: list[CompressionAlgorithm]) -> None:
        if any(a.name == "binarization" for a in others):
            raise ConfigError(f"{self.where}: sparsity cannot be combined with binarization "
                              "(a zero weight binarizes to +1 or -1)")

    def apply(self, model: nn.Module, context: Context) -> None:
        try:
            self.layers = select_layers(model, ignored_scopes=self.ignored, target_scopes=self.targets)
        except ValueError as error:
            raise ConfigError(f"{self.where}: {error}") from None
        for layer in self.layers.values():
            parametrize.register_parametrization(layer, "weight", self.make_mask(layer.weight))
        model.to(context.device)
        self.set_level(self.schedule.level(0))
        if self.num_bn_adaptation_samples:
            if not any(isinstance(m, BATCHNORMS) for m in model.modules()):
                raise ConfigError(f"{self.where}: initializer.batchnorm_adaptation: the model has "
                                  "no BatchNorm to adapt; set num_bn_adaptation_samples to 0")
            adapt_batchnorm(model, context.calibration, context.device,
                            self.num_bn_adaptation_samples, context.verbose)

    def epoch_start(self, model: nn.Module, epoch: int, optimizer) -> None:
        if epoch < self.freeze_epoch:
            self.set_level(self.schedule.level(epoch))
        else:
            self.freeze()

    def freeze(self) -> None:
        """Fix the masks as they are."""
        self.frozen = True

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> None:
        """Multiply the masks into the weights and remove them (the evaluation mask for RB)."""
        for mask in self.masks().values():
            mask.eval()
        for layer in self.layers.values():
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)

    def layer_report(self, model: nn.Module) -> list[dict]:
        rows = []
        for name, layer in self.layers.items():
            weight = layer.weight.detach()
            rows.append({"layer": name, "params": weight.numel(),
                         "sparsity": float((weight == 0).float().mean())})
        return rows


@register_algorithm("magnitude_sparsity")
class MagnitudeSparsity(_Sparsity):
    """``params`` also take ``weight_importance`` (``normed_abs``, the default, or ``abs``)
    and ``sparsity_level_setting_mode`` (``global``, the default, or ``local``)."""

    extra_params = {"weight_importance", "sparsity_level_setting_mode"}

    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        self.importance = self.params.get("weight_importance", "normed_abs")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"{where}: params.weight_importance {self.importance!r} is unknown "
                              f"(known: {', '.join(IMPORTANCES)})")
        self.mode = self.params.get("sparsity_level_setting_mode", "global")
        if self.mode not in ("global", "local"):
            raise ConfigError(f"{where}: params.sparsity_level_setting_mode must be 'global' or "
                              f"'local', got {self.mode!r}")

    def make_mask(self, weight: torch.Tensor) -> nn.Module:
        return WeightMask(weight)

    @torch.no_grad()
    def set_level(self, level: float) -> None:
        super().set_level(level)
        if self.frozen or not self.layers:
            return
        originals = [layer.parametrizations.weight.original for layer in self.layers.values()]
        for mask, new in zip(self.masks().values(), magnitude_masks(originals, level, self.importance,
                                                                    self.mode)):
            mask.mask.copy_(new)


def _positive(params: dict, key: str, default: float, where: str) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: params.{key} must be a positive number, got {value!r}")
    return float(value)


@register_algorithm("rb_sparsity")
class RBSparsity(_Sparsity):
    """``params`` also take ``mask_init_logit``, the initial keep logit of every weight
    (default 3: ``sigmoid(3) = 0.95``; higher starts closer to the dense network and needs
    more steps to reach the target), and ``mask_speed``, how many times faster than the
    weights the logits move under Adam (default 1, NNCF's equal learning rates; the long
    ImageNet schedules RB was made for take thousands of steps per epoch)."""

    default_schedule = "exponential"
    extra_params = {"mask_init_logit", "mask_speed"}

    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        self.init_logit = _positive(self.params, "mask_init_logit", 3.0, where)
        self.speed = _positive(self.params, "mask_speed", 1.0, where)

    def make_mask(self, weight: torch.Tensor) -> nn.Module:
        return RBMask(weight, self.init_logit, self.speed)

    def freeze(self) -> None:
        super().freeze()
        for mask in self.masks().values():
            mask.frozen = True
            mask.scaled_logits.requires_grad_(False)

    def loss(self) -> torch.Tensor | None:
        if self.frozen or not self.layers:
            return None
        logits = [mask.logits for mask in self.masks().values()]
        soft = sum(torch.sigmoid(s).sum() for s in logits)
        hard = sum((s.detach() > 0).sum() for s in logits)
        kept = (hard + soft - soft.detach()) / sum(s.numel() for s in logits)
        return ((kept - (1 - self.level)) / DENSITY_TOLERANCE) ** 2
