"""One epoch of ECQ/ECQx training (Becking et al. 2022, Sec. 3.3).

Per batch: forward and backward on the quantized network; the quantized weights' gradients
go straight through (centroid-scaled) to the full-precision shadows; Adam updates the
shadows and the parameters that stay in full precision (biases, BatchNorm); for ECQx, the
LRP relevances of the weights are computed (on the network a :mod:`ecqx.sources` source
gives), smoothed over batches (``R_t = (1 - alpha) R_batch + alpha R_{t-1}``); finally every
layer is re-assigned.

:class:`RelevanceTracker` decides when LRP runs: not during ``warmup`` plain ECQ steps at the
start (the network first recovers from the quantization as ECQ would, changing which weights
are non-zero, before the relevances lock that pattern in); then every ``every`` steps, the
smoothed relevances of the last pass serving the steps between (LRP costs about five times a
training step); the smoothing restarts each epoch with ``reset_each_epoch`` (as in the
official release).

Data parallel (``dist``, :class:`experiments.distributed.Distributed`): the network trains in
DistributedDataParallel, so every process gets the same averaged gradients, the same shadow
updates and, with the batch relevances summed over the processes (those of the whole global
batch), the same re-assignment: the processes stay identical without exchanging weights.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .quantizer import ModelQuantizer
from .relevance import weight_relevances
from .sources import QuantizedNetwork


class RelevanceTracker:
    """Exponentially smoothed LRP weight relevances, computed on ``source``'s network (default:
    the quantized network) after ``warmup`` ECQ steps, every ``every`` steps."""

    def __init__(self, composite, alpha: float = 0.1, start: str = "output", *, source=None,
                 every: int = 1, warmup: int = 0, reset_each_epoch: bool = False):
        if every < 1 or warmup < 0:
            raise ValueError(f"LRP every {every} steps after {warmup} warm-up steps: need "
                             "every >= 1 and warmup >= 0")
        self.composite, self.alpha, self.start = composite, alpha, start
        self.source = source if source is not None else QuantizedNetwork()
        self.every, self.warmup, self.reset_each_epoch = every, warmup, reset_each_epoch
        self.smoothed: dict[str, torch.Tensor] = {}
        self.steps = 0            # training steps seen
        self.passes = 0           # LRP passes run

    def start_epoch(self) -> None:
        if self.reset_each_epoch:
            self.smoothed = {}

    def update(self, model, quantizer, inputs, targets, dist=None) -> dict[str, torch.Tensor] | None:
        """The relevances for this step's re-assignment of ``quantizer``'s weights (None during
        the warm-up: plain ECQ); the batch's relevances are summed over the processes of
        ``dist`` first (each holds part of the batch)."""
        self.steps += 1
        if self.steps <= self.warmup:
            return None
        due = not self.smoothed or (self.steps - self.warmup - 1) % self.every == 0
        if due:
            self._add_batch(model, quantizer, inputs, targets, dist)
        return {name: self.smoothed[name] for name in quantizer.names}

    def _add_batch(self, model, quantizer, inputs, targets, dist) -> None:
        with self.source.network(model, quantizer) as network:
            fresh = weight_relevances(network, inputs, targets, self.composite, start=self.start)
        self.passes += 1
        if dist is not None:
            dist.all_reduce_([fresh[name] for name in quantizer.names])
        for name in quantizer.names:
            r = fresh[name]
            previous = self.smoothed.get(name)
            self.smoothed[name] = r if previous is None else (1 - self.alpha) * r + self.alpha * previous


def make_optimizers(model, quantizer: ModelQuantizer, lr: float):
    """Adam on the shadows and Adam on the parameters that stay in full precision."""
    quantized = set(quantizer.names)
    rest = [p for n, p in model.named_parameters() if n not in quantized]
    return (torch.optim.Adam(quantizer.shadow_parameters(), lr=lr),
            torch.optim.Adam(rest, lr=lr, weight_decay=5e-6) if rest else None)


def train_epoch(model, quantizer: ModelQuantizer, loader, optimizers, device, *,
                relevance: RelevanceTracker | None = None, max_batches: int | None = None,
                desc: str = "ECQ", verbose: bool = True, dist=None, epoch: int = 0) -> float:
    """Train one epoch; ECQx when ``relevance`` is given. Returns the mean loss (over all
    processes with ``dist``, whose DDP wrapper trains ``model`` and whose sampler is set
    to ``epoch``; rank 0's BatchNorm statistics are copied to the others at the end)."""
    shadow_opt, rest_opt = optimizers
    network = model
    if dist is not None:
        network = dist.wrap(model)
        dist.set_epoch(loader, epoch)
    network.train()
    if relevance is not None:
        relevance.start_epoch()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(itertools.islice(loader, total), total=total, desc=desc, leave=False,
               disable=not verbose, dynamic_ncols=True)
    loss_sum, count = 0.0, 0
    for inputs, targets in bar:
        inputs, targets = inputs.to(device), targets.to(device)
        output = network(inputs)
        output = output["out"] if isinstance(output, dict) else output
        loss = F.cross_entropy(output, targets, ignore_index=255)
        shadow_opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        loss.backward()
        quantizer.transfer_gradients()
        shadow_opt.step()
        if rest_opt is not None:
            rest_opt.step()
        # LRP runs on the unwrapped network: its backward pass reaches the input, not the
        # parameters, which DDP would wait for
        relevances = (relevance.update(model, quantizer, inputs, targets, dist)
                      if relevance else None)
        quantizer.quantize(relevances)
        loss_sum += loss.item() * inputs.shape[0]
        count += inputs.shape[0]
        bar.set_postfix(loss=f"{loss_sum / count:.4f}", zeros=f"{quantizer.sparsity():.1%}")
    if dist is not None:
        dist.broadcast_buffers(model)
        loss_sum, count = dist.all_reduce_sums(loss_sum, count)
    return loss_sum / max(count, 1)
