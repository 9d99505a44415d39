"""Lossless-coding baselines and quality measures of nnc_core.metrics."""
import bz2
import math

import numpy as np
import pytest

from nnc_core.metrics import bzip2_bytes, entropy_bits, huffman_bits, snr_db


def test_huffman_hand_computed():
    # frequencies 3, 2, 1 -> code lengths 1, 2, 2
    assert huffman_bits([0, 0, 0, 1, 1, 2]) == 3 * 1 + 2 * 2 + 1 * 2
    # dyadic frequencies reach the entropy exactly
    levels = [0] * 8 + [1] * 4 + [2] * 2 + [3] * 2
    assert huffman_bits(levels) == pytest.approx(entropy_bits(levels) * len(levels))


def test_huffman_single_symbol_and_empty():
    assert huffman_bits([5] * 7) == 7
    assert huffman_bits([]) == 0


@pytest.mark.parametrize("seed", range(5))
def test_huffman_within_one_bit_of_entropy(seed):
    rng = np.random.default_rng(seed)
    levels = np.round(rng.laplace(0, 1 + seed, 5000)).astype(np.int32)
    h = entropy_bits(levels) * levels.size
    assert h <= huffman_bits(levels) < h + levels.size


def test_bzip2_uses_narrowest_type():
    small = np.arange(-100, 100, dtype=np.int64).repeat(10)
    assert bzip2_bytes(small) == len(bz2.compress(small.astype(np.int8).tobytes(), 9))
    wide = np.array([0, 40000, -3], dtype=np.int64)
    assert bzip2_bytes(wide) == len(bz2.compress(wide.astype(np.int32).tobytes(), 9))


def test_entropy_bounds():
    assert entropy_bits(np.zeros(10)) == 0.0
    assert entropy_bits(np.arange(8)) == pytest.approx(3.0)


def test_snr():
    x = np.ones(4)
    assert snr_db(x, x) == math.inf
    assert snr_db(x, x * 0.9) == pytest.approx(20.0)
