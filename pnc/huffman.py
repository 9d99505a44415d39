"""Static per-channel Huffman codes for PNC latents (Wang et al., RTSS 2023, Sec. IV-C).

Every latent channel gets its own code, built once from the symbol histogram of that
channel over the training set (Huffman 1952) and known to sender and receiver, so a coded
channel carries no table and no header: the receiver knows how many symbols a channel holds
and stops there; the last byte is padded with zero bits. Codes are canonical (symbols
ordered by code length, then value), so a table is fully described by its code lengths.
Every symbol of the alphabet gets a code (counts are smoothed by one), so unseen values
remain codable.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of every symbol for the (positive) ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 1 or (counts <= 0).any():
        raise ValueError("counts must be a 1-D array of positive numbers")
    if len(counts) == 1:
        return np.ones(1, dtype=np.int64)
    heap = [(c, i, (i,)) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    lengths = np.zeros(len(counts), dtype=np.int64)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code of the symbols ``0 .. len(lengths) - 1``."""
    lengths: tuple[int, ...]

    @classmethod
    def from_counts(cls, counts) -> "HuffmanCode":
        return cls(tuple(int(n) for n in code_lengths(np.asarray(counts, dtype=np.float64) + 1.0)))

    @cached_property
    def codes(self) -> list[int]:
        """Canonical codewords (as integers of ``lengths[s]`` bits)."""
        order = sorted(range(len(self.lengths)), key=lambda s: (self.lengths[s], s))
        codes, code, previous = [0] * len(self.lengths), 0, self.lengths[order[0]]
        for rank, s in enumerate(order):
            if rank:
                code = (code + 1) << (self.lengths[s] - previous)
            codes[s], previous = code, self.lengths[s]
        return codes

    def bits(self, symbols: np.ndarray) -> int:
        return int(np.asarray(self.lengths)[np.asarray(symbols, dtype=np.int64)].sum())

    def encode(self, symbols) -> bytes:
        symbols = np.asarray(symbols, dtype=np.int64).ravel()
        if symbols.size and (symbols.min() < 0 or symbols.max() >= len(self.lengths)):
            raise ValueError(f"symbols must lie in 0..{len(self.lengths) - 1}")
        codes, value, nbits = self.codes, 0, 0
        for s in symbols.tolist():
            value = (value << self.lengths[s]) | codes[s]
            nbits += self.lengths[s]
        pad = -nbits % 8
        return (value << pad).to_bytes((nbits + pad) // 8, "big")

    @cached_property
    def _decode_table(self) -> dict[tuple[int, int], int]:
        return {(length, code): s for s, (length, code) in enumerate(zip(self.lengths, self.codes))}

    def decode(self, data: bytes, count: int) -> np.ndarray:
        """The first ``count`` symbols coded in ``data``; ``ValueError`` if ``data`` ends first."""
        table = self._decode_table
        out = np.empty(count, dtype=np.int64)
        value, length, n = 0, 0, 0
        for byte in data:
            for shift in range(7, -1, -1):
                if n == count:
                    return out
                value, length = (value << 1) | ((byte >> shift) & 1), length + 1
                symbol = table.get((length, value))
                if symbol is not None:
                    out[n], n, value, length = symbol, n + 1, 0, 0
        if n < count:
            raise ValueError(f"the data end after {n} of {count} symbols")
        return out


def channel_codes(symbols: np.ndarray, alphabet: int) -> list[HuffmanCode]:
    """One code per channel from training symbols of shape ``(N, C, H, W)``."""
    symbols = np.asarray(symbols)
    return [HuffmanCode.from_counts(np.bincount(symbols[:, c].ravel(), minlength=alphabet)[:alphabet])
            for c in range(symbols.shape[1])]
