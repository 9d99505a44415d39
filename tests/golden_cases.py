"""Inputs and options of the golden bitstream cases (hashes in tests/expected/)."""
import numpy as np


def _gauss(shape, seed=0, std=0.05):
    return lambda: np.random.default_rng(seed).normal(0, std, shape).astype(np.float32)


def _sparse(shape, seed=1):
    def make():
        x = np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)
        x[::3] = 0
        return x
    return make


CASES = {
    "gauss_64x48_dq": (_gauss((64, 48)), {}),
    "gauss_64x48_uniform": (_gauss((64, 48)), {"use_dq": False}),
    "gauss_64x48_qp-20": (_gauss((64, 48)), {"qp": -20}),
    "gauss_64x48_no_param_opt": (_gauss((64, 48)), {"param_opt": False}),
    "conv_16x8x3x3_qp-40": (_gauss((16, 8, 3, 3), seed=2), {"qp": -40}),
    "bias_37": (_gauss((37,), seed=3), {}),
    "sparse_rows_30x20": (_sparse((30, 20)), {}),
    "block_scan_70x45": (_gauss((70, 45), seed=4), {"scan_order": 1}),
    "bitdepth_4": (_gauss((32, 32), seed=5), {"bitdepth": 4}),
    "codebook": (lambda: np.random.default_rng(7).choice(
        np.array([-3.0, 0, 1.5, 2.25], np.float32), (16, 16)), {"approx_method": "codebook", "qp": -40}),
    "int32": (lambda: np.arange(-50, 50, dtype=np.int32).reshape(10, 10) ** 3, {}),
}
