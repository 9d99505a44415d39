"""The ``binarization`` algorithm of a config (NNCF 2.x): the weights of every convolution
and linear layer reduced to one bit and a scale, their inputs to one bit and a scale.

Weights, ``B = sign(W)`` with ``sign(0) = +1`` so that the levels are exactly ``±1``:

- ``xnor`` (Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary
  Convolutional Neural Networks", ECCV 2016, section 3.1): ``W_b = alpha_c * B`` with
  ``alpha_c = ||W_c||_1 / n``, the mean of ``|W|`` over the ``n`` weights of output channel
  ``c``; ``B`` and ``alpha_c`` minimise ``||W_c - alpha B_c||^2``;
- ``dorefa`` (Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural
  Networks with Low Bitwidth Gradients", 2016, section 2.2): ``W_b = E(|W|) * B``, one scale
  for the whole tensor.

Both pass the gradient straight through, ``dL/dW = dL/dW_b`` (DoReFa's estimator; Bengio
et al., "Estimating or Propagating Gradients Through Stochastic Neurons", 2013). The
cancellation of the gradient where ``|W| > 1`` (Hubara et al., "Binarized Neural Networks",
NeurIPS 2016) is left out: trained weights lie far inside ``[-1, 1]``, where it changes
nothing.

Activations, NNCF's scale/threshold binarization, with a learnable scale ``s`` (per tensor)
and threshold ``t_c`` (per input channel)::

    y = s * [x > t_c]

The step's gradient is that of the ramp ``clamp((x - t_c) / s + 1/2, 0, 1)`` of unit height
and width ``s`` centred on the threshold (a clipped straight-through estimator):
``dy/dx = 1`` and ``dy/dt_c = -1`` where ``|x - t_c| <= s/2``, zero elsewhere, and
``dy/ds = [x > t_c]``. With a squared error the scale's gradient vanishes where ``s`` is
the mean of the inputs above the threshold, which is also how it is initialised: from
calibration data, ``s`` is the upper level of the 1-bit Lloyd-Max quantizer of the observed
activations with levels ``{0, s}`` (``s = mean(x | x > s/2)``, iterated from the maximum),
and every ``t_c = s/2``, the midpoint of the levels.

In ONNX the weights are int8 levels ``±1`` times their scale (DequantizeLinear), the
activations ``Greater``, ``Cast`` and ``Mul``.

BatchNorm is kept, not folded: after a binary convolution it rescales each channel, which
training depends on (folded, the weights would leave the levels ``±1``; the export keeps it
as BatchNormalization). The ``batchnorm_adaptation`` initializer re-estimates its
statistics for the binarized network: the average of the batch statistics of
``num_bn_adaptation_samples`` samples run through it in training mode. The activation
binarizers are initialised on the float network: the adaptation normalises every
BatchNorm's output again, so that their inputs keep about the statistics they had there.

The schedule (NNCF's staged binarization) runs in :meth:`BinarizationAlgorithm.epoch_start`:
activations are binarized from ``activations_quant_start_epoch``, weights from
``weights_quant_start_epoch``; from ``lr_poly_drop_start_epoch`` the learning rate drops
to 0 over ``lr_poly_drop_duration_epochs`` as ``lr_0 * ((end - epoch) / duration)^2.1``;
from ``disable_wd_start_epoch`` the weight decay is 0. Epochs count from 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .base import CompressionAlgorithm, Context
from .calibrate import adapt_batchnorm, calibration_batches
from .config import ConfigError, adaptation_samples, check_keys, integer_option, register_algorithm
from .fake_quant import MIN_SCALE
from .fold import BATCHNORMS
from .layers import quantized_layers, wrap_layers

__all__ = ["WeightBinarizer", "XNORBinarizer", "DoReFaBinarizer", "ActivationBinarizer",
           "BinarizationAlgorithm", "Schedule", "WEIGHT_BINARIZERS",
           "initialize_activation_binarizers", "adapt_batchnorm"]

SECTION_KEYS = {"algorithm", "mode", "params", "ignored_scopes", "target_scopes", "initializer"}
INITIALIZER_KEYS = {"batchnorm_adaptation", "range"}
SAMPLE_PER_BATCH = 65536       # activation values kept per batch and layer for initialisation
LLOYD_ITERATIONS = 50
POLY_POWER = 2.1               # the exponent of NNCF's polynomial learning-rate drop


def _signs(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` with ``sign(0) = +1``, in ``w``'s dtype."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


class WeightBinarizer(nn.Module):
    """``sign(W)`` times a scale computed from ``W`` (:meth:`scale_of`), for weights of
    ``channels`` output channels. The buffer ``scale`` holds the scale of the weight last
    binarized (every forward and export updates it): it is saved next to the levels and
    :meth:`dequantize` multiplies them with it. ``enabled = False`` passes the weight
    through unchanged."""

    bits = 1
    per_channel = False

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("scale", torch.ones((channels,) if self.per_channel else ()))
        self.enabled = True
        self.onnx = False       # standard ops for export (see standard_ops)
        self._export_scale = None

    def scale_of(self, w: torch.Tensor) -> torch.Tensor:
        """The mean of ``|w|`` (per output channel or over the tensor), as float32. The sum
        is taken in float64, where it is exact: the weights ``±s`` that
        :meth:`dequantize` gives have the scale ``s`` again, bit for bit."""
        dims = tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))
        return w.detach().abs().double().mean(dim=dims).float().clamp_min(MIN_SCALE)

    def _shaped(self, value: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return value.reshape((-1,) + (1,) * (w.dim() - 1)) if self.per_channel else value

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """The levels ``±1`` of ``w`` (int32)."""
        return torch.where(w >= 0, 1, -1).to(torch.int32)

    def dequantize(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels times the saved scale: the binarized weight."""
        return levels.to(self.scale.dtype) * self._shaped(self.scale, levels)

    def _binarized(self, w: torch.Tensor) -> torch.Tensor:
        scale = self.scale_of(w)
        with torch.no_grad():
            self.scale.copy_(scale)
        # exactly sign(W) * scale forward, the identity backward
        return _signs(w) * self._shaped(scale, w) + (w - w.detach())

    @torch.no_grad()
    def set_standard_ops(self, on: bool, constant: torch.Tensor | None = None) -> None:
        """Compute with torch's fake-quantize ops (for ONNX export) from now on, or not. The
        binarized ``constant`` (the layer's weight) is kept as a persistent buffer, not a
        plain tensor, so that the exporter stores it before a QuantizeLinear with the scale
        as step, which :func:`.export.integer_weights` folds into int8 levels ``±1``."""
        self.onnx = on
        self._buffers.pop("export_constant", None)
        self._export_scale = None
        if not (on and self.enabled):
            return
        if constant is not None:
            self._export_scale = self.scale_of(constant)
            self.scale.copy_(self._export_scale)
            self.register_buffer("export_constant", _signs(constant) * self._shaped(self._export_scale, constant))

    def standard_ops(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if "export_constant" in self._buffers:
            w, scale = self.export_constant, self._export_scale
        else:
            scale = self.scale_of(w)
            w = _signs(w) * self._shaped(scale, w)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                          0, -128, 127)
        return torch.fake_quantize_per_tensor_affine(w, float(scale), 0, -128, 127)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.onnx:
            return self.standard_ops(w)
        return self._binarized(w) if self.enabled else w

    def extra_repr(self) -> str:
        return f"{'per-channel' if self.per_channel else 'per-tensor'} scale"


class XNORBinarizer(WeightBinarizer):
    """XNOR-Net: one scale per output channel (axis 0)."""

    per_channel = True


class DoReFaBinarizer(WeightBinarizer):
    """DoReFa-Net: one scale for the whole weight (``channels`` is not needed)."""


WEIGHT_BINARIZERS = {"xnor": XNORBinarizer, "dorefa": DoReFaBinarizer}


class ActivationBinarizer(nn.Module):
    """``scale * (x > threshold)`` with a per-channel threshold (``channels`` of them on
    ``axis``). Until :meth:`initialize` is called it passes its input through unchanged;
    ``enabled = False`` turns it off again."""

    bits = 1

    def __init__(self, channels: int, axis: int = 1):
        super().__init__()
        self.axis = axis
        self.scale = nn.Parameter(torch.ones(()))
        self.threshold = nn.Parameter(torch.full((channels,), 0.5))
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True
        self.onnx = False       # standard ops for export (see standard_ops)
        self._constants = None

    def _shaped(self, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return value.reshape(shape)

    @torch.no_grad()
    def initialize(self, values: torch.Tensor) -> None:
        """Scale and thresholds from observed input values (any shape): the 1-bit
        Lloyd-Max levels ``{0, s}`` of the values, thresholds ``s/2``. Values that are
        never positive leave ``s = 1`` (the output is then 0 anyway)."""
        values = values.detach().float().flatten()
        scale = values.max()
        for _ in range(LLOYD_ITERATIONS):
            if scale <= 0:
                scale = torch.ones(())
                break
            updated = values[values > scale / 2].mean()
            if torch.isclose(updated, scale, rtol=1e-6, atol=0):
                break
            scale = updated
        self.scale.fill_(float(scale))
        self.threshold.fill_(float(scale) / 2)
        self.initialized.fill_(True)

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.initialized)

    def integers(self, x: torch.Tensor) -> torch.Tensor:
        """The levels ``0, 1`` of ``x`` (int32)."""
        return (x > self._shaped(self.threshold.detach(), x)).to(torch.int32)

    @torch.no_grad()
    def set_standard_ops(self, on: bool, constant: torch.Tensor | None = None) -> None:
        """Compute with standard ops (Greater, Cast, Mul) for ONNX export from now on, or
        not; the scale and thresholds are taken as constants now."""
        self.onnx = on
        self._constants = None
        if on and self.active:
            self._constants = (self.scale.detach().abs().clamp_min(MIN_SCALE).clone(),
                               self.threshold.detach().clone())

    def standard_ops(self, x: torch.Tensor) -> torch.Tensor:
        if self._constants is None:
            return x
        scale, threshold = self._constants
        return (x > self._shaped(threshold, x)).to(x.dtype) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onnx:
            return self.standard_ops(x)
        if not self.active:
            return x
        scale = self.scale.abs().clamp_min(MIN_SCALE)
        threshold = self._shaped(self.threshold, x)
        step = (x > threshold).to(x.dtype)
        if not torch.is_grad_enabled():
            return scale * step
        ramp = torch.clamp((x - threshold) / scale.detach() + 0.5, 0, 1)
        # exactly scale * step forward; backward the step's gradient is the ramp's
        return scale * step + scale.detach() * (ramp - ramp.detach())

    def extra_repr(self) -> str:
        return f"channels={self.threshold.numel()}, axis={self.axis}"


def _binarizers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [q for layer in quantized_layers(model).values()
            for q in (layer.weight_quantizer, layer.input_quantizer) if isinstance(q, kind)]


@torch.no_grad()
def initialize_activation_binarizers(model: nn.Module, loader, device, num_samples: int,
                                     verbose: bool = True) -> int:
    """Initialise every activation binarizer of ``model`` from its inputs over
    ``num_samples`` samples of ``loader``, observed in the float network (all binarizers
    off); returns the number of samples used."""
    layers = {n: l for n, l in quantized_layers(model).items()
              if isinstance(l.input_quantizer, ActivationBinarizer)}
    samples = {n: [] for n in layers}
    generator = torch.Generator().manual_seed(0)

    def observe(name):
        def hook(_module, args):
            values = args[0].detach().flatten().float().cpu()
            if values.numel() > SAMPLE_PER_BATCH:
                values = values[torch.randint(values.numel(), (SAMPLE_PER_BATCH,), generator=generator)]
            samples[name].append(values)
        return hook

    binarizers = _binarizers(model, (WeightBinarizer, ActivationBinarizer))
    states = [b.enabled for b in binarizers]
    hooks = [layer.register_forward_pre_hook(observe(n)) for n, layer in layers.items()]
    training = model.training
    model.eval()
    seen = 0
    try:
        for b in binarizers:
            b.enabled = False
        for inputs in tqdm(calibration_batches(loader, num_samples), desc="initialise binarizers",
                           leave=False, disable=not verbose):
            model(inputs.to(device))
            seen += len(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for b, enabled in zip(binarizers, states):
            b.enabled = enabled
        model.train(training)
    if not seen:
        raise ValueError("binarizer initialisation saw no sample: the calibration loader is empty")
    for name, layer in layers.items():
        layer.input_quantizer.initialize(torch.cat(samples[name]))
    return seen


@dataclass(frozen=True)
class Schedule:
    """NNCF's staged binarization schedule (the ``params`` of the section), in epochs from
    0; ``None`` leaves the learning rate or the weight decay alone."""

    activations_quant_start_epoch: int = 1
    weights_quant_start_epoch: int = 1
    lr_poly_drop_start_epoch: int | None = None
    lr_poly_drop_duration_epochs: int = 30
    disable_wd_start_epoch: int | None = None

    def lr_factor(self, epoch: int) -> float:
        """The learning rate of ``epoch`` relative to the initial one."""
        start, duration = self.lr_poly_drop_start_epoch, self.lr_poly_drop_duration_epochs
        if start is None or epoch < start:
            return 1.0
        return max(0.0, (start + duration - epoch) / duration) ** POLY_POWER

    def weight_decay_off(self, epoch: int) -> bool:
        return self.disable_wd_start_epoch is not None and epoch >= self.disable_wd_start_epoch


def _schedule(params: dict, where: str) -> Schedule:
    check_keys(params, set(Schedule.__dataclass_fields__), where)
    for key, value in params.items():
        optional = key in ("lr_poly_drop_start_epoch", "disable_wd_start_epoch")
        least = 1 if key == "lr_poly_drop_duration_epochs" else 0
        if not ((value is None and optional) or
                (isinstance(value, int) and not isinstance(value, bool) and value >= least)):
            raise ConfigError(f"{where}: {key} must be an integer >= {least}"
                              f"{' or null' if optional else ''}, got {value!r}")
    return Schedule(**params)


def _input_binarizer(layer: nn.Module) -> ActivationBinarizer:
    if isinstance(layer, nn.Linear):
        return ActivationBinarizer(layer.in_features, axis=-1)
    return ActivationBinarizer(layer.in_channels, axis=1)


@register_algorithm("binarization")
class BinarizationAlgorithm(CompressionAlgorithm):
    """The section's keys: ``mode`` (``xnor``, the default, or ``dorefa``), ``params``
    (:class:`Schedule`), ``ignored_scopes``, ``target_scopes`` and ``initializer`` with
    ``batchnorm_adaptation.num_bn_adaptation_samples`` (default 2000, 0 for none) and
    ``range.num_init_samples`` (samples that initialise the activation binarizers,
    default 256)."""

    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        check_keys(section, SECTION_KEYS, where)
        self.mode = section.get("mode", "xnor")
        if self.mode not in WEIGHT_BINARIZERS:
            raise ConfigError(f"{where}: mode {self.mode!r} is unknown (known: "
                              f"{', '.join(WEIGHT_BINARIZERS)})")
        self.schedule = _schedule(section.get("params", {}), f"{where}: params")
        self.ignored, self.targets = section.get("ignored_scopes", []), section.get("target_scopes")
        init = check_keys(section.get("initializer", {}), INITIALIZER_KEYS, f"{where}: initializer")
        self.num_bn_adaptation_samples = adaptation_samples(init, 2000, where)
        ranges = check_keys(init.get("range", {}), {"num_init_samples"}, f"{where}: initializer.range")
        self.num_init_samples = integer_option(ranges, "num_init_samples", 256, 1, f"{where}: initializer.range")
        self._optimizer, self._base = None, []

    def apply(self, model: nn.Module, context: Context) -> None:
        """Binarize the layers (weights and inputs, all enabled), initialise the activation
        binarizers and adapt the BatchNorm statistics."""
        if self.num_bn_adaptation_samples and not any(isinstance(m, BATCHNORMS) for m in model.modules()):
            raise ConfigError(f"{self.where}: initializer.batchnorm_adaptation: the model has no "
                              "BatchNorm to adapt; set num_bn_adaptation_samples to 0")
        binarizer = WEIGHT_BINARIZERS[self.mode]
        try:
            wrap_layers(model, lambda _n, layer: binarizer(layer.weight.shape[0]),
                        lambda _n, layer: _input_binarizer(layer),
                        ignored_scopes=self.ignored, target_scopes=self.targets)
        except ValueError as error:
            raise ConfigError(f"{self.where}: {error}") from None
        model.to(context.device)
        initialize_activation_binarizers(model, context.calibration, context.device,
                                         self.num_init_samples, context.verbose)
        if self.num_bn_adaptation_samples:
            adapt_batchnorm(model, context.calibration, context.device,
                            self.num_bn_adaptation_samples, context.verbose)

    def epoch_start(self, model: nn.Module, epoch: int, optimizer) -> None:
        """Binarizers on or off for ``epoch``; the learning rate and weight decay of every
        parameter group of ``optimizer`` (if given) relative to their values at the first
        call with that optimizer."""
        s = self.schedule
        for b in _binarizers(model, ActivationBinarizer):
            b.enabled = epoch >= s.activations_quant_start_epoch
        for b in _binarizers(model, WeightBinarizer):
            b.enabled = epoch >= s.weights_quant_start_epoch
        if optimizer is None:
            return
        if optimizer is not self._optimizer:
            self._optimizer = optimizer
            self._base = [(g["lr"], g.get("weight_decay", 0.0)) for g in optimizer.param_groups]
        for group, (lr, weight_decay) in zip(optimizer.param_groups, self._base):
            if s.lr_poly_drop_start_epoch is not None:
                group["lr"] = lr * s.lr_factor(epoch)
            if s.disable_wd_start_epoch is not None:
                group["weight_decay"] = 0.0 if s.weight_decay_off(epoch) else weight_decay

    def layer_report(self, model: nn.Module) -> list[dict]:
        rows = []
        for name, layer in quantized_layers(model).items():
            w, x = layer.weight_quantizer, layer.input_quantizer
            rows.append({"layer": name, "params": layer.layer.weight.numel(),
                         "weight_bits": 1 if isinstance(w, WeightBinarizer) and w.enabled else 32,
                         "activation_bits": 1 if isinstance(x, ActivationBinarizer) and x.active else 32})
        return rows
