"""One ``main.py`` run: (pre-train,) evaluate, compress with NNC at one or more qps, decode,
evaluate again, and report sizes, accuracy and the entropy-coder comparison.

This reproduces the experiments of the NNCodec paper (Becker et al., "NNCodec: An Open
Source Software Implementation of the Neural Network Coding ISO/IEC Standard", ICML 2023
Neural Compression Workshop): DeepCABAC against Huffman coding, bzip2 and the
zeroth-order entropy of the coded levels, with or without dependent quantization, QP
optimisation, BatchNorm folding and local scaling adaptation.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import datasets
import models
from nnc_core import nn as nnc_nn
from nnc_core.metrics import bzip2_bytes, entropy_bits, huffman_bits

from . import report
from .config import save_args
from .engine import evaluate, headline, pick_device, train_one_epoch
from .tracking import RunLogger
from .plots import plot_rate_accuracy, plot_segmentation_masks

# The checkpoints that ship with the repository, used when no --model_path is given.
SHIPPED_CHECKPOINTS = {
    ("resnet20", "fashion_mnist"): Path(__file__).resolve().parents[1] / "example" / "weights"
                                   / "fmnist_resnet20.pt",
    ("fmnist_segnet", "fashion_mnist_seg"): Path(__file__).resolve().parents[1] / "example"
                                            / "weights" / "fmnist_segnet.pt",
}


def coding_options(args, qp: int) -> dict:
    """The nnc_core.nn options of a run, named as in the reference's args dict."""
    return dict(qp=qp, nonweight_qp=args.nonweight_qp, qp_density=args.qp_density,
                use_dq=args.use_dq, opt_qp=args.opt_qp, bnf=args.bnf, lsa=args.lsa,
                approx_method=args.approx_method, bitdepth=args.bitdepth,
                lr=args.lr, epochs=args.epochs, max_batches=args.max_batches)


def loader(args, split: str, info, shuffle: bool, augment: bool = False):
    kwargs = {"train_augment": True} if augment and info.task == "classification" else {}
    with setup_errors(f"data set {args.dataset!r}"):
        dataset = datasets.create_dataset(args.dataset, root=args.dataset_path, split=split, **kwargs)
    collate = datasets.segmentation_collate if info.task == "segmentation" else None
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=shuffle,
                                       num_workers=args.workers, collate_fn=collate)


@contextmanager
def setup_errors(what: str):
    """Turn a registry's complaint (unknown name, missing data, no download) into a
    one-line error instead of a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise SystemExit(f"error: {what}: {error}") from error


def build_model(args, info) -> tuple[torch.nn.Module, str]:
    """The model and where its weights came from."""
    path = args.model_path or SHIPPED_CHECKPOINTS.get((args.model, args.dataset))
    pretrained = path is None and not args.pre_train_model
    with setup_errors(f"model {args.model!r}"):
        model = models.create_model(args.model, num_classes=info.num_classes,
                                    in_chans=info.in_chans, pretrained=pretrained)
    if path is not None and Path(path).exists():
        models.load_checkpoint(model, path)
        return model, str(path)
    if path is not None and not args.pre_train_model:
        raise SystemExit(f"error: checkpoint {path} not found (train one with --pre_train_model)")
    return model, "pretrained" if pretrained else "random init"


def pre_train(model, args, info, device, log: RunLogger) -> Path:
    """Train the full model before compression and save it to --model_path."""
    train = loader(args, "train", info, shuffle=True, augment=True)
    test = loader(args, "test", info, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4,
                                nesterov=True)
    steps = args.epochs * (len(train) if args.max_batches is None else min(len(train), args.max_batches))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    for epoch in range(args.epochs):
        loss = train_one_epoch(model, train, optimizer, device, task=info.task,
                               max_batches=args.max_batches, desc=f"pre-train {epoch + 1}/{args.epochs}",
                               verbose=args.verbose, scheduler=scheduler)
        metrics = evaluate(model, test, device, info.task, info.num_classes,
                           max_batches=args.max_eval_batches, verbose=args.verbose)
        name, value = headline(metrics, info.task)
        log.print(f"epoch {epoch + 1}: train loss {loss:.4f}, test {name} {value:.2f}%")
        log.log({"pretrain/loss": loss, f"pretrain/{name}": value}, step=epoch)
    path = Path(args.model_path or SHIPPED_CHECKPOINTS.get((args.model, args.dataset))
                or Path(args.results) / f"{args.model}_{args.dataset}.pt")
    models.save_checkpoint(model, path, arch=args.model, dataset=args.dataset,
                           epochs=args.epochs, **{f"test_{k}": v for k, v in metrics.items()})
    log.print(f"saved the trained model to {path}")
    return path


def coded_weights(coded) -> list:
    """The NDU reports of quantized tensors with two or more dimensions."""
    return [t for t in coded.tensors if t.levels is not None and len(t.shape) > 1]


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
                       max_batches=args.max_eval_batches, desc=f"eval qp {qp}", verbose=args.verbose)
    metric_name, value = headline(metrics, info.task)
    params, original_bytes = coded.params, coded.original_bytes
    size = len(coded.bitstream)
    stem = f"{args.model}_qp{qp}"
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
    }
    if args.verbose:
        log.print(f"\nqp {qp}: per-tensor sizes\n{report.layer_table(result['layers'])}")
        weights = coded_weights(coded)
        log.print(f"\nqp {qp}: entropy coders on the same quantized weights (payloads only)\n"
                  f"{report.coder_table(coders, sum(4 * t.levels.size for t in weights), sum(t.levels.size for t in weights))}")
    log.log({"qp": qp, f"decoded/{metric_name}": value, "compressed_bytes": size,
             "ratio": result["ratio"], "bits_per_param": result["bits_per_param"],
             **{f"coder/{k}": v for k, v in coders.items()}})
    if args.plot_segmentation_masks and info.task == "segmentation":
        result["masks"] = str(save_masks(model, restored, loaders["test"], info, device, qp, out_dir))
    return result


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
    """Run the experiment described by ``args`` (see ``main.py --help``); returns the results."""
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    with setup_errors("--dataset"):
        info = datasets.dataset_info(args.dataset)
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_args(args, out_dir)
    log = RunLogger(args)
    model, source = build_model(args, info)
    model.to(device)
    if args.pre_train_model:
        source = str(pre_train(model, args, info, device, log))
    loaders = {"test": loader(args, "test", info, shuffle=False)}
    if args.lsa:
        loaders["train"] = loader(args, "train", info, shuffle=True)
    original = evaluate(model, loaders["test"], device, info.task, info.num_classes,
                        max_batches=args.max_eval_batches, desc="eval original", verbose=args.verbose)
    metric_name, value = headline(original, info.task)
    log.print(f"{args.model} on {args.dataset} ({source}): {metric_name} {value:.2f}%")
    qps = args.qp_sweep or [args.qp]
    runs = [compress_and_evaluate(model, qp, args, info, device, loaders, original, out_dir, log)
            for qp in qps]
    log.print(f"\n{report.run_table(runs)}")
    results = {"model": args.model, "dataset": args.dataset, "weights": source,
               "device": str(device), "options": {k: v for k, v in coding_options(args, 0).items()
                                                  if k != "qp"},
               "runs": runs}
    if len(runs) > 1:
        results["plot"] = str(plot_rate_accuracy(runs, out_dir / f"{args.model}_rate_accuracy.png",
                                                 f"{args.model} on {args.dataset}"))
    path = report.write_json(results, out_dir / f"{args.model}_results.json")
    log.print(f"results: {path}")
    log.finish()
    return results
