"""Rounding baselines of main.py --baselines: RTN error within half a step per row, bits
counted with scales, tied weights once."""
import numpy as np
import torch

from experiments.rounding import BASELINES, parameter_count, rounded_state, rtn


def test_rtn_error_is_within_half_a_step_per_row():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (16, 3, 3, 3)).astype(np.float32) * rng.uniform(0.1, 10, (16, 1, 1, 1))
    for bits in (8, 4):
        rows = w.reshape(16, -1)
        step = np.abs(rows).max(1) / (2 ** (bits - 1) - 1)
        error = np.abs(rtn(w, bits) - w).reshape(16, -1).max(1)
        assert np.all(error <= 0.5 * step * 1.002 + 1e-7)
        levels = rtn(w, bits).reshape(16, -1) / step[:, None]
        assert len(np.unique(np.rint(levels))) <= 2 ** bits - 1


def test_bits_count_scales_and_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=True))
    model[1].weight = model[0].weight
    state = model.state_dict()
    assert parameter_count(state) == 40 + 10
    for name, bits in BASELINES.items():
        rounded, total = rounded_state(state, bits)
        expected = 50 * 16 if bits is None else 40 * bits + 10 * 16 + 10 * 16
        assert total == expected, name
        model.load_state_dict(rounded)
        assert torch.equal(model[0].weight, rounded["0.weight"])
        assert torch.equal(rounded["0.weight"], rounded["1.weight"])
