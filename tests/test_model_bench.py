"""Smoke test of the whole-model benchmark (``python -m benchmarks.model_bench --quick``).

Runs it as a user would, from the repository root, and checks the JSON it writes: every
case coded byte-identically by both implementations and on every thread count, speed-ups
consistent with the times, the small-tensor and 1,000-tensor measurements present. Needs
the reference environment like the conformance tests; with NNC_SKIP_CONFORMANCE=1 the
benchmark runs with --no-reference and only our side is checked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "benchmarks.model_bench"]
TIME_LIMIT = 90.0

pytestmark = pytest.mark.slow


def _skip_reference() -> bool:
    return os.environ.get("NNC_SKIP_CONFORMANCE", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_bench")
    cmd = BENCH + ["--quick", "--out", str(out)]
    with_reference = not _skip_reference()
    if not with_reference:
        cmd.append("--no-reference")
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m benchmarks.model_bench --quick took more than {TIME_LIMIT:.0f} s")
    if proc.returncode == 2 and "REFERENCE NOT AVAILABLE" in proc.stderr:
        pytest.fail(proc.stderr + "\n(set NNC_SKIP_CONFORMANCE=1 to run the benchmark without it)",
                    pytrace=False)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads((out / "model_bench.json").read_text())
    return {"out": out, "stdout": proc.stdout, "report": report, "with_reference": with_reference}


def test_schema_and_thread_independence(quick_run):
    report = quick_run["report"]
    assert set(report) == {"machine", "settings", "cases", "summary"}
    assert report["settings"]["quick"] is True
    cases = report["cases"]
    assert {(c["model"], c["config"]) for c in cases} == {
        (m, c) for m in ("resnet20", "tinyllama0") for c in ("qp-38 DQ", "qp-26 DQ sparsity 0.5")}
    for c in cases:
        assert c["same_bytes_any_thread_count"] is True and c["deterministic"] is True
        assert c["params"] > 100_000 and c["tensors"] >= c["small_tensors"] > 0
        for label in ("1", "all"):
            side = c["ours"][label]
            assert side["bytes"] > 0 and side["encode_s"] > 0 and side["decode_s"] > 0
        assert c["ours"]["1"]["threads"] == 1
        assert c["ours"]["all"]["threads"] == report["settings"]["threads_all_cores"]
    # sparsity at a coarser qp: fewer bytes
    by = {(c["model"], c["config"]): c["ours"]["1"]["bytes"] for c in cases}
    for model in ("resnet20", "tinyllama0"):
        assert by[(model, "qp-26 DQ sparsity 0.5")] < by[(model, "qp-38 DQ")]
    summary = report["summary"]
    assert summary["same_bytes_any_thread_count_all"] is True
    assert summary["transformer_model"] == "tinyllama0"
    info = summary["info_1000_tensors"]
    assert info["units"] == 1003 and info["decoded_tensors"] == 1000
    assert info["cli_info_wall_s"] > 0
    assert len(summary["small_tensors"]) == 2
    assert (quick_run["out"] / "model_bench.png").exists() or not quick_run["with_reference"]


def test_identical_to_the_reference(quick_run):
    if not quick_run["with_reference"]:
        pytest.skip("NNC_SKIP_CONFORMANCE=1: benchmark run without the reference")
    report = quick_run["report"]
    assert report["machine"]["nncodec"] == "2.1.3"
    for c in report["cases"]:
        assert c["bytes_identical"] is True, (c["model"], c["config"])
        assert c["ref"]["bytes"] == c["ours"]["1"]["bytes"] == c["ours"]["all"]["bytes"]
        s = c["speedups"]
        assert s["encode_1_thread"] == pytest.approx(c["ref"]["encode_s"] / c["ours"]["1"]["encode_s"])
        assert s["decode_all_cores"] == pytest.approx(c["ref"]["decode_s"] / c["ours"]["all"]["decode_s"])
        if "sparsity" in c["config"]:
            assert c["ref"]["sparsify_s"] > 0
    summary = report["summary"]
    assert summary["bytes_identical_all"] is True
    assert set(summary["transformer"]) == {"qp-38 DQ", "qp-26 DQ sparsity 0.5"}
    for small in summary["small_tensors"]:
        assert small["bytes_identical"] is True
        assert small["decode_speedup"] > 0
