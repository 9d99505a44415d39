"""run.py ecqx as users run it: the smoke run, its outputs (bitstream, checkpoint, JSON),
the fallback training of a missing default checkpoint, early stopping, --help."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from ecqx.size import STEPS, restore
from experiments.engine import EarlyStopping
from nnc_core import nn as nnc_nn

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(not FMNIST.exists(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def run_py(*args, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_ecqx_flags():
    result = run_py("ecqx", "--help")
    assert result.returncode == 0
    for flag in ("--bitwidth", "--Lambda", "--lrp", "--lrp_composite", "--canonizer", "--lrp_output",
                 "--p", "--alpha", "--epochs", "--pretrain_epochs", "--lr", "--batch_size",
                 "--max_batches", "--model", "--model_path", "--model_rand_int", "--dataset",
                 "--dataset_path", "--results", "--wandb", "--wandb_key", "--wandb_run_name",
                 "--verbose", "--device", "--patience"):
        assert flag in result.stdout, flag
    assert "resnetcifar" in result.stdout and "mobilenet" in result.stdout


def test_unknown_pipeline_is_a_usage_error():
    result = run_py("ecqz")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@needs_data
def test_ecqx_smoke_run(tmp_path):
    result = run_py("ecqx", "--lrp", "--max_batches", "2", "--epochs", "1", "--max_eval_batches", "4",
                    "--results", str(tmp_path), "--wandb")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ECQx: composite epsilon_plus_flat_bn_pass, canonizer resnetcifar" in result.stdout
    stem = tmp_path / "ecqx_resnet20_4bit_L0.05"
    results = json.loads(Path(f"{stem}.json").read_text())
    assert [row["epoch"] for row in results["history"]] == [0, 1]
    best = results["best"]
    assert best["epoch"] == 1 and results["method"] == "ECQx"
    bitstream = Path(f"{stem}_best.nnc").read_bytes()
    assert best["compressed_bytes"] == len(bitstream)
    assert best["ratio"] == pytest.approx(results["original_bytes"] / len(bitstream))
    assert results["original_bytes"] == 4 * sum(
        v.numel() for k, v in torch.load(f"{stem}_best.pt")["state_dict"].items()
        if not k.endswith("num_batches_tracked"))
    assert 0.0 <= best["sparsity"] <= 100.0 and 0.0 <= best["metric"] <= 100.0
    assert Path(results["plot"]).exists() and Path(f"{stem}_args.yaml").exists()
    assert list(tmp_path.glob("wandb/offline-run-*"))

    # the bitstream holds exactly the saved checkpoint, with every quantized weight on its grid
    net = models.create_model("resnet20", num_classes=10, in_chans=1)
    decoded = nnc_nn.decode(bitstream)
    names = [n for n, p in net.named_parameters() if p.dim() > 1 and "shortcut" not in n]
    steps = dict(zip(names, decoded[STEPS].view(np.float32).tolist()))
    levels = {n: decoded[n] for n in names}
    restore(net, names, bitstream)
    saved = torch.load(f"{stem}_best.pt")["state_dict"]
    for name, value in net.state_dict().items():
        if not name.endswith("num_batches_tracked"):          # a counter, not coded
            assert torch.equal(value, saved[name]), name
    for name in names:
        assert np.issubdtype(levels[name].dtype, np.integer)
        assert np.ptp(levels[name]) < 16           # 4 bits: at most 16 levels
        w = net.state_dict()[name].numpy()
        np.testing.assert_array_equal(w, (levels[name] * np.float32(steps[name])).astype(np.float32))
    zeros = sum(int((levels[n] == 0).sum()) for n in names) / sum(levels[n].size for n in names)
    assert 100 * zeros == pytest.approx(best["sparsity"])


@needs_data
def test_missing_default_checkpoint_is_trained_first(tmp_path, monkeypatch):
    from experiments import builders, ecqx_run
    missing = tmp_path / "weights" / "fmnist_resnet20.pt"
    monkeypatch.setitem(builders.SHIPPED_CHECKPOINTS, ("resnet20", "fashion_mnist"), missing)
    args = ecqx_run.build_parser().parse_args(
        ["--max_batches", "2", "--epochs", "1", "--max_eval_batches", "2",
         "--results", str(tmp_path / "out"), "--no-verbose"])
    results = ecqx_run.run(args)
    assert missing.exists()
    assert f"{ecqx_run.FALLBACK_PRETRAIN_EPOCHS} epochs full precision" in results["weights"]
    assert results["method"] == "ECQ" and len(results["history"]) == 2


def test_early_stopping_counts_epochs_without_improvement():
    stopping = EarlyStopping(patience=2)
    seen = [(stopping.update(score), stopping.stop) for score in [50.0, 60.0, 59.0, 60.0, 61.0, 3.0, 3.0]]
    assert seen == [(True, False), (True, False), (False, False), (False, True),
                    (True, False), (False, False), (False, True)]
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)


@needs_data
def test_ecqx_on_a_segmentation_network(tmp_path):
    """The segmentation path (dict outputs, per-pixel LRP start, mIoU) on the shipped segnet."""
    from experiments import ecqx_run
    args = ecqx_run.build_parser().parse_args(
        ["--lrp", "--dataset", "fashion_mnist_seg", "--model", "fmnist_segnet", "--max_batches", "3",
         "--epochs", "1", "--max_eval_batches", "3", "--results", str(tmp_path), "--no-verbose"])
    results = ecqx_run.run(args)
    assert results["metric_name"] == "mIoU" and results["method"] == "ECQx"
    assert 0.0 < results["best"]["metric"] <= 100.0
    assert results["best"]["compressed_bytes"] == (tmp_path / "ecqx_fmnist_segnet_4bit_L0.05_best.nnc").stat().st_size
