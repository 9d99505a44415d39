"""Local scaling adaptation (LSA; Wiedemann et al., "DeepCABAC", 2020, and the NNC
standard's local scaling tool).

After quantization every convolution and linear layer gets one scale per output channel,
``W'_c = s_c * Q(W)_c``, initialised to 1. Only the scales are trained, on the task loss
over the training data, while all quantized parameters stay fixed and BatchNorm keeps its
statistics. The scales are then coded with the weight (LS member of its BLOCK NDU), so
the decoder recovers part of the accuracy lost to coarse quantization for the price of one
number per channel.

Data parallel: when ``loader`` draws through a
:class:`~torch.utils.data.distributed.DistributedSampler` (every process of a torchrun job
trains on its part of the data), the scales' gradients are averaged over the processes of
the default process group after every backward pass, so all of them end with the same scales.
"""
from __future__ import annotations

import itertools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

SCALED_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def scalable_weights(model: torch.nn.Module) -> list[str]:
    """State-dict names of the weights that get local scales."""
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, SCALED_LAYERS) and m.weight is not None]


def _logits(output):
    return output["out"] if isinstance(output, dict) else output


def train_local_scales(model: torch.nn.Module, quantized: dict[str, torch.Tensor], loader, *,
                       epochs: int = 1, lr: float = 1e-3, max_batches: int | None = None,
                       device=None, verbose: bool = False) -> dict[str, torch.Tensor]:
    """Train per-output-channel scales of :func:`scalable_weights` on ``loader`` with the
    quantized parameters and buffers ``quantized`` (state-dict names) held fixed; returns
    name -> 1-D scales."""
    device = device or next(model.parameters()).device
    fixed = {k: v.to(device) for k, v in quantized.items()}
    scales = {name: torch.ones(fixed[name].shape[0], device=device, requires_grad=True)
              for name in scalable_weights(model) if name in fixed}
    if not scales:
        return {}
    optimizer = torch.optim.Adam(scales.values(), lr=lr)
    world_size = _data_parallel_size(loader)
    was_training = model.training
    model.train()
    for m in model.modules():                   # BatchNorm keeps its (quantized) statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    for epoch in range(epochs):
        if world_size > 1:
            loader.sampler.set_epoch(epoch)
        bar = tqdm(itertools.islice(loader, total), total=total, leave=False,
                   desc=f"LSA {epoch + 1}/{epochs}", disable=not verbose, dynamic_ncols=True)
        for inputs, targets in bar:
            params = dict(fixed)
            for name, s in scales.items():
                w = fixed[name]
                params[name] = w * s.view(-1, *([1] * (w.dim() - 1)))
            logits = _logits(functional_call(model, params, (inputs.to(device),)))
            loss = F.cross_entropy(logits, targets.to(device), ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                _average_gradients(scales.values(), world_size)
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.train(was_training)
    return {name: s.detach().cpu() for name, s in scales.items()}


def _data_parallel_size(loader) -> int:
    """How many processes share ``loader``'s data set (1 unless it has a DistributedSampler)."""
    sampler = getattr(loader, "sampler", None)
    return sampler.num_replicas if isinstance(sampler, DistributedSampler) else 1


def _average_gradients(tensors, world_size: int) -> None:
    for t in tensors:
        if t.grad is not None:          # the same on every process: the model is the same
            dist.all_reduce(t.grad)
            t.grad /= world_size
