"""The NNCF anchor benchmark (``python -m benchmarks.nncf_anchor``): a quick run (two test
batches, 64 calibration images) checked on the JSON it writes, and its clear error when NNCF
is not installed.

The quick run needs the optional NNCF 3.4.0 (``bash create_env.sh --with-nncf``); without it
the test fails and says so.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import nncf_anchor

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "benchmarks.nncf_anchor"]
EVAL_BATCHES, BATCH, CALIBRATION = 2, 64, 64
METHODS = {"float32", "float32, ONNX", "ours INT8 PTQ", "ours INT8 PTQ, ONNX",
           "ours INT8 PTQ, NNC file", "nncf.quantize INT8 PTQ",
           "nncf.quantize INT8 PTQ, ONNX route", "nncf.compress_weights INT8_SYM",
           "nncf.compress_weights INT8_ASYM"}


@pytest.mark.slow
def test_quick_run(tmp_path):
    if any(importlib.util.find_spec(name) is None for name in ("nncf", "torchao")):
        pytest.fail(f"NNCF is not installed in {sys.prefix}: {nncf_anchor.INSTALL}", pytrace=False)
    cmd = BENCH + ["--max_eval_batches", str(EVAL_BATCHES), "--calibration_images", str(CALIBRATION),
                   "--batch_size", str(BATCH), "--latency_runs", "3", "--no-progress",
                   "--out", str(tmp_path)]
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd[1:])} took more than 600 s")
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "nncf_anchor.png").stat().st_size > 0
    report = json.loads((tmp_path / "nncf_anchor.json").read_text())

    settings = report["settings"]
    assert settings["test_images"] == EVAL_BATCHES * BATCH
    assert settings["calibration_images"] == settings["nncf_quantize"]["subset_size"] == CALIBRATION
    assert report["nncf_version"] == nncf_anchor.NNCF_VERSION
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == METHODS and len(report["rows"]) == len(METHODS)
    for row in rows.values():
        assert 0 <= row["top1"] <= 100, row
        assert row["drop"] == pytest.approx(report["float32_top1"] - row["top1"])
        assert isinstance(row["bytes"], int) and row["bytes"] > 0, row
        if row["runtime"] == "onnxruntime":
            assert row["latency_ms"] > 0, row
        assert row["method"] in proc.stdout
    assert report["float32_top1"] > 85          # the shipped model (93.73 % on the whole set)
    float_onnx = rows["float32, ONNX"]["bytes"]
    assert rows["ours INT8 PTQ, ONNX"]["bytes"] < float_onnx / 2.5      # 8-bit weights
    assert rows["nncf.quantize INT8 PTQ, ONNX route"]["bytes"] < float_onnx
    assert rows["ours INT8 PTQ, NNC file"]["bytes"] < rows["ours INT8 PTQ, ONNX"]["bytes"]
    assert rows["ours INT8 PTQ, NNC file"]["nnc_exact"] is True
    assert rows["ours INT8 PTQ, NNC file"]["top1"] == rows["ours INT8 PTQ"]["top1"]
    one_image = 100 / (EVAL_BATCHES * BATCH)
    assert abs(rows["ours INT8 PTQ, ONNX"]["top1"] - rows["ours INT8 PTQ"]["top1"]) <= 2 * one_image
    for mode in ("INT8_SYM", "INT8_ASYM"):   # int8 weights: well under the float32 state dict
        assert rows[f"nncf.compress_weights {mode}"]["bytes"] < rows["float32"]["bytes"] / 2


def test_missing_nncf_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NNCF_CI", "1")
    monkeypatch.setenv("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    monkeypatch.setitem(sys.modules, "nncf", None)      # as if it were not installed
    assert nncf_anchor.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bash create_env.sh --with-nncf" in err and "Traceback" not in err
    assert not (tmp_path / "nncf_anchor.json").exists()


def test_help_and_started_as_a_file():
    proc = subprocess.run([*BENCH, "--help"], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--max_eval_batches" in proc.stdout and "--calibration_images" in proc.stdout
    proc = subprocess.run([sys.executable, "benchmarks/nncf_anchor.py", "--help"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "python -m benchmarks.nncf_anchor" in proc.stderr
