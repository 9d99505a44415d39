"""The notebooks of notebooks/ run headless from top to bottom (nbclient) and show their results.

The kernel is the interpreter running the tests: a kernel spec named ``python3`` whose
command is ``sys.executable`` is written into a temporary folder that ``JUPYTER_PATH``
puts first, so that neither an installed spec nor another Python on the machine is used.
"""
import json
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks")
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks")
pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
FMNIST = "/usr/share/datasets/fashion-mnist"
HAVE_FMNIST = all(os.path.isfile(os.path.join(FMNIST, f"{p}-{k}-idx{n}-ubyte.gz"))
                  for p in ("train", "t10k") for k, n in (("images", 3), ("labels", 1)))


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernel spec running this interpreter, and an offline environment."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(tmp_path / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
    from jupyter_client.kernelspec import KernelSpecManager
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    return tmp_path


def run_notebook(name, timeout=600):
    """Execute ``notebooks/<name>`` with the repository as working directory; return it."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": REPO}})
    client.execute()
    return nb


def outputs(nb):
    """All text of the code cells' outputs, and the MIME types of their rich outputs."""
    text, mimes = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                mimes.update(out.data)
                text.append(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                text.append(f"{out.ename}: {out.evalue}")
    return "\n".join(text), mimes


def test_notebooks_are_stored_without_outputs():
    names = [n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")]
    assert {"icml_demo.ipynb", "pnc_demo.ipynb"} <= set(names)
    for name in names:
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.skipif(not HAVE_FMNIST, reason=f"the offline demo needs Fashion-MNIST in {FMNIST} "
                                            "(apt-get install dataset-fashion-mnist)")
def test_icml_demo_runs_offline(kernel_env, monkeypatch):
    monkeypatch.setenv("NNC_DEMO", "offline")
    monkeypatch.setenv("NNC_RESULTS", str(kernel_env / "results"))
    nb = run_notebook("icml_demo.ipynb")
    text, mimes = outputs(nb)
    assert "demo: fmnist_segnet on Fashion-MNIST" in text
    # the results table: the original model, then one row per qp with size and mIoU
    original = re.search(r"^\s*orig\s+-\s+([\d.]+)\s+1\.0\s+32\.00\s+([\d.]+)", text, re.M)
    assert original, text
    rows = {int(m[1]): (float(m[2]), float(m[3]))
            for m in re.finditer(r"^\s*(-\d+)\s+[\d.e+-]+\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)",
                                 text, re.M)}
    assert sorted(rows) == [-38, -32, -26, -20, -14]
    sizes = [rows[qp][0] for qp in sorted(rows)]
    assert sizes == sorted(sizes, reverse=True)          # coarser qp, smaller bitstream
    assert sizes[0] < float(original[1])
    miou_original = float(original[2])
    assert miou_original > 60
    assert abs(rows[-38][1] - miou_original) < 1.0        # fine steps: as good as the original
    assert rows[-14][1] < rows[-38][1]                    # coarse steps: worse masks
    assert "image/png" in mimes
    results = kernel_env / "results"
    assert (results / "masks.png").stat().st_size > 1000
    assert (results / "miou_vs_size.png").stat().st_size > 1000
    assert len(list(results.glob("qp*.nnc"))) == 5


@pytest.mark.skipif(not HAVE_FMNIST, reason=f"the PNC demo needs Fashion-MNIST in {FMNIST} "
                                            "(apt-get install dataset-fashion-mnist)")
def test_pnc_demo_runs_offline(kernel_env):
    nb = run_notebook("pnc_demo.ipynb")
    text, mimes = outputs(nb)
    assert "Error" not in text, text
    rows = {m[1]: [(int(b), float(a)) for b, a in re.findall(r"(\d+) B\s+([\d.]+)%", m[2])]
            for m in re.finditer(r"^(PNC without tail-drop|PNC|jpeg q10|webp q10|jpeg q90|webp q90)\s+(.*)$",
                                 text, re.M)}
    assert set(rows) == {"PNC", "PNC without tail-drop", "jpeg q10", "webp q10", "jpeg q90", "webp q90"}, text
    pnc = rows["PNC"]
    assert [b for b, _ in pnc] == sorted(b for b, _ in pnc)        # more channels, more bytes
    assert pnc[-1][1] > 80 and pnc[-1][0] < rows["jpeg q10"][0][0]  # all channels: good and small
    assert "image/png" in mimes
