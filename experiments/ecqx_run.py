"""One ``run.py ecqx`` run: entropy-constrained trained quantization (ECQ), or its
LRP-guided variant ECQx with ``--lrp`` (Becking et al., "ECQx: Explainability-Driven
Quantization for Low-Bit and Sparse DNNs", xxAI, LNAI 13200, 2022).

The network starts from a checkpoint (by default the shipped Fashion-MNIST ResNet-20), is
optionally trained in full precision first, then quantized to ``--bitwidth`` bits on fixed
per-layer grids and trained with straight-through gradients for ``--epochs`` epochs. After
every epoch the quantized network is coded into one NNC bitstream (integer levels lossless,
the other tensors at a fine qp), decoded again and tested: accuracy, sparsity, bytes and
compression ratio are printed, logged and written to JSON; the epoch with the best test
accuracy is kept (as bitstream and as checkpoint) and training stops early after
``--patience`` epochs without improvement; with ``--final_test`` the best epoch is tested
once more on the whole test set (training-time tests may use ``--max_eval_batches``).

``--protocol`` (:mod:`ecqx.protocol`) fixes learning rate, epochs, batches per epoch and the
ECQx details (relevance source, smoothing reset, cap of beta, form of lambda_max): ours, or
the official release's; flags given explicitly win. The variants against the relevance
lock-in (``--relevance_on nonzero``, ``--ecq_warmup_steps``, ``--relevance_source shadow`` or
``pretrained``) and ``--lrp_every`` act in ECQx only; given without ``--lrp`` they are errors.

Under torchrun the processes train data-parallel (DDP; the LRP relevances of each batch
summed over them) and stay identical; they test their shards of the test set together and
rank 0 writes bitstreams, checkpoints, plot and JSON.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import models
from ecqx.assign import LAMBDA_MAX
from ecqx.composites import CANONIZERS, COMPOSITES, auto_canonizer, make_composite
from ecqx.protocol import PROTOCOLS, resolve
from ecqx.quantizer import RELEVANCE_ON, ModelQuantizer
from ecqx.size import compressed_bitstream, restore
from ecqx.sources import SOURCES, make_source
from ecqx.ste import SCALES
from ecqx.train import RelevanceTracker, make_optimizers, train_epoch

from . import report
from .builders import (SHIPPED_CHECKPOINTS, build_model, experiment_parser, file_stem,
                       full_precision_training, loader, setup_errors, start_run)
from .config import add_run_arguments
from .engine import EarlyStopping, evaluate, headline
from .plots import plot_training_curves

DESCRIPTION = "Entropy-constrained trained quantization (ECQ), with --lrp the LRP-guided ECQx."
EXAMPLES = """examples:
  python run.py ecqx                                  # ECQ, 4 bits, the shipped ResNet-20
  python run.py ecqx --lrp                            # ECQx on the same network
  python run.py ecqx --lrp --bitwidth 2 --Lambda 0.1 --epochs 20
  python run.py ecqx --lrp --protocol official        # the official release's schedule
  python run.py ecqx --lrp --bitwidth 2 --relevance_on nonzero --lrp_every 4
  python run.py ecqx --lrp --dataset cifar10 --model resnet20 --model_path resnet20.pt
  python run.py ecqx --lrp --dataset voc2012 --dataset_path VOCdevkit --model deeplabv3_resnet50
  torchrun --nproc_per_node 2 run.py ecqx --lrp --batch_size 32   # 2 processes, 64 per step
"""
# Epochs of full-precision training when the default network's checkpoint is missing.
FALLBACK_PRETRAIN_EPOCHS = 3

EPOCH_COLUMNS = [("epoch", "epoch", "d"), ("loss", "train loss", ".4f"),
                 ("metric", "test %", ".2f"), ("sparsity", "zeros %", ".1f"),
                 ("compressed_bytes", "bytes", "d"), ("ratio", "ratio", ".1f"),
                 ("seconds", "s", ".0f")]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = experiment_parser(prog, DESCRIPTION, EXAMPLES, data_parallel=True)
    ecq = parser.add_argument_group("quantization")
    ecq.add_argument("--bitwidth", type=int, default=4, help="bits per weight: 2^b centroids (default 4)")
    ecq.add_argument("--Lambda", type=float, default=0.05,
                     help="strength of the entropy constraint; larger = sparser (default 0.05)")
    ecq.add_argument("--lambda_max", default=None, choices=list(LAMBDA_MAX),
                     help="form of a layer's lambda_max: ours (the lambda at which its extreme "
                          "weight moves to zero) or the official release's (protocol)")
    ecq.add_argument("--ste", default="magnitude", choices=list(SCALES),
                     help="straight-through gradient scaled by the centroid's magnitude (default; "
                          "a descent direction) or by the signed centroid (official release)")
    lrp = parser.add_argument_group("ECQx (layer-wise relevance propagation)")
    lrp.add_argument("--lrp", action="store_true", help="ECQx: let LRP relevances correct the assignment")
    lrp.add_argument("--lrp_composite", default="epsilon_plus_flat_bn_pass", choices=COMPOSITES,
                     help="zennit composite (default epsilon_plus_flat_bn_pass)")
    lrp.add_argument("--canonizer", default="auto", choices=["auto", *CANONIZERS],
                     help="zennit canonizer; auto picks it from the architecture (default)")
    lrp.add_argument("--lrp_output", default="output", choices=["output", "ones", "probability"],
                     help="LRP starts from the true class's logit, a one, or its probability")
    lrp.add_argument("--p", type=float, default=0.1,
                     help="ECQx sparsity may fall at most this far below ECQ's, per layer (default 0.1)")
    lrp.add_argument("--alpha", type=float, default=0.1,
                     help="relevance smoothing: R = (1-alpha) R_batch + alpha R_previous (default 0.1)")
    lrp.add_argument("--relevance_source", default=None, choices=list(SOURCES),
                     help="network LRP runs on: the quantized one (ours), the quantized one after "
                          "an Adam step of its weights (stepped: official), the full-precision "
                          "shadows, or the pretrained network (protocol)")
    lrp.add_argument("--relevance_reset", default=None, choices=["never", "epoch"],
                     help="restart the relevance smoothing never (ours) or every epoch "
                          "(official) (protocol)")
    lrp.add_argument("--beta_max", type=float, default=None,
                     help="cap of the exponent beta: inf (ours) or 1 (official) (protocol)")
    lrp.add_argument("--relevance_on", default=None, choices=list(RELEVANCE_ON),
                     help="weights whose zero cost the relevance scales: all (default, the "
                          "paper) or only those non-zero now (a zero weight regrows as in ECQ)")
    lrp.add_argument("--ecq_warmup_steps", type=int, default=None,
                     help="train this many steps as plain ECQ before ECQx starts (default 0)")
    lrp.add_argument("--lrp_every", type=int, default=None,
                     help="run LRP every K steps, reusing the last relevances in between "
                          "(default 1)")
    train = parser.add_argument_group("training")
    train.add_argument("--protocol", default="ours", choices=list(PROTOCOLS),
                       help="defaults of the flags marked (protocol): ours (default) or the "
                            "official release's (lr 1e-3, 10 whole epochs, ...)")
    train.add_argument("--epochs", type=int, default=None,
                       help="quantized training epochs (protocol: ours 3, official 10)")
    train.add_argument("--pretrain_epochs", type=int, default=0,
                       help="full-precision training epochs before quantization (default 0)")
    train.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate of shadows, biases and BatchNorm "
                            "(protocol: ours 1e-4, official 1e-3)")
    train.add_argument("--pretrain_lr", type=float, default=0.1,
                       help="peak SGD learning rate of the full-precision training (default 0.1)")
    train.add_argument("--batch_size", type=int, default=64,
                       help="batch size per process (default 64; under torchrun a step sees "
                            "N times as many)")
    train.add_argument("--max_batches", type=int, default=None,
                       help="train on at most this many batches (steps) per epoch, in every "
                            "process; 0 = whole epochs (protocol: ours 200, a few minutes per "
                            "run on a CPU; official 0)")
    train.add_argument("--max_eval_batches", type=int, default=None,
                       help="test on at most this many batches (default: the whole test set)")
    train.add_argument("--final_test", action="store_true",
                       help="test the best epoch once more on the whole test set")
    train.add_argument("--patience", type=int, default=4,
                       help="stop after this many epochs without a better test score (default 4)")
    data = parser.add_argument_group("model and data")
    data.add_argument("--model", default="resnet20", help="registered model name (see below)")
    data.add_argument("--model_path", default=None,
                      help="checkpoint to start from (default: the shipped one for the default "
                           "model, else pretrained weights)")
    data.add_argument("--model_rand_int", action="store_true",
                      help="start from a random initialisation instead of a checkpoint")
    data.add_argument("--dataset", default="fashion_mnist", help="registered dataset name")
    data.add_argument("--dataset_path", default=None, help="dataset root (default: its usual place)")
    data.add_argument("--workers", type=int, default=0, help="data-loading processes")
    add_run_arguments(parser, results="results/ecqx")
    return parser


def method_name(args) -> str:
    return "ECQx" if args.lrp else "ECQ"


def run_name(args) -> str:
    return f"{method_name(args).lower()}_{file_stem(args.model)}_{args.bitwidth}bit_L{args.Lambda:g}"


def initial_model(args, info, device, log) -> tuple[torch.nn.Module, str]:
    """The network to quantize; trained in full precision first if asked, or if the
    shipped checkpoint of the default network is missing (it is then trained and saved)."""
    shipped = SHIPPED_CHECKPOINTS.get((args.model, args.dataset))
    fallback = (args.model_path is None and not args.model_rand_int and shipped is not None
                and not shipped.exists())
    epochs = args.pretrain_epochs or (FALLBACK_PRETRAIN_EPOCHS if fallback else 0)
    model, source = build_model(args.model, args.dataset, info, args.model_path,
                                train_first=epochs > 0, random_init=args.model_rand_int)
    model.to(device)
    if epochs:
        target = shipped if fallback else Path(args.results) / f"{run_name(args)}_pretrained.pt"
        full_precision_training(model, args, info, device, log, epochs=epochs,
                                lr=args.pretrain_lr, save_to=target)
        source = f"{source} + {epochs} epochs full precision ({target})"
    return model, source


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the uncompressed state dict (what a float32 checkpoint stores)."""
    return sum(v.numel() * v.element_size() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked"))


class EpochReport:
    """Codes the quantized network, decodes it and tests the decoded copy (on the shards
    of all processes of ``dist``)."""

    def __init__(self, args, info, device, test_loader, original_bytes: int, dist):
        self.args, self.info, self.device, self.test = args, info, device, test_loader
        self.original_bytes, self.dist = original_bytes, dist

    def __call__(self, model, quantizer, epoch: int, loss: float | None, seconds: float):
        bitstream = compressed_bitstream(model, quantizer)
        decoded = restore(copy.deepcopy(model), quantizer.names, bitstream)
        metrics = evaluate(decoded, self.test, self.device, self.info.task, self.info.num_classes,
                           max_batches=self.args.max_eval_batches, desc=f"test epoch {epoch}",
                           verbose=self.args.verbose, dist=self.dist)
        name, value = headline(metrics, self.info.task)
        row = {"epoch": epoch, "loss": loss, "metric_name": name, "metric": value,
               "metrics": metrics, "sparsity": 100.0 * quantizer.sparsity(),
               "compressed_bytes": len(bitstream), "ratio": self.original_bytes / len(bitstream),
               "bits_per_weight": 8 * len(bitstream) / sum(s.indices.numel()
                                                           for s in quantizer.layers.values()),
               "betas": {n: s.beta for n, s in quantizer.layers.items()} if self.args.lrp else None,
               "seconds": seconds}
        return row, bitstream, decoded


def resolve_args(args) -> argparse.Namespace:
    """Fill the settings no flag gave from ``--protocol`` (:func:`ecqx.protocol.resolve`); a
    flag that cannot act is an error."""
    with setup_errors("flags"):
        vars(args).update(resolve(vars(args), args.protocol, args.lrp))
    return args


def relevance_tracker(args, model, steps: int, log) -> RelevanceTracker:
    """ECQx's relevance tracker for ``model`` (before quantization: the pretrained source
    copies it) and a run of ``steps`` training steps."""
    if args.ecq_warmup_steps >= steps:
        raise SystemExit(f"error: --ecq_warmup_steps {args.ecq_warmup_steps} covers all {steps} "
                         "training steps: ECQx would never act")
    canonizer = auto_canonizer(model) if args.canonizer == "auto" else args.canonizer
    with setup_errors("--lrp_composite/--canonizer/--relevance_source/--lrp_every"):
        tracker = RelevanceTracker(make_composite(args.lrp_composite, canonizer), alpha=args.alpha,
                                   start=args.lrp_output,
                                   source=make_source(args.relevance_source, model, args.lr),
                                   every=args.lrp_every, warmup=args.ecq_warmup_steps,
                                   reset_each_epoch=args.relevance_reset == "epoch")
    log.print(f"ECQx: composite {args.lrp_composite}, canonizer {canonizer}, relevances of the "
              f"{args.relevance_source} network on {args.relevance_on} weights, LRP every "
              f"{args.lrp_every} step(s) after {args.ecq_warmup_steps} ECQ step(s)")
    return tracker


def run(args) -> dict:
    """Run the experiment described by ``args`` (see ``run.py ecqx --help``); returns the results."""
    resolve_args(args)
    device, info, out_dir, log = start_run(args, project="ecqx",
                                           args_file=f"{run_name(args)}_args.yaml")
    dist = log.dist
    args.max_batches = args.max_batches or None          # 0: whole epochs
    model, source = initial_model(args, info, device, log)
    train_loader = loader(args, "train", info, shuffle=True, augment=True, dist=dist)
    test_loader = loader(args, "test", info, shuffle=False, dist=dist,
                         max_batches=args.max_eval_batches)
    original = evaluate(model, test_loader, device, info.task, info.num_classes,
                        max_batches=args.max_eval_batches, desc="test full precision",
                        verbose=args.verbose, dist=dist)
    metric_name, baseline = headline(original, info.task)
    log.print(f"{args.model} on {args.dataset} ({source}): {metric_name} {baseline:.2f}% "
              f"in full precision")

    steps = args.epochs * min(len(train_loader), args.max_batches or len(train_loader))
    relevance = relevance_tracker(args, model, steps, log) if args.lrp else None
    with setup_errors("quantization flags"):
        quantizer = ModelQuantizer(model, bits=args.bitwidth, Lambda=args.Lambda, p=args.p,
                                   lambda_max=args.lambda_max, beta_max=args.beta_max,
                                   relevance_on=args.relevance_on, ste=args.ste)
    optimizers = make_optimizers(model, quantizer, args.lr)
    report_epoch = EpochReport(args, info, device, test_loader, state_bytes(model), dist)

    row, _, _ = report_epoch(model, quantizer, 0, None, 0.0)
    history, best, stopping = [row], None, EarlyStopping(args.patience)
    log.print(_epoch_line(row, args.epochs))
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(model, quantizer, train_loader, optimizers, device, relevance=relevance,
                           max_batches=args.max_batches, desc=f"{method_name(args)} {epoch}/{args.epochs}",
                           verbose=args.verbose, dist=dist, epoch=epoch)
        row, bitstream, decoded = report_epoch(model, quantizer, epoch, loss, time.perf_counter() - start)
        history.append(row)
        log.print(_epoch_line(row, args.epochs))
        log.log({"loss": loss, metric_name: row["metric"], "sparsity": row["sparsity"],
                 "compressed_bytes": row["compressed_bytes"], "ratio": row["ratio"]}, step=epoch)
        if stopping.update(row["metric"]):     # the same metric, so the same choice, everywhere
            best, best_network = row, decoded
            if dist.is_main:
                _save_best(out_dir / run_name(args), bitstream, decoded, row, args)
        elif stopping.stop:
            log.print(f"no better test score for {stopping.stale} epochs: stopping early")
            break

    if args.final_test and best is not None:
        best["final_metrics"] = (best["metrics"] if args.max_eval_batches is None else evaluate(
            best_network, loader(args, "test", info, shuffle=False, dist=dist), device, info.task,
            info.num_classes, desc="test best epoch, whole test set", verbose=args.verbose,
            dist=dist))
        best["final_metric"] = headline(best["final_metrics"], info.task)[1]
        log.print(f"best epoch {best['epoch']} on the whole test set: {metric_name} "
                  f"{best['final_metric']:.2f}%")
    results = {"method": method_name(args), "model": args.model, "dataset": args.dataset,
               "weights": source, "device": str(device), "bitwidth": args.bitwidth,
               "Lambda": args.Lambda, "metric_name": metric_name, "full_precision": baseline,
               "original_bytes": report_epoch.original_bytes,
               "options": {k: v for k, v in vars(args).items() if k not in ("wandb_key",)},
               "history": history, "best": best,
               "lrp_passes": relevance.passes if relevance else 0}
    if not dist.is_main:
        return results
    if best is not None:
        results["checkpoint"] = f"{run_name(args)}_best.pt"
        results["bitstream"] = f"{run_name(args)}_best.nnc"
        log.print(f"\n{report.format_table(history, EPOCH_COLUMNS)}\n\nbest: epoch {best['epoch']}, "
                  f"{metric_name} {best['metric']:.2f}% ({best['metric'] - baseline:+.2f}), "
                  f"{best['sparsity']:.1f}% zeros, {best['compressed_bytes']:,} bytes "
                  f"({best['ratio']:.1f}x)")
    results["plot"] = str(plot_training_curves(history, out_dir / f"{run_name(args)}.png",
                                               f"{method_name(args)} {args.bitwidth} bit, "
                                               f"Lambda {args.Lambda:g}: {args.model}"))
    path = report.write_json(results, out_dir / f"{run_name(args)}.json")
    log.print(f"results: {path}")
    log.finish()
    return results


def _epoch_line(row: dict, epochs: int) -> str:
    loss = "" if row["loss"] is None else f"train loss {row['loss']:.4f}, "
    return (f"epoch {row['epoch']}/{epochs}: {loss}test {row['metric_name']} {row['metric']:.2f}%, "
            f"zeros {row['sparsity']:.1f}%, {row['compressed_bytes']:,} bytes ({row['ratio']:.1f}x)")


def _save_best(stem: Path, bitstream: bytes, decoded: torch.nn.Module, row: dict, args) -> None:
    """The best epoch's NNC bitstream (restore with ecqx.size.restore) and checkpoint."""
    stem.with_name(stem.name + "_best.nnc").write_bytes(bitstream)
    models.save_checkpoint(decoded, stem.with_name(stem.name + "_best.pt"), arch=args.model,
                           dataset=args.dataset, method=method_name(args), bitwidth=args.bitwidth,
                           Lambda=args.Lambda, epoch=row["epoch"], test_metric=row["metric"],
                           sparsity=row["sparsity"], compressed_bytes=row["compressed_bytes"])
