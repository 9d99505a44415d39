"""One ``main.py`` run: (pre-train,) evaluate, compress with NNC at one or more qps, decode,
evaluate again, and report sizes, accuracy and the entropy-coder comparison.

This reproduces the experiments of the NNCodec paper (Becker et al., "NNCodec: An Open
Source Software Implementation of the Neural Network Coding ISO/IEC Standard", ICML 2023
Neural Compression Workshop): DeepCABAC against Huffman coding, bzip2 and the
zeroth-order entropy of the coded levels, with or without dependent quantization, QP
optimisation, BatchNorm folding and local scaling adaptation.

Under torchrun the processes pre-train and train LSA data-parallel, code the same model
alike, test their shards of the test set together, and rank 0 writes the results.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from models.hf import is_hf
from nnc_core import nn as nnc_nn
from nnc_core.metrics import bzip2_bytes, entropy_bits, huffman_bits

from . import report
from .builders import (build_causal_lm, build_model, checkpoint_path, dataset_info, file_stem,
                       full_precision_training, loader, start_run)
from .engine import evaluate, headline
from .plots import plot_bits_metric, plot_rate_accuracy, plot_segmentation_masks
from .rounding import BASELINES, parameter_count, rounded_state
from .tracking import RunLogger


def coding_options(args, qp: int) -> dict:
    """The nnc_core.nn options of a run, named as in the reference's args dict."""
    return dict(qp=qp, nonweight_qp=args.nonweight_qp, qp_density=args.qp_density,
                use_dq=args.use_dq, opt_qp=args.opt_qp, bnf=args.bnf, lsa=args.lsa,
                approx_method=args.approx_method, bitdepth=args.bitdepth,
                sparsity=args.sparsity, struct_spars_factor=args.struct_spars_factor,
                lambda_scale=args.lambda_scale, threads=args.threads,
                lr=args.lr, epochs=args.epochs, max_batches=args.max_batches)


def pre_train(model, args, info, device, log: RunLogger) -> Path:
    """Train the full model before compression and save it to --model_path."""
    path = checkpoint_path(args.model, args.dataset, args.model_path) or \
        Path(args.results) / f"{file_stem(args.model)}_{args.dataset}.pt"
    full_precision_training(model, args, info, device, log, epochs=args.epochs, lr=args.lr,
                            save_to=path)
    return path


def coded_weights(coded) -> list:
    """The NDU reports of quantized tensors with two or more dimensions."""
    return [t for t in coded.tensors if t.levels is not None and len(t.shape) > 1]


def weight_sparsity(coded) -> float:
    """Share of zeros (%) among the decoded weights of two or more dimensions."""
    weights = coded_weights(coded)
    total = sum(t.levels.size for t in weights)
    return 100.0 * sum(int(t.levels.size - np.count_nonzero(t.levels)) for t in weights) / max(total, 1)


def coder_comparison(coded) -> dict:
    """Bytes of the same quantized weights (tensors of two or more dimensions) under
    DeepCABAC, Huffman, bzip2 and their zeroth-order entropy. Biases, BatchNorm vectors and
    local scales are left out: at their fine qp nearly every value is distinct, which makes a
    table-free Huffman code and the zeroth-order entropy meaningless."""
    weights = coded_weights(coded)
    levels = [t.levels.ravel() for t in weights]
    return {
        "DeepCABAC (NNC)": sum(t.weight_payload_bytes for t in weights),
        "Huffman": int(np.ceil(sum(huffman_bits(l) for l in levels) / 8)),
        "bzip2": bzip2_bytes(np.concatenate(levels)) if levels else 0,
        "0th-order entropy": int(np.ceil(sum(entropy_bits(l) * l.size for l in levels) / 8)),
    }


def compress_and_evaluate(model, qp: int, args, info, device, loaders, original: dict,
                          out_dir: Path, log: RunLogger) -> dict:
    dist = log.dist
    start = time.perf_counter()
    coded = nnc_nn.encode_model(model, train_loader=loaders.get("train"), device=device,
                                verbose=args.verbose, **coding_options(args, qp))
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = nnc_nn.decode(coded.bitstream)
    decode_s = time.perf_counter() - start
    restored = copy.deepcopy(model)
    nnc_nn.load_decoded(restored, decoded)
    metrics = evaluate(restored, loaders["test"], device, info.task, info.num_classes,
                       max_batches=args.max_eval_batches, desc=f"eval qp {qp}", verbose=args.verbose,
                       dist=dist)
    metric_name, value = headline(metrics, info.task)
    params, original_bytes = coded.params, coded.original_bytes
    size = len(coded.bitstream)
    stem = f"{file_stem(args.model)}_qp{qp}"
    if dist.is_main:
        (out_dir / f"{stem}.nnc").write_bytes(coded.bitstream)
    coders = coder_comparison(coded)
    result = {
        "qp": qp, "metric_name": metric_name, "original": original[metric_name],
        "decoded": value, "drop": value - original[metric_name],
        "original_metrics": original, "decoded_metrics": metrics,
        "original_bytes": original_bytes, "compressed_bytes": size,
        "ratio": original_bytes / size, "bits_per_param": 8 * size / params, "params": params,
        "encode_s": encode_s, "decode_s": decode_s, "bitstream": f"{stem}.nnc",
        "coders": coders, "layers": [t.row() for t in coded.tensors],
        "weight_sparsity": weight_sparsity(coded),
    }
    if "perplexity" in metrics:
        result["perplexity"] = metrics["perplexity"]
    if args.verbose:
        log.print(f"\nqp {qp}: per-tensor sizes\n{report.layer_table(result['layers'])}")
        weights = coded_weights(coded)
        log.print(f"\nqp {qp}: entropy coders on the same quantized weights (payloads only)\n"
                  f"{report.coder_table(coders, sum(4 * t.levels.size for t in weights), sum(t.levels.size for t in weights))}")
    log.log({"qp": qp, f"decoded/{metric_name}": value, "compressed_bytes": size,
             "ratio": result["ratio"], "bits_per_param": result["bits_per_param"],
             **{f"coder/{k}": v for k, v in coders.items()}})
    if args.plot_segmentation_masks and info.task == "segmentation" and dist.is_main:
        result["masks"] = str(save_masks(model, restored, loaders["test"], info, device, qp, out_dir))
    return result


def rounding_baseline(model, name: str, bits, args, info, device, loaders, log) -> dict:
    """The model with its weights rounded as ``name`` (:mod:`.rounding`), evaluated."""
    state, total_bits = rounded_state(model.state_dict(), bits)
    rounded = copy.deepcopy(model)
    rounded.load_state_dict(state)
    metrics = evaluate(rounded, loaders["test"], device, info.task, info.num_classes,
                       max_batches=args.max_eval_batches, desc=f"eval {name}", verbose=args.verbose,
                       dist=log.dist)
    metric_name, value = headline(metrics, info.task)
    row = {"method": name, "bits_per_param": total_bits / parameter_count(model.state_dict()),
           "compressed_bytes": total_bits // 8, "metric_name": metric_name, "decoded": value,
           "decoded_metrics": metrics}
    if "perplexity" in metrics:
        row["perplexity"] = metrics["perplexity"]
    return row


@torch.no_grad()
def save_masks(model, restored, test_loader, info, device, qp: int, out_dir: Path, count: int = 4):
    images, truths = next(iter(test_loader))
    images, truths = images[:count], truths[:count]

    def predict(net):
        return net.eval()(images.to(device))["out"].argmax(1).cpu().numpy()

    path = out_dir / f"masks_qp{qp}.png"
    return plot_segmentation_masks(images.numpy(), truths.numpy(),
                                   {"original": predict(model), f"qp {qp}": predict(restored)},
                                   info.num_classes, path, mean=info.mean, std=info.std)


def run(args) -> dict:
    """Run the experiment described by ``args`` (see ``main.py --help``); returns the results.
    An ``hf:<path>`` checkpoint is evaluated as a causal language model on a
    language-modelling data set, else coded and measured without evaluation
    (:mod:`experiments.checkpoint_run`)."""
    tokenizer = None
    if is_hf(args.model):
        from .checkpoint_run import check_flags, run as run_checkpoint
        evaluated = dataset_info(args.dataset).task == "language_modeling"
        check_flags(args, evaluated)
        if not evaluated:
            return run_checkpoint(args)
    device, info, out_dir, log = start_run(args, project="nnc")
    dist = log.dist
    if info.needs_tokenizer and not is_hf(args.model):
        raise SystemExit(f"error: --dataset {args.dataset} is tokenized with the model's "
                         "tokenizer: use it with --model hf:<folder>, a model folder that has one")
    if is_hf(args.model):
        model, source, tokenizer = build_causal_lm(args.model)
    else:
        model, source = build_model(args.model, args.dataset, info, args.model_path,
                                     train_first=args.pre_train_model,
                                     random_init=getattr(args, "model_rand_int", False))
    model.to(device)
    if args.pre_train_model:
        source = str(pre_train(model, args, info, device, log))
    loaders = {"test": loader(args, "test", info, shuffle=False, tokenizer=tokenizer, dist=dist,
                              max_batches=args.max_eval_batches)}
    if args.lsa:
        loaders["train"] = loader(args, "train", info, shuffle=True, tokenizer=tokenizer, dist=dist)
    original = evaluate(model, loaders["test"], device, info.task, info.num_classes,
                        max_batches=args.max_eval_batches, desc="eval original", verbose=args.verbose,
                        dist=dist)
    metric_name, value = headline(original, info.task)
    extra = f", perplexity {original['perplexity']:.4f}" if "perplexity" in original else ""
    log.print(f"{args.model} on {args.dataset} ({source}): {metric_name} {value:.2f}%{extra}")
    qps = args.qp_sweep or [args.qp]
    runs = [compress_and_evaluate(model, qp, args, info, device, loaders, original, out_dir, log)
            for qp in qps]
    log.print(f"\n{report.run_table(runs)}")
    baselines = [rounding_baseline(model, name, bits, args, info, device, loaders, log)
                 for name, bits in BASELINES.items()] if args.baselines else []
    if baselines:
        log.print(f"\n{report.baseline_table(baselines)}")
    results = {"model": args.model, "dataset": args.dataset, "weights": source,
               "device": str(device), "options": {k: v for k, v in coding_options(args, 0).items()
                                                  if k != "qp"},
               "runs": runs}
    if not dist.is_main:
        return results
    title = f"{args.model} on {args.dataset}"
    if len(runs) > 1:
        plot = out_dir / f"{file_stem(args.model)}_rate_accuracy.png"
        results["plot"] = str(plot_rate_accuracy(runs, plot, title))
    if baselines:
        results["baselines"] = baselines
        metric = "perplexity" if "perplexity" in original else metric_name
        plot = out_dir / f"{file_stem(args.model)}_bits_{metric}.png"
        results["baselines_plot"] = str(plot_bits_metric(runs, baselines, original, metric,
                                                         plot, title))
    path = report.write_json(results, out_dir / f"{file_stem(args.model)}_results.json")
    log.print(f"results: {path}")
    log.finish()
    return results
