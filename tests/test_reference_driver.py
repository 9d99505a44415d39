"""The driver of the reference software (reference/driver.py) and its runner, on the jobs that
need no reference: they run with the project's own interpreter, so these tests run without
the reference environment too."""
import importlib.util
import sys

import numpy as np
import pytest

from reference import ReferenceRunner, ReferenceUnavailable, driver


def test_registry_holds_the_operations():
    assert {"encode", "decode", "info", "warmup", "time", "memory"} <= set(driver.OPS)
    assert driver.OPS["encode"].needs({"op": "encode"})
    assert driver.OPS["memory"].needs({"op": "memory", "impl": "ref"})
    assert not driver.OPS["memory"].needs({"op": "memory", "impl": "ours"})
    with pytest.raises(ValueError, match="registered twice"):
        driver.op("encode")(lambda d, job, result: None)


def test_a_registered_operation_runs(tmp_path):
    @driver.op("echo_for_test", needs_reference=False)
    def echo(d, job, result):
        result["echo"] = job["value"]

    try:
        d = driver.Driver()
        try:
            ok = d.run_job(0, {"op": "echo_for_test", "id": "a", "value": 7})
            bad = d.run_job(1, {"op": "no_such_op"})
        finally:
            d.close()
    finally:
        del driver.OPS["echo_for_test"]
    assert ok["ok"] and ok["echo"] == 7 and ok["id"] == "a"
    assert not bad["ok"] and "unknown op 'no_such_op'" in bad["error"]


def test_batch_with_the_project_interpreter(tmp_path):
    x = (np.random.default_rng(0).standard_normal((32, 32)) * 0.05).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runner = ReferenceRunner(sys.executable, check=False)
    results = runner.run_jobs([
        {"op": "memory", "impl": "ours", "input": "x.npy", "args": {"qp": -32}, "id": "mem"},
        {"op": "no_such_op", "id": "bad"},
    ], tmp_path)
    mem, bad = results
    assert mem["ok"], mem["error"]
    assert mem["id"] == "mem" and mem["implementation"] == "ours"
    assert mem["decoded_shape"] == [32, 32] and mem["bytes"] > 0 and mem["tracemalloc_peak"] > 0
    assert mem["peak_rss"] >= mem["baseline_rss"] > 0
    assert not bad["ok"] and "unknown op" in bad["error"] and bad["index"] == 1
    assert runner.launches == 1


@pytest.mark.skipif(importlib.util.find_spec("nncodec") is not None,
                    reason="nncodec is importable here")
def test_a_session_without_the_reference_is_unavailable(tmp_path):
    runner = ReferenceRunner(sys.executable, check=False)
    with pytest.raises(ReferenceUnavailable, match="failed to start"):
        runner.session(tmp_path)
