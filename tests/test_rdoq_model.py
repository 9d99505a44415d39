"""benchmarks/rdoq_model.py: bytes at equal accuracy read off rate-accuracy curves, and a
smoke run of the model-level RDOQ sweep."""
import json
import math

import pytest

from benchmarks import rdoq_model


def test_bytes_at_equal_accuracy_interpolates_in_log_bytes():
    curve = [{"bytes": 1000, "top1": 90.0}, {"bytes": 4000, "top1": 92.0}, {"bytes": 2000, "top1": 91.0}]
    assert rdoq_model.bytes_at(curve, 89.0) == 1000                # the smallest already reaches it
    assert rdoq_model.bytes_at(curve, 90.5) == pytest.approx(math.sqrt(1000 * 2000))
    assert rdoq_model.bytes_at(curve, 92.0) == pytest.approx(4000)
    assert rdoq_model.bytes_at(curve, 92.5) is None
    rows = rdoq_model.savings({0.0: curve, 1.0: [{"bytes": 800, "top1": 91.9}, {"bytes": 3000, "top1": 92.0}]}, 92.0)
    assert rows[0]["drop"] == 0.1 and rows[0]["bytes"][1.0] == 800
    assert rows[0]["saving_percent"][1.0] == pytest.approx(100 * (1 - 800 / rdoq_model.bytes_at(curve, 91.9)))


def test_rdoq_model_smoke_run(tmp_path):
    out = tmp_path / "rdoq.json"
    assert rdoq_model.main_(["--qps", "-32", "-24", "--lambdas", "1", "--max_eval_batches", "2",
                             "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    plain, rdoq = data["curves"]["0"], data["curves"]["1"]
    assert [p["qp"] for p in plain] == [-32, -24]
    # at one qp, RDOQ trades distortion for rate: never a larger file
    assert all(r["bytes"] < p["bytes"] for p, r in zip(plain, rdoq))
    assert out.with_suffix(".png").exists()
