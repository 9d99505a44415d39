"""Model-level coding tools of NNC: BatchNorm folding, local scaling adaptation, the
layer-wise choice of quantization parameters and sparsification.

Local scaling adaptation trains on data and needs torch; it is imported on first use so
that the codec itself runs without torch.
"""
from .bnf import fold_batchnorm
from .opt_qp import optimise_qps
from .sparsify import sparsify, zero_share

__all__ = ["fold_batchnorm", "train_local_scales", "optimise_qps", "sparsify", "zero_share"]


def __getattr__(name):
    if name == "train_local_scales":
        from .lsa import train_local_scales
        return train_local_scales
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
