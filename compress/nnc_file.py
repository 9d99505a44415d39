"""The file that is saved: the integer weights of a quantized (or binarized) model, coded
losslessly by NNC (ISO/IEC 15938-17, DeepCABAC on the integer levels), with everything else
the model needs to run.

:func:`integer_state` is the model's state dict with the weight of every quantized layer
replaced by its integer levels (int8, or uint8 for unsigned levels); the quantizers' steps,
zero points and thresholds, the biases and any unquantized tensor stay as they are
(BatchNorm's count of training batches is left out). In the
NNC stream the integers are coded as integers and the float tensors as their float32 bit
patterns (int32), so that the decoded state is the saved one bit for bit:
:func:`decode_integer_state` returns it and :func:`load_integer_state` puts it into a model
quantized the same way, which then computes exactly what the saved one did.
"""
from __future__ import annotations

import numpy as np
import torch

from nnc_core import nn as nnc_nn

from .layers import quantized_layers

__all__ = ["integer_state", "encode_integer_state", "decode_integer_state", "load_integer_state"]


# BatchNorm's count of training batches: inference does not use it, NNC does not carry it
UNUSED = "num_batches_tracked"


def _acting(quantizer) -> bool:
    """Whether a weight quantizer gives levels now (a binarizer waiting for its epoch, or a
    quantizer never calibrated, passes the float weight through)."""
    return (hasattr(quantizer, "integers") and getattr(quantizer, "enabled", True)
            and bool(getattr(quantizer, "initialized", True)))


def _weight_keys(model) -> dict[str, torch.nn.Module]:
    """State-dict key of each quantized weight -> its quantizer (those that give levels)."""
    return {(f"{name}." if name else "") + "layer.weight": layer.weight_quantizer
            for name, layer in quantized_layers(model).items() if _acting(layer.weight_quantizer)}


def _levels(q: torch.Tensor) -> np.ndarray:
    q = q.cpu().numpy()
    return q.astype(np.uint8 if q.min() >= 0 and q.max() > 127 else np.int8)


@torch.no_grad()
def integer_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's state with its quantized weights as integer levels."""
    for layer in quantized_layers(model).values():
        layer.quantized_weight()       # binarizers keep the scale of the weight last seen
    quantizers = _weight_keys(model)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(UNUSED):
            continue
        if key in quantizers:
            state[key] = _levels(quantizers[key].integers(value))
        else:
            state[key] = value.detach().cpu().numpy()
    return state


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f"


def encode_integer_state(state: dict[str, np.ndarray], **options) -> bytes:
    """An NNC bitstream of the state, lossless: integers (and booleans) as integers, floats
    as their float32 bit patterns. ``options`` go to :func:`nnc_core.nn.encode_iter`."""
    tensors = {k: (v.astype(np.float32).view(np.int32) if _is_float(v) else v)
               for k, v in state.items()}
    return b"".join(part.data for part in nnc_nn.encode_iter(tensors, keep_dtypes=True, **options))


def decode_integer_state(bitstream: bytes) -> dict[str, np.ndarray]:
    """The state coded by :func:`encode_integer_state`: float32 tensors and integer levels."""
    decoded, dtypes = nnc_nn.decode_with_dtypes(bitstream)
    return {k: (v.astype(np.int32).view(np.float32) if dtypes[k] == "int32" else v.astype(dtypes[k]))
            for k, v in decoded.items()}


@torch.no_grad()
def load_integer_state(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Load a decoded state into ``model``, quantized as the saved one was: the quantizers'
    states first, then every weight as its dequantized levels."""
    quantizers = _weight_keys(model)
    floats = {k: torch.from_numpy(np.array(v)) for k, v in state.items() if k not in quantizers}
    current = model.state_dict()
    unused = {k: current[k] for k in current if k.endswith(UNUSED)}
    model.load_state_dict({**unused, **floats, **{k: current[k] for k in quantizers}}, strict=True)
    for key, quantizer in quantizers.items():
        if key not in state:
            raise KeyError(f"the state has no levels for {key}")
        levels = torch.from_numpy(state[key].astype(np.int32))
        model.get_parameter(key).copy_(quantizer.dequantize(levels))
