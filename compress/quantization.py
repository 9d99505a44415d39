"""The ``quantization`` algorithm of a config: BatchNorm folded, fake quantizers inserted into
the weights and inputs of every convolution and linear layer (:mod:`.layers`,
:mod:`.fake_quant`), ranges calibrated (:mod:`.calibrate`). Without fine-tuning this is
post-training quantization; fine-tuned (``run.py compress --epochs N``) it is
quantization-aware training with learnable steps.

Bit widths may differ per layer (mixed precision): set by hand
(``"precision": {"type": "manual", "bitwidth_per_scope": [[4, "layer1.0.conv1"], ...]}``) or
chosen by Hessian sensitivity under a size budget (``"type": "hawq"``, :mod:`.hawq`). Mixed
precision applies to the weights; activations keep their configured bits.
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from .base import CompressionAlgorithm, Context
from .calibrate import calibrate
from .config import ConfigError, check_keys, register_algorithm
from .fake_quant import FakeQuantizer, QuantSpec
from .fold import fold_batchnorm
from .layers import LAYER_TYPES, layer_kind, matches_scope, quantized_layers, wrap_layers
from .ranges import OBSERVERS

__all__ = ["QuantizationAlgorithm", "PRECISIONS"]

SECTION_KEYS = {"algorithm", "initializer", "weights", "activations", "ignored_scopes",
                "target_scopes", "export_to_onnx_standard_ops"}
GROUP_KEYS = {"mode", "bits", "per_channel", "signed", "narrow_range", "ignored_scopes"}
INITIALIZER_KEYS = {"range", "precision", "batchnorm_adaptation"}
RANGE_KEYS = {"num_init_samples", "type", "params"}
# NNCF's defaults, except per-channel weights (more accurate at no cost in an integer engine)
WEIGHT_DEFAULTS = QuantSpec(bits=8, mode="symmetric", per_channel=True, signed=True, narrow_range=True)
ACTIVATION_DEFAULTS = QuantSpec(bits=8, mode="symmetric", per_channel=False, signed=None)


def _spec(section: dict, default: QuantSpec, where: str) -> QuantSpec:
    check_keys(section, GROUP_KEYS, where)
    fields = {k: section[k] for k in ("mode", "bits", "per_channel", "signed", "narrow_range") if k in section}
    try:
        return replace(default, **fields)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_manual(precision: dict, where: str) -> None:
    for entry in precision.get("bitwidth_per_scope", []):
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int
                and 2 <= entry[0] <= 8 and isinstance(entry[1], str)):
            raise ConfigError(f"{where}: bitwidth_per_scope entries are [bits from 2 to 8, "
                              f"scope], got {entry!r}")


def _manual_bits(precision: dict, layers: list[str], where: str, **_) -> dict[str, int]:
    bits = {}
    for width, scope in precision.get("bitwidth_per_scope", []):
        hits = [n for n in layers if matches_scope(n, [scope])]
        if not hits:
            raise ConfigError(f"{where}: scope {scope!r} matches no quantized layer")
        bits.update({n: width for n in hits})
    return bits


def _check_hawq(precision: dict, where: str) -> None:
    from .hawq import check_precision
    check_precision(precision, where)


def _hawq_bits(precision: dict, layers: list[str], where: str, **kwargs) -> dict[str, int]:
    from .hawq import hawq_bits
    return hawq_bits(precision, layers, where, **kwargs)


# "precision": {"type": ...} -> (its keys, the check of its values when the config is read,
# the function giving the weight bits per layer when it is applied)
PRECISIONS = {"manual": ({"type", "bitwidth_per_scope"}, _check_manual, _manual_bits),
              "hawq": ({"type", "bits", "compression_ratio", "num_data_points", "iter_number",
                        "tolerance"}, _check_hawq, _hawq_bits)}


@register_algorithm("quantization")
class QuantizationAlgorithm(CompressionAlgorithm):
    def __init__(self, section: dict, where: str):
        super().__init__(section, where)
        check_keys(section, SECTION_KEYS, where)
        self.weights = _spec(section.get("weights", {}), WEIGHT_DEFAULTS, f"{where}: weights")
        self.activations = _spec(section.get("activations", {}), ACTIVATION_DEFAULTS,
                                 f"{where}: activations")
        self.weight_ignored = section.get("weights", {}).get("ignored_scopes", [])
        self.activation_ignored = section.get("activations", {}).get("ignored_scopes", [])
        self.ignored, self.targets = section.get("ignored_scopes", []), section.get("target_scopes")
        if section.get("export_to_onnx_standard_ops", True) is not True:
            raise ConfigError(f"{where}: export_to_onnx_standard_ops must be true: the export "
                              "writes standard QuantizeLinear/DequantizeLinear only")
        init = check_keys(section.get("initializer", {}), INITIALIZER_KEYS, f"{where}: initializer")
        ranges = check_keys(init.get("range", {}), RANGE_KEYS, f"{where}: initializer.range")
        self.range_type = ranges.get("type", "mean_min_max")
        if self.range_type not in OBSERVERS:
            raise ConfigError(f"{where}: initializer.range.type {self.range_type!r} is unknown "
                              f"(known: {', '.join(OBSERVERS)})")
        self.range_params = ranges.get("params", {})
        self.num_init_samples = int(ranges.get("num_init_samples", 256))
        adaptation = init.get("batchnorm_adaptation", {})
        check_keys(adaptation, {"num_bn_adaptation_samples"}, f"{where}: initializer.batchnorm_adaptation")
        if adaptation.get("num_bn_adaptation_samples", 0):
            raise ConfigError(f"{where}: batchnorm_adaptation: BatchNorm is folded into the "
                              "layers before quantization, so there is none left to adapt; "
                              "set num_bn_adaptation_samples to 0")
        self.precision = init.get("precision")
        if self.precision is not None:
            kind = self.precision.get("type") if isinstance(self.precision, dict) else None
            if kind not in PRECISIONS:
                raise ConfigError(f"{where}: initializer.precision.type {kind!r} is unknown "
                                  f"(known: {', '.join(PRECISIONS)})")
            keys, check, _ = PRECISIONS[kind]
            check_keys(self.precision, keys, f"{where}: initializer.precision")
            check(self.precision, f"{where}: initializer.precision")
        self.bits: dict[str, int] = {}

    def _weight_bits(self, model: nn.Module, layers: list[str], context: Context) -> dict[str, int]:
        if self.precision is None:
            return {}
        where = f"{self.where}: initializer.precision"
        choose = PRECISIONS[self.precision["type"]][2]
        return choose(self.precision, layers, where, model=model, context=context,
                      weights=self.weights)

    def _layers(self, model: nn.Module) -> list[str]:
        """The layers whose weights are quantized (those mixed precision chooses bits for)."""
        names = [n for n, m in model.named_modules() if layer_kind(m) in LAYER_TYPES]
        return [n for n in names if not matches_scope(n, self.ignored + self.weight_ignored)
                and (not self.targets or matches_scope(n, self.targets))]

    def apply(self, model: nn.Module, context: Context) -> None:
        fold_batchnorm(model)
        self.bits = self._weight_bits(model, self._layers(model), context)

        def make_weight(name, layer):
            if matches_scope(name, self.weight_ignored):
                return nn.Identity()
            spec = replace(self.weights, bits=self.bits.get(name, self.weights.bits))
            return FakeQuantizer(spec, channels=layer.weight.shape[0], axis=0)

        def make_input(name, layer):
            if matches_scope(name, self.activation_ignored):
                return nn.Identity()
            channels = layer.weight.shape[1] if self.activations.per_channel else None
            return FakeQuantizer(self.activations, channels=channels, axis=1)

        try:
            wrap_layers(model, make_weight, make_input, ignored_scopes=self.ignored,
                        target_scopes=self.targets)
        except ValueError as error:
            raise ConfigError(f"{self.where}: {error}") from None
        model.to(context.device)
        calibrate(model, context.calibration, context.device, range_type=self.range_type,
                  params=self.range_params, num_samples=self.num_init_samples, verbose=context.verbose)

    def layer_report(self, model: nn.Module) -> list[dict]:
        rows = []
        for name, layer in quantized_layers(model).items():
            w, x = layer.weight_quantizer, layer.input_quantizer
            rows.append({"layer": name, "params": layer.layer.weight.numel(),
                         "weight_bits": w.bits if isinstance(w, FakeQuantizer) else 32,
                         "activation_bits": x.bits if isinstance(x, FakeQuantizer) else 32})
        return rows
