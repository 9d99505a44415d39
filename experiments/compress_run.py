"""One ``run.py compress`` run: apply an NNCF-style JSON config (quantization, binarization,
sparsity, filter pruning: :mod:`compress`) to a model, fine-tune it if asked (``--epochs``:
quantization-aware training, sparsity and pruning schedules; 0 is post-training), make the
result permanent (masks multiplied in, pruned filters removed), export it to ONNX and run
that file in onnxruntime, and save it coded by NNC: a quantized model's integer weights
losslessly, a float one (sparse or pruned) quantized by NNC at ``--qp``.

Reported (printed, JSON, W&B): top-1 before and after (and of the ONNX file in onnxruntime
and of the model reloaded from the NNC file), the bytes of the float32 model before and
after (a pruned model is a smaller dense one), of the ONNX file and of the NNC file,
onnxruntime latency against the float32 ONNX model, and per layer its bits, sparsity or
kept filters.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from compress import Context, apply_config, compression_loss, finalize, load_config
from compress.export import OnnxModel, export_onnx, latency_ms, onnx_session
from compress.layers import quantized_layers
from compress.nnc_file import decode_integer_state, encode_integer_state, integer_state, load_integer_state
from nnc_core import nn as nnc_nn

from . import report
from .builders import build_model, experiment_parser, file_stem, loader, setup_errors, start_run
from .config import add_run_arguments
from .engine import LOSSES, evaluate, headline, train_one_epoch
from .plots import plot_layer_bits

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "fmnist_resnet20_int8.json"
DESCRIPTION = ("Quantize or binarize a model the NNCF way from a JSON config, export it to "
               "ONNX (run in onnxruntime) and save its integer weights coded by NNC.")
EXAMPLES = """examples:
  python run.py compress                                            # INT8 PTQ of the shipped ResNet-20
  python run.py compress --epochs 2 --lr 1e-4                       # INT8 QAT
  python run.py compress --config configs/fmnist_resnet20_int4.json --epochs 3
  python run.py compress --config configs/fmnist_resnet20_mixed.json   # HAWQ INT8/INT4
  python run.py compress --config configs/fmnist_resnet20_xnor.json --epochs 6 --lr 1e-3
  python run.py compress --config configs/fmnist_resnet20_magnitude.json --epochs 4 --max_batches 300
  python run.py compress --config configs/fmnist_resnet20_rb.json --epochs 4 --max_batches 300
  python run.py compress --config configs/fmnist_resnet20_filter_pruning.json --epochs 3 --max_batches 300
  python run.py compress --config configs/fmnist_resnet20_pruning_int8.json   # pruned, then INT8
"""
LAYER_COLUMNS = [("layer", "layer", "s"), ("params", "params", "d"),
                 ("weight_bits", "weight bits", "d"), ("activation_bits", "input bits", "d"),
                 ("sparsity", "zeros", ".3f"), ("filters", "filters", "d"),
                 ("kept_filters", "kept", "d")]
SUMMARY_COLUMNS = [("model", "model", "s"), ("top1", "top-1 %", ".2f"), ("bytes", "bytes", "d"),
                   ("latency_ms", "ms / image", ".3f")]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = experiment_parser(prog, DESCRIPTION, EXAMPLES, data_parallel=True)
    data = parser.add_argument_group("model and data (as for main.py)")
    data.add_argument("--model", default="resnet20")
    data.add_argument("--model_path", default=None,
                      help="checkpoint (default: the shipped one for resnet20 on fashion_mnist)")
    data.add_argument("--dataset", default="fashion_mnist")
    data.add_argument("--dataset_path", default=None)
    data.add_argument("--batch_size", type=int, default=64)
    data.add_argument("--workers", type=int, default=0)
    data.add_argument("--max_eval_batches", type=int, default=None,
                      help="evaluate on at most this many batches (default: the whole test set)")
    train = parser.add_argument_group("fine-tuning (quantization-aware training)")
    train.add_argument("--epochs", type=int, default=0,
                       help="fine-tuning epochs after the config is applied (default 0: "
                            "post-training, calibration only)")
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    train.add_argument("--max_batches", type=int, default=None,
                       help="fine-tune on at most this many batches per epoch")
    coding = parser.add_argument_group("NNC coding of a float result (sparsity, pruning)")
    coding.add_argument("--qp", type=int, default=-32,
                        help="qp of the weights when the result is not quantized (default -32, "
                             "as main.py); quantized results are coded losslessly")
    coding.add_argument("--use_dq", action="store_true", help="dependent quantization for that")
    out = parser.add_argument_group("output")
    out.add_argument("--export", choices=["onnx", "none"], default="onnx",
                     help="write the compressed model as ONNX and test it in onnxruntime "
                          "(default onnx)")
    out.add_argument("--latency_runs", type=int, default=50,
                     help="onnxruntime inferences of one image timed per model (default 50)")
    add_run_arguments(parser, results="results/compress",
                      config=(str(DEFAULT_CONFIG), "NNCF-style JSON compression config "
                              f"(default {DEFAULT_CONFIG.relative_to(REPO)})"))
    return parser


def float32_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's floating-point state at float32."""
    return sum(4 * v.numel() for v in model.state_dict().values() if v.is_floating_point())


def fine_tune(model, algorithms, args, info, device, log, test) -> list[dict]:
    """Adam on every parameter (weights, quantizer steps, thresholds, mask logits) for
    ``--epochs`` with the algorithms' loss terms added, their schedules called before each
    epoch; tested after each."""
    train = loader(args, "train", info, shuffle=True, augment=True, dist=log.dist)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    history = []
    for epoch in range(args.epochs):
        for algorithm in algorithms:
            algorithm.epoch_start(model, epoch, optimizer)
        loss = train_one_epoch(model, train, optimizer, device, task=info.task,
                               max_batches=args.max_batches, desc=f"fine-tune {epoch + 1}/{args.epochs}",
                               verbose=args.verbose, regularizer=lambda: compression_loss(algorithms),
                               dist=log.dist, epoch=epoch)
        metrics = evaluate(model, test, device, info.task, info.num_classes,
                           max_batches=args.max_eval_batches, verbose=args.verbose)
        name, value = headline(metrics, info.task)
        log.print(f"epoch {epoch + 1}: train loss {loss:.4f}, test {name} {value:.2f}%")
        log.log({"finetune/loss": loss, f"finetune/{name}": value}, step=epoch)
        history.append({"epoch": epoch + 1, "loss": loss, name: value})
    return history


def onnx_results(model, float_model, sample, args, info, test, out_dir: Path, stem: str) -> dict:
    """Export both models, test the compressed one in onnxruntime, time both."""
    float_path = export_onnx(float_model, sample, out_dir / f"{stem}_float32.onnx")
    path = export_onnx(model, sample, out_dir / f"{stem}.onnx")
    session, float_session = onnx_session(path), onnx_session(float_path)
    metrics = evaluate(OnnxModel(session), test, torch.device("cpu"), info.task, info.num_classes,
                       max_batches=args.max_eval_batches, desc="eval onnxruntime", verbose=args.verbose)
    one = sample[:1].numpy()
    return {"onnx": path.name, "onnx_bytes": path.stat().st_size,
            "onnx_float32_bytes": float_path.stat().st_size,
            "onnx_metrics": metrics,
            "latency_ms": latency_ms(session, one, args.latency_runs),
            "latency_ms_float32": latency_ms(float_session, one, args.latency_runs)}


def nnc_results(model, args, info, device, test, out_dir: Path, stem: str) -> dict:
    """Code the model with NNC, decode it, reload and test it: the integer state of a
    quantized model losslessly (checked exact), a float model quantized at ``--qp``."""
    path = out_dir / f"{stem}.nnc"
    reloaded = copy.deepcopy(model)
    if quantized_layers(model):
        state = integer_state(model)
        bitstream = encode_integer_state(state)
        decoded = decode_integer_state(bitstream)
        exact = all(np.array_equal(decoded[k], v) and decoded[k].dtype == v.dtype for k, v in state.items())
        load_integer_state(reloaded, decoded)
        coding = {"nnc_exact": exact, "nnc_coding": "lossless integer levels"}
    else:
        bitstream = nnc_nn.encode_model(model, qp=args.qp, use_dq=args.use_dq).bitstream
        nnc_nn.load_decoded(reloaded, nnc_nn.decode(bitstream))
        coding = {"nnc_coding": f"NNC qp {args.qp}{' with DQ' if args.use_dq else ''}"}
    path.write_bytes(bitstream)
    metrics = evaluate(reloaded, test, device, info.task, info.num_classes,
                       max_batches=args.max_eval_batches, desc="eval from .nnc", verbose=args.verbose)
    return {"nnc": path.name, "nnc_bytes": len(bitstream), "nnc_metrics": metrics, **coding}


def merged_layer_report(algorithms, model) -> list[dict]:
    """One row per layer with what every algorithm says about it."""
    rows: dict[str, dict] = {}
    for algorithm in algorithms:
        for row in algorithm.layer_report(model):
            rows.setdefault(row["layer"], {}).update(row)
    return list(rows.values())


def run(args) -> dict:
    with setup_errors(f"--config {args.config}"):
        config = load_config(args.config)
    device, info, out_dir, log = start_run(args, project="nnc-compress")
    model, source = build_model(args.model, args.dataset, info, args.model_path)
    model.to(device)
    test = loader(args, "test", info, shuffle=False)
    calibration = loader(args, "train", info, shuffle=True)
    before = evaluate(model, test, device, info.task, info.num_classes,
                      max_batches=args.max_eval_batches, desc="eval float", verbose=args.verbose)
    metric, value_before = headline(before, info.task)
    log.print(f"{args.model} on {args.dataset} ({source}): {metric} {value_before:.2f}%; "
              f"config {args.config}: {', '.join(config.names)}")
    float_model = copy.deepcopy(model).cpu()
    start = time.perf_counter()
    with setup_errors(f"--config {args.config}"):
        algorithms = apply_config(model, config, Context(calibration, device, LOSSES[info.task],
                                                         args.verbose))
    apply_s = time.perf_counter() - start
    initial = evaluate(model, test, device, info.task, info.num_classes,
                       max_batches=args.max_eval_batches, desc="eval compressed", verbose=args.verbose)
    log.print(f"after {', '.join(config.names)} ({apply_s:.1f} s): {metric} "
              f"{headline(initial, info.task)[1]:.2f}%")
    history = fine_tune(model, algorithms, args, info, device, log, test) if args.epochs else []
    if not log.dist.is_main:         # the other processes only take part in fine-tuning
        return {"history": history}
    after = evaluate(model, test, device, info.task, info.num_classes,
                     max_batches=args.max_eval_batches, verbose=False) if history else initial
    finalize(model, algorithms)
    if history:          # pruned filters removed, masks multiplied in: measured as saved
        after = evaluate(model, test, device, info.task, info.num_classes,
                         max_batches=args.max_eval_batches, verbose=False)
    value_after = headline(after, info.task)[1]
    layers = merged_layer_report(algorithms, model)
    stem = f"{file_stem(args.model)}_{Path(args.config).stem}"
    results = {"model": args.model, "dataset": args.dataset, "weights": source,
               "config": str(args.config), "algorithms": config.names, "epochs": args.epochs,
               "metric_name": metric, "accuracy_before": value_before,
               "accuracy_initial": headline(initial, info.task)[1], "accuracy_after": value_after,
               "accuracy_drop": value_before - value_after, "metrics_before": before,
               "metrics_after": after, "history": history, "apply_s": apply_s,
               "float32_bytes": float32_bytes(float_model),
               "float32_bytes_after": float32_bytes(model), "layers": layers,
               "weight_sparsity": weight_sparsity(model)}
    model.eval()
    results.update(nnc_results(model, args, info, device, test, out_dir, stem))
    if args.export == "onnx":
        sample = next(iter(test))[0][:8]
        results.update(onnx_results(model, float_model, sample, args, info, test, out_dir, stem))
        results["accuracy_onnx"] = headline(results["onnx_metrics"], info.task)[1]
    results["accuracy_nnc"] = headline(results["nnc_metrics"], info.task)[1]
    if any("weight_bits" in row for row in layers):
        results["plot"] = str(plot_layer_bits(layers, out_dir / f"{stem}_bits.png",
                                              f"{args.model}: {Path(args.config).stem}"))
    if args.verbose and layers:
        log.print(f"\nper-layer bits\n{report.format_table(layers, LAYER_COLUMNS)}")
    log.print(f"\n{report.format_table(summary_rows(results), SUMMARY_COLUMNS)}")
    log.print(f"{metric} drop {results['accuracy_drop']:+.2f} points; weights zero: "
              f"{100 * results['weight_sparsity']:.1f}%; NNC file: {results['nnc_coding']}"
              + (f", exact: {results['nnc_exact']}" if "nnc_exact" in results else ""))
    log.log({k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    path = report.write_json(results, out_dir / f"{stem}.json")
    log.print(f"results: {path}")
    log.finish()
    return results


@torch.no_grad()
def weight_sparsity(model: torch.nn.Module) -> float:
    """Share of exact zeros among the weights of the convolution and linear layers."""
    weights = [m.weight for m in model.modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    return float(sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1))


def summary_rows(results: dict) -> list[dict]:
    """The table of a run: the float model, the compressed one in PyTorch, in onnxruntime
    and reloaded from its NNC file."""
    rows = [{"model": "float32 (PyTorch state)", "top1": results["accuracy_before"],
             "bytes": results["float32_bytes"]},
            {"model": "compressed (PyTorch)", "top1": results["accuracy_after"]}]
    if results["float32_bytes_after"] != results["float32_bytes"]:
        rows[1].update(model="compressed, float32 state (smaller dense)",
                       bytes=results["float32_bytes_after"])
    if "onnx_bytes" in results:
        rows.insert(1, {"model": "float32 ONNX", "bytes": results["onnx_float32_bytes"],
                        "latency_ms": results["latency_ms_float32"]})
        rows.append({"model": "compressed ONNX (onnxruntime)", "top1": results["accuracy_onnx"],
                     "bytes": results["onnx_bytes"], "latency_ms": results["latency_ms"]})
    rows.append({"model": "compressed, NNC file", "top1": results["accuracy_nnc"],
                 "bytes": results["nnc_bytes"]})
    return rows
