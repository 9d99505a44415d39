"""What encoder and decoder remember between NDUs of the same tensor (NNC format note §10).

Incremental coding sends successive versions (or differences) of tensors. Each side keeps,
per tensor name, the depth of the last NDU in the parameter update tree, the reconstruction
integers of the last NDU (the base of temporal context adaptation, TCA) and which positions
were ever non-zero (the history of history-dependent significance probability, HDSP). For
differential model coding (:func:`nnc_core.nn.encode` with a state) it also holds the base
model that the next difference is taken against: the sum of everything decoded so far.

Encoder and decoder each own one :class:`CodingState` and pass it to every call; nothing is
shared between them but the bitstream. A state can be saved to a plain ``.npz`` file (no
pickle) and loaded again, so that a client or server can restart.
"""
from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import DecodeError

STATE_FORMAT = 1


@dataclass
class TensorHistory:
    depth: int                 # put_node_depth of the last NDU of this tensor
    parameter_id: int
    levels: np.ndarray         # int32 reconstruction integers of that NDU
    significant: np.ndarray    # uint8: 1 where any NDU so far had a non-zero integer


@dataclass
class CodingState:
    """Per-tensor memory of an incremental encoder or decoder.

    ``device_id`` is the sender's id in the parameter update tree, written into every NDU
    by an encoder (0 if None). A decoder's state left at None takes the id of the first
    stream it decodes; streams from another device then raise DecodeError.
    ``base`` is the reconstructed model, ``{name: array}``, that differences refer to.
    """
    device_id: int | None = None
    tensors: dict[str, TensorHistory] = field(default_factory=dict)
    base: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.device_id is not None and (isinstance(self.device_id, bool) or
                                           not isinstance(self.device_id, (int, np.integer))
                                           or not 0 <= self.device_id < 2**31):
            raise ValueError(f"device_id must be None or an integer in [0, 2^31), "
                             f"got {self.device_id!r}")

    # ------------------------------------------------------------------- per-tensor history
    def previous(self, name: str) -> TensorHistory | None:
        return self.tensors.get(name)

    def next_depth(self, name: str) -> int:
        last = self.tensors.get(name)
        return last.depth + 1 if last else 1

    def record(self, name: str, parameter_id: int, depth: int, levels: np.ndarray) -> None:
        levels = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
        last = self.tensors.get(name)
        significant = (levels != 0).astype(np.uint8)
        if last is not None and last.significant.shape == significant.shape:
            significant |= last.significant
        self.tensors[name] = TensorHistory(depth, parameter_id, levels, significant)

    def check_device(self, device_id: int) -> None:
        """A decoder's check that a stream comes from the device this state follows."""
        if self.device_id is None:
            self.device_id = int(device_id)
        elif device_id != self.device_id:
            raise DecodeError(f"the stream comes from device {device_id}; this state follows "
                              f"device {self.device_id}")

    def check_node(self, name: str, parameter_id: int, depth: int, size: int) -> None:
        """DecodeError unless an NDU of ``name`` at ``depth`` continues this state's tree.
        Depth 0 marks a base-model tensor: it starts the tensor's chain afresh (with the
        element count the state knows for it)."""
        last = self.tensors.get(name)
        expected = last.depth + 1 if last else 1
        if depth not in (0, expected):
            held = f"depth {last.depth}" if last else "no earlier version"
            raise DecodeError(f"tensor {name!r}: NDU at update-tree depth {depth}, expected "
                              f"{expected} (the state holds {held})")
        if depth and last is not None and last.parameter_id != parameter_id:
            raise DecodeError(f"tensor {name!r}: parameter id {parameter_id}, the state "
                              f"holds {last.parameter_id}")
        known = self.base.get(name)
        known_size = last.levels.size if last is not None else (
            None if known is None else known.size)
        if known_size is not None and known_size != size:
            raise DecodeError(f"tensor {name!r}: {size} elements, the earlier version had "
                              f"{known_size}")

    def check_parent(self, name: str, parameter_id: int, depth: int, size: int) -> TensorHistory:
        """The stored version a temporally predicted NDU refers to; DecodeError if it does not fit."""
        last = self.tensors.get(name)
        if last is None:
            raise DecodeError(f"tensor {name!r} uses temporal context adaptation but no earlier "
                              "version of it was decoded with this state")
        if depth == 0:
            raise DecodeError(f"tensor {name!r}: a temporally predicted NDU cannot be at "
                              "update-tree depth 0 (a base-model tensor has no parent)")
        self.check_node(name, parameter_id, depth, size)
        return last

    # ------------------------------------------------------------------- base model
    def advance_base(self, updates: dict[str, np.ndarray]) -> None:
        """Add decoded differences to the base (a tensor not yet in it starts at zero).
        The base holds float32 or int32 tensors, like the models it follows."""
        for name, delta in updates.items():
            delta = delta.astype(np.float32 if delta.dtype.kind == "f" else np.int32, copy=False)
            old = self.base.get(name)
            self.base[name] = delta.copy() if old is None else \
                (old + delta.reshape(old.shape)).astype(old.dtype)

    # ------------------------------------------------------------------- transactions
    def snapshot(self) -> "CodingState":
        """A copy to restore if coding fails half-way (histories and base are replaced,
        never modified in place, so a shallow copy of the dicts suffices)."""
        return CodingState(self.device_id, dict(self.tensors), dict(self.base))

    def restore(self, snapshot: "CodingState") -> None:
        self.device_id, self.tensors, self.base = (snapshot.device_id, snapshot.tensors,
                                                   snapshot.base)

    def copy(self) -> "CodingState":
        return copy.deepcopy(self)

    # ------------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the state to an ``.npz`` file (a path or a binary file object; plain
        arrays, loadable without pickle)."""
        names = list(self.tensors)
        base_names = list(self.base)
        arrays = {
            "format": np.array(STATE_FORMAT),
            "device_id": np.array(-1 if self.device_id is None else self.device_id, np.int64),
            "names": np.array(names, dtype=str), "base_names": np.array(base_names, dtype=str),
            "depths": np.array([self.tensors[n].depth for n in names], np.int64),
            "parameter_ids": np.array([self.tensors[n].parameter_id for n in names], np.int64),
        }
        for i, n in enumerate(names):
            arrays[f"levels_{i}"] = self.tensors[n].levels
            arrays[f"significant_{i}"] = self.tensors[n].significant
        for i, n in enumerate(base_names):
            arrays[f"base_{i}"] = self.base[n]
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "CodingState":
        """Read a state written by :meth:`save`; ValueError if the file is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != STATE_FORMAT:
                    raise ValueError(f"{path}: coding-state format {int(data['format'])}, "
                                     f"expected {STATE_FORMAT}")
                device = int(data["device_id"])
                tensors = {
                    str(n): TensorHistory(int(d), int(p), data[f"levels_{i}"].astype(np.int32),
                                          data[f"significant_{i}"].astype(np.uint8))
                    for i, (n, d, p) in enumerate(zip(data["names"], data["depths"],
                                                      data["parameter_ids"]))}
                base = {str(n): data[f"base_{i}"] for i, n in enumerate(data["base_names"])}
        except (KeyError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a coding state saved by CodingState.save "
                             f"({error})") from None
        return cls(None if device < 0 else device, tensors, base)
