"""Latent quantisation of PNC (Wang et al., RTSS 2023, Sec. IV-C).

The encoder on the device emits uint8 latents (an integer-quantised model maps its ReLU
output range ``[0, clip]`` to ``0..255``); before transmission they are requantised to
``bits`` bits (6 in the paper), which costs little accuracy and shrinks the symbol alphabet
of the entropy coder. Zero stays zero at every stage, so the many exact zeros of the ReLU
output are reconstructed exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentQuantizer:
    clip: float                 # latent value mapped to 255 (calibrated on training latents)
    bits: int = 6

    def __post_init__(self):
        if not self.clip > 0:
            raise ValueError(f"clip must be positive, got {self.clip}")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def to_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.round(latents.clamp(0, self.clip) * (255.0 / self.clip)).to(torch.uint8)

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> integer symbols ``0 .. 2^bits - 1`` (uint8)."""
        q8 = self.to_uint8(latents).float()
        return torch.round(q8 * ((self.levels - 1) / 255.0)).to(torch.uint8)

    def dequantize(self, symbols: torch.Tensor) -> torch.Tensor:
        return symbols.float() * (self.clip / (self.levels - 1))


def calibrate_clip(latents: torch.Tensor, percentile: float = 99.9) -> float:
    """The clip value: a high percentile of the positive latents (outliers saturate)."""
    positive = latents[latents > 0].flatten().float()
    if positive.numel() == 0:
        return 1.0
    if positive.numel() > 1_000_000:        # torch.quantile's input limit; a sample is plenty
        positive = positive[torch.randperm(positive.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return float(torch.quantile(positive, percentile / 100.0))
