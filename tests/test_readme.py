"""The README's Python examples and the main example script must run as documented."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "example" / "tensor_coding.py"

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def readme_python_blocks():
    """(line number, code) of every ```python block of README.md."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = readme_python_blocks()


def test_readme_has_python_examples():
    assert BLOCKS, "README.md has no ```python blocks"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)


def _run_example(*args, timeout):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_example_help():
    result = _run_example("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--qp", "--no_dq", "--tensor"):
        assert option in result.stdout


@pytest.mark.slow
def test_example_runs():
    result = _run_example(timeout=600)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert "gaussian 1000x1000" in out and "fmnist_mlp_fc1" in out
    assert out.count("decode == encoder reconstruction: yes") == 2
    # Default options (qp -32, DQ): a few bits per element and a high SNR on both tensors.
    bpe = [float(v) for v in re.findall(r"bits per element\s+([0-9.]+)", out)]
    snr = [float(v) for v in re.findall(r"SNR\s+([0-9.]+) dB", out)]
    assert len(bpe) == 2 and all(0.5 < b < 16 for b in bpe), out
    assert len(snr) == 2 and all(s > 20 for s in snr), out


@pytest.mark.slow
def test_example_codes_a_user_tensor(tmp_path):
    import numpy as np

    path = tmp_path / "t.npy"
    np.save(path, np.random.default_rng(1).normal(0, 0.1, (32, 48)).astype(np.float32))
    result = _run_example("--tensor", str(path), "--qp", "-36", "--no_dq", timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "(32, 48)" in result.stdout
    assert "decode == encoder reconstruction: yes" in result.stdout
