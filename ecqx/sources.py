"""The network ECQx computes its LRP weight relevances on (Becking et al. 2022, Sec. 3.2).

ECQx scales each weight's cost of the zero centroid by its relevance, and a relevance
``R_ij = w_ij * ...`` is proportional to the weight it is computed for. Which weights LRP
sees therefore decides what a pruned weight's relevance is:

* ``quantized`` - the quantized network as it trains (our default): a
  weight on the zero centroid has relevance exactly 0, so once pruned it stays pruned;
* ``stepped`` - the quantized network after an Adam step on its quantized weights, as the
  official release computes it (its optimizer also holds the quantized weights, which the
  re-assignment overwrites afterwards): a zero weight sits at about ``+-lr`` and keeps a
  little relevance;
* ``shadow`` - the network with the full-precision shadow weights in place of the quantized
  ones: every weight's relevance reflects where training is taking it;
* ``pretrained`` - a frozen copy of the network taken before quantization: a fixed notion
  of what mattered, independent of the assignment.

Each source yields the network for one LRP pass; the quantized weights are unchanged
afterwards except where the source's purpose is to change them (``stepped``, and only until
the re-assignment overwrites them).
"""
from __future__ import annotations

import contextlib
import copy

import torch


class QuantizedNetwork:
    """LRP on the training network itself."""

    def __init__(self, model: torch.nn.Module | None = None, lr: float | None = None):
        pass

    @contextlib.contextmanager
    def network(self, model, quantizer):
        yield model


class SteppedNetwork:
    """LRP after an Adam step (learning rate ``lr``) of the quantized weights on their own
    gradients; the optimizer's moments persist over the run, as in the official release
    (which steps every batch; with LRP every k steps, the step is taken on those)."""

    def __init__(self, model: torch.nn.Module | None = None, lr: float | None = None):
        if lr is None or lr <= 0:
            raise ValueError(f"the stepped relevance source needs a positive learning rate, got {lr}")
        self.lr, self.optimizer = lr, None

    @contextlib.contextmanager
    def network(self, model, quantizer):
        if self.optimizer is None:
            params = dict(model.named_parameters())
            self.optimizer = torch.optim.Adam([params[n] for n in quantizer.names], lr=self.lr)
        self.optimizer.step()
        yield model


class ShadowNetwork:
    """LRP with the shadow weights written into the network; the quantized weights are put
    back afterwards."""

    def __init__(self, model: torch.nn.Module | None = None, lr: float | None = None):
        pass

    @contextlib.contextmanager
    def network(self, model, quantizer):
        params = dict(model.named_parameters())
        quantized = {n: params[n].detach().clone() for n in quantizer.names}
        with torch.no_grad():
            for name, state in quantizer.layers.items():
                params[name].copy_(state.shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in quantized.items():
                    params[name].copy_(value)


class PretrainedNetwork:
    """LRP on a frozen copy of ``model`` as it is when the source is made (before
    quantization)."""

    def __init__(self, model: torch.nn.Module | None = None, lr: float | None = None):
        if model is None:
            raise ValueError("the pretrained relevance source needs the network before quantization")
        self.frozen = copy.deepcopy(model).requires_grad_(False)

    @contextlib.contextmanager
    def network(self, model, quantizer):
        yield self.frozen


SOURCES = {"quantized": QuantizedNetwork, "stepped": SteppedNetwork, "shadow": ShadowNetwork,
           "pretrained": PretrainedNetwork}


def make_source(name: str, model: torch.nn.Module | None = None, lr: float | None = None):
    """The relevance source ``name`` (a key of :data:`SOURCES`); ``model`` is the network before
    quantization (``pretrained``), ``lr`` the training learning rate (``stepped``)."""
    if name not in SOURCES:
        raise ValueError(f"unknown relevance source {name!r} ({', '.join(SOURCES)})")
    return SOURCES[name](model, lr)
