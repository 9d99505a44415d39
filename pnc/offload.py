"""What the edge classifier gets from each codec for any byte budget (Wang et al., RTSS 2023,
Sec. VI): for every test image and method, a *ladder* of byte thresholds and whether the
classification is right once that many bytes have arrived.

* PNC: step ``k`` needs the packets of channels ``0..k-1`` and classifies the image decoded
  from them (the other channels zero);
* progressive JPEG: one step per scan prefix;
* JPEG and WebP: one step, the whole file.

Below the first threshold nothing can be decoded and the image counts as misclassified,
for every method alike. With ladders computed once, sweeping budgets, deadlines and
bandwidth traces is bookkeeping.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import baselines
from .codec import PNCCodec
from .model import drop_tail
from .packets import packetize


@dataclass
class Ladder:
    method: str
    thresholds: np.ndarray      # (images, steps) bytes needed for each step, non-decreasing
    correct: np.ndarray         # (images, steps) classification right at that step

    def correct_at(self, budgets) -> np.ndarray:
        """Per image: right with ``budgets`` bytes (scalar or one per image)?"""
        budgets = np.broadcast_to(np.asarray(budgets), (len(self.thresholds),))
        steps = (self.thresholds <= budgets[:, None]).sum(1)
        hit = self.correct[np.arange(len(steps)), np.maximum(steps - 1, 0)]
        return (steps > 0) & hit

    def accuracy(self, budgets) -> float:
        return 100.0 * float(self.correct_at(budgets).mean())

    def step_points(self) -> list[tuple[float, float]]:
        """(mean bytes, accuracy %) of every step: the rate-accuracy points."""
        return [(float(self.thresholds[:, s].mean()), 100.0 * float(self.correct[:, s].mean()))
                for s in range(self.thresholds.shape[1])]


@torch.no_grad()
def predict(classifier, images: torch.Tensor, batch: int = 500) -> np.ndarray:
    """Predicted classes of ``images``, in batches."""
    return torch.cat([classifier(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)]).numpy()


@torch.no_grad()
def pnc_ladder(codec: PNCCodec, classifier, images: torch.Tensor, labels: np.ndarray,
               coder: str = "huffman", name: str = "PNC", verbose: bool = True) -> Ladder:
    """Ladder of PNC: packet bytes of the leading ``k`` channels and the classification of
    the image decoded from them, ``k = 1..C``."""
    symbols = codec.symbols(images)
    sizes = np.empty(symbols.shape[:2], dtype=np.int64)
    for i, image_symbols in enumerate(tqdm(symbols, desc=f"{name}: coding", leave=False, disable=not verbose)):
        sizes[i] = [sum(len(p) for p in packetize([c])) for c in codec.encode_symbols(image_symbols, coder)]
    latents = codec.quantizer.dequantize(torch.from_numpy(symbols))
    correct = np.stack([predict(classifier, codec.model.decoder(drop_tail(latents, k))) == labels
                        for k in range(1, codec.channels + 1)], axis=1)
    return Ladder(name, np.cumsum(sizes, axis=1), correct)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in [0, 1] -> uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)``."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def _from_uint8(pixels: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(pixels)).float() / 255
    return x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)


def file_ladder(codec: str, quality: int, classifier, images: torch.Tensor, labels: np.ndarray) -> Ladder:
    """Ladder of an all-or-nothing image file (``jpeg`` or ``webp``)."""
    files = [baselines.CODECS[codec](p, quality) for p in to_uint8(images)]
    grey = images.shape[1] == 1
    decoded = _from_uint8([baselines.decode(f, grey) for f in files])
    return Ladder(f"{codec} q{quality}", np.array([[len(f)] for f in files]),
                  (predict(classifier, decoded) == labels)[:, None])


def progressive_jpeg_ladder(quality: int, classifier, images: torch.Tensor, labels: np.ndarray) -> Ladder:
    """Ladder of a progressive JPEG cut at its scan boundaries."""
    files = [baselines.encode_jpeg(p, quality, progressive=True) for p in to_uint8(images)]
    prefixes = [baselines.scan_prefixes(f) for f in files]
    grey = images.shape[1] == 1
    steps = max(len(p) for p in prefixes)
    # images with fewer scans repeat their last step (same bytes, same picture)
    prefixes = [p + [p[-1]] * (steps - len(p)) for p in prefixes]
    correct = np.stack([
        predict(classifier, _from_uint8([baselines.decode_prefix(f, p[s], grey) for f, p in zip(files, prefixes)]))
        == labels for s in range(steps)], axis=1)
    return Ladder(f"progressive jpeg q{quality}", np.array(prefixes), correct)


def median_seconds(fn, items, repeat: int = 1) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        for _ in range(repeat):
            fn(item)
        times.append((time.perf_counter() - start) / repeat)
    return float(np.median(times))


def encode_latency(codec: PNCCodec, images: torch.Tensor, qualities=(10, 50)) -> dict:
    """Median seconds to encode one image on this CPU (one thread): the PNC sender (encoder,
    quantisation, Huffman coding, packets) against JPEG and WebP encoders."""
    pixels = to_uint8(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = {"PNC": median_seconds(lambda x: packetize(codec.encode(x)), images)}
    finally:
        torch.set_num_threads(threads)
    for q in qualities:
        result[f"jpeg q{q}"] = median_seconds(lambda p: baselines.encode_jpeg(p, q), pixels)
        result[f"progressive jpeg q{q}"] = median_seconds(lambda p: baselines.encode_jpeg(p, q, True), pixels)
        result[f"webp q{q}"] = median_seconds(lambda p: baselines.encode_webp(p, q), pixels)
    return result
