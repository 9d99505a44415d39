"""benchmarks/layer_qp.py: the per-layer qp choice of rate against loss on hand-made tables,
and a smoke run against one qp and opt_qp."""
import json

from benchmarks import layer_qp


def test_choice_trades_bytes_against_loss_per_layer():
    rates = {"a": {-32: 1000, -24: 400}, "b": {-32: 5000, -24: 1000}}
    rises = {"a": {-32: 0.001, -24: 0.05}, "b": {-32: 0.001, -24: 0.002}}
    # a: 400 + mu 0.05 vs 1000 + mu 0.001 -> coarse below mu = 600 / 0.049
    assert layer_qp.choose(rates, rises, 1e3) == {"a": -24, "b": -24}
    assert layer_qp.choose(rates, rises, 1e5) == {"a": -32, "b": -24}
    assert layer_qp.choose(rates, rises, 1e8) == {"a": -32, "b": -32}


def test_rises_are_made_monotone_in_the_step():
    assert layer_qp.monotone({-40: -0.01, -32: 0.02, -24: 0.01, -16: 0.5}) == \
        {-40: 0.0, -32: 0.02, -24: 0.02, -16: 0.5}


def test_layer_qp_smoke_run(tmp_path):
    out = tmp_path / "layer_qp.json"
    assert layer_qp.main_(["--quick", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    per_layer = data["curves"]["qp per layer (rate + mu loss)"]
    # a larger mu prices the loss higher: finer qps, a larger file
    assert per_layer[0]["bytes"] < per_layer[1]["bytes"]
    assert all(min(p["qps"].values()) >= -40 for p in per_layer)
    for name, rates in data["rates"].items():        # coarser steps, fewer bytes
        sizes = [rates[q] for q in sorted(rates, key=int)]
        assert sizes == sorted(sizes, reverse=True), name
    assert out.with_suffix(".png").exists()
