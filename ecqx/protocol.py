"""Training protocols of ECQ/ECQx: ours and that of the official release (d-becking/ECQx,
code of Becking et al., "ECQx: Explainability-Driven Quantization for Low-Bit and Sparse
DNNs", xxAI, LNAI 13200, 2022).

A protocol fixes the settings of :class:`Protocol`; a flag given explicitly overrides its
value. Where the two differ:

=================  ==============  ====================  =====================================
setting            ours            official              why ours is the default
=================  ==============  ====================  =====================================
lr                 1e-4            1e-3                  short runs: at 1e-3 Adam moves every
                                                         shadow by ~1e-3 a step, a sizeable
                                                         share of a grid step, and the 4-bit
                                                         default run lost sparsity and accuracy
epochs             3               10
max_batches        200             0 (whole epochs)      minutes instead of hours on a CPU
relevance_source   quantized       stepped               a short screening does not
                                                         separate the two (README;
                                                         :mod:`ecqx.sources`)
relevance_reset    never           epoch                 smoothing does not depend on how the
                                                         data is cut into epochs
beta_max           inf             1                     the beta search may need beta > 1 to
                                                         reach its sparsity window
lambda_max         ours            official              ours is the lambda at which the extreme
                                                         weight moves to zero
                                                         (:mod:`ecqx.assign`)
=================  ==============  ====================  =====================================

The release's straight-through gradient (scaled by the signed centroid) is not part of
either protocol: it is not a descent direction (:mod:`ecqx.ste`); ``--ste signed`` gives it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    """Settings a protocol fixes; each is also a flag of ``run.py ecqx``."""
    lr: float
    epochs: int
    max_batches: int              # 0: whole epochs
    relevance_source: str         # a key of ecqx.sources.SOURCES
    relevance_reset: str          # "never" or "epoch": when the smoothing starts afresh
    beta_max: float
    lambda_max: str               # a key of ecqx.assign.LAMBDA_MAX


PROTOCOLS = {
    "ours": Protocol(lr=1e-4, epochs=3, max_batches=200, relevance_source="quantized",
                     relevance_reset="never", beta_max=math.inf, lambda_max="ours"),
    "official": Protocol(lr=1e-3, epochs=10, max_batches=0, relevance_source="stepped",
                         relevance_reset="epoch", beta_max=1.0, lambda_max="official"),
}

# Settings that only ECQx uses, with their value where neither the protocol nor a flag sets
# one (the variants against the relevance lock-in: all off).
LRP_ONLY = {"relevance_source": None, "relevance_reset": None, "beta_max": None,
            "relevance_on": "all", "ecq_warmup_steps": 0, "lrp_every": 1}


class ProtocolError(ValueError):
    """A setting that cannot act, or an unknown protocol."""


def resolve(options: dict, protocol: str, lrp: bool) -> dict:
    """``options`` (setting name -> value, None where no flag gave one) completed: every None
    becomes the protocol's value (or the default of :data:`LRP_ONLY`). A setting given for
    ECQ (``lrp`` False) that only ECQx uses is an error."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
    if not lrp:
        given = [name for name in LRP_ONLY if options.get(name) is not None]
        if given:
            raise ProtocolError(", ".join(f"--{name}" for name in given) +
                                " only act(s) in ECQx: add --lrp or drop them")
    defaults = {**asdict(PROTOCOLS[protocol]),
                **{k: v for k, v in LRP_ONLY.items() if v is not None}}
    return {name: defaults.get(name) if value is None else value for name, value in options.items()}
