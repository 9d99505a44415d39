"""Compiled DeepCABAC core: arithmetic coder, context models, binarization, level coding
and the dependent-quantization trellis. The Python API lives in :mod:`nnc_core.tensor`."""
from .levels import PayloadDecoder, PayloadEncoder
from .trellis import quantize_dependent

__all__ = ["PayloadEncoder", "PayloadDecoder", "quantize_dependent"]
