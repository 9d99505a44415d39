"""run.py ecqx as users run it: the smoke run, its outputs (bitstream, checkpoint, JSON),
the fallback training of a missing default checkpoint, early stopping, --help, the
protocols and variant flags; and the sweep's bookkeeping (cells, resuming, old files)."""
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
                 "--verbose", "--device", "--patience", "--protocol", "--relevance_source",
                 "--relevance_reset", "--beta_max", "--lambda_max", "--relevance_on",
                 "--ecq_warmup_steps", "--lrp_every", "--ste", "--final_test"):
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


def _args(*argv):
    from experiments import ecqx_run
    return ecqx_run.resolve_args(ecqx_run.build_parser().parse_args(list(argv)))


def test_protocol_defaults_and_explicit_flags():
    ours = _args("--lrp")
    assert (ours.lr, ours.epochs, ours.max_batches, ours.relevance_source) == (1e-4, 3, 200, "quantized")
    official = _args("--lrp", "--protocol", "official", "--lr", "5e-4", "--relevance_on", "nonzero")
    assert (official.lr, official.epochs, official.max_batches) == (5e-4, 10, 0)
    assert (official.relevance_source, official.relevance_reset, official.beta_max,
            official.lambda_max, official.relevance_on) == ("stepped", "epoch", 1.0, "official", "nonzero")


@pytest.mark.parametrize("flags", [["--relevance_on", "nonzero"], ["--ecq_warmup_steps", "10"],
                                   ["--lrp_every", "4"], ["--relevance_source", "shadow"],
                                   ["--beta_max", "1"]])
def test_ecqx_flags_without_lrp_are_errors(flags):
    with pytest.raises(SystemExit, match=f"{flags[0]} only act"):
        _args(*flags)


@needs_data
def test_warmup_over_the_whole_run_is_an_error(tmp_path):
    result = run_py("ecqx", "--lrp", "--max_batches", "2", "--epochs", "1", "--ecq_warmup_steps", "2",
                    "--max_eval_batches", "1", "--results", str(tmp_path), "--no-verbose")
    assert result.returncode == 1
    assert "--ecq_warmup_steps 2 covers all 2 training steps" in result.stderr


@needs_data
def test_official_protocol_with_variants_and_final_test(tmp_path):
    from experiments import ecqx_run
    args = ecqx_run.build_parser().parse_args(
        ["--lrp", "--protocol", "official", "--bitwidth", "2", "--max_batches", "3", "--epochs", "1",
         "--max_eval_batches", "2", "--relevance_on", "nonzero", "--lrp_every", "2",
         "--ecq_warmup_steps", "1", "--final_test", "--results", str(tmp_path), "--no-verbose"])
    results = ecqx_run.run(args)
    assert results["lrp_passes"] == 1                      # steps 2 (LRP) and 3 (reused)
    assert results["options"]["lr"] == 1e-3 and results["options"]["relevance_source"] == "stepped"
    best = results["best"]
    assert best["final_metrics"]["samples"] == 10000 and 0 < best["final_metric"] <= 100
    assert all(beta <= 1.0 for beta in best["betas"].values())


# ----------------------------------------------------------------------------- the sweep

def _fake_run(calls):
    def run_setting(method, bits, Lambda, seed, settings, device=None):
        calls.append((method, bits, Lambda, seed))
        metric = 80.0 + bits + seed + (1.0 if method == "ECQx" else 0.0)
        return {"method": method, "protocol": settings["protocol"], "seed": seed, "bitwidth": bits,
                "Lambda": Lambda, "metric": metric, "sparsity": 50.0 + seed, "metric_name": "top1",
                "compressed_bytes": 1000 * bits + seed, "full_precision": 93.0}
    return run_setting


def test_sweep_accumulates_seeds_and_resumes(tmp_path, monkeypatch):
    from benchmarks import ecqx_sweep
    calls = []
    monkeypatch.setattr(ecqx_sweep, "run_setting", _fake_run(calls))
    out = tmp_path / "sweep.json"
    common = ["--bits", "2", "3", "--lambdas", "0.05", "--methods", "ECQ", "ECQx", "--output", str(out)]
    assert ecqx_sweep.main([*common, "--seeds", "0"]) == 0
    assert len(calls) == 4
    assert ecqx_sweep.main([*common, "--seeds", "0", "1", "2"]) == 0
    assert len(calls) == 12 and all(seed > 0 for *_, seed in calls[4:])     # only the new runs
    data = json.loads(out.read_text())
    assert data["settings"] == {"protocol": "official", "epochs": 10, "max_batches": 0, "lr": 1e-3,
                                "max_eval_batches": None, "lrp_every": 1}
    cell = next(c for c in data["cells"] if c["method"] == "ECQx" and c["bitwidth"] == 2)
    assert cell["n"] == 3 and cell["seeds"] == [0, 1, 2]
    assert cell["metric"] == pytest.approx({"mean": 84.0, "std": 1.0, "min": 83.0, "max": 85.0})
    assert "| 2 | 0.05 | ECQx | 3 | 84.00 ± 1.00 [83.00, 85.00] | 51.0 | 2,001 | +1.00 |" in \
        ecqx_sweep.markdown(data["cells"])
    assert out.with_suffix(".png").exists()
    with pytest.raises(SystemExit, match="other settings: lrp_every 1 \\(now 4\\)"):
        ecqx_sweep.main([*common, "--seeds", "0", "--lrp_every", "4"])


def test_sweeps_side_by_side_share_one_file(tmp_path, monkeypatch):
    """A second sweep that writes the file while the first one runs loses none of its runs."""
    from benchmarks import ecqx_sweep
    out = tmp_path / "sweep.json"
    calls = []
    other = ["--bits", "3", "--lambdas", "0.05", "--methods", "ECQ", "--seeds", "0", "--output", str(out)]
    fake = _fake_run(calls)

    def run_while_another_sweep_writes(method, bits, *rest, **kw):
        if len(calls) == 1:                         # the 3-bit sweep writes between our runs
            monkeypatch.setattr(ecqx_sweep, "run_setting", fake)
            assert ecqx_sweep.main(other) == 0
            monkeypatch.setattr(ecqx_sweep, "run_setting", run_while_another_sweep_writes)
        return fake(method, bits, *rest, **kw)

    monkeypatch.setattr(ecqx_sweep, "run_setting", run_while_another_sweep_writes)
    assert ecqx_sweep.main(["--bits", "2", "--lambdas", "0.05", "--methods", "ECQ", "ECQx",
                            "--seeds", "0", "--output", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert sorted((r["method"], r["bitwidth"]) for r in runs) == [("ECQ", 2), ("ECQ", 3), ("ECQx", 2)]
    assert not list(tmp_path.glob("*.partial"))
    assert ecqx_sweep.main([*other, "--fresh"]) == 0         # --fresh: only the new runs remain
    assert [(r["method"], r["bitwidth"]) for r in json.loads(out.read_text())["runs"]] == [("ECQ", 3)]


def test_sweep_flags_per_method():
    from benchmarks import ecqx_sweep
    settings = {"protocol": "official", "epochs": 10, "max_batches": 0, "lr": 1e-3,
                "max_eval_batches": 20, "lrp_every": 4}
    assert ecqx_sweep.method_flags("ECQ", settings) == [
        "--protocol", "official", "--epochs", "10", "--max_batches", "0", "--lr", "0.001",
        "--max_eval_batches", "20"]
    assert ecqx_sweep.method_flags("ECQx nonzero", settings)[:3] == ["--lrp", "--relevance_on", "nonzero"]
    assert ecqx_sweep.method_flags("ECQx nonzero", settings)[-2:] == ["--lrp_every", "4"]
    for method, flags in ecqx_sweep.METHODS.items():       # every method is a valid run.py ecqx
        _args(*ecqx_sweep.method_flags(method, settings))


def test_the_committed_sweep_file_stays_readable():
    from benchmarks import ecqx_sweep
    path = ROOT / "benchmarks" / "results" / "ecqx_sweep.json"
    data = json.loads(path.read_text())
    settings = ecqx_sweep.stored_settings(data)
    assert settings["protocol"] in ecqx_sweep.PROTOCOLS
    runs = ecqx_sweep.load(path, settings)
    assert runs and all({"method", "bitwidth", "Lambda", "metric", "compressed_bytes"} <= set(r)
                        for r in runs.values())
    assert all(r["method"] in ecqx_sweep.METHODS for r in runs.values())
    assert ecqx_sweep.cells(list(runs.values()))
