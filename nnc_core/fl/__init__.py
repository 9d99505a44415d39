"""Federated learning with NNC-coded updates on Flower (NNCodec 2.x's federated pipeline).

``NNClient`` / :func:`client_app` and ``NNCFedAvg`` are the Flower client and strategy;
:mod:`.protocol` holds the engine-independent two ends (byte accounting included) and
:mod:`.codecs` the update codecs (NNC and the baselines). Flower is imported on first use,
so ``nnc_core`` itself does not need it.
"""
from .codecs import CODECS, create_codec, register_codec
from .protocol import ClientLink, FLOptions, RoundTraffic, ServerLink

__all__ = ["CODECS", "create_codec", "register_codec", "ClientLink", "FLOptions",
           "RoundTraffic", "ServerLink", "NNClient", "NNCFedAvg", "client_app"]


def __getattr__(name):
    if name in ("NNClient", "NNCFedAvg", "client_app", "RoundLog", "Task"):
        from . import flower
        return getattr(flower, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
