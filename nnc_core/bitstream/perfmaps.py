"""Performance maps of the model / layer parameter sets (ISO/IEC 15938-17, format note 3.3 [R]).

Four optional maps can follow the quantization fields of an MPS (or LPS): sparsification, pruning,
unification and decomposition. Each starts with a ``u(8)`` count ``c`` and then holds ``c - 1``
entries. Entries are kept as plain dictionaries because nothing in the decoder interprets them;
they are parsed only to find where the following fields start, and written back unchanged.

Where the syntax carries an explicit count followed by ``count - 1`` items, the count is kept
separately so that a count of 0 and of 1 both survive a round trip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .bits import BitReader, BitWriter

MAP_KINDS = ("sparsification", "pruning", "unification", "decomposition")


@dataclass
class PerformanceMap:
    """One performance map: ``count`` as coded and ``max(count - 1, 0)`` entries."""

    kind: str
    count: int = 1
    entries: list[dict[str, Any]] = field(default_factory=list)


def _read_floats(reader: BitReader, count: int, name: str) -> list[float]:
    # Each float consumes 32 bits, so a hostile count ends in a truncation error, never a hang.
    return [reader.flt(name) for _ in range(count)]


def _read_entry(reader: BitReader, kind: str) -> dict[str, Any]:
    r = reader
    if kind == "sparsification":
        entry = {"threshold": r.flt("sparsification threshold"),
                 "non_zero_ratio": r.flt("non_zero_ratio"),
                 "accuracy": r.flt("sparsification accuracy")}
    elif kind == "pruning":
        entry = {"ratio": r.flt("pruning ratio"), "accuracy": r.flt("pruning accuracy")}
    elif kind == "unification":
        count = r.ue(1, "count_reshaped_tensor_dimensions")
        entry = {"count_reshaped": count,
                 "reshaped": [r.ue(7, "reshaped_tensor_dimensions") for _ in range(count - 1)]}
        r.byte_alignment()
        count = r.u(8, "count_super_block_dimension")
        entry["count_super_block"] = count
        entry["super_block"] = [r.u(8, "super_block_dimension") for _ in range(count - 1)]
        count = r.u(8, "count_block_dimension")
        entry["count_block"] = count
        entry["block"] = [r.u(8, "block_dimension") for _ in range(count - 1)]
        entry["threshold"] = r.flt("unification threshold")
        entry["accuracy"] = r.flt("unification accuracy")
        entry["n_classes"] = r.u(8, "count_classes")
        entry["class_bitmask"] = r.ue(7, "class_bitmask")
        # The reference parser loops over the bitmask value here (not the class count).
        entry["class_accuracies"] = _read_floats(r, entry["class_bitmask"], "class accuracy")
        return entry
    else:  # decomposition
        entry = {"mse": r.flt("decomposition mse"), "accuracy": r.flt("decomposition accuracy"),
                 "reduction": r.flt("parameter reduction")}
        n_classes = r.u(16, "count_classes")
        entry["class_accuracies"] = _read_floats(r, n_classes, "class accuracy")
        return entry
    n_classes = r.u(8, "count_classes")
    entry["class_bitmask"] = r.ue(7, "class_bitmask")
    entry["class_accuracies"] = _read_floats(r, n_classes, "class accuracy")
    return entry


def read_performance_map(reader: BitReader, kind: str) -> PerformanceMap:
    count = reader.u(8, f"{kind} map count")
    return PerformanceMap(kind, count, [_read_entry(reader, kind) for _ in range(count - 1)])


def _check_len(items: list, expected: int, what: str) -> None:
    if len(items) != expected:
        raise ValueError(f"{what}: {len(items)} items, the syntax needs {expected}")


def _write_entry(writer: BitWriter, kind: str, entry: dict[str, Any]) -> None:
    w = writer
    if kind == "sparsification":
        for key in ("threshold", "non_zero_ratio", "accuracy"):
            w.flt(entry[key])
    elif kind == "pruning":
        w.flt(entry["ratio"])
        w.flt(entry["accuracy"])
    elif kind == "unification":
        _check_len(entry["reshaped"], max(entry["count_reshaped"] - 1, 0), "reshaped dims")
        w.ue(1, entry["count_reshaped"])
        for value in entry["reshaped"]:
            w.ue(7, value)
        w.byte_alignment()
        for count_key, list_key in (("count_super_block", "super_block"),
                                    ("count_block", "block")):
            _check_len(entry[list_key], max(entry[count_key] - 1, 0), list_key)
            w.u(8, entry[count_key])
            for value in entry[list_key]:
                w.u(8, value)
        w.flt(entry["threshold"])
        w.flt(entry["accuracy"])
        w.u(8, entry["n_classes"])
        _check_len(entry["class_accuracies"], entry["class_bitmask"], "class accuracies")
        w.ue(7, entry["class_bitmask"])
        for value in entry["class_accuracies"]:
            w.flt(value)
        return
    else:  # decomposition
        for key in ("mse", "accuracy", "reduction"):
            w.flt(entry[key])
        w.u(16, len(entry["class_accuracies"]))
        for value in entry["class_accuracies"]:
            w.flt(value)
        return
    w.u(8, len(entry["class_accuracies"]))
    w.ue(7, entry["class_bitmask"])
    for value in entry["class_accuracies"]:
        w.flt(value)


def write_performance_map(writer: BitWriter, perf_map: PerformanceMap) -> None:
    if perf_map.kind not in MAP_KINDS:
        raise ValueError(f"unknown performance map kind {perf_map.kind!r}")
    _check_len(perf_map.entries, max(perf_map.count - 1, 0), f"{perf_map.kind} map entries")
    writer.u(8, perf_map.count)
    for entry in perf_map.entries:
        _write_entry(writer, perf_map.kind, entry)
