"""An independent implementation of the Neural Network Coding standard (ISO/IEC 15938-17).

Public entry points: :mod:`nnc_core.tensor` (one tensor) and :mod:`nnc_core.nn` (a whole
model, with the model-level tools of :mod:`nnc_core.tools`); :mod:`nnc_core.checkpoints`
reads and writes checkpoint files (safetensors, PyTorch, .npz). Bitstreams are standard NNR bitstreams, decodable by other NNC software.
"""
from .errors import DecodeError

__version__ = "0.1.0"
__all__ = ["DecodeError", "__version__"]
