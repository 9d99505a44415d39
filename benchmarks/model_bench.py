#!/usr/bin/env python
"""Whole-model coding, nnc_core against the reference NNCodec 2.1.3 side by side in one run.

A user waits for a whole model, not for one tensor. Every case codes one model with one
configuration through the model APIs of both implementations:

* ours: ``nnc_core.nn.encode(model, threads=T, **options)`` on the ``torch.nn.Module`` and
  ``nnc_core.nn.decode(bitstream, threads=T)``, timed with ``time.perf_counter`` around the
  call, on T = 1 thread and on T = all cores;
* the reference: ``nncodec.nnc.compress_model`` on the model's state dict saved with
  ``torch.save`` (the reference reads it back itself; the file load is inside its encode
  time, well under 1 % of it) and ``nncodec.nnc.decompress``, in one long-lived driver
  subprocess (``reference/driver.py``, operation ``model_time``). The reference codes on
  one thread (it has no parallel coding).

Models (weights seeded with ``torch.manual_seed(0)`` unless shipped):

* ``resnet20``: the ResNet-20 trained on Fashion-MNIST that ships in example/weights/;
* ``resnet50``, ``vit_b_16``: torchvision's architectures (25.6 M, 86.6 M parameters) with
  their default random initialisation;
* ``tinyllama2``: the repository's TinyLlama of size 2 (31.9 M parameters; the output layer
  untied from the embedding, so that both implementations code the same tensors: the
  reference codes tied names twice, nnc_core once);
* quick mode: ``resnet20`` and ``tinyllama0`` (TinyLlama size 0, 0.5 M parameters).

Configurations: ``qp-38 DQ`` (qp -38, nonweight_qp -75, dependent quantization) and
``qp-26 DQ sparsity 0.5`` (the same at qp -26 with unstructured sparsification to half of
all parameters; structured sparsification off). The reference gets the same values and
``row_skipping=True`` (as ``nncodec.nn.encode`` passes it); its sparsification is its own
(``apply_unstruct_spars_v2``), timed and added to its encode time, as ours is inside
``encode``.

Per case: bytes, whether our bitstream is byte-identical to the reference's and the same on
1 thread and on all cores, encode and decode times (median of the repeats) of the
reference and of ours on 1 thread and on all cores, and the speed-ups ref time / ours time.
Peak memory of the largest case (most parameters, first configuration): one fresh
subprocess per implementation builds or loads the model and codes and decodes it once;
the peak resident set size (VmHWM after /proc/self/clear_refs) minus the resident size
after the imports, in bytes and relative to the model's float32 size and to the
bitstream. Small tensors: 1-D tensors of 256 and 768 elements through the tensor APIs
(``nnc_core.tensor`` and ``nncodec.tensor``), median of many repeats, and the wall time of
``python -m nnc_core info`` on a stream of 1,000 tensors.

All thread variables (OMP_NUM_THREADS, ...) are 1 for this process and the subprocesses;
the parallelism measured is nnc_core's own thread pool. On a shared machine absolute times
drift; the ratios compare measurements of the same run (the machine's load average is
recorded at the start and the end).

Output: a table on stdout, DIR/model_bench.json and DIR/model_bench.png. Run from the
repository root:

    env/bin/python -m benchmarks.model_bench            # full run: minutes
    env/bin/python -m benchmarks.model_bench --quick    # smoke run: well under a minute
"""
from __future__ import annotations

import os

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.model_bench ...")

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
for _var in THREAD_VARS:            # before numpy and torch are imported
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import numpy as np  # noqa: E402

from reference import ReferenceJobError, ReferenceRunner, ReferenceUnavailable  # noqa: E402

from .codec_bench import (ReferenceMissing, _jsonable, load_average, locate_reference,  # noqa: E402
                          loud, machine_info)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results"
RESNET20_WEIGHTS = ROOT / "example" / "weights" / "fmnist_resnet20.pt"
SEED = 0
SUBPROCESS_ENV = {"CUDA_VISIBLE_DEVICES": "", **{v: "1" for v in THREAD_VARS}}

FULL_MODELS = ("resnet20", "resnet50", "vit_b_16", "tinyllama2")
QUICK_MODELS = ("resnet20", "tinyllama0")
TRANSFORMER = {"full": "tinyllama2", "quick": "tinyllama0"}
CONFIGS = {
    "qp-38 DQ": {"qp": -38, "nonweight_qp": -75, "use_dq": True},
    "qp-26 DQ sparsity 0.5": {"qp": -26, "nonweight_qp": -75, "use_dq": True,
                              "sparsity": 0.5, "struct_spars_factor": 0.0},
}
SMALL_REPEATS = {"full": 5, "quick": 1}      # models under 5 M parameters
LARGE_REPEATS = {"full": 1, "quick": 1}
TRANSFORMER_REPEATS = {"full": 3, "quick": 1}   # the case with targets: the median of 3
SMALL_TENSOR_SIZES = (256, 768)
SMALL_TENSOR_REPEATS = {"full": 200, "quick": 20}
INFO_TENSORS = 1000
TARGETS = {"encode_all_cores": 8.0, "decode_all_cores": 5.0}   # speed-ups asked for


# ------------------------------------------------------------------------------ models


def build_model(name: str):
    """The benchmark's model ``name`` (a torch.nn.Module in eval mode)."""
    import torch

    import models
    torch.manual_seed(SEED)
    if name == "resnet20":
        model = models.create_model("resnet20", num_classes=10, in_chans=1)
        models.load_checkpoint(model, RESNET20_WEIGHTS)
    elif name in ("resnet50", "vit_b_16"):
        import torchvision
        model = getattr(torchvision.models, name)(weights=None)
    elif name.startswith("tinyllama"):
        model = models.create_model("tinyllama", size=int(name[len("tinyllama"):]))
        # untie the output layer: both implementations then code the same tensors
        model.output.weight = torch.nn.Parameter(model.tok_embeddings.weight.detach().clone())
    else:
        raise ValueError(f"unknown benchmark model {name!r}")
    return model.eval()


MODEL_NOTES = {
    "resnet20": "ResNet-20, Fashion-MNIST weights shipped in example/weights/fmnist_resnet20.pt",
    "resnet50": "torchvision ResNet-50, default random init, torch.manual_seed(0)",
    "vit_b_16": "torchvision ViT-B/16, default random init, torch.manual_seed(0)",
    "tinyllama2": "TinyLlama size 2 (dim 512, 10 layers), N(0, 0.02) init, torch.manual_seed(0), "
                  "output layer untied",
    "tinyllama0": "TinyLlama size 0 (dim 64, 8 layers), N(0, 0.02) init, torch.manual_seed(0), "
                  "output layer untied",
}


def model_stats(model) -> dict:
    sd = model.state_dict()
    params = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    small = sum(1 for k, v in sd.items() if v.dim() <= 1 and not k.endswith("num_batches_tracked"))
    return {"params": int(params), "tensors": sum(1 for k in sd if not k.endswith("num_batches_tracked")),
            "small_tensors": small, "float32_bytes": int(4 * params)}


# ------------------------------------------------------------------------------ memory


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                fields[line.split(":")[0]] = int(line.split()[1]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_probe(name: str, config: str, threads: Optional[int]) -> dict:
    """Run in a fresh process: build the model, encode and decode it once; peak RSS."""
    from nnc_core import nn as nnc_nn
    import torch
    torch.set_num_threads(1)                                       # imported before the baseline

    small = {"w": np.ones((8, 8), np.float32)}
    nnc_nn.decode(nnc_nn.encode(small), threads=threads)           # warm the code paths
    gc.collect()
    _reset_peak()
    baseline = _rss()[0]
    model = build_model(name)
    built = _rss()[0]
    _reset_peak()
    bs = nnc_nn.encode(model, threads=threads, **CONFIGS[config])
    encode_peak = _rss()[1]
    _reset_peak()
    out = nnc_nn.decode(bs, threads=threads)
    decode_peak = _rss()[1]
    del out
    return {"method": "VmHWM after clear_refs", "baseline_rss": baseline, "model_built_rss": built,
            "encode_peak_rss": encode_peak, "decode_peak_rss": decode_peak,
            "peak_rss": max(encode_peak, decode_peak),
            "peak_minus_baseline": max(encode_peak, decode_peak) - baseline,
            "encode_extra": encode_peak - built, "decode_extra": decode_peak - built,
            "bitstream_bytes": len(bs)}


def measure_memory(name: str, config: str, pt_path: Path, ref_python: Optional[Path],
                   workdir: Path, model_bytes: int) -> dict:
    out: dict[str, Any] = {"model": name, "config": config, "model_float32_bytes": model_bytes}
    cmd = [sys.executable, "-m", "benchmarks.model_bench", "--memory-probe", name, config]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True,
                          env={**os.environ, **SUBPROCESS_ENV})
    if proc.returncode == 0:
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        ours["peak_over_model"] = ours["peak_minus_baseline"] / model_bytes
        ours["encode_extra_over_bitstream"] = ours["encode_extra"] / ours["bitstream_bytes"]
        ours["decode_extra_over_model"] = ours["decode_extra"] / model_bytes
        out["ours"] = ours
    else:
        out["ours"] = {"error": proc.stderr.strip()[-2000:]}
    if ref_python is not None:
        runner = ReferenceRunner(ref_python, check=False, env=SUBPROCESS_ENV)
        job = {"op": "model_time", "id": "memory_ref", "input": str(pt_path), "memory": True,
               "args": ref_args(config), **ref_sparsity(config)}
        try:
            (r,) = runner.run_jobs([job], workdir / "memory_ref")
        except (ReferenceUnavailable, ReferenceJobError) as e:
            r = {"ok": False, "error": str(e)}
        if r.get("ok"):
            out["ref"] = {k: r[k] for k in ("method", "baseline_rss", "peak_rss", "peak_minus_baseline")}
            out["ref"]["peak_over_model"] = r["peak_minus_baseline"] / model_bytes
        else:
            out["ref"] = {"error": r.get("error")}
    if "peak_minus_baseline" in out.get("ours", {}) and "peak_minus_baseline" in out.get("ref", {}):
        out["ref_over_ours"] = out["ref"]["peak_minus_baseline"] / out["ours"]["peak_minus_baseline"]
    return out


# ------------------------------------------------------------------------------ coding


def ref_args(config: str) -> dict:
    c = CONFIGS[config]
    return {"qp": c["qp"], "nonweight_qp": c["nonweight_qp"], "use_dq": c["use_dq"],
            "row_skipping": True}


def ref_sparsity(config: str) -> dict:
    c = CONFIGS[config]
    return {"sparsity": c.get("sparsity", 0.0), "struct_spars_factor": c.get("struct_spars_factor", 0.0)}


def time_ours(model, config: str, threads: int) -> tuple[bytes, float, float]:
    from nnc_core import nn as nnc_nn

    gc.collect()
    t0 = time.perf_counter()
    bs = nnc_nn.encode(model, threads=threads, **CONFIGS[config])
    t1 = time.perf_counter()
    out = nnc_nn.decode(bs, threads=threads)
    t2 = time.perf_counter()
    del out
    return bs, t1 - t0, t2 - t1


def small_tensor_cases(session, repeats: int, workdir: Path) -> list[dict]:
    """1-D tensors through both tensor APIs: the per-NDU layer dominates there."""
    from nnc_core.tensor import decode, encode

    cases = []
    for n in SMALL_TENSOR_SIZES:
        x = (np.random.default_rng(n).standard_normal(n) * 0.05).astype(np.float32)
        path = workdir / f"small_{n}.npy"
        np.save(path, x)
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            bs = encode(x)
            t1 = time.perf_counter()
            decode(bs)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        case = {"name": f"vector of {n} elements (nonweight_qp -75, DQ)", "elements": n,
                "ours": {"encode_s": statistics.median(enc), "decode_s": statistics.median(dec),
                         "bytes": len(bs)}, "ref": None, "bytes_identical": None}
        if session is not None:
            renc, rdec, digest = [], [], None
            for i in range(repeats):
                job = {"op": "time", "id": f"small_{n}", "input": str(path), "args": {}}
                if i == 0:
                    job["bitstream"] = str(workdir / f"small_{n}_ref.nnc")
                r = session.run(job)
                if not r["ok"]:
                    case["ref"] = {"error": r["error"]}
                    break
                renc.append(r["encode_s"])
                rdec.append(r["decode_s"])
                digest = digest or r["sha256"]
            if renc:
                ref_bytes = (workdir / f"small_{n}_ref.nnc").read_bytes()
                case["ref"] = {"encode_s": statistics.median(renc), "decode_s": statistics.median(rdec),
                               "bytes": len(ref_bytes)}
                case["bytes_identical"] = ref_bytes == bs
                case["encode_speedup"] = case["ref"]["encode_s"] / case["ours"]["encode_s"]
                case["decode_speedup"] = case["ref"]["decode_s"] / case["ours"]["decode_s"]
        cases.append(case)
    return cases


def info_timing(workdir: Path, runs_wanted: int) -> dict:
    """Wall time of ``python -m nnc_core info`` on a stream of INFO_TENSORS small tensors."""
    from nnc_core import nn as nnc_nn
    from nnc_core.bitstream import parse_stream

    rng = np.random.default_rng(1)
    sd = {f"layer{i}.bias": (rng.standard_normal(64) * 0.05).astype(np.float32)
          for i in range(INFO_TENSORS)}
    bs = nnc_nn.encode(sd)
    path = workdir / "many_tensors.nnc"
    path.write_bytes(bs)
    t0 = time.perf_counter()
    units = parse_stream(bs)
    parse_s = time.perf_counter() - t0
    runs = []
    for _ in range(runs_wanted):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nnc_core", "info", str(path)], cwd=str(ROOT),
                              capture_output=True, text=True, env={**os.environ, **SUBPROCESS_ENV})
        runs.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import nnc_core.__main__"], cwd=str(ROOT),
                   capture_output=True, env={**os.environ, **SUBPROCESS_ENV})
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = nnc_nn.decode(bs)
    decode_s = time.perf_counter() - t0
    return {"tensors": INFO_TENSORS, "units": len(units), "bytes": len(bs),
            "cli_info_wall_s": min(runs), "cli_info_runs_s": runs,
            "interpreter_and_imports_s": startup, "parse_stream_s": parse_s,
            "decode_s": decode_s, "decoded_tensors": len(decoded)}


# ------------------------------------------------------------------------------ report


def print_table(cases: list[dict], cores: int, file=sys.stdout):
    head = ("model", "config", "params", "bytes", "same", "enc ref", "enc 1t", f"enc {cores}t",
            "x1", f"x{cores}", "dec ref", "dec 1t", f"dec {cores}t", "x1", f"x{cores}")
    rows = []

    def s(v):
        return "-" if v is None else (f"{v * 1e3:.0f}ms" if v < 1 else f"{v:.2f}s")

    def x(v):
        return "-" if v is None else f"{v:.2f}"
    for c in cases:
        r = c.get("ref") or {}
        o1, on = c["ours"]["1"], c["ours"]["all"]
        sp = c.get("speedups") or {}
        same = "-" if c["bytes_identical"] is None else ("yes" if c["bytes_identical"] else "NO")
        rows.append((c["model"], c["config"], f"{c['params'] / 1e6:.2f}M", f"{o1['bytes']:,}", same,
                     s(r.get("encode_s")), s(o1["encode_s"]), s(on["encode_s"]),
                     x(sp.get("encode_1_thread")), x(sp.get("encode_all_cores")),
                     s(r.get("decode_s")), s(o1["decode_s"]), s(on["decode_s"]),
                     x(sp.get("decode_1_thread")), x(sp.get("decode_all_cores"))))
    widths = [max(len(str(v)) for v in col) for col in zip(head, *rows)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
    print(line, file=file)
    print("-" * len(line), file=file)
    for row in rows:
        print("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))),
              file=file)
    print("x: speed-up = reference time / our time (1t: our 1 thread; the reference codes on one "
          "thread); same: our bitstream == the reference's (and ours is the same on every "
          "thread count)", file=file)


def plot(cases: list[dict], path: Path, machine: dict, cores: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_ref = [c for c in cases if c.get("speedups")]
    if not with_ref:
        return
    labels = [f"{c['model']}\n{c['config']}" for c in with_ref]
    keys = [("encode_1_thread", "encode, 1 thread", "#9ecae1"),
            ("encode_all_cores", f"encode, {cores} threads", "#1f77b4"),
            ("decode_1_thread", "decode, 1 thread", "#fdd0a2"),
            ("decode_all_cores", f"decode, {cores} threads", "#ff7f0e")]
    y = np.arange(len(with_ref))
    h = 0.2
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.8 * len(with_ref)))
    for k, (key, label, color) in enumerate(keys):
        vals = [c["speedups"][key] for c in with_ref]
        bars = ax.barh(y + (k - 1.5) * h, vals, h, label=label, color=color)
        for rect, v in zip(bars, vals):
            ax.text(v, rect.get_y() + rect.get_height() / 2, f" {v:.1f}x", va="center", fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([lb + ("" if c["bytes_identical"] else "\n[bytes differ]")
                        for lb, c in zip(labels, with_ref)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of nnc_core over NNCodec 2.1.3 (reference time / our time)")
    same = sum(bool(c["bytes_identical"]) for c in with_ref)
    ax.set_title(f"Whole-model coding: bitstreams identical in {same}/{len(with_ref)} cases",
                 fontsize=11)
    ax.set_xlim(right=ax.get_xlim()[1] * 1.12)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.text(0.01, 0.005, f"{machine['cpu_model']}, {machine['cores']} cores, load "
             f"{machine['load_average']['start']} -> {machine['load_average']['end']}, "
             f"{machine['date']}", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.model_bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 on success (also when bitstreams differ: see bytes_identical), 1 "
               "if a reference job failed or our bitstream depends on the thread count, 2 on "
               "bad arguments or a missing reference environment.")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: models {', '.join(QUICK_MODELS)}, few repeats, no memory "
                        "subprocesses; well under a minute")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help=f"models to run (default: {' '.join(FULL_MODELS)}; quick: "
                        f"{' '.join(QUICK_MODELS)})")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help="directory for model_bench.json and model_bench.png (default: benchmarks/results)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="the 'all cores' thread count (default: the cores of this machine)")
    p.add_argument("--no-reference", action="store_true",
                   help="nnc_core only (ref, speed-ups and bytes_identical are then null)")
    p.add_argument("--ref-python", metavar="PATH",
                   help="interpreter that imports nncodec 2.1.3 (default: $NNC_REF_PYTHON, else "
                        "tests/conformance/.refenv/bin/python)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory subprocesses (always skipped with --quick)")
    p.add_argument("--no-plot", action="store_true", help="do not write model_bench.png")
    p.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe, args.threads)))
        return 0
    import torch

    from nnc_core.workers import cores as nnc_cores
    torch.set_num_threads(1)
    mode = "quick" if args.quick else "full"
    names = args.models or list(QUICK_MODELS if args.quick else FULL_MODELS)
    for name in names:
        if name not in MODEL_NOTES:
            build_parser().error(f"unknown model {name!r} (known: {', '.join(MODEL_NOTES)})")
    cores = args.threads or nnc_cores()
    do_memory = not (args.quick or args.no_memory)
    load_at_start = load_average()
    ref_python = None
    if not args.no_reference:
        try:
            ref_python, _ = locate_reference(args.ref_python)
        except ReferenceMissing as e:
            loud(str(e))
            return 2

    status = 0
    cases: list[dict] = []
    ref_versions: dict = {}
    with tempfile.TemporaryDirectory(prefix="nnc_model_bench_") as tmp:
        work = Path(tmp)
        session = None
        if ref_python is not None:
            print("starting the reference (importing torch and nncodec) ...", file=sys.stderr)
            runner = ReferenceRunner(ref_python, check=False, torch_threads=1, env=SUBPROCESS_ENV)
            try:
                session = runner.session(work)
                info = session.run({"op": "info", "id": "info"})
                session.run({"op": "warmup", "id": "warmup"})
            except (ReferenceUnavailable, ReferenceJobError) as e:
                loud(f"the reference driver failed to start: {e}")
                return 2
            ref_versions = info.get("versions", {})
        from nnc_core import nn as nnc_nn
        nnc_nn.decode(nnc_nn.encode({"w": np.ones((16, 16), np.float32)}))     # warm-up
        largest = None
        try:
            for name in names:
                model = build_model(name)
                stats = model_stats(model)
                pt_path = work / f"{name}.pt"
                torch.save(model.state_dict(), pt_path)
                if largest is None or stats["params"] > largest[1]["params"]:
                    largest = (name, stats, pt_path)
                if name == TRANSFORMER[mode]:
                    repeats = TRANSFORMER_REPEATS[mode]
                else:
                    repeats = (SMALL_REPEATS if stats["params"] < 5_000_000 else LARGE_REPEATS)[mode]
                for config in CONFIGS:
                    print(f"{name} {config}: {stats['params'] / 1e6:.1f} M parameters, "
                          f"{repeats} repeat(s) ...", file=sys.stderr)
                    case = {"model": name, "model_note": MODEL_NOTES[name], "config": config,
                            "options": {"ours": CONFIGS[config],
                                        "ref": {**ref_args(config), **ref_sparsity(config)}},
                            **stats, "repeats": repeats}
                    runs = {"ref": {"encode_s": [], "decode_s": [], "sparsify_s": []},
                            "1": {"encode_s": [], "decode_s": []}, "all": {"encode_s": [], "decode_s": []}}
                    streams: dict[str, bytes] = {}
                    ref_bytes = None
                    for r in range(repeats):
                        if session is not None and "error" not in runs["ref"]:
                            job = {"op": "model_time", "id": f"{name}/{config}", "input": str(pt_path),
                                   "args": ref_args(config), **ref_sparsity(config)}
                            if r == 0:
                                job["bitstream"] = str(work / "ref.nnc")
                            res = session.run(job)
                            if res["ok"]:
                                for key in ("encode_s", "decode_s", "sparsify_s"):
                                    runs["ref"][key].append(res[key])
                                if r == 0:
                                    ref_bytes = (work / "ref.nnc").read_bytes()
                            else:
                                runs["ref"]["error"] = res["error"]
                                print(f"error: reference job {name}/{config} failed: {res['error']}",
                                      file=sys.stderr)
                                status = 1
                        for label, threads in (("1", 1), ("all", cores)):
                            bs, enc, dec = time_ours(model, config, threads)
                            runs[label]["encode_s"].append(enc)
                            runs[label]["decode_s"].append(dec)
                            if streams.setdefault(label, bs) != bs:
                                case["deterministic"] = False
                            del bs
                    ours = {}
                    for label in ("1", "all"):
                        ours[label] = {"threads": 1 if label == "1" else cores,
                                       "bytes": len(streams[label]),
                                       "encode_s": statistics.median(runs[label]["encode_s"]),
                                       "decode_s": statistics.median(runs[label]["decode_s"]),
                                       "encode_runs_s": runs[label]["encode_s"],
                                       "decode_runs_s": runs[label]["decode_s"]}
                    case["ours"] = ours
                    case["deterministic"] = case.get("deterministic", True)
                    case["same_bytes_any_thread_count"] = streams["1"] == streams["all"]
                    if not case["same_bytes_any_thread_count"]:
                        print(f"error: {name}/{config}: the bitstream depends on the thread count",
                              file=sys.stderr)
                        status = 1
                    case["ref"], case["speedups"], case["bytes_identical"] = None, None, None
                    if ref_bytes is not None:
                        ref = {k: statistics.median(v) for k, v in runs["ref"].items() if v}
                        ref.update({"bytes": len(ref_bytes), "encode_runs_s": runs["ref"]["encode_s"],
                                    "decode_runs_s": runs["ref"]["decode_s"]})
                        case["ref"] = ref
                        case["bytes_identical"] = ref_bytes == streams["1"] == streams["all"]
                        case["speedups"] = {
                            "encode_1_thread": ref["encode_s"] / ours["1"]["encode_s"],
                            "encode_all_cores": ref["encode_s"] / ours["all"]["encode_s"],
                            "decode_1_thread": ref["decode_s"] / ours["1"]["decode_s"],
                            "decode_all_cores": ref["decode_s"] / ours["all"]["decode_s"]}
                    elif "error" in runs["ref"]:
                        case["ref"] = {"error": runs["ref"]["error"]}
                    cases.append(case)
                    del streams
                del model
                gc.collect()
            small = small_tensor_cases(session, SMALL_TENSOR_REPEATS[mode], work)
        finally:
            if session is not None:
                session.close()
        t_info = time.perf_counter()
        info_many = info_timing(work, 1 if args.quick else 3)
        print(f"info timing took {time.perf_counter() - t_info:.1f} s", file=sys.stderr)
        memory = None
        if do_memory and largest is not None:
            first = next(iter(CONFIGS))
            print(f"measuring peak memory of {largest[0]} {first} (fresh subprocesses) ...",
                  file=sys.stderr)
            memory = measure_memory(largest[0], first, largest[2], ref_python, work,
                                    largest[1]["float32_bytes"])

    machine = machine_info(ref_versions, load_at_start)
    machine["threads_all_cores"] = cores
    transformer = TRANSFORMER[mode] if TRANSFORMER[mode] in names else None
    with_ref = [c for c in cases if c["speedups"]]
    summary: dict[str, Any] = {
        "bytes_identical_all": (all(c["bytes_identical"] for c in cases) if session is not None
                                and len(with_ref) == len(cases) else None),
        "bytes_identical_cases": f"{sum(bool(c['bytes_identical']) for c in cases)}/{len(cases)}",
        "same_bytes_any_thread_count_all": all(c["same_bytes_any_thread_count"] for c in cases),
        "transformer_model": transformer, "targets": TARGETS,
        "small_tensors_decode_no_slower": (all(c.get("decode_speedup", 0) >= 1.0 for c in small)
                                           if session is not None else None),
        "peak_memory": memory, "small_tensors": small, "info_1000_tensors": info_many,
    }
    if transformer is not None:
        summary["transformer"] = {
            c["config"]: {"speedups": c["speedups"],
                          "encode_s": {"ref": (c["ref"] or {}).get("encode_s"),
                                       "ours_1_thread": c["ours"]["1"]["encode_s"],
                                       "ours_all_cores": c["ours"]["all"]["encode_s"]},
                          "decode_s": {"ref": (c["ref"] or {}).get("decode_s"),
                                       "ours_1_thread": c["ours"]["1"]["decode_s"],
                                       "ours_all_cores": c["ours"]["all"]["decode_s"]},
                          "targets_met": None if not c["speedups"] else {
                              key: c["speedups"][key] >= target for key, target in TARGETS.items()}}
            for c in cases if c["model"] == transformer}
    settings = {
        "quick": args.quick, "models": names, "configs": CONFIGS, "threads_all_cores": cores,
        "repeats": {"under 5 M parameters": SMALL_REPEATS[mode], "larger": LARGE_REPEATS[mode],
                    "transformer": TRANSFORMER_REPEATS[mode]},
        "statistic": "median", "timer": "time.perf_counter around one encode or decode call",
        "thread_variables": {v: os.environ[v] for v in THREAD_VARS},
        "reference": None if ref_python is None else {
            "python": str(ref_python), "driver": "reference/driver.py (model_time)",
            "encode": "nnc.compress_model(state dict .pt, row_skipping=True, ...) + its own "
                      "sparsification when sparsity > 0", "decode": "nnc.decompress",
            "torch_threads": 1},
        "ours": "nnc_core.nn.encode(module, threads=T, **options), nnc_core.nn.decode(bs, threads=T)",
        "memory": None if not do_memory else "largest case, first configuration, a fresh subprocess "
                  "per implementation: peak RSS (VmHWM after clear_refs) minus the RSS after imports",
    }
    report = {"machine": machine, "settings": settings, "cases": cases, "summary": summary}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "model_bench.json"
    json_path.write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False) + "\n")

    print(f"{machine['cpu_model']}, {machine['cores']} cores, load {machine['load_average']}, "
          f"nncodec {machine['nncodec'] or '-'}")
    print_table(cases, cores)
    for c in small:
        ref = c["ref"] or {}
        print(f"{c['name']}: decode ours {c['ours']['decode_s'] * 1e6:.0f} us, ref "
              f"{ref.get('decode_s', float('nan')) * 1e6:.0f} us; encode ours "
              f"{c['ours']['encode_s'] * 1e6:.0f} us, ref {ref.get('encode_s', float('nan')) * 1e6:.0f} us")
    if "cli_info_wall_s" in info_many:
        print(f"python -m nnc_core info on {INFO_TENSORS} tensors: {info_many['cli_info_wall_s']:.2f} s "
              f"wall ({info_many['interpreter_and_imports_s']:.2f} s interpreter and imports, "
              f"{info_many['parse_stream_s'] * 1e3:.0f} ms parsing)")
    if memory:
        for impl in ("ours", "ref"):
            m = memory.get(impl) or {}
            if "peak_minus_baseline" in m:
                print(f"peak memory {impl} ({memory['model']} {memory['config']}): "
                      f"+{m['peak_minus_baseline'] / 2**20:.0f} MiB = {m['peak_over_model']:.2f} x the "
                      f"float32 model")
    if not args.no_plot:
        plot(cases, out_dir / "model_bench.png", machine, cores)
        print(f"wrote {json_path} and {out_dir / 'model_bench.png'}")
    else:
        print(f"wrote {json_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
