"""The real compressed size of an ECQ/ECQx network, measured with the NNC codec.

The integer levels of the quantized weights are coded losslessly (NNC integer tensors,
DeepCABAC), the per-layer grid steps losslessly as the bit patterns of their float32
values, and every other tensor of the state dict (biases, BatchNorm, shortcut weights) at a
fine qp; the size is the length of that one bitstream.
"""
from __future__ import annotations

import numpy as np
import torch

from nnc_core import nn as nnc_nn

FINE_QP = -75
STEPS = "ecq.steps"        # float32 steps, stored as int32 bit patterns


def compressed_bitstream(model: torch.nn.Module, quantizer, qp: int = FINE_QP) -> bytes:
    """One NNC bitstream holding the whole quantized model."""
    levels = quantizer.levels()
    tensors = {}
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        tensors[name] = (levels[name] if name in levels else value).detach().cpu().numpy()
    tensors[STEPS] = np.array(list(quantizer.steps().values()), dtype=np.float32).view(np.int32)
    return nnc_nn.encode(tensors, qp=qp, nonweight_qp=qp, use_dq=False)


def restore(model: torch.nn.Module, quantizer_names: list[str], bitstream: bytes) -> torch.nn.Module:
    """Load a bitstream of :func:`compressed_bitstream` into ``model`` (in place)."""
    decoded = nnc_nn.decode(bitstream)
    steps = dict(zip(quantizer_names, decoded.pop(STEPS).view(np.float32).tolist()))
    state = model.state_dict()
    with torch.no_grad():
        for name, value in decoded.items():
            tensor = torch.from_numpy(np.asarray(value))
            if name in steps:
                tensor = tensor.float() * steps[name]
            state[name].copy_(tensor.reshape(state[name].shape))
    return model
