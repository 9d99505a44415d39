"""Quantization: step sizes from qp, uniform and dependent (trellis) quantizers, codebooks."""
from .step import step_size, qp_from_step
from .uniform import quantize_uniform
from .dependent import quantize_dependent
from .scan import scan_positions

__all__ = ["step_size", "qp_from_step", "quantize_uniform", "quantize_dependent", "scan_positions"]
