"""Mixed-precision weight bits by Hessian sensitivity (``"precision": {"type": "hawq"}``).

HAWQ (Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks with
Mixed-Precision", ICCV 2019) ranks layers by the curvature of the loss along their weights;
HAWQ-V2 (Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural
Networks", NeurIPS 2020) measures it by the average Hessian trace ``Tr(H_i) / n_i`` of layer
``i`` (``n_i`` weights), estimated with Hutchinson's method::

    Tr(H) = E[v^T H v]        v Rademacher (entries +-1 with probability 1/2)

where ``H v`` is a Hessian-vector product by double backpropagation, so ``H`` is never
formed. HAWQ-V2's sensitivity of quantizing layer ``i`` to ``b`` bits is::

    Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2

with ``Q_b`` the config's weight quantizer at ``b`` bits, and the bits are chosen to minimise
``sum_i Omega_i(b_i)`` under the size budget of ``compression_ratio`` (as NNCF's
``compression_ratio``: the weight bits of all layers at the largest candidate divided by
the ratio)::

    sum_i b_i n_i <= max(bits) * sum_i n_i / compression_ratio

This is a multiple-choice knapsack; :func:`choose_bits` solves it exactly by dynamic
programming over the extra bits above the all-lowest choice, counted in units of the
greatest common divisor of the costs (a small table: layer sizes share large factors).
A greedy on the increase of Omega per saved bit is not exact when layer sizes differ, and
the exact table costs little.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .config import ConfigError
from .fake_quant import FakeQuantizer, QuantSpec

__all__ = ["hawq_bits", "hessian_traces", "choose_bits", "quantization_error", "check_precision",
           "DEFAULTS"]

# NNCF's defaults of the hawq precision initializer
DEFAULTS = {"bits": [4, 8], "compression_ratio": 1.5, "num_data_points": 100, "iter_number": 200,
            "tolerance": 1e-4}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_precision(precision: dict, where: str) -> dict:
    """The settings of a hawq ``precision`` section with NNCF's defaults filled in;
    ConfigError naming the key for a value out of range."""
    settings = {**DEFAULTS, **{k: v for k, v in precision.items() if k != "type"}}
    bits = settings["bits"]
    if not (isinstance(bits, list) and bits and all(type(b) is int and 2 <= b <= 8 for b in bits)):
        raise ConfigError(f"{where}: bits must be a non-empty list of integers from 2 to 8, got {bits!r}")
    ratio = settings["compression_ratio"]
    if not (_is_number(ratio) and ratio >= 1):
        raise ConfigError(f"{where}: compression_ratio must be a number >= 1, got {ratio!r}")
    for key in ("num_data_points", "iter_number"):
        if not (type(settings[key]) is int and settings[key] > 0):
            raise ConfigError(f"{where}: {key} must be a positive integer, got {settings[key]!r}")
    tolerance = settings["tolerance"]
    if not (_is_number(tolerance) and tolerance > 0):
        raise ConfigError(f"{where}: tolerance must be a number > 0, got {tolerance!r}")
    settings["bits"] = sorted(set(bits))
    return settings


def _data_points(loader, num_data_points: int, device: torch.device) -> list[tuple]:
    """The first ``num_data_points`` (inputs, targets) of ``loader``, in its batches."""
    batches, seen = [], 0
    for inputs, targets in loader:
        take = min(len(inputs), num_data_points - seen)
        batches.append((inputs[:take].to(device), targets[:take].to(device)))
        seen += take
        if seen == num_data_points:
            break
    if not seen:
        raise ValueError("the calibration loader is empty: no data point for the Hessian traces")
    return batches


def _hessian_vector(value: torch.Tensor, weights: list[torch.Tensor], vs: list[torch.Tensor]) -> list:
    """``H v`` of ``value`` with respect to ``weights`` by double backpropagation
    (Pearlmutter, "Fast Exact Multiplication by the Hessian", 1994)."""
    grads = torch.autograd.grad(value, weights, create_graph=True, allow_unused=True)
    # a weight the loss does not reach (a head unused in eval mode), or reaches linearly, has
    # a zero row and column in H
    curved = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not curved:
        return [torch.zeros_like(w) for w in weights]
    return torch.autograd.grad([grads[i] for i in curved], weights, grad_outputs=[vs[i] for i in curved],
                               allow_unused=True, materialize_grads=True)


def hessian_traces(model: nn.Module, layers: list[str], loader, loss, device: torch.device,
                   num_data_points: int = DEFAULTS["num_data_points"],
                   iter_number: int = DEFAULTS["iter_number"],
                   tolerance: float = DEFAULTS["tolerance"], verbose: bool = False) -> dict[str, float]:
    """Average Hessian trace ``Tr(H_i) / n_i`` of the loss over the first ``num_data_points``
    samples of ``loader`` with respect to the ``weight`` of each module in ``layers``, by
    Hutchinson's estimator.

    Every iteration draws one Rademacher vector for all weights together (from a generator
    seeded with 0, so the estimate is reproducible for the same data) and adds ``v_i^T (H v)_i``
    per layer to a running mean; the cross terms ``H_ij v_j`` have zero mean. The estimation
    stops after ``iter_number`` iterations, or earlier when the running means (as a vector)
    change by less than ``tolerance`` relative to their norm. The model is moved to
    ``device`` and evaluated in eval mode; its mode and ``requires_grad`` flags are restored.
    """
    weights = [model.get_submodule(name).weight for name in layers]
    batches = _data_points(loader, num_data_points, device)
    total = sum(len(inputs) for inputs, _ in batches)
    generator = torch.Generator().manual_seed(0)
    flags, training = [w.requires_grad for w in weights], model.training
    model.to(device).eval()
    mean = previous = None
    try:
        for w in weights:
            w.requires_grad_(True)
        bar = tqdm(range(iter_number), desc="hawq traces", leave=False, disable=not verbose)
        for iteration in bar:
            vs = [(torch.randint(0, 2, w.shape, generator=generator) * 2 - 1).to(w) for w in weights]
            sample = torch.zeros(len(weights), dtype=torch.float64)
            for inputs, targets in batches:
                # the loss of the whole set is the size-weighted mean of the batch losses
                with torch.enable_grad():
                    value = loss(model(inputs), targets) * (len(inputs) / total)
                    products = _hessian_vector(value, weights, vs)
                sample += torch.stack([(h * v).sum().double().cpu() for h, v in zip(products, vs)])
            previous, mean = mean, (sample if mean is None else mean + (sample - mean) / (iteration + 1))
            if previous is not None:
                change = float((mean - previous).norm() / previous.norm().clamp_min(1e-30))
                bar.set_postfix(change=f"{change:.1e}")
                if change < tolerance:
                    break
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
        model.train(training)
    return {name: float(t) / w.numel() for name, t, w in zip(layers, mean, weights)}


@torch.no_grad()
def quantization_error(weight: torch.Tensor, spec: QuantSpec, bits: int) -> float:
    """``||Q_b(W) - W||^2`` for the weight quantizer ``spec`` at ``bits`` bits, its range set
    from the weight's min and max (per output channel for per-channel specs) as calibration
    sets it."""
    quantizer = FakeQuantizer(replace(spec, bits=bits), channels=weight.shape[0], axis=0).to(weight.device)
    weight = weight.detach().float()
    rows = weight.reshape(weight.shape[0], -1)
    if spec.per_channel:
        quantizer.set_range(rows.min(1).values, rows.max(1).values)
    else:
        quantizer.set_range(weight.min(), weight.max())
    return float((quantizer(weight) - weight).pow(2).sum())


def choose_bits(traces: dict[str, float], errors: dict[str, dict[int, float]], sizes: dict[str, int],
                compression_ratio: float, where: str = "precision") -> dict[str, int]:
    """Bits per layer minimising ``sum_i max(trace_i, 0) * errors[i][b_i]`` subject to
    ``sum_i b_i sizes[i] <= max(b) * sum_i sizes[i] / compression_ratio``; the candidates are
    the keys of ``errors[i]`` (the same for every layer). A negative trace counts as zero: it
    is estimation noise where the network is piecewise linear in the layer's weights (ReLU),
    since that layer's Hessian block is then the positive semi-definite Gauss-Newton term
    of a convex loss, and a negative sensitivity would reward quantization error. Among
    choices of equal total sensitivity the one with more bits is kept. ConfigError if the
    budget is below all layers at the lowest candidate. The table holds ``len(traces)`` times
    the budget in units of the cost's common divisor."""
    names = list(traces)
    candidates = sorted(errors[names[0]], reverse=True)       # more bits first: kept on ties
    top, low = candidates[0], candidates[-1]
    total = sum(sizes[n] for n in names)
    # a relative margin so that a budget that is an integer is not lost to rounding
    budget = math.floor(top * total / compression_ratio * (1 + 1e-12))
    if low * total > budget:
        raise ConfigError(f"{where}: compression_ratio {compression_ratio} allows {budget} weight bits, "
                          f"but all {total} weights at {low} bits take {low * total} (the largest "
                          f"ratio the bits {sorted(candidates)} reach is {top / low:g})")
    extra = {n: [sizes[n] * (b - low) for b in candidates] for n in names}
    unit = math.gcd(*(c for costs in extra.values() for c in costs)) or 1
    capacity = (budget - low * total) // unit
    # best[c]: least sensitivity of the layers so far with at most c units above the lowest
    best = np.zeros(capacity + 1)
    picks = np.empty((len(names), capacity + 1), dtype=np.int64)
    for i, name in enumerate(names):
        options = np.full((len(candidates), capacity + 1), np.inf)
        for k, b in enumerate(candidates):
            cost = extra[name][k] // unit
            if cost <= capacity:
                options[k, cost:] = best[:capacity + 1 - cost] + max(traces[name], 0.0) * errors[name][b]
        picks[i] = options.argmin(0)
        best = options.min(0)
    bits, left = {}, capacity
    for i in reversed(range(len(names))):
        k = int(picks[i, left])
        bits[names[i]] = candidates[k]
        left -= extra[names[i]][k] // unit
    return {n: bits[n] for n in names}


def hawq_bits(precision: dict, layers: list[str], where: str, *, model: nn.Module, context,
              weights: QuantSpec) -> dict[str, int]:
    """Weight bits per layer of ``layers`` for a hawq ``precision`` section: average Hessian
    traces of ``context.loss`` on ``context.calibration`` (:func:`hessian_traces`), weight
    quantization errors with the ``weights`` spec at each candidate width, and the exact
    choice under the budget (:func:`choose_bits`)."""
    settings = check_precision(precision, where)
    if not layers:
        return {}
    traces = hessian_traces(model, layers, context.calibration, context.loss, context.device,
                            num_data_points=settings["num_data_points"],
                            iter_number=settings["iter_number"], tolerance=settings["tolerance"],
                            verbose=context.verbose)
    modules = {name: model.get_submodule(name) for name in layers}
    errors = {name: {b: quantization_error(m.weight, weights, b) for b in settings["bits"]}
              for name, m in modules.items()}
    sizes = {name: m.weight.numel() for name, m in modules.items()}
    return choose_bits(traces, errors, sizes, settings["compression_ratio"], where)
