"""The tiny-LM use case as users run it: `run.py tlm train|eval` and `run.py fl --dataset v2x`
on a small synthetic V2X layout; language-model metrics exclude padding."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.v2x import QOS_FEATURES
from datasets.v2x_synthetic import write_synthetic_v2x
from datasets import IGNORED_TARGET
from experiments.engine import evaluate_language_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2x")
    write_synthetic_v2x(str(root), records_per_client=40, test_records_per_client=6, seed=3)
    return root


def run(*args, timeout=600):
    env = dict(os.environ, WANDB_MODE="offline", FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


class Echo(torch.nn.Module):
    """Predicts each target perfectly where the input is even, uniformly elsewhere."""

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, 8)
        logits[..., 5] = 50.0 * (tokens % 2 == 0)
        return logits


def test_language_model_metrics_skip_padding():
    x = torch.tensor([[2, 2, 3, 0]])
    y = torch.tensor([[5, 5, 5, IGNORED_TARGET]])
    metrics = evaluate_language_model(Echo(), [(x, y)], "cpu", verbose=False)
    assert metrics["tokens"] == 3
    assert metrics["top1"] == pytest.approx(100 * 2 / 3)
    # two certain hits and one uniform guess over 8 tokens
    assert metrics["perplexity"] == pytest.approx(8 ** (1 / 3), rel=1e-4)


def test_tlm_train_then_eval(layout, tmp_path):
    common = ["--dataset_path", str(layout), "--results", str(tmp_path), "--batch_size", "8",
              "--qos_records", "2", "--no-verbose"]
    run("tlm", "train", "--steps", "3", *common)
    trained = json.loads((tmp_path / "tlm_train.json").read_text())
    checkpoint = tmp_path / "tinyllama_0_v2x.pt"
    assert Path(trained["checkpoint"]) == checkpoint and checkpoint.exists()
    assert len(trained["train_loss"]) >= 1 and trained["synthetic_data"] is True
    run("tlm", "eval", "--model_path", str(checkpoint), *common)
    evaluated = json.loads((tmp_path / "tlm_eval.json").read_text())
    assert evaluated["perplexity"] == pytest.approx(trained["perplexity"], rel=1e-5)
    assert 0 <= evaluated["top1"] <= 100 and evaluated["perplexity"] >= 1
    assert set(evaluated["qos"]) == set(QOS_FEATURES)
    assert all(row["records"] == 2 for row in evaluated["qos"].values())


def test_tlm_eval_without_checkpoint_is_a_clean_error(layout, tmp_path):
    result = subprocess.run([sys.executable, "run.py", "tlm", "eval", "--dataset_path", str(layout),
                             "--model_path", str(tmp_path / "none.pt")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_federated_smoke_run_of_the_smallest_tlm(layout, tmp_path):
    run("fl", "--dataset", "v2x", "--dataset_path", str(layout), "--engine", "inprocess",
        "--epochs", "2", "--max_batches", "2", "--max_batches_test", "2", "--batch_size", "4",
        "--qp", "-18", "--sparsity", "0.8", "--struct_spars_factor", "0.9", "--tca",
        "--results", str(tmp_path), "--no-verbose")
    results = json.loads((tmp_path / "fl_results.json").read_text())
    s = results["summary"]
    assert results["model"] == "tinyllama" and results["partition"] == "regions"
    assert s["clients"] == 5 and s["rounds"] == 2
    assert 0 < s["traffic_share"] < 0.2
    rows = results["runs"][0]["rounds"]
    assert all(r["failures"] == 0 and r["uploads"] == 5 for r in rows)
    assert all(r["perplexity"] >= 1 for r in rows)


def test_regions_partition_needs_one_client_per_file(layout):
    result = subprocess.run([sys.executable, "run.py", "fl", "--dataset", "v2x", "--dataset_path",
                             str(layout), "--num_clients", "3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "one client per file" in result.stderr
    assert "Traceback" not in result.stderr


def test_tokenize_a_v2x_table(tmp_path):
    from datasets.v2x import V2XTokens, num_clients
    table = tmp_path / "v2x.csv"
    rows = ["area,time,rsrp,ping_ms,protocol"] + [
        f"{area},2021-06-01 0{h}:1{i}:00,-9{i}.5,3{i}.0,{'udp' if i % 2 else 'tcp'}"
        for area in ("Park", "Highway") for h in (8, 9) for i in range(5)]
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "layout"
    run("tlm", "tokenize", "--table", str(table), "--dataset_path", str(out),
        "--results", str(tmp_path / "results"), "--test_fraction", "0.2", "--no-verbose")
    assert num_clients(str(out)) == 2
    train = V2XTokens(str(out), "train", max_seq_len=64)
    assert train.clients == ["highway", "park"] and len(train) == 16


def test_main_reports_perplexity_per_bit(layout, tmp_path):
    run("tlm", "train", "--steps", "2", "--dataset_path", str(layout), "--results", str(tmp_path),
        "--qos_records", "0", "--no-verbose")
    subprocess.run([sys.executable, "main.py", "--model", "tinyllama", "--dataset", "v2x",
                    "--dataset_path", str(layout), "--model_path", str(tmp_path / "tinyllama_0_v2x.pt"),
                    "--qp_sweep", "-34", "-22", "--use_dq", "--baselines", "--results", str(tmp_path),
                    "--no-verbose"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    results = json.loads((tmp_path / "tinyllama_results.json").read_text())
    bits = {b["method"]: b["bits_per_param"] for b in results["baselines"]}
    assert bits["float16"] == 16 and 8 < bits["int8 RTN"] < 8.5 and 4 < bits["int4 RTN"] < 4.5
    nnc = sorted(results["runs"], key=lambda r: r["qp"])
    assert nnc[0]["bits_per_param"] > nnc[1]["bits_per_param"]
    assert all(r["perplexity"] >= 1 for r in nnc + results["baselines"])
    assert Path(results["baselines_plot"]).stat().st_size > 0
