"""Calibration: run a few batches through a model with uninitialised quantizers, observe
the input of every quantized layer, and set each quantizer's range (weights from the
weights themselves, per output channel; activations from an :mod:`.ranges` observer).

Also BatchNorm adaptation (:func:`adapt_batchnorm`), which every algorithm that changes
the weights under a BatchNorm (binarization, sparsity, pruning) offers."""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .fold import BATCHNORMS
from .layers import quantized_layers
from .ranges import create_observer

__all__ = ["calibrate", "set_weight_ranges", "calibration_batches", "adapt_batchnorm"]


def calibration_batches(loader, num_samples: int):
    """The input batches of ``loader`` until ``num_samples`` samples are seen."""
    seen = 0
    for inputs, _ in loader:
        yield inputs[:num_samples - seen]
        seen += len(inputs)
        if seen >= num_samples:
            return


@torch.no_grad()
def set_weight_ranges(model) -> None:
    """Range of every weight quantizer that has one: the min and max of its weight (per
    output channel for per-channel quantizers)."""
    for layer in quantized_layers(model).values():
        quantizer = layer.weight_quantizer
        if not hasattr(quantizer, "set_range"):
            continue
        weight = layer.layer.weight.detach()
        rows = weight.reshape(weight.shape[0], -1)
        if quantizer.spec.per_channel:
            quantizer.set_range(rows.min(1).values, rows.max(1).values)
        else:
            quantizer.set_range(weight.min(), weight.max())


@torch.no_grad()
def calibrate(model, loader, device, *, range_type: str = "mean_min_max", params: dict | None = None,
              num_samples: int = 256, verbose: bool = True) -> int:
    """Set the ranges of all quantizers of ``model`` from ``num_samples`` samples of
    ``loader``; returns the number of samples used."""
    set_weight_ranges(model)
    layers = {n: l for n, l in quantized_layers(model).items() if hasattr(l.input_quantizer, "set_range")}
    observers = {n: create_observer(range_type, per_channel=l.input_quantizer.spec.per_channel,
                                    **(params or {})) for n, l in layers.items()}
    hooks = [l.register_forward_pre_hook(lambda _m, args, n=n: observers[n].update(args[0]))
             for n, l in layers.items()]
    for layer in layers.values():
        layer.input_quantizer.enabled = False        # observe the float activations
    model.eval()
    seen = 0
    try:
        batches = calibration_batches(loader, num_samples)
        for inputs in tqdm(batches, desc="calibrate", leave=False, disable=not verbose):
            model(inputs.to(device))
            seen += len(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers.values():
            layer.input_quantizer.enabled = True
    if not seen:
        raise ValueError("calibration saw no sample: the calibration loader is empty")
    for name, layer in layers.items():
        layer.input_quantizer.set_range(*observers[name].range())
    return seen


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, loader, device, num_samples: int, verbose: bool = True) -> int:
    """Re-estimate the statistics of every BatchNorm of ``model`` as the plain average of
    the batch statistics of ``num_samples`` samples of ``loader``, run through the model in
    training mode without gradients; returns the number of samples used."""
    norms = [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.track_running_stats]
    if not norms:
        raise ValueError("batchnorm_adaptation: the model has no BatchNorm that tracks statistics")
    momenta = [m.momentum for m in norms]
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None            # cumulative average instead of an exponential one
    model.train()
    seen = 0
    try:
        for inputs in tqdm(calibration_batches(loader, num_samples), desc="adapt batchnorm",
                           leave=False, disable=not verbose):
            model(inputs.to(device))
            seen += len(inputs)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(training)
    if not seen:
        raise ValueError("batchnorm_adaptation saw no sample: the calibration loader is empty")
    return seen
