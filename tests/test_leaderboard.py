"""benchmarks/leaderboard.py: a smoke run (the main.py rows on two test batches) that
collects every committed benchmark into one table and plot of accuracy against bytes."""
import json

from benchmarks import leaderboard


def test_leaderboard_smoke_run(tmp_path):
    out = tmp_path / "board.json"
    assert leaderboard.main_(["--quick", "--output", str(out)]) == 0
    board = json.loads(out.read_text())
    rows = board["rows"]
    families = {r["family"] for r in rows}
    assert {"NNC tools (main.py)", "NNC (no training)", "ECQ / ECQx (trained)",
            "quantization (run.py compress)", "sparsity / pruning (run.py compress)"} <= families
    for r in rows:
        assert {"method", "bytes", "top1", "command", "source", "pareto"} <= set(r)
        assert 0 <= r["top1"] <= 100 and r["bytes"] > 0
        assert r["command"].startswith("python ")
    assert [r["bytes"] for r in rows] == sorted(r["bytes"] for r in rows)
    front = [r for r in rows if r["pareto"]]
    # along the front, more bytes buy strictly more accuracy
    assert all(a["top1"] < b["top1"] for a, b in zip(front, front[1:]))
    assert rows[0]["pareto"]                                   # the smallest file is on the front
    run_here = [r for r in rows if r["source"].startswith("main.py")]
    assert len(run_here) == len(leaderboard.MAIN_ROWS)
    sparse = {r["method"]: r["weight_sparsity"] for r in run_here}
    assert sparse["NNC --sparsity 0.7, qp -32"] > sparse["NNC --sparsity 0.5, qp -32"] >= 45
    assert out.with_suffix(".png").exists() and board["markdown"].count("\n") == len(rows) + 1
    picked = leaderboard.summary(rows)
    assert {r["method"] for r in front} <= {r["method"] for r in picked}
    assert {r["family"] for r in picked} == families          # every family shows up
    assert board["markdown_summary"].count("\n") == len(picked) + 1
    # collected again without running: the same rows
    assert leaderboard.main_(["--reuse", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == rows
