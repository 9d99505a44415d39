#!/usr/bin/env python
"""Every ``run.py compress`` method on the shipped Fashion-MNIST ResNet-20 (full test set):
INT8 PTQ and QAT, HAWQ mixed INT8/INT4, INT4 PTQ and QAT, XNOR and DoReFa binarization,
magnitude and RB sparsity, filter pruning, and sparsity or pruning followed by INT8. For each:
top-1 in PyTorch, in onnxruntime and reloaded from the NNC file, the bytes of the ONNX file
and of the NNC file, onnxruntime latency. Next to them, from the committed results of the
same model: NNC coding without training (``main.py``, ``nnc_reproduction.json``) and ECQ
(``ecqx_sweep.json``), so that all methods meet on one plot of accuracy against bytes.

    python -m benchmarks.compress_methods                      # all methods, ~30 min on 2 cores
    python -m benchmarks.compress_methods --methods int8_ptq int4_qat

Methods already in the JSON are kept unless named again; writes
``benchmarks/results/compress_methods.json`` and ``compress_methods.png``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: "
                     "python -m benchmarks.compress_methods ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.compress_run import build_parser, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs"
# method -> (config, flags of its run)
METHODS = {
    "int8_ptq": ("fmnist_resnet20_int8", []),
    "int8_qat": ("fmnist_resnet20_int8", ["--epochs", "1", "--max_batches", "150", "--lr", "1e-5"]),
    "mixed_ptq": ("fmnist_resnet20_mixed", []),
    "int4_ptq": ("fmnist_resnet20_int4", []),
    "int4_qat": ("fmnist_resnet20_int4", ["--epochs", "2", "--max_batches", "150", "--lr", "1e-4"]),
    "xnor": ("fmnist_resnet20_xnor", ["--epochs", "6", "--max_batches", "60", "--lr", "1e-3"]),
    "dorefa": ("fmnist_resnet20_dorefa", ["--epochs", "6", "--max_batches", "60", "--lr", "1e-3"]),
    "magnitude_sparsity": ("fmnist_resnet20_magnitude", ["--epochs", "4", "--max_batches", "300", "--lr", "1e-4"]),
    "rb_sparsity": ("fmnist_resnet20_rb", ["--epochs", "4", "--max_batches", "300", "--lr", "1e-4"]),
    "filter_pruning": ("fmnist_resnet20_filter_pruning", ["--epochs", "3", "--max_batches", "300", "--lr", "1e-4"]),
    "magnitude_int8_ptq": ("fmnist_resnet20_magnitude_int8", []),
    "pruning_int8_ptq": ("fmnist_resnet20_pruning_int8", []),
    "pruning_int8_qat": ("fmnist_resnet20_pruning_int8", ["--epochs", "2", "--max_batches", "300", "--lr", "1e-4"]),
}
KEYS = ("accuracy_before", "accuracy_after", "accuracy_drop", "accuracy_onnx", "accuracy_nnc",
        "onnx_bytes", "onnx_float32_bytes", "nnc_bytes", "nnc_coding", "float32_bytes",
        "float32_bytes_after", "weight_sparsity", "latency_ms", "latency_ms_float32", "apply_s",
        "epochs", "layers")


def run_method(name: str, common: list[str]) -> dict:
    config, flags = METHODS[name]
    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", str(CONFIGS / f"{config}.json"), "--results", out, "--no-verbose",
                *flags, *common]
        result = run(build_parser().parse_args(argv))
    return {"method": name, "config": f"configs/{config}.json", "flags": flags,
            **{k: result[k] for k in KEYS if k in result}}


def nnc_points() -> list[dict]:
    """NNC without training (DQ+BNF+LSA column of the reproduction table): top-1 and bytes."""
    table = json.loads((RESULTS / "nnc_reproduction.json").read_text())["markdown"]
    points = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        found = re.match(r"([\d.]+) \(([-+\d.]+)\), ([\d.]+) kB", cells[-1])
        if found:
            points.append({"label": f"NNC qp {cells[0]} (DQ+BNF+LSA)", "top1": float(found[1]),
                           "bytes": int(float(found[3]) * 1000)})
    return points


def ecq_points() -> list[dict]:
    runs = json.loads((RESULTS / "ecqx_sweep.json").read_text())["runs"]
    return [{"label": f"ECQ {r['bitwidth']} bits, Λ {r['Lambda']:g}", "top1": r["metric"],
             "bytes": r["compressed_bytes"]} for r in runs if r["method"] == "ECQ"]


def plot(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for points, style, name in ((nnc_points(), "o-", "NNC coding, no training"),
                                (ecq_points(), "s", "ECQ (trained, NNC-coded)")):
        points = sorted(points, key=lambda p: p["bytes"])
        ax.plot([p["bytes"] / 1000 for p in points], [p["top1"] for p in points], style,
                alpha=0.6, label=name)
    for row in rows:
        ax.scatter(row["nnc_bytes"] / 1000, row["accuracy_nnc"], marker="*", s=120, zorder=3)
        ax.annotate(row["method"], (row["nnc_bytes"] / 1000, row["accuracy_nnc"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    if rows:
        ax.axhline(rows[0]["accuracy_before"], color="gray", ls=":", label="float32")
    ax.set_xscale("log")
    ax.set_xlabel("file size [kB] (NNC bitstream)")
    ax.set_ylabel("top-1 [%]")
    ax.set_ylim(max(0, min([r["accuracy_nnc"] for r in rows] + [85]) - 2), 95)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("ResNet-20 on Fashion-MNIST: run.py compress methods (stars) against NNC and ECQ")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--max_eval_batches", type=int, default=None,
                        help="test batches per evaluation (default: the whole test set)")
    parser.add_argument("--output", default=str(RESULTS / "compress_methods.json"))
    args = parser.parse_args(argv)
    common = [] if args.max_eval_batches is None else ["--max_eval_batches", str(args.max_eval_batches)]
    output = Path(args.output)
    kept = json.loads(output.read_text())["runs"] if output.exists() else []
    rows = {r["method"]: r for r in kept}
    for name in args.methods:
        rows[name] = run_method(name, common)
        print(f"{name}: top-1 {rows[name]['accuracy_after']:.2f}% (onnxruntime "
              f"{rows[name]['accuracy_onnx']:.2f}%), ONNX {rows[name]['onnx_bytes']} B, "
              f"NNC {rows[name]['nnc_bytes']} B", flush=True)
        ordered = [rows[m] for m in METHODS if m in rows]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"model": "resnet20", "dataset": "fashion_mnist",
                                      "runs": ordered}, indent=1))
    plot([rows[m] for m in METHODS if m in rows], output.with_suffix(".png"))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
