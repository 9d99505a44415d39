#!/usr/bin/env python
"""Rate-distortion optimised quantization at the model level: how many bytes RDOQ saves at
equal top-1 on the offline default (the shipped ResNet-20, Fashion-MNIST, full test set).

``main.py`` codes a qp sweep with DQ plainly (``--lambda_scale 0``) and with RDOQ at several
``--lambda_scale``; every point is decoded and tested. The saving is read at equal
accuracy: for each target (float32 top-1 minus 0.1, 0.25, 0.5 and 1 point) the smallest
file of each curve that reaches it, the curve's points being joined by straight lines in
(log bytes, top-1) so that a target between two points is met between them. Writes
``benchmarks/results/rdoq_model.json`` and ``rdoq_model.png``.

    python -m benchmarks.rdoq_model                      # qp -40 ... -16, lambda 0, 1, 2, 4
    python -m benchmarks.rdoq_model --qps -32 -24 --lambdas 0 1 --max_eval_batches 2   # smoke
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.rdoq_model ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import main  # noqa: E402
from experiments.nnc_run import run  # noqa: E402
from experiments.report import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DROPS = (0.1, 0.25, 0.5, 1.0)


def sweep(qps: list[int], lambda_scale: float, max_eval_batches: int | None) -> list[dict]:
    """One main.py run over the qps at one lambda_scale: (qp, bytes, top-1) per point."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--use_dq", "--lambda_scale", str(lambda_scale), "--qp_sweep", *map(str, qps),
                "--no-verbose", "--results", out]
        if max_eval_batches:
            argv += ["--max_eval_batches", str(max_eval_batches)]
        result = run(main.build_parser().parse_args(argv))
    return [{"qp": r["qp"], "bytes": r["compressed_bytes"], "top1": r["decoded"],
             "original": r["original"]} for r in result["runs"]]


def bytes_at(points: list[dict], target: float) -> float | None:
    """The smallest size at which the curve (points joined in log bytes) reaches ``target``;
    None if no point does."""
    points = sorted(points, key=lambda p: p["bytes"])
    if points[0]["top1"] >= target:
        return float(points[0]["bytes"])
    for low, high in zip(points, points[1:]):
        if high["top1"] >= target > low["top1"]:
            t = (target - low["top1"]) / (high["top1"] - low["top1"])
            return math.exp(math.log(low["bytes"]) + t * (math.log(high["bytes"]) - math.log(low["bytes"])))
    return None


def savings(curves: dict[float, list[dict]], original: float) -> list[dict]:
    """Per accuracy target: each curve's bytes there and its saving against lambda 0."""
    rows = []
    for drop in DROPS:
        target = original - drop
        sizes = {lam: bytes_at(points, target) for lam, points in curves.items()}
        plain = sizes.get(0.0)
        rows.append({"drop": drop, "target_top1": target, "bytes": sizes,
                     "saving_percent": {lam: (None if plain is None or size is None
                                              else 100 * (1 - size / plain))
                                        for lam, size in sizes.items() if lam != 0.0}})
    return rows


def plot(curves: dict[str, list[dict]], original: float, path: Path, title: str) -> Path:
    """Rate against top-1, one line per labelled curve, float32 dashed."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in curves.items():
        points = sorted(points, key=lambda p: p["bytes"])
        ax.plot([p["bytes"] / 1000 for p in points], [p["top1"] for p in points], "o-", ms=4, label=label)
    ax.axhline(original, color="gray", ls="--", label="float32")
    ax.set_xscale("log")
    ax.set_ylim(original - 3, original + 0.5)
    ax.set_xlabel("bitstream size [kB]")
    ax.set_ylabel("top-1 [%]")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rdoq_model",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--qps", type=int, nargs="+", default=[-40, -36, -32, -28, -24, -20, -16])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0],
                        help="lambda_scale values (0, the plain curve, is always run)")
    parser.add_argument("--max_eval_batches", type=int, default=None)
    parser.add_argument("--output", default=str(RESULTS / "rdoq_model.json"))
    opts = parser.parse_args(argv)
    lambdas = sorted({0.0, *opts.lambdas})
    curves = {}
    for lam in lambdas:
        curves[lam] = sweep(opts.qps, lam, opts.max_eval_batches)
        print(f"lambda_scale {lam:g}: " + ", ".join(f"qp {p['qp']} {p['bytes']} B {p['top1']:.2f}%"
                                                  for p in curves[lam]), flush=True)
    original = curves[0.0][0]["original"]
    table = savings(curves, original)
    output = Path(opts.output)
    write_json({"model": "resnet20", "dataset": "fashion_mnist", "use_dq": True,
                "float32_top1": original, "qps": opts.qps,
                "curves": {f"{lam:g}": points for lam, points in curves.items()},
                "at_equal_accuracy": table}, output)
    labels = {lam: "DQ, no RDOQ" if lam == 0 else f"DQ + RDOQ, lambda_scale {lam:g}" for lam in curves}
    plot({labels[lam]: points for lam, points in curves.items()}, original, output.with_suffix(".png"),
         "ResNet-20 on Fashion-MNIST: RDOQ at the model level")
    for row in table:
        cells = ", ".join(f"λ {lam:g}: {'-' if b is None else f'{b / 1000:.1f} kB'}"
                          for lam, b in row["bytes"].items())
        print(f"top-1 >= {row['target_top1']:.2f}: {cells}")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
