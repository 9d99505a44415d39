#!/usr/bin/env python
"""One leaderboard of every compression method of the repository on the offline default
(the shipped ResNet-20 on Fashion-MNIST, full test set): top-1 against the bytes of the file
that is really saved, in one plot and one table, each row with the command that reproduces it.

Rows run here (``main.py``): NNC with its own sparsity tools (``--sparsity``, with and
without ``--struct_spars_factor``) and with rate-distortion optimised quantization
(``--lambda_scale``). Rows collected from the committed results of the other benchmarks
(run those to refresh them; the command of each row says how):

- NNC coding without training over a qp sweep, uniform and with DQ+BNF+LSA
  (``nnc_reproduction.json``);
- ECQ and ECQx, the best Lambda of each bit width in each sweep (``ecqx_sweep_short.json``:
  our protocol, ``ecqx_sweep.json``: the official one);
- every ``run.py compress`` method: INT8/INT4/mixed quantization, binarization, magnitude
  and RB sparsity, filter pruning and their combinations with INT8, each coded by NNC
  (``compress_methods.json``);
- the real NNCF 3.4.0 (``nncf_anchor.json``).

    python -m benchmarks.leaderboard                 # runs the main.py rows (~5 min), collects the rest
    python -m benchmarks.leaderboard --reuse         # only collect again (seconds)
    python -m benchmarks.leaderboard --quick --output /tmp/board.json   # smoke run

Writes ``benchmarks/results/leaderboard.json`` (rows with ``method``, ``family``, ``bytes``,
``top1``, ``command``, ``source`` and ``pareto``: no other row is at most as large and at
least as accurate), ``leaderboard.png``, the Markdown table of all rows and the README's summary (the
front, and per family its smallest file within 0.5 points of float32 and its best one).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.leaderboard ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import main  # noqa: E402
from benchmarks.compress_methods import METHODS as COMPRESS_METHODS  # noqa: E402
from benchmarks.ecqx_sweep import METHODS as ECQ_METHODS  # noqa: E402
from experiments.nnc_run import run as nnc_run  # noqa: E402
from experiments.report import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# label -> main.py flags of the rows run here (each at one qp)
MAIN_ROWS = {
    "NNC --sparsity 0.5, qp -32": ["--sparsity", "0.5", "--qp", "-32", "--use_dq"],
    "NNC --sparsity 0.7, qp -32": ["--sparsity", "0.7", "--qp", "-32", "--use_dq"],
    "NNC --sparsity 0.5 --struct_spars_factor 0.9, qp -32":
        ["--sparsity", "0.5", "--struct_spars_factor", "0.9", "--qp", "-32", "--use_dq"],
    "NNC RDOQ --lambda_scale 1, qp -32": ["--lambda_scale", "1", "--qp", "-32", "--use_dq"],
    "NNC RDOQ --lambda_scale 4, qp -28": ["--lambda_scale", "4", "--qp", "-28", "--use_dq"],
}
NNC_TOOLS = {"uniform": "", "DQ+BNF+LSA": " --use_dq --bnf --lsa"}
SPARSE_CONFIGS = ("magnitude", "_rb", "pruning")     # configs of the sparsity / pruning family
FAMILIES = {"NNC (no training)": "o", "NNC tools (main.py)": "D", "ECQ / ECQx (trained)": "s",
            "quantization (run.py compress)": "*", "sparsity / pruning (run.py compress)": "P",
            "NNCF 3.4.0": "X", "float32": "_"}


def main_rows(quick: bool) -> list[dict]:
    """Run the main.py rows (with --quick: two test batches each)."""
    rows = []
    supported = {a.dest for a in main.build_parser()._actions}
    for label, flags in MAIN_ROWS.items():
        if "--lambda_scale" in flags and "lambda_scale" not in supported:
            raise SystemExit("main.py has no --lambda_scale: update the repository")
        extra = ["--max_eval_batches", "2"] if quick else []
        with tempfile.TemporaryDirectory() as out:
            argv = [*flags, "--no-verbose", "--results", out, *extra]
            result = nnc_run(main.build_parser().parse_args(argv))
        run = result["runs"][0]
        rows.append({"method": label, "family": "NNC tools (main.py)", "top1": run["decoded"],
                     "bytes": run["compressed_bytes"], "command": "python main.py " + " ".join(flags),
                     "source": "main.py (run by the leaderboard)",
                     "weight_sparsity": run.get("weight_sparsity")})      # percent
    return rows


def _read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def nnc_rows() -> list[dict]:
    data = _read("nnc_reproduction.json")
    return [{"method": f"NNC {r['tools']}, qp {r['qp']}", "family": "NNC (no training)",
             "top1": r["decoded"], "bytes": r["compressed_bytes"],
             "command": f"python main.py --qp {r['qp']}{NNC_TOOLS[r['tools']]}",
             "source": "nnc_reproduction.json"}
            for r in (data or {}).get("rows", []) if r["tools"] in NNC_TOOLS]


def _without(flags: list[str], names: tuple[str, ...]) -> list[str]:
    """``flags`` less the options ``names`` and their values."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in names:
            skip = True
        else:
            out.append(flag)
    return out


ECQ_SWEEPS = ("ecqx_sweep_short.json", "ecqx_sweep.json")   # our protocol; the official one


def ecq_rows() -> list[dict]:
    """Per sweep, method and bit width its best Lambda, by the mean over the seeds of a cell."""
    rows = []
    for source in ECQ_SWEEPS:
        data = _read(source)
        if not data:
            continue
        s = data.get("settings", {})
        protocol = s.get("protocol", "ours")
        cells: dict[tuple, list[dict]] = {}
        for r in data["runs"]:
            cells.setdefault((r["method"], r["bitwidth"], r["Lambda"]), []).append(r)
        best = {}
        for (method, bits, Lambda), runs in cells.items():
            top1 = sum(r["metric"] for r in runs) / len(runs)
            if (method, bits) not in best or top1 > best[method, bits][0]:
                best[method, bits] = (top1, Lambda, runs)
        for (method, bits), (top1, Lambda, runs) in sorted(best.items()):
            # files of the sweep store the method's flags; the first ones stored none
            flags = runs[0].get("flags") or [*ECQ_METHODS.get(method, []),
                                             "--epochs", str(s.get("epochs", 2)),
                                             "--max_batches", str(s.get("max_batches", 150))]
            flags = [*_without(flags, ("--bitwidth", "--Lambda", "--seed")),
                     "--bitwidth", str(bits), "--Lambda", f"{Lambda:g}"]
            seeds = sorted(r.get("seed", 0) for r in runs)
            # one command per seed: the row's is that of the first, the others differ in --seed
            mean_of = f", mean of seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""
            rows.append({"method": f"{method} {bits} bits, Λ {Lambda:g} ({protocol} protocol{mean_of})",
                         "family": "ECQ / ECQx (trained)", "top1": top1,
                         "bytes": round(sum(r["compressed_bytes"] for r in runs) / len(runs)),
                         "command": " ".join(["python run.py ecqx", *flags, "--seed", str(seeds[0])]),
                         "source": source})
    return rows


def compress_rows() -> list[dict]:
    data = _read("compress_methods.json")
    rows = []
    for r in (data or {}).get("runs", []):
        config, flags = COMPRESS_METHODS.get(r["method"], (Path(r["config"]).stem, r["flags"]))
        family = "sparsity / pruning (run.py compress)" if any(
            k in config for k in SPARSE_CONFIGS) else "quantization (run.py compress)"
        sparsity = r.get("weight_sparsity")
        rows.append({"method": f"{r['method']} (NNC file)", "family": family, "top1": r["accuracy_nnc"],
                     "bytes": r["nnc_bytes"],
                     "command": f"python run.py compress --config configs/{config}.json {' '.join(flags)}".strip(),
                     "source": "compress_methods.json",
                     "weight_sparsity": None if sparsity is None else 100 * sparsity})
    return rows


def nncf_rows() -> list[dict]:
    data = _read("nncf_anchor.json")
    rows = []
    for r in (data or {}).get("rows", []):
        if r["side"] == "float32" and r["runtime"] != "PyTorch":
            continue
        family = "float32" if r["side"] == "float32" else "NNCF 3.4.0" if r["side"] == "nncf" else None
        if family:
            rows.append({"method": r["method"] if family == "float32" else f"{r['method']} ({r['bytes_of']})",
                         "family": family, "top1": r["top1"], "bytes": r["bytes"],
                         "command": "python -m benchmarks.nncf_anchor", "source": "nncf_anchor.json"})
    return rows


def mark_pareto(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["pareto"] = not any(o["bytes"] <= r["bytes"] and o["top1"] >= r["top1"] and
                              (o["bytes"], o["top1"]) != (r["bytes"], r["top1"]) for o in rows)
    return sorted(rows, key=lambda r: r["bytes"])


def summary(rows: list[dict], within: float = 0.5) -> list[dict]:
    """The rows worth a first look: the front, and per family its smallest file within
    ``within`` points of float32 and its most accurate one."""
    reference = next((r["top1"] for r in rows if r["family"] == "float32"), max(r["top1"] for r in rows))
    picked = {id(r) for r in rows if r["pareto"]}
    for family in {r["family"] for r in rows}:
        members = [r for r in rows if r["family"] == family]
        close = [r for r in members if r["top1"] >= reference - within]
        if close:
            picked.add(id(min(close, key=lambda r: r["bytes"])))
        picked.add(id(max(members, key=lambda r: (r["top1"], -r["bytes"]))))
    return [r for r in rows if id(r) in picked]


def markdown(rows: list[dict]) -> str:
    lines = ["| method | top-1 % | bytes | command |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        name = f"**{r['method']}**" if r["pareto"] else r["method"]
        lines.append(f"| {name} | {r['top1']:.2f} | {r['bytes']:,} | `{r['command']}` |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for family, marker in FAMILIES.items():
        points = [r for r in rows if r["family"] == family]
        if points:
            ax.scatter([r["bytes"] / 1000 for r in points], [r["top1"] for r in points],
                       marker=marker, s=60 if marker != "_" else 300, alpha=0.8, label=family)
    front = [r for r in rows if r["pareto"]]
    ax.step([r["bytes"] / 1000 for r in front], [r["top1"] for r in front], where="post",
            color="black", lw=0.8, alpha=0.6, label="best accuracy at a size")
    ax.set_xscale("log")
    best = max(r["top1"] for r in rows)
    ax.set_ylim(max(0, min(r["top1"] for r in rows if r["top1"] > best - 15) - 1), best + 1)
    ax.set_xlabel("file size [kB] (what is saved: NNC bitstream, ONNX file or state dict)")
    ax.set_ylabel("top-1 [%]")
    ax.set_title("ResNet-20 on Fashion-MNIST: every method, accuracy against real bytes")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true",
                        help="evaluate the rows run here on two test batches (a smoke run)")
    parser.add_argument("--reuse", action="store_true",
                        help="take the main.py rows from the existing output instead of running "
                             "them again (after another benchmark's results changed)")
    parser.add_argument("--output", default=str(RESULTS / "leaderboard.json"))
    opts = parser.parse_args(argv)
    output = Path(opts.output)
    if opts.reuse:
        if not output.exists():
            raise SystemExit(f"--reuse: {output} does not exist yet; run without --reuse first")
        ours = [r for r in json.loads(output.read_text())["rows"] if r["source"].startswith("main.py")]
    else:
        ours = main_rows(opts.quick)
    rows = mark_pareto(ours + nnc_rows() + ecq_rows() + compress_rows() + nncf_rows())
    table = markdown(summary(rows))
    write_json({"model": "resnet20", "dataset": "fashion_mnist", "quick": opts.quick,
                "rows": rows, "markdown_summary": table, "markdown": markdown(rows)}, output)
    plot(rows, output.with_suffix(".png"))
    print(table)
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
