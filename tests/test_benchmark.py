"""Smoke test of the benchmark against the reference (``python -m benchmarks.codec_bench
--quick``).

Runs the benchmark as a subprocess from the repository root, as a user would, and checks the
JSON it writes: the schema, internal consistency of the numbers and that our bitstreams are
byte-identical to the reference's (every quick case uses the tensor API defaults, where they
must be). Needs the reference environment like the conformance tests; with
NNC_SKIP_CONFORMANCE=1 it runs the benchmark with --no-reference and checks our side only.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "benchmarks.codec_bench"]
TIME_LIMIT = 60.0

pytestmark = pytest.mark.slow

STREAM_KEYS = {"bytes", "bits_per_element", "entropy_bits_per_element", "snr_db",
               "encode_s", "decode_s", "encode_min_s", "decode_min_s", "encode_runs_s",
               "decode_runs_s", "deterministic"}


def _skip_reference() -> bool:
    return os.environ.get("NNC_SKIP_CONFORMANCE", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = BENCH + ["--quick", "--no-progress", "--out", str(out)]
    with_reference = not _skip_reference()
    if not with_reference:
        cmd.append("--no-reference")
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m benchmarks.codec_bench --quick took more than {TIME_LIMIT:.0f} s")
    if proc.returncode == 2 and "REFERENCE NOT AVAILABLE" in proc.stderr:
        pytest.fail(proc.stderr + "\n(set NNC_SKIP_CONFORMANCE=1 to run the benchmark without it)",
                    pytrace=False)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads((out / "codec_bench.json").read_text())
    return {"out": out, "stdout": proc.stdout, "report": report, "with_reference": with_reference}


def _check_stream(side: dict, elements: int):
    assert STREAM_KEYS <= set(side), sorted(STREAM_KEYS - set(side))
    assert isinstance(side["bytes"], int) and side["bytes"] > 0
    assert side["bits_per_element"] == pytest.approx(8 * side["bytes"] / elements)
    assert 0 < side["entropy_bits_per_element"] < 32
    assert isinstance(side["snr_db"], float) and 20 < side["snr_db"] < 60   # qp -32, std 0.05
    for key in ("encode_s", "decode_s"):
        runs = side[key.replace("_s", "_runs_s")]
        assert len(runs) >= 1 and all(t > 0 for t in runs)
        assert min(runs) == side[key.replace("_s", "_min_s")] <= side[key] <= max(runs)


def test_report_schema(quick_run):
    report = quick_run["report"]
    assert set(report) == {"machine", "settings", "cases", "summary"}
    machine = report["machine"]
    for key in ("cpu_model", "cores", "python", "numpy", "nnc_core", "nncodec"):
        assert key in machine
    assert machine["cores"] >= 1
    settings = report["settings"]
    assert settings["quick"] is True and settings["repeats"] == 1
    assert settings["memory"] is None and report["summary"]["peak_memory"] is None
    assert all(settings["threads"][v] == "1" for v in settings["threads"])

    cases = report["cases"]
    assert [(c["qp"], c["use_dq"]) for c in cases] == [(-32, True), (-32, False)]
    for c in cases:
        assert {"name", "shape", "qp", "use_dq", "ours", "ref", "ratios", "bytes_identical"} <= set(c)
        assert c["group"] == "gaussian"
        n = math.prod(c["shape"])
        assert c["elements"] == n and f"{c['shape'][0]}x{c['shape'][1]}" in c["name"]
        _check_stream(c["ours"], n)
    # DQ codes the same tensor in fewer bytes at the same qp
    assert cases[0]["ours"]["bytes"] < cases[1]["ours"]["bytes"]
    assert (quick_run["out"] / "codec_bench.png").stat().st_size > 0
    assert "gaussian" in quick_run["stdout"]


def test_bytes_match_reference(quick_run):
    if not quick_run["with_reference"]:
        pytest.skip("NNC_SKIP_CONFORMANCE=1: benchmark run without the reference")
    report = quick_run["report"]
    assert report["machine"]["nncodec"] == "2.1.3"
    for c in report["cases"]:
        n = c["elements"]
        _check_stream(c["ref"], n)
        assert c["bytes_identical"] is True, c["name"]
        assert c["ref"]["deterministic"] is True and c["ours"]["deterministic"] is True
        assert c["ref"]["ours_decodes_ref_stream_equal"] is True
        # identical streams: identical sizes, level statistics and reconstructions
        assert c["ours"]["bytes"] == c["ref"]["bytes"]
        assert c["ours"]["entropy_bits_per_element"] == c["ref"]["entropy_bits_per_element"]
        assert c["ours"]["snr_db"] == pytest.approx(c["ref"]["snr_db"], abs=1e-9)
        r = c["ratios"]
        assert r["size_ratio"] == 1.0
        assert r["encode_speedup"] == pytest.approx(c["ref"]["encode_s"] / c["ours"]["encode_s"])
        assert r["decode_speedup"] == pytest.approx(c["ref"]["decode_s"] / c["ours"]["decode_s"])
        assert r["encode_speedup_paired"] > 0 and r["decode_speedup_paired"] > 0
    summary = report["summary"]
    assert summary["bytes_identical_all"] is True
    assert summary["ours_decodes_ref_streams"] is True
    head = report["cases"][0]
    assert summary["headline_case"] == head["name"]
    assert summary["encode_speedup"] == head["ratios"]["encode_speedup"]
    assert summary["decode_s"] == {"ours": head["ours"]["decode_s"], "ref": head["ref"]["decode_s"]}


def test_no_reference_fields(quick_run):
    if quick_run["with_reference"]:
        pytest.skip("the reference was used")
    for c in quick_run["report"]["cases"]:
        assert c["ref"] is None and c["ratios"] is None and c["bytes_identical"] is None
    assert quick_run["report"]["summary"]["bytes_identical_all"] is None


def test_missing_reference_exits_2(tmp_path):
    missing = tmp_path / "no_such_python"
    proc = subprocess.run(BENCH + ["--quick", "--ref-python", str(missing), "--out", str(tmp_path)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=TIME_LIMIT)
    assert proc.returncode == 2
    assert "REFERENCE NOT AVAILABLE" in proc.stderr and "--no-reference" in proc.stderr
    assert not (tmp_path / "codec_bench.json").exists()


def test_started_as_a_file_says_how_to_run():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "codec_bench.py"), "--quick"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=TIME_LIMIT)
    assert proc.returncode != 0 and "python -m benchmarks.codec_bench" in proc.stderr
