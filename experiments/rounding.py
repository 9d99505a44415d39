"""Plain rounding baselines to set next to NNC's rate: float16, and b-bit round-to-nearest
(RTN) with one symmetric absmax scale per output channel (the weight-only quantization that
LLM compression papers start from; e.g. Dettmers et al. 2022, Frantar et al. 2023).

RTN quantizes tensors of two or more dimensions to integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
times ``absmax(row) / (2^(b-1) - 1)`` per row; everything else, and every scale, is stored as
float16. Bits per parameter count all of it (payload bits, scales, other tensors), with no
entropy coding, and tensors that share storage (tied embeddings) count once.
"""
from __future__ import annotations

import numpy as np
import torch

from nnc_core.checkpoints import tied_names

SCALE_BITS = FLOAT16_BITS = 16


def _distinct(state: dict) -> dict:
    """Floating tensors of a state dict, one name per storage (tied weights count once)."""
    ties = tied_names(state)
    return {k: v for k, v in state.items() if v.is_floating_point() and k not in ties}


def rtn(weight: np.ndarray, bits: int) -> np.ndarray:
    """Round-to-nearest with one absmax scale per output channel (row)."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    top = 2 ** (bits - 1) - 1
    scale = np.abs(rows).max(axis=1, keepdims=True) / top
    scale = scale.astype(np.float16).astype(np.float32)          # stored as float16
    safe = np.where(scale > 0, scale, 1.0)
    levels = np.clip(np.rint(rows / safe), -top, top)
    return (levels * scale).reshape(weight.shape).astype(np.float32)


def float16(weight: np.ndarray) -> np.ndarray:
    return weight.astype(np.float16).astype(np.float32)


def rounded_state(state: dict, bits: int | None) -> tuple[dict, int]:
    """The state with its float tensors rounded (``bits`` None: float16, else RTN at ``bits``
    for tensors of two or more dimensions) and the bits it takes."""
    rounded, total = {}, 0
    for name, value in _distinct(state).items():
        array = value.detach().cpu().float().numpy()
        if bits is not None and array.ndim > 1:
            values = rtn(array, bits)
            total += array.size * bits + array.shape[0] * SCALE_BITS
        else:
            values = float16(array)
            total += array.size * FLOAT16_BITS
        rounded[name] = torch.from_numpy(values).to(value.dtype)
    for name, first in tied_names(state).items():     # a tied name loads the same values
        if first in rounded:
            rounded[name] = rounded[first]
    return {**state, **rounded}, total


# name -> bits of the weights (None: float16 throughout)
BASELINES = {"float16": None, "int8 RTN": 8, "int4 RTN": 4}


def parameter_count(state: dict) -> int:
    return sum(v.numel() for v in _distinct(state).values())
