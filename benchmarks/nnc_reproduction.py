#!/usr/bin/env python
"""Reproduction table of the NNC tools on the offline default (ResNet-20, Fashion-MNIST).

Runs ``main.py`` over a qp sweep for each tool configuration (uniform quantization, DQ,
DQ + BNF, DQ + BNF + LSA) and writes ``benchmarks/results/nnc_reproduction.json``, a
rate-accuracy plot (``nnc_reproduction.png``) and the Markdown table of the README.

    env/bin/python -m benchmarks.nnc_reproduction                 # qp -44 ... -12
    env/bin/python -m benchmarks.nnc_reproduction --qps -32 -26 --max_eval_batches 10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.nnc_reproduction ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import main  # noqa: E402
from experiments.nnc_run import run  # noqa: E402
from experiments.report import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "uniform": [],
    "DQ": ["--use_dq"],
    "DQ+BNF": ["--use_dq", "--bnf"],
    "DQ+BNF+LSA": ["--use_dq", "--bnf", "--lsa"],
}


def markdown(rows: list[dict]) -> str:
    """One row per qp, one column per tool set: top-1 (change) and size (ratio)."""
    tools = [t for t in CONFIGS if any(r["tools"] == t for r in rows)]
    cell = {(r["tools"], r["qp"]): r for r in rows}
    lines = ["| qp | " + " | ".join(tools) + " |", "| ---: |" + " ---: |" * len(tools)]
    for qp in sorted({r["qp"] for r in rows}):
        cells = []
        for t in tools:
            r = cell.get((t, qp))
            cells.append("" if r is None else f"{r['decoded']:.2f} ({r['drop']:+.2f}), "
                         f"{r['compressed_bytes'] / 1000:.1f} kB ({r['ratio']:.1f}x)")
        lines.append(f"| {qp} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], original: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for tools in CONFIGS:
        pts = sorted((r["compressed_bytes"] / 1024, r["decoded"]) for r in rows if r["tools"] == tools)
        if pts:
            ax.plot(*zip(*pts), "o-", label=tools, ms=4)
    ax.axhline(original, color="gray", ls="--", label="uncompressed")
    ax.axhline(original - 0.5, color="gray", ls=":", label="-0.5 points")
    ax.set_xscale("log")
    ax.set_ylim(max(0, original - 10), original + 1)
    ax.set_xlabel("bitstream size [KiB]")
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_title("ResNet-20 on Fashion-MNIST: NNC tools")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nnc_reproduction",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", type=int, nargs="+", default=[-44, -40, -36, -32, -28, -24, -20, -16, -12])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--max_batches", type=int, default=200, help="LSA training batches")
    parser.add_argument("--max_eval_batches", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", default="results/nnc_reproduction",
                        help="where the individual runs keep their bitstreams and JSON")
    opts = parser.parse_args(argv)
    out = Path(opts.out)
    rows, original = [], None
    for tools in opts.configs:
        argv_run = [*CONFIGS[tools], "--qp_sweep", *map(str, opts.qps), "--no-verbose",
                    "--max_batches", str(opts.max_batches), "--results", str(Path(opts.runs) / tools)]
        if opts.max_eval_batches:
            argv_run += ["--max_eval_batches", str(opts.max_eval_batches)]
        print(f"== {tools}: main.py {' '.join(argv_run)}", flush=True)
        result = run(main.build_parser().parse_args(argv_run))
        for r in result["runs"]:
            rows.append({"tools": tools, **{k: r[k] for k in ("qp", "original", "decoded", "drop",
                                                              "compressed_bytes", "ratio",
                                                              "bits_per_param", "original_bytes")}})
            original = r["original"]
    table = markdown(rows)
    write_json({"model": "resnet20", "dataset": "fashion_mnist", "rows": rows, "markdown": table},
               out / "nnc_reproduction.json")
    plot(rows, original, out / "nnc_reproduction.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_())
