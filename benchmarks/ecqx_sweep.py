#!/usr/bin/env python
"""ECQ against ECQx over bit widths and Lambdas (Becking et al. 2022, Figs. 5-6): for each
setting one ``run.py ecqx`` run, and the best epoch's test accuracy against its compressed
size and against its sparsity.

    python -m benchmarks.ecqx_sweep                      # 2-5 bits x 3 Lambdas, ~1 h on 2 cores
    python -m benchmarks.ecqx_sweep --bits 4 --lambdas 0.05 0.2 --epochs 1

Runs already in the JSON file are kept (a stopped sweep continues where it was); writes
``benchmarks/results/ecqx_sweep.json`` and ``ecqx_sweep.png``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.ecqx_sweep ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.ecqx_run import build_parser, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
METHODS = {"ECQ": [], "ECQx": ["--lrp"]}


def setting_key(method: str, bits: int, Lambda: float) -> str:
    return f"{method}/{bits}/{Lambda:g}"


def run_setting(method: str, bits: int, Lambda: float, common: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        argv = [*METHODS[method], "--bitwidth", str(bits), "--Lambda", str(Lambda),
                "--results", out, "--no-verbose", *common]
        result = run(build_parser().parse_args(argv))
    best = result["best"]
    return {"method": method, "bitwidth": bits, "Lambda": Lambda,
            "metric_name": result["metric_name"], "full_precision": result["full_precision"],
            "original_bytes": result["original_bytes"], "best_epoch": best["epoch"],
            "metric": best["metric"], "sparsity": best["sparsity"],
            "compressed_bytes": best["compressed_bytes"], "ratio": best["ratio"],
            "epoch_seconds": [row["seconds"] for row in result["history"][1:]],
            "history": [{k: row[k] for k in ("epoch", "metric", "sparsity", "compressed_bytes")}
                        for row in result["history"]]}


def plot(runs: list[dict], path: Path) -> Path:
    """Accuracy against compressed size and against sparsity; colour = bit width,
    solid = ECQx, dashed = ECQ."""
    fig, (by_size, by_sparsity) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    bit_widths = sorted({r["bitwidth"] for r in runs})
    for method, bits in itertools.product(METHODS, bit_widths):
        group = sorted((r for r in runs if r["method"] == method and r["bitwidth"] == bits),
                       key=lambda r: r["Lambda"])
        if not group:
            continue
        style = dict(color=f"C{bit_widths.index(bits)}", ls="-" if method == "ECQx" else "--",
                     marker="o" if method == "ECQx" else "s", label=f"{method} {bits} bit")
        by_size.plot([r["compressed_bytes"] / 1024 for r in group], [r["metric"] for r in group], **style)
        by_sparsity.plot([r["sparsity"] for r in group], [r["metric"] for r in group], **style)
    full = runs[0]["full_precision"]
    for ax in (by_size, by_sparsity):
        ax.axhline(full, color="gray", lw=0.8, ls=":", label="full precision")
        ax.grid(alpha=0.3)
    by_size.set_xlabel("compressed size (NNC bitstream) [KiB]")
    by_sparsity.set_xlabel("zero weights [%]")
    by_size.set_ylabel(f"test {runs[0]['metric_name']} [%]")
    by_sparsity.legend(fontsize=7, ncol=2)
    fig.suptitle("ECQ vs ECQx, ResNet-20 on Fashion-MNIST (best epoch of each run)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ecqx_sweep",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.15, 0.4])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_batches", type=int, default=200)
    parser.add_argument("--max_eval_batches", type=int, default=None)
    parser.add_argument("--output", default=str(RESULTS / "ecqx_sweep.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore the runs already in --output")
    args = parser.parse_args(argv)
    output = Path(args.output)
    done = {} if args.fresh or not output.exists() else {
        setting_key(r["method"], r["bitwidth"], r["Lambda"]): r
        for r in json.loads(output.read_text())["runs"]}
    common = ["--epochs", str(args.epochs), "--max_batches", str(args.max_batches)]
    if args.max_eval_batches:
        common += ["--max_eval_batches", str(args.max_eval_batches)]
    settings = list(itertools.product(args.bits, args.lambdas, args.methods))
    for i, (bits, Lambda, method) in enumerate(settings):
        key = setting_key(method, bits, Lambda)
        if key in done:
            continue
        done[key] = run_setting(method, bits, Lambda, common)
        r = done[key]
        print(f"[{i + 1}/{len(settings)}] {key}: {r['metric']:.2f}% at {r['sparsity']:.1f}% zeros, "
              f"{r['compressed_bytes']:,} bytes", flush=True)
        runs = sorted(done.values(), key=lambda r: (r["bitwidth"], r["Lambda"], r["method"]))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"settings": {"epochs": args.epochs, "max_batches": args.max_batches,
                                                   "max_eval_batches": args.max_eval_batches},
                                      "runs": runs}, indent=2) + "\n")
    runs = sorted(done.values(), key=lambda r: (r["bitwidth"], r["Lambda"], r["method"]))
    print(f"plot: {plot(runs, output.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
