"""Checkpoint files: named tensors in safetensors, PyTorch and numpy files.

:func:`read_checkpoint` opens

* a ``.safetensors`` file: an 8-byte little-endian header length, a JSON header giving each
  tensor's dtype, shape and byte range, then the raw little-endian data;
* a folder of them, as Hugging Face writes models: sharded by
  ``model.safetensors.index.json`` (whose ``weight_map`` names each tensor's file) or just
  holding one or several ``*.safetensors`` files, read as one checkpoint;
* a PyTorch file (``.pt``, ``.pth``, ``.bin``) holding a state dict, or a dict holding one
  under ``"state_dict"`` or ``"model"`` (read with ``weights_only=True``: no code in the file
  runs);
* an ``.npz`` archive,

and returns a :class:`Checkpoint`, a read-only mapping name -> numpy array that reads a
tensor from disk only when it is looked up: going through it tensor by tensor needs the
memory of one tensor. Its ``dtypes`` are the stored dtypes (:mod:`nnc_core.dtypes` names);
bfloat16 tensors come as float32 arrays. :func:`write_checkpoint` writes tensors to any of
these file types, by extension. torch is imported only for PyTorch files.
"""
from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from . import dtypes as dt

__all__ = ["Checkpoint", "read_checkpoint", "write_checkpoint", "load_torch", "from_torch",
           "tied_names", "checkpoint_bytes", "FORMATS"]

INDEX = "model.safetensors.index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
FORMATS = ".safetensors, .pt, .pth, .bin, .npz, or a folder of .safetensors files"
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
                      "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
                      "BOOL": "bool"}
_SAFETENSORS_CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
_MAX_HEADER = 100 << 20          # the safetensors library's own limit


@dataclass(frozen=True)
class _Stored:
    dtype: str
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]


class Checkpoint(Mapping):
    """The named tensors of a checkpoint, read one at a time (see the module docstring).

    ``dtypes`` and ``shapes`` describe every tensor without reading it; ``ties`` maps a name
    whose tensor is the very tensor of an earlier name (shared storage in a PyTorch file) to
    that name; ``metadata`` is the safetensors ``__metadata__`` (or empty)."""

    def __init__(self, source: str, stored: dict[str, _Stored], ties: dict[str, str] | None = None,
                 metadata: dict | None = None):
        self.source = source
        self._stored = stored
        self.ties = dict(ties or {})
        self.metadata = dict(metadata or {})

    def __getitem__(self, name: str) -> np.ndarray:
        return self._stored[name].read()

    def __iter__(self):
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)

    @property
    def dtypes(self) -> dict[str, str]:
        return {name: s.dtype for name, s in self._stored.items()}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: s.shape for name, s in self._stored.items()}

    def __repr__(self) -> str:
        return f"Checkpoint({self.source!r}, {len(self)} tensors)"


def read_checkpoint(path) -> Checkpoint:
    """Open the checkpoint at ``path`` (a file or a folder; module docstring).

    Raises FileNotFoundError for a missing path (or shard), ValueError for a file that is
    not what its extension says or a format this module does not read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected a checkpoint: "
                                f"{FORMATS})")
    if path.is_dir():
        return _read_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        stored, metadata = _safetensors_entries(path)
        return Checkpoint(str(path), stored, metadata=metadata)
    if suffix in TORCH_SUFFIXES:
        return from_torch(load_torch(path), path)
    if suffix == ".npz":
        return Checkpoint(str(path), _npz_entries(path))
    raise ValueError(f"{path}: unknown checkpoint format {suffix or '(no extension)'!r} "
                     f"(expected {FORMATS})")


# ----------------------------------------------------------------------------- safetensors

def _safetensors_entries(path: Path) -> tuple[dict[str, _Stored], dict]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path}: not a safetensors file (no valid header length)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a safetensors file (header: {error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    placed = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(d) for d in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r}: malformed header entry {info!r}") from None
        if code not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {code}, which is not supported "
                             f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
        dtype = SAFETENSORS_DTYPES[code]
        nbytes = math.prod(shape) * dt.itemsize(dtype)
        if min(shape, default=0) < 0 or begin < 0 or end - begin != nbytes or start + end > size:
            raise ValueError(f"{path}: tensor {name!r}: byte range [{begin}, {end}) does not "
                             f"hold {code} {list(shape)} within the file")
        placed.append((begin, name, _Stored(dtype, shape,
                                            partial(_read_range, path, start + begin, dtype, shape))))
    placed.sort(key=lambda p: p[0])          # file order; sorting is stable for equal offsets
    return {name: stored for _, name, stored in placed}, metadata


def _file_dtype(dtype: str) -> np.dtype:
    return np.dtype("<u2") if dtype == dt.BFLOAT16 else np.dtype(dtype).newbyteorder("<")


def _read_range(path: Path, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    with open(path, "rb") as f:
        f.seek(offset)
        array = np.fromfile(f, dtype=_file_dtype(dtype), count=count)
    if array.size != count:
        raise ValueError(f"{path}: truncated tensor data at byte {offset}")
    if dtype == dt.BFLOAT16:
        array = dt.from_bfloat16_bits(array)
    elif dtype == "bool" and array.view(np.uint8).max(initial=0) > 1:
        raise ValueError(f"{path}: bool tensor at byte {offset} holds bytes other than 0 and 1")
    return array.astype(array.dtype.newbyteorder("="), copy=False).reshape(shape)


def _read_folder(path: Path) -> Checkpoint:
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                raise TypeError
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{index}: not a safetensors index (expected a JSON object with "
                             "a 'weight_map' of tensor name -> shard file)") from None
        shards = list(dict.fromkeys(weight_map.values()))
    else:
        weight_map = None
        shards = sorted(p.name for p in path.glob("*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"{path}: no {INDEX} and no *.safetensors files in this "
                                    "folder (expected a Hugging Face model folder)")
    missing = [s for s in shards if not (path / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: shard(s) {', '.join(missing)} named by {INDEX} "
                                "are missing")
    stored, metadata, where = {}, {}, {}
    for shard in shards:
        entries, shard_metadata = _safetensors_entries(path / shard)
        metadata = metadata or shard_metadata
        for name, entry in entries.items():
            if name in stored:
                raise ValueError(f"{path}: tensor {name!r} is in both {where[name]} and {shard}")
            stored[name], where[name] = entry, shard
    if weight_map is not None:
        wrong = [n for n, s in weight_map.items() if where.get(n) != s]
        extra = [n for n in stored if n not in weight_map]
        if wrong or extra:
            raise ValueError(f"{index} does not match its shards: {(wrong + extra)[:4]}")
        stored = {name: stored[name] for name in weight_map}
    return Checkpoint(str(path), stored, metadata=metadata)


def _write_safetensors(path: Path, tensors: Mapping, dtypes: dict[str, str]) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    shapes = tensors.shapes if isinstance(tensors, Checkpoint) else \
        {name: np.shape(value) for name, value in tensors.items()}
    for name, dtype in dtypes.items():
        nbytes = math.prod(shapes[name]) * dt.itemsize(dtype)
        header[name] = {"dtype": _SAFETENSORS_CODES[dtype], "shape": list(shapes[name]),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)            # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, dtype in dtypes.items():
            f.write(_stored_bytes(tensors[name], dtype, name))


def _stored_bytes(values: np.ndarray, dtype: str, name: str) -> memoryview:
    values = dt.narrow(values, dtype, f"tensor {name!r}")
    if dtype == dt.BFLOAT16:
        values = dt.to_bfloat16_bits(values)
    return memoryview(np.ascontiguousarray(values, dtype=_file_dtype(dtype))).cast("B")


# ----------------------------------------------------------------------------- PyTorch

def load_torch(path) -> object:
    """What ``torch.load(path, weights_only=True)`` gives (memory-mapped where the file
    allows it), with ValueError for a file that holds more than tensors or is no PyTorch
    file."""
    import pickle

    import torch
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):          # files of the legacy format cannot be mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: holds more than tensors (e.g. a pickled module); only "
                         f"state dicts are read, with weights_only=True ({error})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a loadable PyTorch file ({error})") from None


def from_torch(obj, source) -> Checkpoint:
    """A :class:`Checkpoint` of a loaded PyTorch object: a state dict, or a dict holding one
    under ``"state_dict"`` or ``"model"``; ValueError for anything else."""
    import torch
    state = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if isinstance(obj, torch.Tensor):
        raise ValueError(f"{source}: holds one tensor, not a state dict")
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{source}: expected a state dict (tensor names -> tensors), or a dict "
                         f"holding one under 'state_dict' or 'model'; found {type(obj).__name__}")
    stored = {}
    for name, tensor in state.items():
        dtype = dt.check(dt.dtype_name(tensor), f"{source}: tensor {name!r}")
        stored[name] = _Stored(dtype, tuple(tensor.shape), partial(_torch_array, tensor))
    return Checkpoint(str(source), stored, ties=tied_names(state))


def _torch_array(tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return (tensor.float() if dt.dtype_name(tensor) == dt.BFLOAT16 else tensor).numpy()


def _write_torch(path: Path, tensors: Mapping, dtypes: dict[str, str]) -> None:
    import torch
    made = {}                    # one torch tensor per array object: ties stay shared
    state = {}
    for name, dtype in dtypes.items():
        value = tensors[name]
        if id(value) not in made:
            array = np.require(dt.narrow(value, dtype, f"tensor {name!r}"), requirements="C")
            tensor = torch.from_numpy(array)
            made[id(value)] = tensor.to(torch.bfloat16) if dtype == dt.BFLOAT16 else tensor
        state[name] = made[id(value)]
    torch.save(state, path)


def tied_names(values: Mapping) -> dict[str, str]:
    """Names whose tensor is the very tensor of an earlier name (the same memory, shape,
    strides and dtype), mapped to that first name. Works on torch tensors and numpy arrays;
    empty tensors are never tied."""
    first, ties = {}, {}
    for name, value in values.items():
        key = _memory_key(value)
        if key is None:
            continue
        if key in first:
            ties[name] = first[key]
        else:
            first[key] = name
    return ties


def _memory_key(value):
    if hasattr(value, "untyped_storage"):            # torch.Tensor
        if value.numel() == 0 or value.device.type == "meta":
            return None
        return ("torch", str(value.device), value.untyped_storage().data_ptr(),
                value.storage_offset(), tuple(value.shape), tuple(value.stride()), str(value.dtype))
    if isinstance(value, np.ndarray) and value.size:
        return ("numpy", value.__array_interface__["data"][0], value.shape, value.strides,
                value.dtype.str)
    return None


# ----------------------------------------------------------------------------- numpy

def _npz_entries(path: Path) -> dict[str, _Stored]:
    stored = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                name = member[:-len(".npy")]
                kind = dt.check(dtype.name, f"{path}: tensor {name!r}")
                stored[name] = _Stored(kind, tuple(shape), partial(_npz_array, path, name))
    except (zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from None
    return stored


def _npz_array(path: Path, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive[name]


# ----------------------------------------------------------------------------- writing

def write_checkpoint(path, tensors: Mapping, dtypes: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write ``tensors`` (name -> numpy array) to ``path``, by extension: ``.safetensors``
    (with ``{"format": "pt"}`` metadata, which transformers expects), a PyTorch state dict
    (``.pt``, ``.pth``, ``.bin``; names holding the same array object share one tensor) or
    ``.npz``.

    ``dtypes`` (name -> dtype name; default: each array's own) are the dtypes to store:
    float32 arrays become bfloat16 where it says so, integer values must fit their dtype.
    ``.npz`` has no bfloat16: such tensors are written as float32. Returns the dtype each
    tensor was written with. ValueError for an unknown extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".npz", *TORCH_SUFFIXES):
        raise ValueError(f"{path}: unknown checkpoint format {suffix or '(no extension)'!r} "
                         "(expected .safetensors, .pt, .pth, .bin or .npz)")
    given = dtypes or {}
    own = tensors.dtypes if isinstance(tensors, Checkpoint) else {}
    chosen = {name: dt.check(given.get(name) or own.get(name) or dt.dtype_name(tensors[name]),
                             f"tensor {name!r}") for name in tensors}
    if suffix == ".safetensors":
        _write_safetensors(path, tensors, chosen)
    elif suffix == ".npz":
        chosen = {n: "float32" if d == dt.BFLOAT16 else d for n, d in chosen.items()}
        np.savez(path, **{n: dt.narrow(tensors[n], d, f"tensor {n!r}") for n, d in chosen.items()})
    else:
        _write_torch(path, tensors, chosen)
    return chosen


def checkpoint_bytes(checkpoint: Checkpoint) -> int:
    """Bytes of the stored tensors, each tied tensor counted once."""
    return sum(math.prod(shape) * dt.itemsize(checkpoint.dtypes[name])
               for name, shape in checkpoint.shapes.items() if name not in checkpoint.ties)

