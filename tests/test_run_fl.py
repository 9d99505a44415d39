"""`run.py fl` as users run it: the in-process engine for a fast end-to-end check, and a
real Flower simulation on Ray (one CPU and no GPU per client, offline)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")
TINY = ["--num_clients", "2", "--epochs", "2", "--max_batches", "3", "--max_batches_test", "2",
        "--batch_size", "32", "--no-verbose"]


def run_fl(*args, timeout=600):
    env = dict(os.environ, WANDB_MODE="offline", FLWR_TELEMETRY_ENABLED="0",
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "run.py", "fl", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def check_summary(results: dict, rounds: int, clients: int):
    s = results["summary"]
    assert s["rounds"] == rounds and s["clients"] == clients
    assert s["bytes_up"] > 0 and s["bytes_down"] > 0 and s["bytes_initial"] > 0
    model = s["model_float32_bytes"]
    # uploads every round from every client; broadcasts from round 2; the first model once
    assert s["bytes_uncompressed"] == model * clients * (2 * rounds - 1)
    assert s["bytes_initial_uncompressed"] == model * clients
    assert 0 < s["traffic_share"] < 1 and 0 < s["traffic_share_with_initial"] < 1
    assert 0 <= s["final_accuracy"] <= 100
    rows = results["runs"][0]["rounds"]
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    assert rows[-1]["cumulative_bytes"] == s["bytes_up"] + s["bytes_down"] + s["bytes_initial"]


def test_help_lists_the_reference_flags():
    out = run_fl("--help").stdout
    for flag in ("--num_clients", "--epochs", "--max_batches", "--max_batches_test", "--model",
                 "--model_rand_int", "--dataset", "--dataset_path", "--batch_size", "--lr", "--qp",
                 "--diff_qp", "--sparsity", "--struct_spars_factor", "--tca", "--err_accumulation",
                 "--compress_upstream", "--compress_downstream", "--compress_differences",
                 "--wandb", "--partition", "--engine", "--config", "--baselines"):
        assert flag in out, flag


def test_bad_partition_is_a_clean_error():
    env = dict(os.environ, WANDB_MODE="offline")
    result = subprocess.run([sys.executable, "run.py", "fl", "--partition", "dirichlet:-1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "dirichlet:ALPHA" in result.stderr
    assert "Traceback" not in result.stderr


@needs_data
def test_inprocess_run_with_baselines(tmp_path):
    run_fl(*TINY, "--engine", "inprocess", "--baselines", "--tca", "--results", str(tmp_path),
           "--wandb")
    results = json.loads((tmp_path / "fl_results.json").read_text())
    check_summary(results, rounds=2, clients=2)
    codecs = [run["codec"] for run in results["runs"]]
    assert codecs == ["nnc", "float32", "float16", "int8", "topk"]
    share = {run["codec"]: run["summary"]["traffic_share"] for run in results["runs"]}
    assert share["float32"] == 1.0 and share["float16"] == 0.5
    assert share["nnc"] < share["int8"] < share["float16"]
    assert (tmp_path / "fl_accuracy_bytes.png").stat().st_size > 0
    assert (tmp_path / "wandb").exists()


@needs_data
@pytest.mark.slow
def test_flower_simulation_engine(tmp_path):
    """The Ray backend of Flower's simulation engine, as `python run.py fl` runs it."""
    run_fl(*TINY, "--engine", "simulation", "--num_cpus", "2", "--results", str(tmp_path))
    check_summary(json.loads((tmp_path / "fl_results.json").read_text()), rounds=2, clients=2)


@needs_data
@pytest.mark.slow
def test_flower_deployment_engine_over_loopback(tmp_path):
    """A SuperLink and one SuperNode per client as processes on 127.0.0.1, `flwr run` of
    the app in experiments/flower_app; every process is gone afterwards."""
    run_fl(*TINY, "--engine", "deployment", "--results", str(tmp_path))
    check_summary(json.loads((tmp_path / "fl_results.json").read_text()), rounds=2, clients=2)
    logs = tmp_path / "deployment_nnc"
    assert (logs / "superlink.log").exists() and (logs / "supernode_1.log").exists()
    # a client app that a SuperNode started may take a moment to exit after its SuperNode
    for _ in range(20):
        leftover = subprocess.run(["pgrep", "-af", "flower-superlink|flower-supernode|flwr-clientapp"],
                                  capture_output=True, text=True)
        if not leftover.stdout.strip():
            break
        time.sleep(0.5)
    assert leftover.stdout.strip() == "", leftover.stdout
