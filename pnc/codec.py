"""Sender and receiver of PNC (Wang et al., RTSS 2023, Fig. 2): encode an image into one
coded byte string per latent channel, and decode whatever prefix of channels arrived
(missing channels are zero, as in tail-drop training).

Two entropy coders are offered for the channel symbols: the paper's static per-channel
Huffman codes (no side information), and DeepCABAC through ``nnc_core`` (adaptive, so no
tables are needed, but each channel becomes a small NNR stream with its own headers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nnc_core import tensor as nnc_tensor

from .huffman import HuffmanCode, channel_codes
from .model import PNC
from .quantize import LatentQuantizer, calibrate_clip


def cabac_encode(symbols: np.ndarray) -> bytes:
    """One channel's integer symbols as a lossless NNC (DeepCABAC) stream."""
    return nnc_tensor.encode(np.ascontiguousarray(symbols, dtype=np.int32))


def cabac_decode(data: bytes) -> np.ndarray:
    return np.asarray(nnc_tensor.decode(data))


@dataclass
class PNCCodec:
    model: PNC
    quantizer: LatentQuantizer
    codes: list[HuffmanCode]            # one per latent channel

    @classmethod
    def calibrate(cls, model: PNC, images: torch.Tensor, bits: int = 6) -> "PNCCodec":
        """Clip value and Huffman tables from (training) ``images``."""
        with torch.no_grad():
            latents = model.eval().encoder(images)
        quantizer = LatentQuantizer(calibrate_clip(latents), bits)
        return cls(model, quantizer, channel_codes(quantizer.quantize(latents).numpy(), quantizer.levels))

    @property
    def channels(self) -> int:
        return self.model.config.latent_channels

    @torch.no_grad()
    def symbols(self, images: torch.Tensor) -> np.ndarray:
        """Quantised latents ``(N, C, h, w)`` of ``images`` (values in [0, 1])."""
        return self.quantizer.quantize(self.model.eval().encoder(images)).numpy()

    def encode(self, image: torch.Tensor, coder: str = "huffman") -> list[bytes]:
        """One image ``(channels, H, W)`` -> coded bytes of every latent channel, in order."""
        return self.encode_symbols(self.symbols(image[None])[0], coder)

    def encode_symbols(self, symbols: np.ndarray, coder: str = "huffman") -> list[bytes]:
        """Quantised latents ``(C, h, w)`` of one image -> coded bytes of every channel."""
        if coder == "huffman":
            return [code.encode(s) for code, s in zip(self.codes, symbols)]
        if coder == "cabac":
            return [cabac_encode(s) for s in symbols]
        raise ValueError(f"unknown coder {coder!r} (huffman, cabac)")

    @torch.no_grad()
    def decode(self, channels: list[bytes | None], coder: str = "huffman") -> torch.Tensor:
        """The image from the leading complete channels; the rest are zero."""
        size = self.model.config.latent_size
        symbols = np.zeros((self.channels, size, size), dtype=np.int64)
        for c, data in enumerate(channels[:self.channels]):
            if data is None:
                break
            values = (self.codes[c].decode(data, size * size) if coder == "huffman"
                      else cabac_decode(data))
            symbols[c] = values.reshape(size, size)
        latents = self.quantizer.dequantize(torch.from_numpy(symbols))[None]
        return self.model.eval().decoder(latents)[0]

    def state_dict(self) -> dict:
        return {"clip": self.quantizer.clip, "bits": self.quantizer.bits,
                "code_lengths": [list(c.lengths) for c in self.codes]}

    @classmethod
    def from_state(cls, model: PNC, state: dict) -> "PNCCodec":
        return cls(model, LatentQuantizer(state["clip"], state["bits"]),
                   [HuffmanCode(tuple(l)) for l in state["code_lengths"]])
