"""Fake quantization with a straight-through estimator: the simulated integer arithmetic of
quantization-aware training (Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018, eq. 1-2) with a learnable step size
(Esser et al., "Learned Step Size Quantization", ICLR 2020).

With step ``s``, zero point ``z`` and the integer range ``[q_min, q_max]`` of the bit width::

    q = clamp(round(x / s) + z, q_min, q_max)        x_hat = (q - z) * s

Rounding passes its gradient straight through (``d round(u) / du = 1``); the clamp does not
(zero gradient outside the range), and ``s`` receives the gradient of ``x_hat``, which makes
it trainable; it is learnt as ``log s``, so that an optimiser changes it relatively. Symmetric quantizers have ``z = 0``; signed ones use ``[-2^(b-1), 2^(b-1) - 1]``
(weights the narrow ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, so that ``-x`` quantizes to ``-q``),
unsigned ones ``[0, 2^b - 1]``. Asymmetric quantizers place ``z`` so that the calibrated
``[low, high]`` maps onto the whole range and zero stays exactly representable.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["QuantSpec", "FakeQuantizer", "round_ste", "integer_range", "MODES"]

MODES = ("symmetric", "asymmetric")
MIN_SCALE = 1e-12


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def integer_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """``(q_min, q_max)`` of ``bits``-bit integers (``narrow``: without ``-2^(b-1)``)."""
    if signed:
        top = 2 ** (bits - 1) - 1
        return (-top if narrow else -top - 1), top
    return 0, 2 ** bits - 1


@dataclass(frozen=True)
class QuantSpec:
    """How a tensor is quantized. ``signed=None`` decides from the calibration data (signed
    if it has negative values), as for activations after a ReLU."""

    bits: int = 8
    mode: str = "symmetric"
    per_channel: bool = False
    signed: bool | None = None
    narrow_range: bool = False

    def __post_init__(self):
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise ValueError(f"bits must be an integer from 2 to 8, got {self.bits!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


class FakeQuantizer(nn.Module):
    """Quantize-dequantize of one tensor. ``channels`` (per-channel specs) is the size of
    ``axis`` of the tensors it sees. Until :meth:`set_range` is called it passes its input
    through unchanged; ``enabled = False`` turns it off again."""

    def __init__(self, spec: QuantSpec, channels: int | None = None, axis: int = 0):
        super().__init__()
        if spec.per_channel and not channels:
            raise ValueError("a per-channel quantizer needs the number of channels")
        self.spec, self.axis = spec, axis
        shape = (channels,) if spec.per_channel else ()
        # the step is learnt as its logarithm: Adam moves a parameter by about its learning
        # rate per step whatever its size, which for a step of 1e-3 would be far too much;
        # in the log domain that is a relative change
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("zero_point", torch.zeros(shape))
        self.register_buffer("signed", torch.tensor(spec.signed is not False))
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True
        self.onnx = False       # standard ops for export (see standard_ops)

    @property
    def scale(self) -> torch.Tensor:
        """The step ``s`` (``exp`` of the learnt ``log_scale``)."""
        return self.log_scale.exp()

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def range(self) -> tuple[int, int]:
        return integer_range(self.spec.bits, bool(self.signed), self.spec.narrow_range)

    def _shaped(self, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.spec.per_channel:
            return value
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return value.reshape(shape)

    @torch.no_grad()
    def set_range(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """Step and zero point from the calibrated range ``[low, high]`` (per channel or
        scalar); ``low`` also fixes the signedness when the spec leaves it open."""
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        low, high = torch.minimum(low, torch.zeros_like(low)), torch.maximum(high, torch.zeros_like(high))
        if self.spec.signed is None:
            self.signed.fill_(bool((low < 0).any()))
        q_min, q_max = self.range
        if self.spec.mode == "symmetric":
            bound = torch.maximum(-low, high) if bool(self.signed) else high
            scale, zero = bound / q_max, torch.zeros_like(bound)
        else:
            scale = (high - low) / (q_max - q_min)
            zero = torch.clamp(q_min - torch.round(low / scale.clamp_min(MIN_SCALE)), q_min, q_max)
        self.log_scale.copy_(scale.clamp_min(MIN_SCALE).log().reshape(self.log_scale.shape))
        self.zero_point.copy_(zero.reshape(self.zero_point.shape))
        self.initialized.fill_(True)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """The values of integer levels ``q``: ``(q - z) * s``."""
        scale = self._shaped(self.scale.detach(), q)
        return (q.float() - self._shaped(self.zero_point, q)) * scale

    def integers(self, x: torch.Tensor) -> torch.Tensor:
        """The integer levels ``q`` of ``x`` (int32)."""
        q_min, q_max = self.range
        scale = self._shaped(self.scale.detach(), x)
        zero = self._shaped(self.zero_point, x)
        return torch.clamp(torch.round(x / scale) + zero, q_min, q_max).to(torch.int32)

    @torch.no_grad()
    def set_standard_ops(self, on: bool, constant: torch.Tensor | None = None) -> None:
        """Compute with torch's fake-quantize ops (for ONNX export) from now on, or not. The
        step, zero point and range are taken as constants now: the exporter traces no
        branch on the quantizer's buffers. ``constant`` is the tensor the quantizer always
        sees (a weight): its quantized values are computed now, so that the export holds
        them as a constant before the QuantizeLinear, which folds into integers."""
        self.onnx = on
        if not on:
            self._constants = None
            self._buffers.pop("export_constant", None)
            return
        q_min, q_max = self.range
        scale = self.scale.detach().clone()
        zero = self.zero_point.round().clone()
        self._constants = {"active": self.enabled and bool(self.initialized),
                           "range": (q_min, q_max), "scale": scale, "zero": zero,
                           "low": (q_min - zero) * scale, "high": (q_max - zero) * scale}
        if constant is not None and self._constants["active"]:
            # a (persistent) buffer, not a plain tensor: the exporter evaluates the ops on
            # a constant and would store float32 weights again
            self.register_buffer("export_constant", self._dequantized(constant.detach()))

    def standard_ops(self, x: torch.Tensor) -> torch.Tensor:
        """The values of :meth:`forward` through torch's fake-quantize ops, which export to
        ONNX as QuantizeLinear/DequantizeLinear in an 8-bit container (int8 or uint8); a
        narrower range is clamped first, which gives the same levels."""
        c = self._constants
        if not c["active"]:
            return x
        container = (-128, 127) if c["range"][0] < 0 else (0, 255)
        if "export_constant" in self._buffers:
            x = self.export_constant           # already on the grid, inside the range
        elif c["range"] != container:
            x = torch.clamp(x, self._shaped(c["low"], x), self._shaped(c["high"], x))
        if self.spec.per_channel:
            return torch.fake_quantize_per_channel_affine(x, c["scale"], c["zero"].to(torch.int32),
                                                          self.axis, *container)
        return torch.fake_quantize_per_tensor_affine(x, float(c["scale"]), int(c["zero"]), *container)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onnx:
            return self.standard_ops(x)
        if not (self.enabled and bool(self.initialized)):
            return x
        return self._dequantized(x)

    def _dequantized(self, x: torch.Tensor) -> torch.Tensor:
        q_min, q_max = self.range
        scale = self._shaped(self.scale, x)
        zero = self._shaped(self.zero_point, x)
        q = torch.clamp(round_ste(x / scale) + zero, q_min, q_max)
        return (q - zero) * scale

    def extra_repr(self) -> str:
        s = self.spec
        kind = "signed" if bool(self.signed) else "unsigned"
        return (f"bits={s.bits}, {s.mode}, {'per-channel' if s.per_channel else 'per-tensor'}, "
                f"{kind}{', narrow' if s.narrow_range else ''}")
