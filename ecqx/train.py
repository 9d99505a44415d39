"""One epoch of ECQ/ECQx training (Becking et al. 2022, Sec. 3.3).

Per batch: forward and backward on the quantized network; the quantized weights' gradients
go straight through (centroid-scaled) to the full-precision shadows; Adam updates the
shadows and the parameters that stay in full precision (biases, BatchNorm); for ECQx, the
LRP relevances of the weights are computed on the current network, smoothed over batches
(``R_t = (1 - alpha) R_batch + alpha R_{t-1}``); finally every layer is re-assigned.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .quantizer import ModelQuantizer
from .relevance import weight_relevances


class RelevanceTracker:
    """Exponentially smoothed LRP weight relevances."""

    def __init__(self, composite, alpha: float = 0.1, start: str = "output"):
        self.composite, self.alpha, self.start = composite, alpha, start
        self.smoothed: dict[str, torch.Tensor] = {}

    def update(self, model, inputs, targets, names) -> dict[str, torch.Tensor]:
        fresh = weight_relevances(model, inputs, targets, self.composite, start=self.start)
        for name in names:
            r = fresh[name]
            previous = self.smoothed.get(name)
            self.smoothed[name] = r if previous is None else (1 - self.alpha) * r + self.alpha * previous
        return {name: self.smoothed[name] for name in names}


def make_optimizers(model, quantizer: ModelQuantizer, lr: float):
    """Adam on the shadows and Adam on the parameters that stay in full precision."""
    quantized = set(quantizer.names)
    rest = [p for n, p in model.named_parameters() if n not in quantized]
    return (torch.optim.Adam(quantizer.shadow_parameters(), lr=lr),
            torch.optim.Adam(rest, lr=lr, weight_decay=5e-6) if rest else None)


def train_epoch(model, quantizer: ModelQuantizer, loader, optimizers, device, *,
                relevance: RelevanceTracker | None = None, max_batches: int | None = None,
                desc: str = "ECQ", verbose: bool = True) -> float:
    """Train one epoch; ECQx when ``relevance`` is given. Returns the mean loss."""
    shadow_opt, rest_opt = optimizers
    model.train()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(itertools.islice(loader, total), total=total, desc=desc, leave=False,
               disable=not verbose, dynamic_ncols=True)
    loss_sum, count = 0.0, 0
    for inputs, targets in bar:
        inputs, targets = inputs.to(device), targets.to(device)
        output = model(inputs)
        output = output["out"] if isinstance(output, dict) else output
        loss = F.cross_entropy(output, targets, ignore_index=255)
        shadow_opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        loss.backward()
        quantizer.transfer_gradients()
        shadow_opt.step()
        if rest_opt is not None:
            rest_opt.step()
        relevances = relevance.update(model, inputs, targets, quantizer.names) if relevance else None
        quantizer.quantize(relevances)
        loss_sum += loss.item() * inputs.shape[0]
        count += inputs.shape[0]
        bar.set_postfix(loss=f"{loss_sum / count:.4f}", zeros=f"{quantizer.sparsity():.1%}")
    return loss_sum / max(count, 1)
