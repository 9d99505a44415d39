"""What an NNC stream records about a checkpoint besides the coded values: each tensor's
original dtype, whether it was a scalar, and which names share one tensor.

* dtype, by the standard: an NDU's ``nnr_decompressed_data_format`` (ISO/IEC 15938-17, NDU
  header; 0 int32, 1 float32, 2 int2, 3 int3, 4 int4, 5 int8, 6 int16, 7 int64, 8 float16,
  9 float64) is written when a tensor's dtype is one of these and differs from what its
  payload decodes to anyway (INT: int32; FLOAT: float32, float64 with a codebook).
* everything else, by a convention of this library: the dtypes that table lacks (bfloat16,
  unsigned integers, bool), the dtypes of tensors inside BLOCK NDUs (one header serves
  several tensors), the names of scalars (an NDU has at least one dimension, so a scalar
  travels as shape [1]) and tied names go into the topology unit's ``topology_data`` string
  as one JSON object ``{"nnc_checkpoint": {"dtypes": {name: dtype}, "scalars": [name, ...],
  "tied": {name: first name}}}``. For storage format 0 (unrecognised) the standard
  leaves that string to the application, and the reference decoder reads and ignores it
  for format 3 (PyTorch) as well, so the stream stays conformant: a decoder that does not
  know the convention gets float32 / int32 values and each tied tensor once, under its
  first name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import dtypes as dt
from .errors import DecodeError

__all__ = ["DATA_FORMATS", "data_format", "format_dtype", "carried_by_ndu", "StreamNote"]

# nnr_decompressed_data_format -> dtype (the narrow integer formats decode to int8)
DATA_FORMATS = {0: "int32", 1: "float32", 2: "int8", 3: "int8", 4: "int8", 5: "int8",
                6: "int16", 7: "int64", 8: "float16", 9: "float64"}
_CODES = {"int32": 0, "float32": 1, "int8": 5, "int16": 6, "int64": 7, "float16": 8,
          "float64": 9}
_NARROW_BITS = {2: 2, 3: 3, 4: 4}
KEY = "nnc_checkpoint"


def carried_by_ndu(dtype: str) -> bool:
    """Whether ``nnr_decompressed_data_format`` can name ``dtype``."""
    return dtype in _CODES


def data_format(dtype: str, decodes_to: str) -> int | None:
    """The ``nnr_decompressed_data_format`` to write for a tensor of ``dtype`` whose payload
    decodes to ``decodes_to``; None where nothing needs saying or the table lacks it."""
    return _CODES.get(dtype) if dtype != decodes_to else None


def format_dtype(code: int, integer_payload: bool, what: str) -> tuple[str, int | None]:
    """The dtype an ``nnr_decompressed_data_format`` asks for, and for the int2/3/4 formats
    their bit width (their values must fit it); DecodeError for reserved codes and for
    integer formats on quantized (float) payloads."""
    if code not in DATA_FORMATS:
        raise DecodeError(f"{what}: nnr_decompressed_data_format {code} is reserved")
    dtype = DATA_FORMATS[code]
    if dt.is_float(dtype) == integer_payload:
        raise DecodeError(f"{what}: nnr_decompressed_data_format {code} ({dtype}) does not "
                          f"fit its {'integer' if integer_payload else 'quantized'} payload")
    return dtype, _NARROW_BITS.get(code)


@dataclass
class StreamNote:
    """The checkpoint facts of the topology data (module docstring)."""
    dtypes: dict[str, str] = field(default_factory=dict)
    scalars: list[str] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)    # name -> name it shares a tensor with

    def __bool__(self) -> bool:
        return bool(self.dtypes or self.scalars or self.tied)

    def text(self) -> str:
        """The topology_data string: empty when there is nothing to record."""
        if not self:
            return ""
        body = {k: v for k, v in (("dtypes", self.dtypes), ("scalars", self.scalars),
                                  ("tied", self.tied)) if v}
        return json.dumps({KEY: body}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> "StreamNote":
        """The note in a topology_data string; empty for other applications' data.
        DecodeError if it is this convention's object but malformed."""
        try:
            outer = json.loads(text) if text.startswith("{") else None
        except json.JSONDecodeError:
            outer = None
        if not isinstance(outer, dict) or KEY not in outer:
            return cls()
        body = outer[KEY]
        try:
            note = cls(dict(body.get("dtypes", {})), list(body.get("scalars", [])),
                       dict(body.get("tied", {})))
        except (AttributeError, TypeError, ValueError):
            raise DecodeError(f"topology data: malformed {KEY} object") from None
        for name, dtype in note.dtypes.items():
            if not isinstance(name, str) or dtype not in dt.SUPPORTED:
                raise DecodeError(f"topology data: tensor {name!r} has unknown dtype {dtype!r}")
        names = [*note.scalars, *note.tied, *note.tied.values()]
        if not all(isinstance(n, str) for n in names):
            raise DecodeError("topology data: tensor names must be strings")
        return note
