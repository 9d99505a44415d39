"""Our INT8 post-training quantization (``run.py compress``, :mod:`compress`) against the public
NNCF 3.4.0, on the same model, the same calibration images and the same test set, in one run.

The model is the shipped Fashion-MNIST ResNet-20. Both sides calibrate on the same images of
the training split (a seeded draw, in the same order, in batches of ``--batch_size``), the
number that the config asks for (``num_init_samples``, 512). Measured:

- ours: the config ``configs/fmnist_resnet20_int8.json`` applied in PyTorch (top-1 and the
  ``torch.save`` bytes of the state dict), its ONNX export run in onnxruntime (top-1, file
  bytes, latency) and its NNC file (the integer weights coded losslessly; the decoded state is
  checked bit for bit, so its top-1 is the PyTorch one);
- NNCF: ``nncf.quantize`` in PyTorch, ``nncf.quantize`` of the float32 ONNX model run in
  onnxruntime (the route to a small runnable INT8 file), and ``nncf.compress_weights``
  INT8 symmetric and asymmetric (weights only, in PyTorch). NNCF gets preset MIXED, which is
  the config's scheme: symmetric per-channel weights, asymmetric per-tensor activations; the
  rest stays at NNCF's defaults (fast bias correction on; activation ranges are the mean over
  images of each image's minimum and maximum, ours the mean over batches of each batch's).
  NNCF's quantization-aware training (training the module ``nncf.quantize`` returns) is not
  run here.

The float32 ONNX file is ``torch.onnx.export`` with its defaults (BatchNorm folded into the
convolutions by constant folding), as a user of NNCF's ONNX route exports it. Latencies are the
median onnxruntime time of one image on ``--latency_threads`` threads (ONNX entries only). Writes
``benchmarks/results/nncf_anchor.json`` and ``nncf_anchor.png`` (top-1 against bytes).
Needs NNCF: ``bash create_env.sh --with-nncf``.

    env/bin/python -m benchmarks.nncf_anchor                          # full test set
    env/bin/python -m benchmarks.nncf_anchor --max_eval_batches 60    # 3840 test images
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.nncf_anchor ...")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from compress.export import export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "fmnist_resnet20_int8.json"
CHECKPOINT = ROOT / "example" / "weights" / "fmnist_resnet20.pt"
NNCF_VERSION = "3.4.0"
INSTALL = "bash create_env.sh --with-nncf"
COLUMNS = [("method", "method", "s"), ("runtime", "runs in", "s"), ("top1", "top-1 %", ".2f"),
           ("drop", "drop", "+.2f"), ("bytes", "bytes", ",d"), ("bytes_of", "bytes of", "s"),
           ("latency_ms", "ms / image", ".3f"), ("seconds", "seconds", ".1f")]


class NncfMissing(RuntimeError):
    """NNCF (or a package it needs) cannot be imported."""


def import_nncf():
    """The ``nncf`` module, with its telemetry off and no time limit on building its C++
    extension (two cores need about a minute, over NNCF's default limit)."""
    os.environ.setdefault("NNCF_CI", "1")
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    missing = [name for name in ("nncf", "torchao") if importlib.util.find_spec(name) is None]
    if missing:
        raise NncfMissing(f"{' and '.join(missing)} not installed in {sys.prefix}; install "
                          f"NNCF {NNCF_VERSION} with:  {INSTALL}")
    try:
        import nncf
        import nncf.torch  # noqa: F401
    except Exception as error:   # a broken install: say which, not a traceback
        raise NncfMissing(f"nncf does not import ({type(error).__name__}: {error}); reinstall "
                          f"it with:  {INSTALL}") from None
    if nncf.__version__ != NNCF_VERSION:
        print(f"note: nncf {nncf.__version__} is installed; the anchor is measured with "
              f"{NNCF_VERSION} ({INSTALL})", file=sys.stderr)
    return nncf


class _DropSubsetWarning(logging.Filter):
    """NNCF counts dataset items (batches here) against ``subset_size`` (images) and warns
    that there are fewer; every calibration image is used, so the warning is dropped."""

    def filter(self, record):
        return not record.getMessage().startswith("Dataset contains only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nncf_anchor",
                                     description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG,
                        help="our INT8 config (default configs/fmnist_resnet20_int8.json)")
    parser.add_argument("--max_eval_batches", type=int, default=None,
                        help="test on at most this many batches (default: the whole test set)")
    parser.add_argument("--calibration_images", type=int, default=None,
                        help="calibration images for both sides (default: the config's "
                             "num_init_samples)")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="batch size of calibration and test (default 64, as run.py compress)")
    parser.add_argument("--latency_runs", type=int, default=50,
                        help="onnxruntime inferences of one image timed per ONNX file (default 50)")
    parser.add_argument("--latency_threads", type=int, default=1,
                        help="onnxruntime threads for the latencies (default 1: steadier on a "
                             "busy machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration draw (default 0)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="directory for nncf_anchor.json / .png (default benchmarks/results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")
    return parser


def load_model() -> torch.nn.Module:
    import models
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    models.load_checkpoint(model, str(CHECKPOINT))
    return model.eval()


def load_our_config(path: Path, images: int | None):
    """The config, with ``num_init_samples`` set to ``images`` if given; and the number of
    calibration images it uses."""
    import compress
    config = compress.load_config(path)
    if config.names != ["quantization"]:
        raise SystemExit(f"error: {path} applies {config.names}; this benchmark compares INT8 "
                         "quantization configs only")
    if images is not None:
        raw = copy.deepcopy(config.raw)
        section = raw["compression"][0] if isinstance(raw["compression"], list) else raw["compression"]
        section.setdefault("initializer", {}).setdefault("range", {})["num_init_samples"] = images
        config = compress.CompressionConfig(raw, str(path))
    return config, config.algorithms[0].num_init_samples


def data(images: int, batch_size: int, seed: int):
    """The calibration loader (``images`` seeded training images, fixed order) and the test
    loader (the test split in its order)."""
    import datasets
    train = datasets.create_dataset("fashion_mnist", split="train")
    test = datasets.create_dataset("fashion_mnist", split="test")
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:images]
    calibration = torch.utils.data.DataLoader(torch.utils.data.Subset(train, picked.tolist()),
                                              batch_size=batch_size, shuffle=False)
    return calibration, torch.utils.data.DataLoader(test, batch_size=batch_size, shuffle=False)


def saved_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``torch.save(module.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return len(buffer.getvalue())


class Bench:
    """Evaluation and timing shared by every entry."""

    def __init__(self, test, args):
        self.test, self.args = test, args
        self.cpu = torch.device("cpu")
        self.sample = next(iter(test))[0][:8]
        self.rows: list[dict] = []

    def top1(self, model, desc: str) -> tuple[float, float]:
        from experiments.engine import evaluate
        start = time.perf_counter()
        with torch.no_grad():
            metrics = evaluate(model, self.test, self.cpu, "classification", 10,
                               max_batches=self.args.max_eval_batches, desc=desc,
                               verbose=self.args.progress)
        self.samples = metrics["samples"]
        return metrics["top1"], time.perf_counter() - start

    def onnx_top1(self, path: Path, desc: str) -> dict:
        from compress.export import OnnxModel, latency_ms, onnx_session
        top1, eval_s = self.top1(OnnxModel(onnx_session(path)), desc)
        timed = onnx_session(path, threads=self.args.latency_threads)
        return {"top1": top1, "eval_s": eval_s, "bytes": path.stat().st_size,
                "latency_ms": latency_ms(timed, self.sample[:1].numpy(), self.args.latency_runs)}

    def add(self, method: str, side: str, runtime: str, bytes_of: str, **fields) -> dict:
        row = {"method": method, "side": side, "runtime": runtime, "bytes_of": bytes_of,
               "latency_ms": None, "seconds": None, **fields}
        self.rows.append(row)
        top1 = f"{row['top1']:.2f} %" if row.get("top1") is not None else "-"
        print(f"  {method}: top-1 {top1}, {row['bytes']:,} bytes", flush=True)
        return row


def run_ours(bench: Bench, model, config, calibration, workdir: Path) -> dict:
    """Our config in PyTorch, its ONNX file in onnxruntime, its NNC file."""
    import compress
    from compress.nnc_file import decode_integer_state, encode_integer_state, integer_state

    ours = copy.deepcopy(model)
    start = time.perf_counter()
    compress.apply_config(ours, config, compress.Context(calibration, bench.cpu,
                                                         torch.nn.functional.cross_entropy,
                                                         bench.args.progress))
    apply_s = time.perf_counter() - start
    ours.eval()
    top1, eval_s = bench.top1(ours, "eval ours (PyTorch)")
    bench.add("ours INT8 PTQ", "ours", "PyTorch", "torch.save state dict", top1=top1,
              bytes=saved_bytes(ours), seconds=apply_s, eval_s=eval_s)

    start = time.perf_counter()
    path = export_onnx(ours, bench.sample, workdir / "ours_int8.onnx")
    export_s = time.perf_counter() - start
    result = bench.onnx_top1(path, "eval ours (onnxruntime)")
    bench.add("ours INT8 PTQ, ONNX", "ours", "onnxruntime", ".onnx file", seconds=export_s, **result)

    start = time.perf_counter()
    state = integer_state(ours)
    bitstream = encode_integer_state(state)
    encode_s = time.perf_counter() - start
    decoded = decode_integer_state(bitstream)
    exact = all(np.array_equal(decoded[k], v) and decoded[k].dtype == v.dtype for k, v in state.items())
    # the decoded state is the quantized model bit for bit, so it computes the same top-1
    bench.add("ours INT8 PTQ, NNC file", "ours", "PyTorch", "NNC bitstream",
              top1=top1 if exact else None, bytes=len(bitstream), seconds=encode_s,
              nnc_exact=exact)
    return {"apply_s": apply_s, "export_s": export_s, "encode_s": encode_s, "nnc_exact": exact}


def run_nncf(bench: Bench, nncf, model, calibration, images: int, float_onnx: Path,
             workdir: Path) -> dict:
    """nncf.quantize in PyTorch and on the float32 ONNX model; nncf.compress_weights."""
    import onnx
    import nncf.torch.quantization.extensions  # noqa: F401  (registers the C++ extension)

    start = time.perf_counter()
    nncf.torch.force_build_cpu_extensions()   # built once per machine (~1 min), then loaded
    extension_s = time.perf_counter() - start
    preset = nncf.QuantizationPreset.MIXED
    torch_data = nncf.Dataset(calibration, lambda batch: batch[0])

    start = time.perf_counter()
    quantized = nncf.quantize(model, torch_data, preset=preset, subset_size=images)
    quantize_s = time.perf_counter() - start
    quantized.eval()
    top1, eval_s = bench.top1(quantized, "eval nncf.quantize (PyTorch)")
    bench.add("nncf.quantize INT8 PTQ", "nncf", "PyTorch", "torch.save state dict", top1=top1,
              bytes=saved_bytes(quantized), seconds=quantize_s, eval_s=eval_s)
    del quantized

    onnx_data = nncf.Dataset(calibration, lambda batch: {"input": batch[0].numpy()})
    start = time.perf_counter()
    quantized_onnx = nncf.quantize(onnx.load(str(float_onnx)), onnx_data, preset=preset,
                                   subset_size=images)
    path = workdir / "nncf_int8.onnx"
    onnx.save(quantized_onnx, str(path))
    onnx_s = time.perf_counter() - start
    result = bench.onnx_top1(path, "eval nncf.quantize (onnxruntime)")
    bench.add("nncf.quantize INT8 PTQ, ONNX route", "nncf", "onnxruntime", ".onnx file",
              seconds=onnx_s, **result)

    weights = {}
    for mode in ("INT8_SYM", "INT8_ASYM"):
        target = copy.deepcopy(model)   # compress_weights changes the model it is given
        start = time.perf_counter()
        compressed = nncf.compress_weights(target, mode=getattr(nncf.CompressWeightsMode, mode),
                                           dataset=nncf.Dataset([bench.sample]))
        weights[mode] = time.perf_counter() - start
        compressed.eval()
        top1, eval_s = bench.top1(compressed, f"eval compress_weights {mode}")
        bench.add(f"nncf.compress_weights {mode}", "nncf", "PyTorch",
                  "torch.save state dict", top1=top1, bytes=saved_bytes(compressed),
                  seconds=weights[mode], eval_s=eval_s)
        del compressed, target
    return {"extension_s": extension_s, "quantize_s": quantize_s, "onnx_quantize_s": onnx_s,
            "compress_weights_s": weights}


def plot(report: dict, path: Path) -> Path:
    """Top-1 against bytes of every entry: one marker each, filled for ONNX files
    run in onnxruntime; grey float32, blue ours, red NNCF."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    palette = {"float32": ["0.45", "0.25"], "ours": ["C0", "C9", "C2"],
               "nncf": ["C3", "C1", "C6", "C5"]}
    markers = iter("sDo^vP<>XhH*")
    used = {side: 0 for side in palette}
    fig, ax = plt.subplots(figsize=(11, 4.8))
    for row in report["rows"]:
        if row.get("top1") is None:
            continue
        color = palette[row["side"]][used[row["side"]] % len(palette[row["side"]])]
        used[row["side"]] += 1
        filled = row["runtime"] == "onnxruntime"
        ax.scatter(row["bytes"] / 1024, row["top1"], s=60, marker=next(markers), zorder=3,
                   edgecolors=color, facecolors=color if filled else "none", linewidths=1.5,
                   label=f"{row['method']} ({row['runtime']}, {row['bytes_of']})")
    ax.axhline(report["float32_top1"], color="gray", lw=0.8, ls=":")
    ax.set_xlim(0, None)
    ax.set_xlabel("bytes [KiB]")
    ax.set_ylabel(f"top-1 [%], {report['settings']['test_images']} test images")
    ax.set_title(f"INT8 ResNet-20 on Fashion-MNIST: ours and NNCF {report['nncf_version']}, "
                 f"{report['settings']['calibration_images']} calibration images", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        nncf = import_nncf()
    except NncfMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.getLogger("nncf").addFilter(_DropSubsetWarning())
    if not args.progress:
        nncf.set_log_level(logging.WARNING)
    from experiments import report as tables

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    config, images = load_our_config(args.config, args.calibration_images)
    calibration, test = data(images, args.batch_size, args.seed)
    model = load_model()
    bench = Bench(test, args)
    print(f"ResNet-20 on Fashion-MNIST, {images} calibration images, nncf {nncf.__version__}",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        top1, eval_s = bench.top1(model, "eval float32 (PyTorch)")
        bench.add("float32", "float32", "PyTorch", "torch.save state dict", top1=top1,
                  bytes=saved_bytes(model), eval_s=eval_s)
        start = time.perf_counter()
        float_onnx = export_onnx(model, bench.sample, workdir / "float32.onnx")
        export_s = time.perf_counter() - start
        bench.add("float32, ONNX", "float32", "onnxruntime", ".onnx file", seconds=export_s,
                  **bench.onnx_top1(float_onnx, "eval float32 (onnxruntime)"))
        ours = run_ours(bench, model, config, calibration, workdir)
        theirs = run_nncf(bench, nncf, model, calibration, images, float_onnx, workdir)

    float_top1 = bench.rows[0]["top1"]
    for row in bench.rows:
        row["drop"] = float_top1 - row["top1"] if row.get("top1") is not None else None
    result = {
        "settings": {"config": str(Path(args.config).resolve().relative_to(ROOT))
                     if Path(args.config).resolve().is_relative_to(ROOT) else str(args.config),
                     "calibration_images": images, "batch_size": args.batch_size,
                     "seed": args.seed, "max_eval_batches": args.max_eval_batches,
                     "test_images": bench.samples, "latency_runs": args.latency_runs,
                     "latency_threads": args.latency_threads,
                     "float32_onnx": "torch.onnx.export defaults (BatchNorm folded)",
                     "nncf_quantize": {"preset": "MIXED", "subset_size": images,
                                       "other": "NNCF defaults (fast bias correction, "
                                                "target device ANY)"},
                     "nncf_qat": "not run"},
        "nncf_version": nncf.__version__, "torch_version": torch.__version__,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "float32_top1": float_top1, "rows": bench.rows,
        "timings_s": {"ours": ours, "nncf": theirs}, "runtime_s": time.perf_counter() - started,
    }
    print(f"\n{tables.format_table(bench.rows, COLUMNS)}")
    print(f"top-1 on {bench.samples} test images; drop against float32 in PyTorch; "
          f"seconds: the compression step (apply, quantize, export or encode); "
          f"NNC file exact: {ours['nnc_exact']}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = tables.write_json(result, args.out / "nncf_anchor.json")
    print(f"wrote {path} and {plot(result, args.out / 'nncf_anchor.png').name} "
          f"({result['runtime_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
