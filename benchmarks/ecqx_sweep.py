#!/usr/bin/env python
"""ECQ against ECQx over bit widths, Lambdas and seeds (Becking et al. 2022, Figs. 5-6): for
each method, bit width, Lambda and seed one ``run.py ecqx`` run; per cell (method, bit
width, Lambda) the mean, standard deviation, minimum and maximum over the seeds of the best
epoch's test accuracy, sparsity and compressed size, and a plot of mean +- std.

    python -m benchmarks.ecqx_sweep --quick              # smoke: ECQ and ECQx, 2 steps each
    # the README's table: one whole epoch at the official lr, LRP every 8 steps
    python -m benchmarks.ecqx_sweep --protocol official --epochs 1 --max_batches 0 \\
        --max_eval_batches 20 --lrp_every 8 --methods ECQ ECQx "ECQx nonzero" \\
        --bits 2 3 4 --lambdas 0.05 0.15 --seeds 0 1 2
    # the official ten epochs with LRP every step, where a GPU makes them affordable
    python -m benchmarks.ecqx_sweep --protocol official --max_eval_batches 20 \\
        --methods ECQ ECQx "ECQx nonzero" --device cuda

Training follows ``--protocol`` (``run.py ecqx --protocol``) unless ``--epochs``,
``--max_batches`` or ``--lr`` say otherwise. ``--max_eval_batches`` limits the tests after each
epoch (which pick the best epoch); the best epoch is always tested again on the whole test
set, and that is the accuracy reported. ``--lrp_every`` makes ECQx affordable on a CPU (LRP
costs about five training steps); ``--device cuda`` uses a GPU where there is one.

Runs are keyed by method, protocol, bit width, Lambda and seed and written after each run:
a stopped sweep continues where it stopped, and more seeds add to the cells. Sweeps may share
one ``--output`` side by side (e.g. one per ``--bits`` on a two-core machine): each write
re-reads the file under a lock and keeps the other sweeps' runs. A file written under other
settings (protocol, epochs, batches, lr, test batches, LRP interval) is not continued
(``--fresh`` deletes its runs first). Writes ``benchmarks/results/ecqx_sweep.json`` and
``ecqx_sweep.png`` (``--quick``: ``results/ecqx_sweep_quick.*``).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.ecqx_sweep ...")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ecqx.protocol import PROTOCOLS  # noqa: E402
from experiments import ecqx_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
# method -> flags of run.py ecqx: ECQ, ECQx as published, and the variants against the
# relevance lock-in (README, "ECQ against ECQx")
METHODS = {
    "ECQ": [],
    "ECQx": ["--lrp"],
    "ECQx nonzero": ["--lrp", "--relevance_on", "nonzero"],
    "ECQx warm-up": ["--lrp", "--ecq_warmup_steps", "30"],
    "ECQx shadow": ["--lrp", "--relevance_source", "shadow"],
    "ECQx pretrained": ["--lrp", "--relevance_source", "pretrained"],
    "ECQx quantized": ["--lrp", "--relevance_source", "quantized"],
    "ECQx quantized nonzero": ["--lrp", "--relevance_source", "quantized", "--relevance_on", "nonzero"],
}
QUICK = {"bits": [2], "lambdas": [0.05], "seeds": [0], "methods": ["ECQ", "ECQx"], "epochs": 1,
         "max_batches": 2, "max_eval_batches": 2}
SETTINGS = ("protocol", "epochs", "max_batches", "lr", "max_eval_batches", "lrp_every")
MEASURES = ("metric", "sparsity", "compressed_bytes")


def run_key(method: str, protocol: str, bits: int, Lambda: float, seed: int) -> str:
    return f"{method}/{protocol}/{bits}/{Lambda:g}/{seed}"


def _key_of(row: dict) -> str:
    return run_key(row["method"], row.get("protocol", "ours"), row["bitwidth"], row["Lambda"],
                   row.get("seed", 0))


def sweep_settings(args) -> dict:
    """The settings every run of the sweep shares, the protocol's values filled in."""
    protocol = PROTOCOLS[args.protocol]
    return {"protocol": args.protocol,
            "epochs": protocol.epochs if args.epochs is None else args.epochs,
            "max_batches": protocol.max_batches if args.max_batches is None else args.max_batches,
            "lr": protocol.lr if args.lr is None else args.lr,
            "max_eval_batches": args.max_eval_batches, "lrp_every": args.lrp_every}


def stored_settings(data: dict) -> dict:
    """The settings of a results file; those of files written before protocols existed are
    completed with the defaults of then (protocol ours, LRP every step)."""
    s = dict(data.get("settings", {}))
    s.setdefault("protocol", "ours")
    s.setdefault("lr", PROTOCOLS[s["protocol"]].lr)
    s.setdefault("lrp_every", 1)
    return {k: s.get(k) for k in SETTINGS}


def method_flags(method: str, settings: dict) -> list[str]:
    """The ``run.py ecqx`` flags of ``method`` under the sweep's ``settings``."""
    flags = [*METHODS[method], "--protocol", settings["protocol"],
             "--epochs", str(settings["epochs"]), "--max_batches", str(settings["max_batches"]),
             "--lr", f"{settings['lr']:g}"]
    if settings["max_eval_batches"]:
        flags += ["--max_eval_batches", str(settings["max_eval_batches"])]
    if "--lrp" in flags and settings["lrp_every"] > 1:
        flags += ["--lrp_every", str(settings["lrp_every"])]
    return flags


def run_setting(method: str, bits: int, Lambda: float, seed: int, settings: dict,
                device: str | None = None) -> dict:
    """One run; its row (the best epoch, tested on the whole test set)."""
    flags = [*method_flags(method, settings), "--bitwidth", str(bits), "--Lambda", str(Lambda),
             "--seed", str(seed)]
    with tempfile.TemporaryDirectory() as out:
        argv = [*flags, "--final_test", "--results", out, "--no-verbose"]
        if device:
            argv += ["--device", device]
        result = ecqx_run.run(ecqx_run.build_parser().parse_args(argv))
    best = result["best"]
    return {"method": method, "protocol": settings["protocol"], "seed": seed, "bitwidth": bits,
            "Lambda": Lambda, "flags": flags, "metric_name": result["metric_name"],
            "full_precision": result["full_precision"], "original_bytes": result["original_bytes"],
            "best_epoch": best["epoch"], "metric": best["final_metric"],
            "selection_metric": best["metric"], "sparsity": best["sparsity"],
            "compressed_bytes": best["compressed_bytes"], "ratio": best["ratio"],
            "lrp_passes": result["lrp_passes"],
            "epoch_seconds": [row["seconds"] for row in result["history"][1:]],
            "history": [{k: row[k] for k in ("epoch", "metric", "sparsity", "compressed_bytes")}
                        for row in result["history"]]}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def cells(runs: list[dict]) -> list[dict]:
    """Per (method, protocol, bit width, Lambda): the seeds and the mean, sample standard
    deviation, minimum and maximum of accuracy, sparsity and bytes."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r.get("protocol", "ours"), r["bitwidth"], r["Lambda"]), []).append(r)
    return [{"method": m, "protocol": p, "bitwidth": b, "Lambda": lam,
             "seeds": sorted(r.get("seed", 0) for r in group), "n": len(group),
             **{k: _spread([r[k] for r in group]) for k in MEASURES}}
            for (m, p, b, lam), group in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][3],
                                                                                 list(METHODS).index(kv[0][0])))]


def markdown(table: list[dict]) -> str:
    """The cells as a Markdown table, each method against ECQ of its cell."""
    ecq = {(c["protocol"], c["bitwidth"], c["Lambda"]): c for c in table if c["method"] == "ECQ"}
    lines = ["| bits | Λ | method | seeds | top-1 % mean ± std [min, max] | zeros % | bytes | − ECQ |",
             "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |"]
    for c in table:
        m, z, b = c["metric"], c["sparsity"], c["compressed_bytes"]
        base = ecq.get((c["protocol"], c["bitwidth"], c["Lambda"]))
        gap = "" if base is None or c["method"] == "ECQ" else f"{m['mean'] - base['metric']['mean']:+.2f}"
        lines.append(f"| {c['bitwidth']} | {c['Lambda']:g} | {c['method']} | {c['n']} | "
                     f"{m['mean']:.2f} ± {m['std']:.2f} [{m['min']:.2f}, {m['max']:.2f}] | "
                     f"{z['mean']:.1f} | {b['mean']:,.0f} | {gap} |")
    return "\n".join(lines)


def plot(table: list[dict], path: Path, title: str, full_precision: float | None = None) -> Path:
    """Mean accuracy (+- std over the seeds) against mean compressed size and against mean
    sparsity; colour = method, marker = bit width, a line joins the Lambdas."""
    fig, (by_size, by_sparsity) = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    bit_widths = sorted({c["bitwidth"] for c in table})
    methods = [m for m in METHODS if any(c["method"] == m for c in table)]
    for method, bits in itertools.product(methods, bit_widths):
        group = sorted((c for c in table if c["method"] == method and c["bitwidth"] == bits),
                       key=lambda c: c["Lambda"])
        if not group:
            continue
        style = dict(color=f"C{methods.index(method)}", ls="--" if method == "ECQ" else "-",
                     marker="os^Dv<>"[bit_widths.index(bits) % 7], capsize=3,
                     label=f"{method} {bits} bit")
        y = [c["metric"]["mean"] for c in group]
        yerr = [c["metric"]["std"] for c in group]
        by_size.errorbar([c["compressed_bytes"]["mean"] / 1024 for c in group], y, yerr=yerr, **style)
        by_sparsity.errorbar([c["sparsity"]["mean"] for c in group], y, yerr=yerr,
                             xerr=[c["sparsity"]["std"] for c in group], **style)
    for ax in (by_size, by_sparsity):
        if full_precision is not None:
            ax.axhline(full_precision, color="gray", lw=0.8, ls=":", label="full precision")
        ax.grid(alpha=0.3)
    by_size.set_xlabel("compressed size (NNC bitstream) [KiB]")
    by_sparsity.set_xlabel("zero weights [%]")
    by_size.set_ylabel("test top-1 [%] (mean ± std over seeds)")
    by_sparsity.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class SettingsMismatch(ValueError):
    """A results file holds runs made under other sweep settings."""


def load(output: Path, settings: dict) -> dict:
    """The runs already in ``output`` by key; :class:`SettingsMismatch` if they were made under
    other settings."""
    if not output.exists():
        return {}
    data = json.loads(output.read_text())
    stored = stored_settings(data)
    if stored != settings:
        differ = ", ".join(f"{k} {stored[k]} (now {settings[k]})" for k in SETTINGS if stored[k] != settings[k])
        raise SettingsMismatch(f"{output} holds runs with other settings: {differ}; "
                               "--fresh replaces them, --output writes elsewhere")
    return {_key_of(r): r for r in data["runs"]}


@contextlib.contextmanager
def _locked(output: Path):
    """Hold an exclusive lock on ``output`` for sweeps that share it (a lock file beside the
    system's temporary files, so that the results folder stays clean)."""
    digest = hashlib.sha1(str(output.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"ecqx_sweep-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write(output: Path, settings: dict, done: dict) -> list[dict]:
    """Add the runs in ``output`` that another sweep wrote meanwhile to ``done``, then write
    all of them and their cells (atomically: a reader never sees half a file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with _locked(output):
        for key, row in load(output, settings).items():
            done.setdefault(key, row)
        runs = sorted(done.values(), key=lambda r: (r["bitwidth"], r["Lambda"],
                                                    list(METHODS).index(r["method"]), r.get("seed", 0)))
        table = cells(runs)
        partial = output.with_name(output.name + ".partial")
        partial.write_text(json.dumps({"settings": settings, "runs": runs, "cells": table}, indent=2) + "\n")
        os.replace(partial, output)
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ecqx_sweep",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=["ECQ", "ECQx"])
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="official")
    parser.add_argument("--epochs", type=int, default=None, help="default: the protocol's")
    parser.add_argument("--max_batches", type=int, default=None,
                        help="batches per epoch, 0 = whole epochs (default: the protocol's)")
    parser.add_argument("--lr", type=float, default=None, help="default: the protocol's")
    parser.add_argument("--max_eval_batches", type=int, default=None,
                        help="test batches after each epoch (the final test uses all)")
    parser.add_argument("--lrp_every", type=int, default=1, help="ECQx: LRP every K steps")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--output", default=None,
                        help="results file (default benchmarks/results/ecqx_sweep.json)")
    parser.add_argument("--fresh", action="store_true", help="delete the runs already in --output first")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 bits, one Lambda, one seed, 2 steps of ECQ and ECQx")
    return parser


def sweep(args, settings: dict, output: Path) -> dict:
    """Run the grid's missing runs, seed by seed (a sweep stopped early still covers every
    cell), writing ``output`` after each; all runs in it by key."""
    done = load(output, settings)
    grid = list(itertools.product(args.seeds, args.bits, args.lambdas, args.methods))
    for i, (seed, bits, Lambda, method) in enumerate(grid):
        key = run_key(method, settings["protocol"], bits, Lambda, seed)
        if key in done:
            continue
        done[key] = r = run_setting(method, bits, Lambda, seed, settings, args.device)
        print(f"[{i + 1}/{len(grid)}] {key}: {r['metric']:.2f}% at {r['sparsity']:.1f}% zeros, "
              f"{r['compressed_bytes']:,} bytes", flush=True)
        write(output, settings, done)
    return done


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    output = Path(args.output or (ROOT / "results" / "ecqx_sweep_quick.json" if args.quick
                                  else RESULTS / "ecqx_sweep.json"))
    settings = sweep_settings(args)
    if args.fresh:
        output.unlink(missing_ok=True)
    try:
        done = sweep(args, settings, output)
    except SettingsMismatch as error:      # at the start, or written meanwhile by another sweep
        raise SystemExit(f"error: {error}") from None
    if not done:
        return 0
    table = cells(list(done.values()))
    full = next(iter(done.values()))["full_precision"] if not settings["max_eval_batches"] else None
    title = (f"ECQ vs ECQx, ResNet-20 on Fashion-MNIST ({settings['protocol']} protocol, "
             f"best epoch, mean ± std over seeds)")
    print(f"\n{markdown(table)}\n\nplot: {plot(table, output.with_suffix('.png'), title, full)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
