"""The codec runs without torch: only the tools that train (LSA) and .pt files need it."""
import subprocess
import sys

import numpy as np

# a meta-path finder that refuses torch, as on a machine without it
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed")
sys.meta_path.insert(0, _NoTorch())
"""


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + code, *args],
                          capture_output=True, text=True, timeout=120)


def test_codec_imports_and_codes_without_torch(tmp_path):
    x = np.random.default_rng(0).normal(0, 0.1, (16, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_without_torch(
        "import sys, numpy as np\n"
        "import nnc_core.nn, nnc_core.tensor, nnc_core.tools\n"
        "from nnc_core.__main__ import main\n"
        "x = np.load(sys.argv[1])\n"
        "open(sys.argv[2], 'wb').write(nnc_core.nn.encode({'w': x}))\n"
        "assert main(['decode', sys.argv[2], '-o', sys.argv[3]]) == 0\n"
        "assert 'torch' not in sys.modules\n",
        str(tmp_path / "x.npy"), str(tmp_path / "x.nnc"), str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    assert np.abs(np.load(tmp_path / "y.npy") - x).max() < 0.01


def test_lsa_names_torch_when_it_is_missing():
    result = run_without_torch("from nnc_core.tools import train_local_scales")
    assert result.returncode != 0 and "torch is not installed" in result.stderr
