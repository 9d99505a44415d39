"""The PNC autoencoder (Wang et al., "Progressive Neural Compression for Adaptive Image
Offloading under Timing Constraints", RTSS 2023, Sec. IV-A and Fig. 3).

The encoder runs on the weak device and is deliberately tiny: one strided convolution that
shrinks the image by its stride (16 channels, 9x9, stride 7 for 224x224 ImageNet images,
giving 32x32) and a 3x3 convolution down to ``C`` latent channels (10), both with ReLU. The
decoder on the edge server mirrors it with a transposed convolution back to full resolution
(64 channels), refines with three 5x5 convolution blocks (ReLU; residual connections around
the first and the third) and maps to image channels with a 3x3 convolution, clipped to [0, 1].
Images enter as values in [0, 1].

Tail-drop (Sec. IV-B): during training the number of kept channels ``k`` is drawn uniformly
from ``1..C`` for every batch and channels ``k..C-1`` are zeroed, so the first channels learn to
carry the most useful information and any prefix of them decodes to a usable image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PNCConfig:
    """Sizes of the autoencoder; presets in :data:`PRESETS`."""
    image_channels: int = 3
    image_size: int = 224
    latent_channels: int = 10
    hidden_channels: int = 16           # encoder's first convolution
    decoder_channels: int = 64
    kernel: int = 9
    stride: int = 7
    padding: int = 1
    refine_kernel: int = 5

    @property
    def latent_size(self) -> int:
        return (self.image_size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def output_padding(self) -> int:
        """Makes the transposed convolution land exactly on ``image_size``."""
        restored = (self.latent_size - 1) * self.stride - 2 * self.padding + self.kernel
        extra = self.image_size - restored
        if not 0 <= extra < self.stride:
            raise ValueError(f"{self}: the transposed convolution cannot restore {self.image_size} pixels")
        return extra


PRESETS = {
    # the paper's: ImageNet 224x224 RGB -> 10 x 32 x 32 latents
    "imagenet": PNCConfig(),
    # Fashion-MNIST 28x28 grey -> 10 x 7 x 7 latents (9x9 kernels, stride 4); a 32-channel
    # decoder, which trains four times faster on a CPU
    "fmnist": PNCConfig(image_channels=1, image_size=28, kernel=9, stride=4, padding=4,
                        decoder_channels=32),
}


class Encoder(nn.Module):
    def __init__(self, config: PNCConfig):
        super().__init__()
        self.down = nn.Conv2d(config.image_channels, config.hidden_channels, config.kernel,
                              config.stride, config.padding)
        self.mix = nn.Conv2d(config.hidden_channels, config.latent_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.mix(torch.relu(self.down(images))))


class Decoder(nn.Module):
    def __init__(self, config: PNCConfig):
        super().__init__()
        width, k = config.decoder_channels, config.refine_kernel
        self.up = nn.ConvTranspose2d(config.latent_channels, width, config.kernel, config.stride,
                                     config.padding, output_padding=config.output_padding)
        self.refine1, self.refine2, self.refine3 = (nn.Conv2d(width, width, k, padding=k // 2)
                                                    for _ in range(3))
        self.out = nn.Conv2d(width, config.image_channels, 3, padding=1)
        # start at mid-grey: the clip passes no gradient where an output is out of range,
        # and an untrained decoder whose outputs all start below zero would never learn
        nn.init.constant_(self.out.bias, 0.5)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(latents))
        x = x + torch.relu(self.refine1(x))    # the paper's wiring: skips around the
        y = torch.relu(self.refine2(x))        # first and the third block only
        y = y + torch.relu(self.refine3(y))
        return self.out(y).clamp(0.0, 1.0)


def sample_kept_channels(channels: int, generator: torch.Generator | None = None) -> int:
    """Tail-drop: the number of channels kept for a batch, uniform in ``1..channels``."""
    return int(torch.randint(1, channels + 1, (1,), generator=generator))


def drop_tail(latents: torch.Tensor, kept: int) -> torch.Tensor:
    """Zero the channels from ``kept`` on (what the receiver has when only the first
    ``kept`` channels arrived)."""
    if not 0 <= kept <= latents.shape[1]:
        raise ValueError(f"kept must be in 0..{latents.shape[1]}, got {kept}")
    mask = torch.zeros(latents.shape[1], dtype=latents.dtype, device=latents.device)
    mask[:kept] = 1
    return latents * mask.view(1, -1, 1, 1)


class PNC(nn.Module):
    """Encoder + decoder; ``forward`` applies tail-drop in training when ``tail_drop`` is on."""

    def __init__(self, config: PNCConfig | str = "fmnist", tail_drop: bool = True):
        super().__init__()
        self.config = PRESETS[config] if isinstance(config, str) else config
        self.tail_drop = tail_drop
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def forward(self, images: torch.Tensor, kept: int | None = None) -> torch.Tensor:
        latents = self.encoder(images)
        if kept is None and self.training and self.tail_drop:
            kept = sample_kept_channels(self.config.latent_channels)
        if kept is not None:
            latents = drop_tail(latents, kept)
        return self.decoder(latents)
