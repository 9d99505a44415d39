"""What of a model travels in federated learning, and how a client rebuilds its model.

:class:`PlainView` exchanges every float tensor. :class:`FedBNF` is NNCodec 2.x's
federated BatchNorm folding (its ``bnf`` flag in federated learning): per layer followed by
a BatchNorm, the four BatchNorm vectors and the layer's bias travel as two, the folded
per-channel scale ``s = gamma / sqrt(var + eps)`` and bias ``t = (b - mu) s + beta``
(:mod:`nnc_core.tools.bnf`); the running statistics never leave a client. A client rebuilds
its BatchNorm from the received (s, t) with its own statistics,

    gamma' = s sqrt(var + eps),   beta' = t - s (b - mu),

blended with the gamma and beta it trained last round, ``(1 - m) local + m global``
(momentum ``m``; m = 1 takes the global layer exactly). Its upload is the change its
training made in folded form, added to the global model it received, so that the server
averages training steps, not the clients' private statistics. The server evaluates the
folded model with neutral statistics (mean 0, variance 1 - eps, no layer bias), which
computes exactly ``s (W x) + t``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence

import numpy as np

Tensors = dict[str, np.ndarray]


class ExchangeView(Protocol):
    def exchanged(self, state: Tensors) -> Tensors:
        """The tensors of ``state`` that travel, in a fixed order."""

    def model(self, exchanged: Tensors, kept: Tensors | None) -> Tensors:
        """The model's tensors from received ones and what the client kept (None on the
        server, or before a client's first round)."""

    def kept(self, state: Tensors) -> Tensors:
        """What a client keeps to itself after training."""

    def upload(self, received: Tensors, start: Tensors, trained: Tensors) -> Tensors:
        """What the client codes: its trained model in exchanged form."""


class PlainView:
    """Every float tensor travels."""

    def exchanged(self, state: Tensors) -> Tensors:
        return OrderedDict(state)

    def model(self, exchanged: Tensors, kept: Tensors | None) -> Tensors:
        return OrderedDict(exchanged)

    def kept(self, state: Tensors) -> Tensors:
        return {}

    def upload(self, received: Tensors, start: Tensors, trained: Tensors) -> Tensors:
        return trained


class FedBNF:
    """Federated BatchNorm folding over ``blocks`` (:func:`nnc_core.nn.batchnorm_blocks`)."""

    def __init__(self, blocks: Sequence, momentum: float = 0.3):
        if not blocks:
            raise ValueError("bnf: the model has no BatchNorm that follows a weight")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"bnf_momentum must be in (0, 1], got {momentum}")
        self.blocks, self.momentum = list(blocks), float(momentum)
        self._private = {n for b in self.blocks for n in (b.gamma, b.beta, b.mean, b.var, b.bias)
                         if n is not None}

    @staticmethod
    def names(block) -> tuple[str, str]:
        """Names of the folded scale and bias of a block (not NNC's ``.weight_scaling``,
        which a decoder multiplies into the weight)."""
        layer = block.weight.rpartition(".")[0]
        return f"{layer}.bnf_scale", f"{layer}.bnf_bias"

    def exchanged(self, state: Tensors) -> Tensors:
        from ..tools import fold_batchnorm
        folded = {}
        for b in self.blocks:
            scale, bias = fold_batchnorm(state[b.gamma], state[b.beta], state[b.mean],
                                         state[b.var], b.eps,
                                         bias=state[b.bias] if b.bias else None)
            folded[b.weight] = dict(zip(self.names(b), (scale, bias)))
        out = OrderedDict()
        for name, value in state.items():
            if name not in self._private:
                out[name] = value
            out.update(folded.get(name, {}))
        return out

    def model(self, exchanged: Tensors, kept: Tensors | None) -> Tensors:
        unfolded = {}
        for b in self.blocks:
            scale, bias = (np.asarray(exchanged[n], np.float32) for n in self.names(b))
            if kept is None:                       # neutral statistics: exactly s W x + t
                eps = np.float32(b.eps)
                parts = {b.gamma: scale, b.beta: bias, b.mean: np.zeros_like(scale),
                         b.var: np.full_like(scale, 1.0 - eps)}
                if b.bias:
                    parts[b.bias] = np.zeros_like(scale)
            else:
                mean, var = kept[b.mean], kept[b.var]
                layer_bias = kept[b.bias] if b.bias else 0.0
                gamma = scale * np.sqrt(var + np.float32(b.eps))
                beta = bias - scale * (layer_bias - mean)
                m = np.float32(self.momentum)
                parts = {b.gamma: (1 - m) * kept[b.gamma] + m * gamma,
                         b.beta: (1 - m) * kept[b.beta] + m * beta, b.mean: mean, b.var: var}
                if b.bias:
                    parts[b.bias] = kept[b.bias]
            unfolded.update({k: np.asarray(v, np.float32) for k, v in parts.items()})
        folded_names = {n for b in self.blocks for n in self.names(b)}
        out = OrderedDict((k, v) for k, v in exchanged.items() if k not in folded_names)
        out.update(unfolded)
        return out

    def kept(self, state: Tensors) -> Tensors:
        return {k: np.asarray(state[k], np.float32).copy() for k in self._private}

    def upload(self, received: Tensors, start: Tensors, trained: Tensors) -> Tensors:
        before, after = self.exchanged(start), self.exchanged(trained)
        return OrderedDict((k, (received[k] + (after[k] - before[k])).astype(np.float32))
                           for k in received)


def exchange_view(options, task) -> ExchangeView:
    """The view ``options`` ask for; ``task`` names the model's BatchNorm blocks."""
    if not options.bnf:
        return PlainView()
    blocks = getattr(task, "batchnorm_blocks", None)
    if blocks is None:
        raise ValueError(f"bnf: {type(task).__name__} does not name its BatchNorm blocks")
    return FedBNF(blocks(), options.bnf_momentum)
