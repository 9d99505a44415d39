"""The update-coding benchmark (``python -m benchmarks.update_coding``): its smallest run
(``--smoke``, seconds) always, its CI run (``--quick``) among the slow tests, and the
summary logic on made-up rows.

The runs go into a temporary folder, as a user would start them from the repository root;
the checks are on the JSON they write: the three methods with positive sizes, accuracies
in [0, 100] and the check that the receiver reconstructs exactly what the sender holds.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import update_coding

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "benchmarks.update_coding"]
METHODS = {"full", "diff_ed1", "diff_ed2"}


def _run(out: Path, *flags: str, timeout: float) -> dict:
    cmd = BENCH + [*flags, "--no-progress", "--out", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd[1:])} took more than {timeout:.0f} s")
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert (out / "update_coding.png").stat().st_size > 0
    report = json.loads((out / "update_coding.json").read_text())
    report["_stdout"] = proc.stdout
    return report


def _check_report(report: dict, checkpoints: int, test_images: int) -> None:
    assert {"settings", "machine", "model", "training", "reference", "rows", "summary",
            "runtime_s"} <= set(report)
    assert report["settings"]["checkpoints"] == checkpoints
    assert report["settings"]["test_images"] == report["reference"]["test_images"] == test_images
    f32 = report["model"]["float32_bytes"]
    assert f32 == 4 * report["model"]["state_dict_elements"] > 1_000_000   # ResNet-20
    for key in ("initial_top1", "final_top1"):
        assert 0 <= report["reference"][key] <= 100
    rows = report["rows"]
    assert {r["method"] for r in rows} == METHODS
    for r in rows:
        assert r["first_bytes"] > 0
        assert len(r["update_bytes"]) == checkpoints - 1 and all(b > 0 for b in r["update_bytes"])
        assert r["mean_update_bytes"] == pytest.approx(sum(r["update_bytes"]) / (checkpoints - 1))
        assert r["total_bytes"] == r["first_bytes"] + sum(r["update_bytes"])
        assert all(w + v < b for b, w, v in zip(r["update_bytes"], r["update_weight_ndu_bytes"],
                                                r["update_vector_ndu_bytes"]))  # + stream header
        assert all(0 <= z <= 1 for z in r["update_weight_zero_share"])
        assert 0 <= r["final_top1"] <= 100 and 0 <= r["final_agreement"] <= 100
        assert r["exact"] is True
        if r["method"] == "full":   # every checkpoint coded alone: updates are full models
            assert min(r["update_bytes"]) > 0.5 * r["first_bytes"]
        else:
            assert len(r["open_loop_update_bytes"]) == checkpoints - 1
    for qp in report["settings"]["qps"]:   # same first stream without difference tools
        full, ed1 = (next(r for r in rows if r["method"] == m and r["qp"] == qp)
                     for m in ("full", "diff_ed1"))
        assert full["first_bytes"] == ed1["first_bytes"]
    summary = report["summary"]
    assert summary["exact_all"] is True
    assert summary["float32_model_bytes"] == f32
    assert summary["reference_top1"] == report["reference"]["final_top1"]
    assert set(summary["at_equal_accuracy"]) == {"0.1", "0.5"}
    for entry in summary["at_equal_accuracy"].values():
        for m in METHODS:
            pick = entry[m]
            if pick is not None:
                assert abs(pick["change_points"]) <= entry["tolerance_points"] + 1e-9
                assert pick["update_percent_of_float32"] == pytest.approx(
                    100 * pick["mean_update_bytes"] / f32)
    assert "receiver reconstruction == sender's in every run: True" in report["_stdout"]


def test_smoke_run(tmp_path):
    report = _run(tmp_path, "--smoke", timeout=180)
    _check_report(report, checkpoints=2, test_images=500)
    assert report["settings"]["qps"] == [-32] and len(report["rows"]) == 3


@pytest.mark.slow
def test_quick_run(tmp_path):
    report = _run(tmp_path, "--quick", timeout=600)
    _check_report(report, checkpoints=3, test_images=2000)
    rows = report["rows"]
    assert len(rows) == 3 + 3 + 3 * 3       # qps x (full, ed1, ed2 at 3 sparsity settings)
    settings = {(r["sparsity"], r["struct_spars_factor"]) for r in rows
                if r["method"] == "diff_ed2"}
    assert settings == {(0.0, 0.0), (0.8, 0.9), (0.8, 0.0)}
    for r in rows:   # differences are smaller than the full models they update
        if r["method"] != "full":
            assert r["mean_update_bytes"] < r["first_bytes"]


def test_help_and_started_as_a_file():
    proc = subprocess.run([*BENCH, "--help"], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--smoke" in proc.stdout
    proc = subprocess.run([sys.executable, "benchmarks/update_coding.py", "--help"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "python -m benchmarks.update_coding" in proc.stderr


def _row(method, qp, update, top1, sparsity=0.0):
    return {"method": method, "qp": qp, "first_qp": qp, "diff_qp": qp, "sparsity": sparsity,
            "struct_spars_factor": 0.0, "first_bytes": 1000, "mean_update_bytes": float(update),
            "update_weight_ndu_bytes": [update - 20], "update_vector_ndu_bytes": [10],
            "final_top1": top1, "final_agreement": 99.0, "exact": True}


def test_summary_picks_the_cheapest_within_the_band():
    rows = [_row("full", -40, 900, 90.05), _row("full", -30, 600, 90.0),
            _row("full", -20, 300, 88.0),
            _row("diff_ed1", -40, 200, 90.08), _row("diff_ed1", -30, 100, 90.4),
            _row("diff_ed2", -40, 150, 89.95), _row("diff_ed2", -30, 50, 89.7, 0.8)]
    summary = update_coding.summarise(rows, reference=90.0, float32_bytes=4000)
    tight, loose = summary["at_equal_accuracy"]["0.1"], summary["at_equal_accuracy"]["0.5"]
    picked = tight["full"]["qp"], tight["diff_ed1"]["qp"], tight["diff_ed2"]["qp"]
    assert picked == (-30, -40, -40)
    # two-sided: 90.4 is not within 0.1 of 90.0, but within 0.5
    assert (loose["diff_ed1"]["qp"], loose["diff_ed2"]["sparsity"]) == (-30, 0.8)
    assert tight["saving_ed2_vs_ed1_percent"] == pytest.approx(25.0)
    assert tight["saving_ed2_vs_full_percent"] == pytest.approx(75.0)
    assert loose["saving_ed2_vs_ed1_percent"] == pytest.approx(50.0)
    assert tight["diff_ed1"]["update_percent_of_float32"] == pytest.approx(5.0)
    assert tight["diff_ed2"]["change_points"] == pytest.approx(-0.05)
    assert summary["exact_all"] is True
    none = update_coding.summarise([_row("full", -20, 300, 80.0), _row("diff_ed1", -20, 30, 80.0),
                                    _row("diff_ed2", -20, 20, 80.0)], 90.0, 4000)
    assert none["at_equal_accuracy"]["0.5"]["full"] is None
    assert none["at_equal_accuracy"]["0.5"]["saving_ed2_vs_ed1_percent"] is None


def test_configurations_and_presets():
    args = update_coding.resolve(update_coding.build_parser().parse_args(["--smoke"]))
    assert (args.checkpoints, args.qps, args.test_images) == (2, [-32], 500)
    assert update_coding.configurations(args) == [
        ("full", -32, 0.0, 0.0), ("diff_ed1", -32, 0.0, 0.0), ("diff_ed2", -32, 0.8, 0.9)]
    args = update_coding.resolve(update_coding.build_parser().parse_args(
        ["--qps", "-30", "--sparsities", "0", "0.5", "--struct-factors", "0.9", "0"]))
    assert args.checkpoints == 8 and args.test_images == 0
    assert [j for j in update_coding.configurations(args) if j[0] == "diff_ed2"] == [
        ("diff_ed2", -30, 0.0, 0.0), ("diff_ed2", -30, 0.5, 0.9), ("diff_ed2", -30, 0.5, 0.0)]
    with pytest.raises(SystemExit):
        update_coding.resolve(update_coding.build_parser().parse_args(["--checkpoints", "1"]))
