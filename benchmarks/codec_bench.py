#!/usr/bin/env python
"""Benchmark nnc_core against the reference NNCodec 2.1.3, side by side on one machine.

Both implementations code the same tensors with the same options through their tensor APIs
("ours": nnc_core.tensor.encode / decode; "ref": nncodec.tensor.encode / decode, run with
the reference interpreter in one subprocess for all of its timings, so that its start-up of
several seconds is paid once). Cases:

  (i)  a Gaussian float32 tensor (1000x1000, std 0.05, numpy.random.default_rng(0)) at
       qp -20, -32 and -40, each with dependent quantization (DQ) on and off;
  (ii) every floating-point tensor of a trained state dict (default
       example/weights/fmnist_mlp.pt, a 784-256-10 Fashion-MNIST MLP), one tensor at a time,
       at qp -32 with DQ on and off. 1-D tensors (biases) are coded with nonweight_qp -75 by
       both implementations (the reference's tensor API always uses -75 for them).

All other options are the tensor API defaults (row skipping and parameter optimisation on).

Per case and implementation the benchmark reports: the bitstream size in bytes; bits per
element (8 * bytes / elements); the zeroth-order empirical entropy, in bits per element, of
the coded levels (the integers actually transmitted, which with DQ differ from the
reconstruction integers; both bitstreams are decoded with nnc_core.codec.decode_stream for
this, skipped rows count as zeros); the SNR of the reconstruction,
10 log10(sum x^2 / sum (x - y)^2) in dB (written as the string "inf" in the JSON for a
lossless reconstruction); the encode and decode times (median of the repeats, measured
with time.perf_counter around the API call only, after one untimed warm-up on a small
tensor; the reference's encode includes the copy of the bitstream that its tensor API always
writes into args["results"], here a temporary directory); and bytes_identical (our
bitstream == the reference's). Each repeat round times every case once in both
implementations, alternating which goes first, so that load from other processes on a
shared machine hits both alike. Ratios per case:
encode_speedup = ref_encode_s / ours_encode_s (medians), decode_speedup likewise and
size_ratio = ours_bytes / ref_bytes; *_speedup_paired is the median over the rounds of the
ratio within one round, and *_min_s the fastest repeat, both less sensitive to bursts of
load than the medians. Both implementations run single-threaded
(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, NUMEXPR_NUM_THREADS and
VECLIB_MAXIMUM_THREADS are set to 1 for this process and the subprocesses;
torch.set_num_threads(1) in the reference). On a shared machine absolute times drift from
run to run; the ratios compare measurements taken in the same run.

Peak memory (full mode): for the Gaussian at qp -32 with DQ, a fresh subprocess per
implementation (the "memory" job of reference/driver.py) imports its codec, loads the
input, records the resident set size as a baseline, encodes and decodes once and reports the
peak resident set size minus the baseline (bytes and bytes per element). On Linux the peak is VmHWM from
/proc/self/status, reset to the current RSS just before the baseline (/proc/self/clear_refs):
ru_maxrss of a fresh subprocess still holds the high-water mark inherited from the process
that started it, which can hide the peak entirely. Elsewhere ru_maxrss is used. For ours the
tracemalloc peak of a second encode + decode is reported as well (Python and numpy
allocations only).

Output: a table on stdout, DIR/codec_bench.json and DIR/codec_bench.png (encode and decode
speed-ups per case; absolute times of ours with --no-reference). The JSON holds "machine"
(CPU model, cores, load average, python, numpy, nnc_core and nncodec versions), "settings"
(everything above that shapes the numbers), "cases" (per case: name, shape, qp, use_dq, the
options given to each implementation, "ours" and "ref" with the measures above plus every
repeat's time, "ratios" and bytes_identical) and "summary": the headline case (Gaussian,
qp -32, DQ on) with its encode_s / decode_s of both implementations and its speed-ups,
bytes_identical_all, whether nnc_core decodes every reference bitstream to the reference's
output, the range of the speed-ups over all cases and peak_memory.

The reference interpreter is NNC_REF_PYTHON if set, else tests/conformance/.refenv/bin/python
(made by `bash tests/conformance/env.sh`). If it is missing or has no nncodec 2.1.3 the
benchmark stops with exit status 2, unless --no-reference is given. The reference is driven
through the repository's `reference` package (the same driver as the conformance tests), so
the benchmark runs from the repository root as a module:

    env/bin/python -m benchmarks.codec_bench --quick
"""
from __future__ import annotations

import os

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.codec_bench ...")

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
for _var in THREAD_VARS:            # before numpy is imported
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import numpy as np  # noqa: E402

from reference import (  # noqa: E402
    DRIVER,
    ReferenceJobError,
    ReferenceRunner,
    ReferenceUnavailable,
    check_reference,
    reference_python,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CHECKPOINT = ROOT / "example" / "weights" / "fmnist_mlp.pt"
DEFAULT_OUT = HERE / "results"

GAUSS_STD = 0.05
GAUSS_SEED = 0
FULL_QPS = (-20, -32, -40)
QUICK_QPS = (-32,)
CHECKPOINT_QP = -32
NONWEIGHT_QP = -75
HEADLINE_QP = -32
FULL_SIZE = 1000
QUICK_SIZE = 256
FULL_REPEATS = 5
QUICK_REPEATS = 1


# ------------------------------------------------------------------------------ cases


@dataclasses.dataclass
class Case:
    name: str
    group: str                 # "gaussian" or "checkpoint"
    tensor: str                # tensor name within its source
    x: np.ndarray
    qp: int                    # qp the tensor is coded with (nonweight_qp for 1-D tensors)
    use_dq: bool
    ours_options: dict
    ref_args: dict
    input_path: Optional[Path] = None


def _options(qp: int, use_dq: bool) -> tuple[dict, dict]:
    ours = {"qp": qp, "use_dq": use_dq, "nonweight_qp": NONWEIGHT_QP}
    ref = {"qp": qp, "use_dq": use_dq, "nonweight_qp": NONWEIGHT_QP}
    return ours, ref


def gaussian(side: int) -> np.ndarray:
    rng = np.random.default_rng(GAUSS_SEED)
    return (rng.standard_normal((side, side)) * GAUSS_STD).astype(np.float32)


def gaussian_cases(side: int, qps) -> list[Case]:
    x = gaussian(side)
    cases = []
    for qp in qps:
        for dq in (True, False):
            ours, ref = _options(qp, dq)
            cases.append(Case(f"gaussian {side}x{side} qp{qp} DQ {'on' if dq else 'off'}",
                              "gaussian", f"gaussian{side}x{side}", x, qp, dq, ours, ref))
    return cases


def load_state_dict(path: Path) -> list[tuple[str, np.ndarray]]:
    """Floating-point tensors with at least one dimension, as float32 numpy arrays."""
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, torch.Tensor):
        obj = {path.stem: obj}
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor)")
    items = [(str(k), np.ascontiguousarray(v.detach().cpu().numpy().astype(np.float32)))
             for k, v in obj.items()
             if isinstance(v, torch.Tensor) and v.is_floating_point() and v.ndim > 0]
    if not items:
        raise ValueError(f"{path}: no floating-point tensors with at least one dimension")
    return items


def checkpoint_cases(path: Path) -> list[Case]:
    cases = []
    for name, x in load_state_dict(path):
        coded_qp = CHECKPOINT_QP if x.ndim >= 2 else NONWEIGHT_QP
        for dq in (True, False):
            ours, ref = _options(CHECKPOINT_QP, dq)
            cases.append(Case(f"{path.name} {name} qp{coded_qp} DQ {'on' if dq else 'off'}",
                              "checkpoint", name, x, coded_qp, dq, ours, ref))
    return cases


# ------------------------------------------------------------------------------ measures


def measure_parallel_decode(side: int, repeats: int) -> dict:
    """Decode a block-scanned gaussian (entry points per block row) on one thread and on all
    cores; the size of block scanning compared with raster order."""
    from nnc_core.tensor import decode, encode
    x = gaussian(side)
    raster = encode(x, qp=HEADLINE_QP)
    blocks = encode(x, qp=HEADLINE_QP, scan_order=1)
    cores = os.cpu_count() or 1
    times = {}
    for threads in (1, cores):
        runs = []
        for _ in range(max(repeats, 3)):
            t = time.perf_counter()
            decode(blocks, threads=threads)
            runs.append(time.perf_counter() - t)
        times[threads] = statistics.median(runs)
    return {"tensor": f"gaussian {side}x{side} qp{HEADLINE_QP} DQ on", "scan_order": 1,
            "cores": cores, "decode_s_1_thread": times[1], "decode_s_all_cores": times[cores],
            "speedup": times[1] / times[cores],
            "bytes_raster": len(raster), "bytes_block_scan": len(blocks),
            "size_overhead": len(blocks) / len(raster) - 1}


def stream_stats(x: np.ndarray, bs: bytes, y: np.ndarray) -> dict:
    from nnc_core.codec import decode_stream
    from nnc_core.metrics import entropy_bits, snr_db

    (t,) = decode_stream(bytes(bs), transmitted=True)
    return {
        "bytes": len(bs),
        "bits_per_element": 8.0 * len(bs) / max(x.size, 1),
        "entropy_bits_per_element": entropy_bits(t.info["transmitted"]),
        "snr_db": snr_db(x, y),
    }


def timing(encode_s: list, decode_s: list) -> dict:
    return {"encode_s": statistics.median(encode_s), "decode_s": statistics.median(decode_s),
            "encode_min_s": min(encode_s), "decode_min_s": min(decode_s),
            "encode_runs_s": list(encode_s), "decode_runs_s": list(decode_s)}


def paired_speedup(ref_runs: list, ours_runs: list) -> Optional[float]:
    """Median over the repeat rounds of ref time / ours time within the same round."""
    pairs = [r / o for r, o in zip(ref_runs, ours_runs) if o > 0]
    return statistics.median(pairs) if pairs else None


def warm_up_ours():
    from nnc_core.tensor import decode, encode

    w = (np.random.default_rng(1).standard_normal((64, 64)) * GAUSS_STD).astype(np.float32)
    for dq in (True, False):
        decode(encode(w, use_dq=dq))


def time_ours_once(case: Case, acc: tuple) -> tuple:
    """One timed encode + decode; ``acc`` is (encode times, decode times, bitstream, decoded,
    whether every repeat wrote the same bitstream)."""
    from nnc_core.tensor import decode, encode

    enc, dec, previous, _, same = acc
    t0 = time.perf_counter()
    bs = encode(case.x, **case.ours_options)
    t1 = time.perf_counter()
    t2 = time.perf_counter()
    y = decode(bs)
    t3 = time.perf_counter()
    enc.append(t1 - t0)
    dec.append(t3 - t2)
    return enc, dec, bs, y, same and (previous is None or previous == bs)


# ------------------------------------------------------------------------------ reference


class ReferenceMissing(RuntimeError):
    pass


def locate_reference(explicit: Optional[str]) -> tuple[Path, str]:
    """Interpreter of the reference environment and its nncodec version (checked)."""
    py = Path(explicit) if explicit else reference_python()
    try:
        version = check_reference(py, full=False)
    except ReferenceUnavailable as e:
        raise ReferenceMissing(str(e)) from None
    return py, version


# the reference (and our memory subprocess) must not start a GPU; thread variables are in
# os.environ already (set at the top of this script) and inherited
SUBPROCESS_ENV = {"CUDA_VISIBLE_DEVICES": ""}


class ReferenceTimer:
    """The reference in one long-lived driver subprocess (a ``reference`` session), which
    times one encode + decode of a case per "time" job, so that its repeats can be
    interleaved with ours and load from other processes affects both implementations alike."""

    def __init__(self, cases: list[Case], ref_python: Path, workdir: Path):
        self.jobs = [{"op": "time", "id": c.name, "input": str(c.input_path), "args": c.ref_args,
                      "bitstream": str(workdir / f"ref_{i:03d}.nnc"),
                      "decoded": str(workdir / f"ref_{i:03d}_dec.npy")} for i, c in enumerate(cases)]
        self.runs = [{"ok": True, "error": None, "encode_s": [], "decode_s": [], "sha256": set()}
                     for _ in cases]
        runner = ReferenceRunner(ref_python, check=False, torch_threads=1, env=SUBPROCESS_ENV)
        try:
            self.session = runner.session(workdir)
            info = self.session.run({"op": "info", "id": "info"})
            # first calls pay for lazy imports and allocator growth; keep that out of the timings
            warm = self.session.run({"op": "warmup", "id": "warmup"})
        except (ReferenceUnavailable, ReferenceJobError) as e:
            raise ReferenceMissing(f"the reference driver (reference/driver.py) failed to start: "
                                   f"{e}") from None
        for r in (info, warm):
            if not r["ok"]:
                self.session.close()
                raise ReferenceMissing(f"the reference driver's {r['op']} job failed: {r['error']}")
        self.versions = info["versions"]

    def run(self, i: int) -> bool:
        """One timed encode + decode of case ``i`` in the reference process."""
        acc = self.runs[i]
        if not acc["ok"]:
            return False
        job = dict(self.jobs[i])
        if acc["encode_s"]:                 # the first run wrote the bitstream and the decode
            job.pop("bitstream")
            job.pop("decoded")
        try:
            r = self.session.run(job)
        except ReferenceJobError as e:
            raise ReferenceMissing(str(e)) from None
        if not r["ok"]:
            acc["ok"], acc["error"] = False, r["error"]
            return False
        acc["encode_s"].append(r["encode_s"])
        acc["decode_s"].append(r["decode_s"])
        acc["sha256"].add(r["sha256"])
        return True

    def finish(self) -> tuple[dict, list[dict]]:
        """Stop the process; return (versions, per-case results with "bitstream" bytes and
        "decoded" arrays, or "ok": False and "error")."""
        rc = self.session.close()
        results = []
        for job, acc in zip(self.jobs, self.runs):
            if not acc["ok"] or not acc["encode_s"]:
                results.append({"ok": False, "error": acc["error"] or f"no result (exit status {rc})"})
                continue
            results.append({"ok": True, "bitstream": Path(job["bitstream"]).read_bytes(),
                            "decoded": np.load(job["decoded"]),
                            "deterministic": len(acc["sha256"]) == 1,
                            **timing(acc["encode_s"], acc["decode_s"])})
        return self.versions, results

    def close(self):
        self.session.close()


# ------------------------------------------------------------------------------ memory

MEMORY_FIELDS = ("implementation", "method", "baseline_rss", "peak_rss", "peak_minus_baseline",
                 "bytes", "decoded_shape", "tracemalloc_peak")


def measure_memory(x_path: Path, n: int, ours_options: dict, ref_args: dict,
                   ref_python: Optional[Path], workdir: Path) -> dict:
    """Peak memory of one encode + decode, each implementation in a fresh driver process
    (ours with this interpreter, which needs no reference)."""
    out: dict[str, Any] = {}
    runs = [("ours", Path(sys.executable), ours_options)]
    if ref_python is not None:
        runs.append(("ref", ref_python, ref_args))
    for impl, python, options in runs:
        runner = ReferenceRunner(python, check=False, torch_threads=1, env=SUBPROCESS_ENV)
        job = {"op": "memory", "id": f"memory_{impl}", "impl": impl, "input": str(x_path),
               "args": options}
        try:
            (r,) = runner.run_jobs([job], workdir / f"memory_{impl}")
        except (ReferenceUnavailable, ReferenceJobError) as e:
            out[impl] = {"error": str(e)}
            continue
        if not r.get("ok"):
            out[impl] = {"error": f"{r.get('error')}\n{r.get('traceback') or ''}".strip()}
            continue
        r = {k: r[k] for k in MEMORY_FIELDS if k in r}
        r["peak_bytes_per_element"] = r["peak_minus_baseline"] / n
        if "tracemalloc_peak" in r:
            r["tracemalloc_bytes_per_element"] = r["tracemalloc_peak"] / n
        out[impl] = r
    if "peak_minus_baseline" in out.get("ours", {}) and "peak_minus_baseline" in out.get("ref", {}):
        ours, ref = out["ours"]["peak_minus_baseline"], out["ref"]["peak_minus_baseline"]
        out["ref_over_ours"] = ref / ours if ours > 0 else None
    return out


# ------------------------------------------------------------------------------ report


def _bar(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency of nnc_core, but keep the benchmark usable
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n=1):
                pass

            def close(self):
                pass

            def set_postfix_str(self, s):
                pass
        return _Null()
    return tqdm(total=total, desc=desc, unit="case", leave=False, file=sys.stderr)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_revision() -> dict:
    """Commit of the working tree and whether nnc_core has uncommitted changes."""
    def git(*cmd):
        try:
            proc = subprocess.run(["git", *cmd], cwd=str(ROOT), capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "nnc_core", "setup.py")
    return {"commit": commit, "nnc_core_modified": None if dirty is None else bool(dirty)}


def load_average() -> Optional[list]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(ref_versions: dict, load_at_start: Optional[list]) -> dict:
    import nnc_core
    from nnc_core.cabac import levels

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": cpu_model(),
        # the vectorised pricing and trellis run only where the CPU has AVX-512
        "avx512": levels.simd_enabled(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "load_average": {"start": load_at_start, "end": load_average(),
                         "note": "1, 5 and 15 minute averages; the benchmark itself adds about 1"},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nnc_core": nnc_core.__version__,
        "nnc_core_source": source_revision(),
        "nncodec": ref_versions.get("nncodec"),
        "reference_python": ref_versions.get("python"),
        "reference_numpy": ref_versions.get("numpy"),
        "reference_torch": ref_versions.get("torch"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _fmt_s(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.1f}ms" if v < 1 else f"{v:.2f}s"


def _fmt_x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def print_table(cases: list[dict], file=sys.stdout):
    head = ("case", "bytes ours", "bytes ref", "same", "bpe", "H lev", "SNR dB",
            "enc ours", "enc ref", "enc x", "dec ours", "dec ref", "dec x")
    rows = []
    for c in cases:
        o, r, q = c["ours"], c["ref"], c["ratios"]
        same = "-" if c["bytes_identical"] is None else ("yes" if c["bytes_identical"] else "NO")
        rows.append((c["name"], f"{o['bytes']:,}", "-" if r is None else f"{r['bytes']:,}", same,
                     f"{o['bits_per_element']:.3f}", f"{o['entropy_bits_per_element']:.3f}",
                     f"{o['snr_db']:.2f}", _fmt_s(o["encode_s"]),
                     "-" if r is None else _fmt_s(r["encode_s"]),
                     "-" if q is None else _fmt_x(q["encode_speedup"]), _fmt_s(o["decode_s"]),
                     "-" if r is None else _fmt_s(r["decode_s"]),
                     "-" if q is None else _fmt_x(q["decode_speedup"])))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
    print(line, file=file)
    print("-" * len(line), file=file)
    for row in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))),
              file=file)
    print("bpe: bits per element of the bitstream; H lev: zeroth-order entropy of the coded levels "
          "(bits/element); x: speed-up = ref time / ours time", file=file)


def plot(cases: list[dict], path: Path, machine: dict, settings: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in cases]
    n = len(names)
    y = np.arange(n)
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.42 * n))
    h = 0.38
    with_ref = all(c["ratios"] is not None for c in cases)
    if with_ref:
        enc = [c["ratios"]["encode_speedup"] for c in cases]
        dec = [c["ratios"]["decode_speedup"] for c in cases]
        b1 = ax.barh(y - h / 2, enc, h, label="encode", color="#1f77b4")
        b2 = ax.barh(y + h / 2, dec, h, label="decode", color="#ff7f0e")
        ax.axvline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xlabel("speed-up of nnc_core over NNCodec 2.1.3 (reference time / our time, "
                      "median of %d)" % settings["repeats"])
        vals = enc + dec
        if max(vals) / max(min(vals), 1e-9) > 30:
            ax.set_xscale("log")
        for bars in (b1, b2):
            for rect in bars:
                v = rect.get_width()
                ax.text(v, rect.get_y() + rect.get_height() / 2, f" {v:.1f}x", va="center", fontsize=8)
        ax.set_xlim(right=ax.get_xlim()[1] * (1.6 if ax.get_xscale() == "log" else 1.12))
        labels = [nm + ("" if c["bytes_identical"] else "  [bytes differ]") for nm, c in zip(names, cases)]
        same = sum(bool(c["bytes_identical"]) for c in cases)
        title = f"nnc_core vs NNCodec 2.1.3: bitstreams identical in {same}/{n} cases"
    else:
        enc = [c["ours"]["encode_s"] * 1e3 for c in cases]
        dec = [c["ours"]["decode_s"] * 1e3 for c in cases]
        ax.barh(y - h / 2, enc, h, label="encode", color="#1f77b4")
        ax.barh(y + h / 2, dec, h, label="decode", color="#ff7f0e")
        ax.set_xscale("log")
        ax.set_xlabel("nnc_core time in ms (median of %d)" % settings["repeats"])
        labels = names
        title = "nnc_core encode / decode times (no reference run)"
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.legend(loc="upper right")
    ax.set_title(title, fontsize=11)
    fig.text(0.01, 0.005, f"{machine['cpu_model']}, {machine['cores']} cores, single thread, "
             f"{machine['date']}", fontsize=7, color="gray")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jsonable(obj):
    if isinstance(obj, float):
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        if math.isnan(obj):
            return None
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.codec_bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  env/bin/python -m benchmarks.codec_bench                 # full run, results in benchmarks/results\n"
               "  env/bin/python -m benchmarks.codec_bench --quick --out /tmp/bench\n"
               "  env/bin/python -m benchmarks.codec_bench --checkpoint my_model.pt --no-memory\n"
               "exit status: 0 on success (also when bitstreams differ: see bytes_identical), 1 if a "
               "reference job failed or nnc_core decodes a reference bitstream differently from the "
               "reference, 2 on bad arguments or a missing reference environment.")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: only the Gaussian at qp {HEADLINE_QP} (DQ on and off), "
                        f"{QUICK_SIZE}x{QUICK_SIZE} instead of {FULL_SIZE}x{FULL_SIZE} (the case names "
                        f"say so), {QUICK_REPEATS} repeat, no checkpoint tensors (unless --checkpoint "
                        "is given), no memory measurement; takes a few seconds plus the reference start-up")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help="directory for codec_bench.json and codec_bench.png (default: benchmarks/results)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="state dict (.pt/.pth, loaded with torch.load(weights_only=True)) whose "
                        "floating-point tensors with >= 1 dimension are benchmarked one by one, "
                        "converted to float32 (default: example/weights/fmnist_mlp.pt; none with "
                        "--quick unless given)")
    p.add_argument("--no-reference", action="store_true",
                   help="benchmark nnc_core only (no reference environment needed); the ref, "
                        "ratios and bytes_identical fields are then null")
    p.add_argument("--ref-python", metavar="PATH",
                   help="interpreter that imports nncodec 2.1.3 (default: $NNC_REF_PYTHON, else "
                        "tests/conformance/.refenv/bin/python)")
    p.add_argument("--repeats", type=int, metavar="N",
                   help=f"timed repeats per case, the median is reported (default: {FULL_REPEATS}, "
                        f"{QUICK_REPEATS} with --quick)")
    p.add_argument("--size", type=int, metavar="N",
                   help=f"side of the square Gaussian tensor (default: {FULL_SIZE}, {QUICK_SIZE} with --quick)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory subprocesses (always skipped with --quick)")
    p.add_argument("--no-plot", action="store_true", help="do not write codec_bench.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def loud(message: str):
    line = "=" * 78
    print(f"\n{line}\nREFERENCE NOT AVAILABLE: the benchmark compares against NNCodec 2.1.3 and "
          f"cannot find it.\n\n    {message}\n\nSet it up with `bash tests/conformance/env.sh` "
          f"(or pass --ref-python / set NNC_REF_PYTHON),\nor run with --no-reference to benchmark "
          f"nnc_core alone.\n{line}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_at_start = load_average()
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else FULL_REPEATS)
    side = args.size if args.size is not None else (QUICK_SIZE if args.quick else FULL_SIZE)
    if repeats < 1 or side < 1:
        build_parser().error("--repeats and --size must be positive")
    qps = QUICK_QPS if args.quick else FULL_QPS
    do_memory = not (args.quick or args.no_memory)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint = None if args.quick else DEFAULT_CHECKPOINT
    show = not args.no_progress
    out_dir = Path(args.out)

    cases = gaussian_cases(side, qps)
    if checkpoint is not None:
        if not checkpoint.exists():
            build_parser().error(f"--checkpoint {checkpoint}: no such file")
        try:
            cases += checkpoint_cases(checkpoint)
        except Exception as e:
            build_parser().error(f"--checkpoint {checkpoint}: {e}")

    ref_python = None
    if not args.no_reference:
        try:
            ref_python, _ = locate_reference(args.ref_python)
        except ReferenceMissing as e:
            loud(str(e))
            return 2

    settings = {
        "quick": args.quick, "repeats": repeats, "statistic": "median",
        "timer": "time.perf_counter around one encode or decode call",
        "schedule": "each repeat round times every case once in both implementations, "
                    "alternating which goes first; the reference stays in one subprocess",
        "warmup": "one untimed encode + decode of a 64x64 tensor per implementation (DQ on and off)",
        "threads": {v: os.environ[v] for v in THREAD_VARS},
        "reference_torch_threads": 1,
        "gaussian": {"shape": [side, side], "std": GAUSS_STD, "seed": GAUSS_SEED, "dtype": "float32",
                     "generator": "numpy.random.default_rng(seed).standard_normal(shape) * std",
                     "qps": list(qps), "use_dq": [True, False]},
        "checkpoint": None if checkpoint is None else {
            "path": str(checkpoint), "qp": CHECKPOINT_QP, "nonweight_qp": NONWEIGHT_QP, "use_dq": [True, False]},
        "other_options": "tensor API defaults of both implementations",
        "entropy": "zeroth-order empirical entropy of the transmitted levels (nnc_core decode_stream, "
                   "transmitted=True), bits per element",
        "snr": "10 log10(sum x^2 / sum (x - y)^2) dB, 'inf' if lossless",
        "memory": None if not do_memory else {
            "case": f"gaussian {side}x{side} qp{HEADLINE_QP} DQ on",
            "method": "fresh subprocess per implementation (memory job of reference/driver.py): peak RSS "
                      "(VmHWM, reset by /proc/self/clear_refs; ru_maxrss where /proc is missing) minus "
                      "the RSS after imports, a small warm-up and loading the input, around one "
                      "encode + decode; tracemalloc peak of a second encode + decode for nnc_core"},
        "reference": None if ref_python is None else {"python": str(ref_python),
                                                      "driver": str(DRIVER.relative_to(ROOT))},
    }

    status = 0
    with tempfile.TemporaryDirectory(prefix="nnc_bench_") as tmp:
        work = Path(tmp)
        saved: dict[int, Path] = {}
        for i, c in enumerate(cases):
            key = id(c.x)
            if key not in saved:
                saved[key] = work / f"input_{len(saved):03d}.npy"
                np.save(saved[key], c.x)
            c.input_path = saved[key]

        # The reference runs in one subprocess for all cases; its start-up (torch and nncodec
        # imports) is over before any timing starts. Then every repeat round times each case
        # once in both implementations, alternating which goes first.
        ref = None
        if ref_python is not None:
            if show:
                print("starting the reference (importing torch and nncodec) ...", file=sys.stderr)
            try:
                ref = ReferenceTimer(cases, ref_python, work)
            except ReferenceMissing as e:
                loud(str(e))
                return 2
        try:
            warm_up_ours()
            ours_runs = [([], [], None, None, True) for _ in cases]
            ref_alive = [True] * len(cases)
            bar = _bar(repeats * len(cases), "timing" if ref else "timing nnc_core", show)
            for r in range(repeats):
                for i, c in enumerate(cases):
                    bar.set_postfix_str(f"round {r + 1}/{repeats}: {c.name}")
                    ours_first = (r + i) % 2 == 0
                    if ref is not None and not ours_first and ref_alive[i]:
                        ref_alive[i] = ref.run(i)
                    ours_runs[i] = time_ours_once(c, ours_runs[i])
                    if ref is not None and ours_first and ref_alive[i]:
                        ref_alive[i] = ref.run(i)
                    bar.update(1)
            bar.close()
            ours_raw = [(bs, y, {**timing(enc, dec), "deterministic": same})
                        for enc, dec, bs, y, same in ours_runs]
            ref_versions: dict = {}
            ref_raw: list = [None] * len(cases)
            if ref is not None:
                ref_versions, ref_raw = ref.finish()
        except ReferenceMissing as e:
            loud(str(e))
            return 2
        finally:
            if ref is not None:
                ref.close()

        memory = None
        if do_memory:
            head = next(c for c in cases if c.group == "gaussian" and c.qp == HEADLINE_QP and c.use_dq)
            print("measuring peak memory (fresh subprocesses) ...", file=sys.stderr)
            memory = measure_memory(head.input_path, head.x.size, head.ours_options, head.ref_args,
                                    ref_python, work)
            memory["case"] = head.name

        results = []
        for c, (bs, y, t_ours), r in zip(cases, ours_raw, ref_raw):
            ours = {**stream_stats(c.x, bs, y), **t_ours}
            entry = {"name": c.name, "group": c.group, "tensor": c.tensor, "shape": list(c.x.shape),
                     "elements": int(c.x.size), "qp": c.qp, "use_dq": c.use_dq,
                     "options": {"ours": c.ours_options, "ref": c.ref_args},
                     "ours": ours, "ref": None, "ratios": None, "bytes_identical": None}
            if r is not None:
                if not r["ok"]:
                    print(f"error: reference job {c.name!r} failed: {r['error']}", file=sys.stderr)
                    entry["ref"] = {"error": r["error"]}
                    status = 1
                else:
                    from nnc_core.tensor import decode

                    ref = {**stream_stats(c.x, r["bitstream"], r["decoded"]),
                           **{k: r[k] for k in ("encode_s", "decode_s", "encode_min_s", "decode_min_s",
                                                "encode_runs_s", "decode_runs_s")},
                           "deterministic": r["deterministic"]}
                    # the reference stream is standard: nnc_core must decode it to the reference's output
                    ref["ours_decodes_ref_stream_equal"] = bool(np.array_equal(
                        decode(r["bitstream"]).reshape(-1), np.asarray(r["decoded"], dtype=np.float32).reshape(-1)))
                    entry["ref"] = ref
                    entry["bytes_identical"] = bytes(bs) == bytes(r["bitstream"])
                    entry["ratios"] = {
                        "encode_speedup": ref["encode_s"] / ours["encode_s"],
                        "decode_speedup": ref["decode_s"] / ours["decode_s"],
                        "size_ratio": ours["bytes"] / ref["bytes"],
                        "encode_speedup_paired": paired_speedup(ref["encode_runs_s"], ours["encode_runs_s"]),
                        "decode_speedup_paired": paired_speedup(ref["decode_runs_s"], ours["decode_runs_s"]),
                    }
            results.append(entry)

    machine = machine_info(ref_versions, load_at_start)
    with_ref = [c for c in results if c["ratios"] is not None]
    head = next((c for c in results if c["group"] == "gaussian" and c["qp"] == HEADLINE_QP and c["use_dq"]), None)
    summary: dict[str, Any] = {"headline_case": head["name"] if head else None}
    if head is not None:
        summary["encode_s"] = {"ours": head["ours"]["encode_s"],
                               "ref": head["ref"]["encode_s"] if head["ratios"] else None}
        summary["decode_s"] = {"ours": head["ours"]["decode_s"],
                               "ref": head["ref"]["decode_s"] if head["ratios"] else None}
        summary["encode_speedup"] = head["ratios"]["encode_speedup"] if head["ratios"] else None
        summary["decode_speedup"] = head["ratios"]["decode_speedup"] if head["ratios"] else None
        summary["encode_speedup_paired"] = head["ratios"]["encode_speedup_paired"] if head["ratios"] else None
        summary["decode_speedup_paired"] = head["ratios"]["decode_speedup_paired"] if head["ratios"] else None
    if ref_python is not None:
        summary["bytes_identical_all"] = bool(with_ref) and len(with_ref) == len(results) and all(
            c["bytes_identical"] for c in results)
        summary["bytes_identical_cases"] = f"{sum(bool(c['bytes_identical']) for c in results)}/{len(results)}"
        summary["ours_decodes_ref_streams"] = all(c["ref"].get("ours_decodes_ref_stream_equal") for c in with_ref)
        summary["encode_speedup_range"] = ([min(c["ratios"]["encode_speedup"] for c in with_ref),
                                            max(c["ratios"]["encode_speedup"] for c in with_ref)]
                                           if with_ref else None)
        summary["decode_speedup_range"] = ([min(c["ratios"]["decode_speedup"] for c in with_ref),
                                            max(c["ratios"]["decode_speedup"] for c in with_ref)]
                                           if with_ref else None)
    else:
        summary["bytes_identical_all"] = None
    summary["peak_memory"] = memory
    summary["parallel_decode"] = measure_parallel_decode(QUICK_SIZE if args.quick else FULL_SIZE,
                                                         repeats)

    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "settings": settings, "cases": results, "summary": summary}
    json_path = out_dir / "codec_bench.json"
    json_path.write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False) + "\n")

    print(f"{machine['cpu_model']}, {machine['cores']} cores, python {machine['python']}, numpy "
          f"{machine['numpy']}, nnc_core {machine['nnc_core']}, nncodec {machine['nncodec'] or '-'}; "
          f"median of {repeats}, single thread")
    print_table(results)
    if head is not None and head["ratios"]:
        print(f"\n{head['name']}: encode {_fmt_s(summary['encode_s']['ref'])} -> "
              f"{_fmt_s(summary['encode_s']['ours'])} ({summary['encode_speedup']:.2f}x), decode "
              f"{_fmt_s(summary['decode_s']['ref'])} -> {_fmt_s(summary['decode_s']['ours'])} "
              f"({summary['decode_speedup']:.2f}x)")
    if ref_python is not None:
        print(f"bitstreams identical: {summary['bytes_identical_cases']} cases")
    if memory:
        for impl in ("ours", "ref"):
            m = memory.get(impl)
            if m is None:
                continue
            if "error" in m:
                print(f"peak memory {impl}: failed ({m['error']})")
                continue
            extra = (f", tracemalloc peak {m['tracemalloc_peak'] / 2**20:.1f} MiB "
                     f"({m['tracemalloc_bytes_per_element']:.1f} B/element)" if "tracemalloc_peak" in m else "")
            print(f"peak memory {impl}: +{m['peak_minus_baseline'] / 2**20:.1f} MiB over the baseline "
                  f"({m['peak_bytes_per_element']:.1f} B/element){extra}")
    par = summary["parallel_decode"]
    print(f"parallel decode ({par['tensor']}, scan_order {par['scan_order']}): "
          f"{_fmt_s(par['decode_s_1_thread'])} on 1 thread, {_fmt_s(par['decode_s_all_cores'])} on "
          f"{par['cores']} cores ({par['speedup']:.2f}x); block scan costs "
          f"{100 * par['size_overhead']:+.2f}% bytes")
    if not args.no_plot:
        png = out_dir / "codec_bench.png"
        plot(results, png, machine, settings)
        print(f"wrote {json_path} and {png}")
    else:
        print(f"wrote {json_path}")

    if any(c["bytes_identical"] is False for c in results):
        print("note: some bitstreams differ from the reference's", file=sys.stderr)
    for c in results:
        if c["ref"] and c["ref"].get("ours_decodes_ref_stream_equal") is False:
            print(f"error: nnc_core decodes the reference stream of {c['name']!r} differently", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
