"""Model-level coding tools of NNC: BatchNorm folding, local scaling adaptation and the
layer-wise choice of quantization parameters."""
from .bnf import fold_batchnorm
from .lsa import train_local_scales
from .opt_qp import optimise_qps

__all__ = ["fold_batchnorm", "train_local_scales", "optimise_qps"]
