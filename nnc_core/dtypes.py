"""Tensor dtypes by name, as checkpoints store them, including bfloat16, which numpy lacks.

Names are numpy's (``float32``, ``int8``, ``uint8``, ``bool``, ...) plus ``bfloat16``, the
upper 16 bits of an IEEE-754 float32 (sign, 8 exponent bits, 7 fraction bits). Every
bfloat16 value is exactly a float32, so bfloat16 tensors are held in float32 arrays here;
:func:`to_bfloat16_bits` narrows them back to 16-bit patterns, rounding to nearest even, to
write them. :func:`narrow` turns decoded values (float32, float64 or int32) into a tensor
of a given dtype, refusing integers that the dtype cannot hold.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BFLOAT16", "SUPPORTED", "dtype_name", "check", "itemsize", "is_float",
           "from_bfloat16_bits", "to_bfloat16_bits", "narrow"]

BFLOAT16 = "bfloat16"
FLOATS = ("float64", "float32", "float16", BFLOAT16)
INTEGERS = ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool")
SUPPORTED = frozenset(FLOATS + INTEGERS)

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def dtype_name(value) -> str:
    """The dtype of a numpy array, a torch tensor or a Python number, as a name of this
    module (a torch dtype without its ``torch.`` prefix)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return np.asarray(value).dtype.name
    if isinstance(dtype, np.dtype):
        return dtype.name
    return str(dtype).removeprefix("torch.")


def check(name: str, what: str = "tensor") -> str:
    """``name`` if it is a supported dtype, else ValueError naming the supported ones."""
    if name not in SUPPORTED:
        raise ValueError(f"{what}: dtype {name} is not supported (supported: "
                         f"{', '.join(FLOATS + INTEGERS)})")
    return name


def itemsize(name: str) -> int:
    """Bytes per element of the dtype ``name`` as stored."""
    return 2 if name == BFLOAT16 else np.dtype(check(name)).itemsize


def is_float(name: str) -> bool:
    return name in FLOATS


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (uint16)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float values, rounded to nearest even; NaN stays a
    (quiet) NaN, values beyond the largest bfloat16 become infinite."""
    values = np.asarray(values, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)     # room for the rounding carry
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16).astype(np.uint16) & 0x8000) | 0x7FC0
    return rounded


def narrow(values: np.ndarray, name: str, what: str = "tensor") -> np.ndarray:
    """``values`` as a tensor of dtype ``name``: rounded for float16 (clipped to its finite
    range) and bfloat16 (a float32 array holding bfloat16 values), converted for the other
    floats, and for integers and bool checked to lie in the dtype's range (ValueError)."""
    values = np.asarray(values)
    check(name, what)
    if name == BFLOAT16:
        return from_bfloat16_bits(to_bfloat16_bits(values)).reshape(values.shape)
    if name == "float16":
        return np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)
    if is_float(name):
        return values.astype(name, copy=False)
    if values.dtype.kind == "f":
        raise ValueError(f"{what}: float values cannot be restored as {name}")
    low, high = (0, 1) if name == "bool" else (np.iinfo(name).min, np.iinfo(name).max)
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(f"{what}: values in [{values.min()}, {values.max()}] do not fit {name}")
    return values.astype(name, copy=False)
