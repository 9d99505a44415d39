"""main.py as users run it: the default job, a qp sweep, the tools, wandb offline, --help,
timm models."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnc_core import nn as nnc_nn

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "example" / "weights" / "fmnist_resnet20.pt"
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")

needs_data = pytest.mark.skipif(not FMNIST.exists(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def run_main(*args, timeout=600, env=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline", **(env or {}))
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result.stdout


def test_help_lists_flags_models_and_datasets():
    out = run_main("--help")
    for flag in ("--qp", "--nonweight_qp", "--qp_density", "--opt_qp", "--use_dq", "--lsa", "--bnf",
                 "--batch_size", "--epochs", "--max_batches", "--lr", "--model", "--model_path",
                 "--dataset", "--dataset_path", "--results", "--workers", "--wandb", "--wandb_key",
                 "--wandb_run_name", "--pre_train_model", "--plot_segmentation_masks", "--verbose",
                 "--device", "--config", "--qp_sweep", "--model_rand_int", "--sparsity",
                 "--struct_spars_factor"):
        assert flag in out, flag
    assert "resnet20" in out and "deeplabv3_resnet50" in out and "fashion_mnist" in out
    assert "timm/<name>" in out


@needs_data
def test_default_job(tmp_path):
    """`python main.py`: the shipped ResNet-20, Fashion-MNIST test set, qp -32."""
    out = run_main("--results", str(tmp_path))
    result = json.loads((tmp_path / "resnet20_results.json").read_text())
    (run,) = result["runs"]
    assert result["weights"].endswith("fmnist_resnet20.pt")
    assert run["decoded_metrics"]["samples"] == 10000
    assert run["original"] > 90 and abs(run["drop"]) < 1.0
    assert 4 < run["ratio"] < 32 and run["compressed_bytes"] == (tmp_path / run["bitstream"]).stat().st_size
    assert set(run["coders"]) == {"DeepCABAC (NNC)", "Huffman", "bzip2", "0th-order entropy"}
    # Huffman lies within one bit per level of the zeroth-order entropy; DeepCABAC beats bzip2
    c, levels = run["coders"], sum(l["params"] for l in run["layers"] if l["kind"] != "integer")
    assert c["0th-order entropy"] <= c["Huffman"] <= c["0th-order entropy"] + levels / 8 + 1
    assert c["DeepCABAC (NNC)"] < c["bzip2"]
    assert (tmp_path / "args.yaml").exists() and "0th-order entropy" in out
    decoded = nnc_nn.decode((tmp_path / run["bitstream"]).read_bytes())
    assert len(decoded) == sum(len(l["members"]) for l in run["layers"])


@needs_data
def test_sweep_with_all_tools_and_wandb_offline(tmp_path):
    out = run_main("--qp_sweep", "-30", "-24", "--use_dq", "--bnf", "--lsa", "--opt_qp",
                   "--max_batches", "3", "--max_eval_batches", "4", "--batch_size", "32",
                   "--results", str(tmp_path), "--wandb", "--wandb_run_name", "smoke", "--no-verbose")
    result = json.loads((tmp_path / "resnet20_results.json").read_text())
    runs = result["runs"]
    assert [r["qp"] for r in runs] == [-30, -24]
    assert runs[1]["compressed_bytes"] < runs[0]["compressed_bytes"]
    assert all(l["kind"].startswith("block(") for l in runs[0]["layers"] if "conv" in l["name"])
    assert (tmp_path / "resnet20_rate_accuracy.png").stat().st_size > 1000
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline wandb run"
    assert "qp" in out


@needs_data
def test_config_file_and_bad_checkpoint(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("qp: -20\nmax_eval_batches: 2\nverbose: false\n")
    run_main("--config", str(cfg), "--results", str(tmp_path))
    assert json.loads((tmp_path / "resnet20_results.json").read_text())["runs"][0]["qp"] == -20
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "--model_path", str(tmp_path / "nope.pt"),
                          "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not found" in bad.stderr


needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")


@needs_timm
def test_timm_model_without_network_is_a_clean_error(tmp_path):
    """Pretrained timm weights that cannot be fetched: one line on stderr, no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), WANDB_MODE="offline")
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "--model", "timm/mobilenetv3_small_050",
                          "--results", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.startswith("error: model 'timm/mobilenetv3_small_050': the pretrained weights")
    for hint in ("could not be downloaded", "HF_HUB_OFFLINE", "--model_path", "--model_rand_int"):
        assert hint in bad.stderr, hint


@pytest.mark.slow
@needs_timm
@needs_data
def test_timm_model_random_init_job(tmp_path):
    """`main.py --model timm/<name> --model_rand_int`: offline, one small evaluation."""
    out = run_main("--model", "timm/mobilenetv3_small_050", "--model_rand_int", "--max_eval_batches", "1",
                   "--batch_size", "16", "--no-verbose", "--results", str(tmp_path),
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    result = json.loads((tmp_path / "timm_mobilenetv3_small_050_results.json").read_text())
    (run,) = result["runs"]
    assert result["model"] == "timm/mobilenetv3_small_050" and result["weights"] == "random init"
    assert run["decoded_metrics"]["samples"] == 16 and run["ratio"] > 3
    assert (tmp_path / run["bitstream"]).stat().st_size == run["compressed_bytes"]
    assert "(random init)" in out


def test_shipped_checkpoint_is_small_and_loads():
    import models
    assert CHECKPOINT.stat().st_size < 2_000_000
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    meta = models.load_checkpoint(model, CHECKPOINT)
    assert meta.get("test_top1", 0) > 90
    assert np.isfinite(sum(p.sum().item() for p in model.parameters()))


@needs_data
def test_sparsity_reaches_the_decoded_weights(tmp_path):
    """--sparsity zeroes weights before coding; the run reports the decoded share per layer
    and overall, and a sparser model codes into fewer bytes."""
    run_main("--sparsity", "0.5", "--max_eval_batches", "2", "--results", str(tmp_path / "s"))
    run_main("--max_eval_batches", "2", "--results", str(tmp_path / "d"))
    (sparse,) = json.loads((tmp_path / "s" / "resnet20_results.json").read_text())["runs"]
    (dense,) = json.loads((tmp_path / "d" / "resnet20_results.json").read_text())["runs"]
    weights = [l for l in sparse["layers"] if len(l["shape"]) > 1]
    assert sparse["weight_sparsity"] >= 50 > dense["weight_sparsity"]
    assert all(0 <= l["sparsity"] <= 100 for l in weights)
    assert sparse["compressed_bytes"] < 0.8 * dense["compressed_bytes"]
