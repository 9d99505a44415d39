"""What encoder and decoder remember between NDUs of the same tensor (NNC format note §10).

Incremental coding sends successive versions (or differences) of tensors. Each side keeps,
per tensor name, the depth of the last NDU in the parameter update tree, the reconstruction
integers of the last NDU (the base of temporal context adaptation, TCA) and which positions
were ever non-zero (the history of history-dependent significance probability, HDSP).
Encoder and decoder each own one :class:`CodingState` and pass it to every call.
"""
from dataclasses import dataclass, field

import numpy as np

from .errors import DecodeError


@dataclass
class TensorHistory:
    depth: int                 # put_node_depth of the last NDU of this tensor
    parameter_id: int
    levels: np.ndarray         # int32 reconstruction integers of that NDU
    significant: np.ndarray    # uint8: 1 where any NDU so far had a non-zero integer


@dataclass
class CodingState:
    """Per-tensor memory of an incremental encoder or decoder."""
    device_id: int = 0
    tensors: dict[str, TensorHistory] = field(default_factory=dict)

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

    def check_parent(self, name: str, parameter_id: int, depth: int, size: int) -> TensorHistory:
        """The stored version a temporally predicted NDU refers to; DecodeError if it does not fit."""
        last = self.tensors.get(name)
        if last is None:
            raise DecodeError(f"tensor {name!r} uses temporal context adaptation but no earlier "
                              "version of it was decoded with this state")
        if last.depth != depth - 1 or last.parameter_id != parameter_id:
            raise DecodeError(f"tensor {name!r}: NDU refers to depth {depth - 1}, parameter "
                              f"{parameter_id}; the state holds depth {last.depth}, parameter "
                              f"{last.parameter_id}")
        if last.levels.size != size:
            raise DecodeError(f"tensor {name!r}: {size} elements, the earlier version had "
                              f"{last.levels.size}")
        return last
