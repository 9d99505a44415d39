#!/usr/bin/env python
"""Coding a real sequence of model updates: full models, differences with first-edition tools
and differences with the second-edition tools of NNC (Becking et al., "Neural Network Coding
of Difference Updates for Efficient Distributed Learning Communication", IEEE TMM 2024).

The update sequence. The shipped ResNet-20 (example/weights/fmnist_resnet20.pt) with a freshly
initialised classifier (its final linear layer reset, seeded) is fine-tuned as a whole on the
Fashion-MNIST training set with SGD (lr 0.01, momentum 0.9, batch 64, no weight decay, no
augmentation, BatchNorm in training mode, fixed seeds); every K steps (default 10) a
checkpoint of the whole state dict is taken, N checkpoints in all (default 8). The new head
makes accuracy climb along the sequence (from about 74 % after 10 steps to about 93 %), so
that a reconstruction which fails to deliver the updates is seen in its accuracy. With
--keep-head the shipped classifier is fine-tuned as it is: the converged model then loses
1-2 points in the first steps and stays there, and a reconstruction that lags behind the
sequence (differences below the quantization step leave weights at older values) scores
*higher* than the checkpoint it should reproduce, which makes accuracy a poor judge of
transparency.

Three ways to send the N checkpoints, each over a qp sweep:

  (a) full       every checkpoint coded on its own with nnc_core.nn.encode (first edition);
  (b) diff_ed1   differences with a CodingState (closed loop: each checkpoint minus the
                 receiver's reconstruction of the one before), first-edition tools only:
                 compress_differences, tca, hdsp off, no sparsification;
  (c) diff_ed2   the same with the second-edition tools: compress_differences (update-tree
                 signalling, all-zero NDUs omitted), tca (temporal context adaptation) and
                 hdsp (history-dependent significance probability), and sparsification of
                 the differences as a second sweep dimension (sparsity x struct_spars_factor).

In (b) and (c) the first stream carries the first checkpoint in full (the base is zero); it
is coded at the same qp with the same tools but never sparsified (sparsification is for
differences; zeroing 80 % of a full model would spoil every later update, which has to
carry the pruned weights back). Later streams use qp = diff_qp = the swept value (or
--first-qp for the first stream only). All tensors go through the module path of the codec
(PyTorch topology, as main.py codes models): tensors with two or more dimensions and 1-D
``*.weight`` (BatchNorm gamma) use the weight qp, biases and BatchNorm statistics
nonweight_qp (default -75); DQ is on (the codec default).

Per configuration (one row of the JSON) the benchmark records the bytes of every stream:
``first_bytes`` (the first stream) and ``update_bytes`` (the N - 1 later ones, which in (a)
are full models too), their mean as a percentage of the float32 size of one model (4 bytes
per state-dict element, num_batches_tracked excluded), how they split into NDUs of
multi-dimensional weights and of 1-D tensors, the share of zero levels in the weights, the
coding times, and the top-1 accuracy on the Fashion-MNIST test set (all 10,000 images; a
fixed subset with --quick / --smoke) of the receiver's reconstruction of the final
checkpoint. The reference is the accuracy of the uncompressed final checkpoint on the same
images. Every run checks that the receiver's reconstruction equals the sender's exactly
(receiver.base == sender.base after every stream in (b)/(c), the decoder's output ==
the encoder's reconstruction in (a)) and stops with an AssertionError otherwise.

At equal accuracy: for each method the configuration with the smallest mean update bytes
(first stream excluded) whose final accuracy is within 0.1 points of the reference, either
way ("transparent"), and the same within 0.5 points; then the saving of (c) against (b) and
against (a), 1 - bytes_c / bytes_b, in percent. The band is two-sided on purpose: a
reconstruction that lags behind the sequence can score higher than the checkpoint it is
meant to reproduce (see --keep-head). Each row also records the agreement of the
reconstruction's predictions with the uncompressed final checkpoint's (percent of the test
images with the same predicted class), the steadier measure of transparency. The paper
reports about 60 % fewer bits with the second-edition tools than with the first edition at
transparent accuracy, and updates below 1 % of their uncompressed size.

Two diagnostics explain where the update bytes go: the split into NDUs of multi-dimensional
weights and of 1-D tensors (BatchNorm parameters and statistics, biases; the statistics
change at every training step and are coded at nonweight_qp), and, unless --no-open-loop,
``open_loop_update_bytes``: each update of (b)/(c) coded once more, with the same options
and TCA/HDSP history, as the difference to the previous *uncompressed* checkpoint. That is
about the size of the update when the sender trains from the receiver's reconstruction (as
federated clients do), so that the difference carries no correction of the reconstruction
error; only the size is kept.

Output: a table on stdout, DIR/update_coding.json ("settings", "machine", "model",
"training", "reference", "rows", "summary", "runtime_s") and DIR/update_coding.png (bytes
per update, log scale, against the final accuracy; and the stream sizes over the sequence
for the configurations picked at equal accuracy). Run it from the repository root, as a
module (``env/bin/python benchmarks/update_coding.py`` works as well):

    env/bin/python -m benchmarks.update_coding          # 8 checkpoints, 9 qps, ~17 min on 2 cores
    env/bin/python -m benchmarks.update_coding --quick  # 3 checkpoints, 3 qps, 2,000 test images
    env/bin/python -m benchmarks.update_coding --smoke  # 2 checkpoints, 1 qp, 500 test images
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: "
                     "python -m benchmarks.update_coding ...")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

METHODS = ("full", "diff_ed1", "diff_ed2")
LABELS = {"full": "(a) full models, edition 1",
          "diff_ed1": "(b) differences, edition 1 tools",
          "diff_ed2": "(c) differences, edition 2 tools"}
TOLERANCES = (0.1, 0.5)
PAPER = {"saving_ed2_vs_ed1_percent": 60.0, "update_percent_of_float32": 1.0,
         "source": "Becking et al., IEEE TMM 2024"}

# presets: checkpoints, qps, (sparsity, struct_spars_factor) settings of (c), test images
# (0: all 10,000)
MODES = {
    "full": dict(checkpoints=8, qps=[-40, -36, -32, -28, -24, -20, -16, -12, -8],
                 combos=[(0.0, 0.0), (0.5, 0.9), (0.8, 0.9), (0.9, 0.9), (0.9, 0.0)],
                 test_images=0),
    "quick": dict(checkpoints=3, qps=[-38, -28, -18], combos=[(0.0, 0.0), (0.8, 0.9), (0.8, 0.0)],
                  test_images=2000),
    "smoke": dict(checkpoints=2, qps=[-32], combos=[(0.8, 0.9)], test_images=500),
}
DEFAULT_SPARSITIES, DEFAULT_STRUCT_FACTORS = [0.0, 0.5, 0.8, 0.9], [0.9, 0.0]


def sparsity_setting(text: str) -> tuple[float, float]:
    """``"S"`` or ``"S:G"`` -> (sparsity, struct_spars_factor); G is 0 when left out."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected S or S:G (e.g. 0.8:0.9), got {text!r}")
    return parts[0], parts[1] if len(parts) == 2 and parts[0] > 0 else 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.update_coding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="3 checkpoints, qps -38 -28 -18, sparsity 0, 0.8:0.9 and 0.8:0, "
                           "2,000 test images (about a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="2 checkpoints, qp -32, sparsity 0.8 with struct factor 0.9, 500 "
                           "test images (seconds; for the tests)")
    parser.add_argument("--checkpoints", type=int, metavar="N",
                        help="checkpoints in the sequence (default 8; quick 3, smoke 2)")
    parser.add_argument("--steps", type=int, default=10, metavar="K",
                        help="SGD steps between checkpoints (default 10)")
    parser.add_argument("--qps", type=int, nargs="+", metavar="QP",
                        help="qp sweep, also diff_qp of the differences (default -40 -36 ... -8)")
    parser.add_argument("--first-qp", type=int, metavar="QP",
                        help="qp of the first stream of (b)/(c) for every configuration "
                             "(default: the swept qp)")
    parser.add_argument("--sparsity-settings", type=sparsity_setting, nargs="+", metavar="S[:G]",
                        help="the (c) settings: sparsity S of the differences with "
                             "struct_spars_factor G (default 0 0.5:0.9 0.8:0.9 0.9:0.9 0.9:0)")
    parser.add_argument("--sparsities", type=float, nargs="+", metavar="S",
                        help="instead of --sparsity-settings: every S with every "
                             "--struct-factors value (default 0 0.5 0.8 0.9)")
    parser.add_argument("--struct-factors", type=float, nargs="+", metavar="G",
                        help="struct_spars_factor values combined with every sparsity > 0 "
                             "(default 0.9 0)")
    parser.add_argument("--nonweight-qp", type=int, default=-75,
                        help="qp of biases and BatchNorm statistics (default -75)")
    parser.add_argument("--no-dq", action="store_true",
                        help="uniform quantization instead of dependent quantization (all methods)")
    parser.add_argument("--test-images", type=int, metavar="M",
                        help="evaluate on the first M test images (default all 10,000; quick "
                             "2,000, smoke 500)")
    parser.add_argument("--eval-checkpoints", action="store_true",
                        help="also evaluate every reconstructed checkpoint, not only the last "
                             "(N times the evaluation time)")
    parser.add_argument("--no-open-loop", action="store_true",
                        help="skip the open-loop size diagnostic of (b)/(c) (each update coded "
                             "once more against the previous uncompressed checkpoint)")
    parser.add_argument("--keep-head", action="store_true",
                        help="fine-tune the shipped classifier as it is instead of a freshly "
                             "initialised one (accuracy then drops along the sequence; see above)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="SGD weight decay (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch and of the batch order")
    parser.add_argument("--model-path", type=Path,
                        default=ROOT / "example" / "weights" / "fmnist_resnet20.pt",
                        help="ResNet-20 checkpoint to fine-tune (default: the shipped one)")
    parser.add_argument("--dataset-path", help="folder with the Fashion-MNIST IDX files "
                                               "(default: the data set registry's search order)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, which is fastest on a busy 2-core machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="directory for update_coding.json / .png (default benchmarks/results)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the unset sweep options from the preset of the mode."""
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    preset = dict(MODES[args.mode])
    if args.sparsities is not None or args.struct_factors is not None:
        combos = []
        for s in args.sparsities or DEFAULT_SPARSITIES:
            for g in ([0.0] if s == 0 else args.struct_factors or DEFAULT_STRUCT_FACTORS):
                combos.append((s, g))
        args.sparsity_settings = combos
    args.combos = list(dict.fromkeys(args.sparsity_settings or preset.pop("combos")))
    preset.pop("combos", None)
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.checkpoints < 2:
        raise SystemExit("error: --checkpoints must be at least 2 (a first stream and an update)")
    if args.steps < 1 or args.batch_size < 1 or args.test_images < 0:
        raise SystemExit("error: --steps and --batch-size must be positive, --test-images >= 0")
    if any(not 0 <= s < 1 or g < 0 for s, g in args.combos):
        raise SystemExit("error: sparsities must lie in [0, 1), struct factors must be >= 0")
    return args


# ----------------------------------------------------------------------------- data, model

def load_split(split: str, root: str | None):
    """Fashion-MNIST ``split``: uint8 images (N, 28, 28) and int64 labels."""
    import torch
    import datasets
    data = datasets.create_dataset("fashion_mnist", root=root, split=split, download=False)
    return data.data, data.targets.to(torch.int64)


def normalise(images):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), as the data set's default transform does."""
    from datasets.fashion_mnist import MEAN, STD
    return ((images.float() / 255 - MEAN[0]) / STD[0]).unsqueeze(1)


def build_resnet(path: Path):
    from experiments.builders import build_model, dataset_info
    model, _ = build_model("resnet20", "fashion_mnist", dataset_info("fashion_mnist"), str(path))
    return model


def fine_tune(model, images, labels, args, progress: bool) -> tuple[list[dict], dict]:
    """SGD from ``model``; a copy of the state dict every ``args.steps`` steps."""
    import torch
    import torch.nn.functional as F
    torch.manual_seed(args.seed)
    if not args.keep_head:
        model.linear.reset_parameters()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    model.train()
    checkpoints, losses = [], []
    total = args.checkpoints * args.steps
    started = time.perf_counter()
    running = 0.0
    for step in tqdm(range(total), desc="fine-tune", unit="step", disable=not progress,
                     dynamic_ncols=True):
        index = order[(torch.arange(args.batch_size) + step * args.batch_size) % len(order)]
        loss = F.cross_entropy(model(normalise(images[index])), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        if (step + 1) % args.steps == 0:
            checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            losses.append(running / args.steps)
            running = 0.0
    model.eval()
    return checkpoints, {"steps_per_checkpoint": args.steps, "checkpoints": args.checkpoints,
                         "total_steps": total, "optimizer": "SGD", "lr": args.lr,
                         "momentum": args.momentum, "weight_decay": args.weight_decay,
                         "batch_size": args.batch_size, "seed": args.seed, "augmentation": None,
                         "new_head": not args.keep_head,
                         "mean_loss_per_checkpoint": losses,
                         "seconds": time.perf_counter() - started}


class Evaluator:
    """Top-1 accuracy of state dicts on fixed test images (uint8, as loaded), and the agreement of
    their predictions with those of a reference model; cached by content."""

    def __init__(self, template, images, labels, batch: int = 500):
        import torch
        self.template = template
        self.batches = [normalise(images[i:i + batch]).contiguous(memory_format=torch.channels_last)
                        for i in range(0, len(labels), batch)]
        self.labels = labels.numpy()
        self.cache: dict[str, np.ndarray] = {}
        self.reference: np.ndarray | None = None
        self.seconds = 0.0
        self.evaluations = 0

    @staticmethod
    def digest(arrays: dict) -> str:
        h = hashlib.sha1()
        for name in sorted(arrays):
            value = np.ascontiguousarray(arrays[name])
            h.update(name.encode())
            h.update(str(value.dtype).encode())
            h.update(value.tobytes())
        return h.hexdigest()

    def predictions(self, state: dict) -> np.ndarray:
        """``state``: name -> numpy array or torch tensor (a decoded model or a checkpoint)."""
        import torch
        from nnc_core import nn as nnc_nn
        arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
                  for k, v in state.items() if not k.endswith("num_batches_tracked")}
        key = self.digest(arrays)
        if key not in self.cache:
            started = time.perf_counter()
            model = copy.deepcopy(self.template)
            nnc_nn.load_decoded(model, arrays)
            model = model.to(memory_format=torch.channels_last).eval()
            with torch.inference_mode():
                self.cache[key] = torch.cat([model(x).argmax(1) for x in self.batches]).numpy()
            self.seconds += time.perf_counter() - started
            self.evaluations += 1
        return self.cache[key]

    def top1(self, state: dict) -> float:
        return 100.0 * float(np.mean(self.predictions(state) == self.labels))

    def set_reference(self, state: dict) -> None:
        self.reference = self.predictions(state)

    def agreement(self, state: dict) -> float:
        """Percent of the test images on which ``state`` predicts what the reference does."""
        return 100.0 * float(np.mean(self.predictions(state) == self.reference))


# ----------------------------------------------------------------------------- coding

def as_module(template, checkpoint: dict):
    model = copy.deepcopy(template)
    model.load_state_dict(checkpoint)
    return model


def _stream_stats(coded) -> dict:
    """Bytes in NDUs of multi-dimensional weights and of 1-D tensors; zero share of the
    transmitted weight levels (omitted all-zero NDUs count as zeros)."""
    nd = sum(u.unit_bytes for u in coded.tensors if len(u.shape) > 1)
    levels = [u.levels for u in coded.tensors if len(u.shape) > 1 and u.levels is not None]
    elements = sum(int(lv.size) for lv in levels)
    zeros = sum(int(lv.size - np.count_nonzero(lv)) for lv in levels)
    return {"bytes": len(coded.bitstream), "weight_ndu_bytes": nd,
            "vector_ndu_bytes": sum(u.unit_bytes for u in coded.tensors) - nd,
            "weight_zero_share": zeros / elements if elements else 1.0}


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a)


def code_full(template, checkpoints, qp: int, common: dict, evaluator, every: bool) -> dict:
    """(a): every checkpoint coded alone; the receiver decodes each on its own."""
    from nnc_core import nn as nnc_nn
    streams, accuracies, enc_s, dec_s = [], [], 0.0, 0.0
    for i, checkpoint in enumerate(checkpoints):
        t = time.perf_counter()
        coded = nnc_nn.encode_model(as_module(template, checkpoint), qp=qp, **common)
        enc_s += time.perf_counter() - t
        t = time.perf_counter()
        decoded = nnc_nn.decode(coded.bitstream)
        dec_s += time.perf_counter() - t
        assert _same(decoded, coded.reconstruction), \
            f"full model qp {qp}, checkpoint {i + 1}: decoder output != encoder reconstruction"
        streams.append(_stream_stats(coded))
        if every or i == len(checkpoints) - 1:
            accuracies.append(evaluator.top1(decoded))
    row = _row("full", qp, qp, qp, 0.0, 0.0, streams, accuracies, enc_s, dec_s)
    row["final_agreement"] = evaluator.agreement(decoded)
    return row


def _float_arrays(checkpoint: dict) -> dict:
    return {k: v.numpy().astype(np.float32) for k, v in checkpoint.items()
            if v.is_floating_point()}


def _with_omitted(base: dict, template) -> dict:
    """The receiver's model: ``base`` plus zeros for the tensors no stream has carried yet.
    With compress_differences an NDU whose levels are all zero is left out, also in the
    first stream (at coarse qps whole weight tensors quantize to zero); such a tensor is
    zero, and the receiver knows its shape from the architecture."""
    out = dict(base)
    for name, value in template.state_dict().items():
        if name not in out and value.is_floating_point():
            out[name] = np.zeros(tuple(value.shape), np.float32)
    return out


def code_differences(method: str, template, checkpoints, qp: int, first_qp: int, sparsity: float,
                     factor: float, common: dict, evaluator, every: bool,
                     open_loop_sizes: bool = True) -> dict:
    """(b) / (c): closed-loop differences to the receiver's reconstruction.

    With ``open_loop_sizes`` every update is coded a second time, with the same options and
    the same TCA/HDSP history, as the difference to the previous *uncompressed* checkpoint:
    the size the update would have if the sender had trained from the receiver's
    reconstruction (as federated clients do), so that it carried no correction of the
    reconstruction error. Only its size is recorded."""
    from nnc_core import nn as nnc_nn
    from nnc_core.incremental import CodingState
    ed2 = method == "diff_ed2"
    tools = dict(compress_differences=ed2, tca=ed2, hdsp=ed2)
    sender, receiver = CodingState(device_id=1), CodingState()
    open_loop = CodingState(device_id=1)      # the size diagnostic; nobody decodes it
    streams, accuracies, open_bytes, enc_s, dec_s = [], [], [], 0.0, 0.0
    for i, checkpoint in enumerate(checkpoints):
        first = i == 0
        options = dict(common, **tools, qp=first_qp if first else qp,
                       sparsity=0.0 if first else sparsity,
                       struct_spars_factor=0.0 if first else factor)
        if not first:
            options["diff_qp"] = qp
        module = as_module(template, checkpoint)
        t = time.perf_counter()
        coded = nnc_nn.encode_model(module, state=sender, **options)
        enc_s += time.perf_counter() - t
        if open_loop_sizes and not first:
            open_loop.base = _float_arrays(checkpoints[i - 1])
            open_bytes.append(len(nnc_nn.encode(module, state=open_loop, **options)))
        elif open_loop_sizes:
            nnc_nn.encode(module, state=open_loop, **options)
        t = time.perf_counter()
        nnc_nn.decode(coded.bitstream, state=receiver)
        dec_s += time.perf_counter() - t
        assert _same(receiver.base, sender.base), \
            f"{method} qp {qp} sparsity {sparsity} factor {factor}, stream {i + 1}: " \
            "receiver.base != sender.base"
        streams.append(_stream_stats(coded))
        if first:
            omitted = sorted(set(_float_arrays(checkpoint)) - set(receiver.base))
        if every or i == len(checkpoints) - 1:
            accuracies.append(evaluator.top1(_with_omitted(receiver.base, template)))
    row = _row(method, qp, first_qp, qp, sparsity, factor, streams, accuracies, enc_s, dec_s)
    row["final_agreement"] = evaluator.agreement(_with_omitted(receiver.base, template))
    row["first_stream_omitted_tensors"] = omitted
    if open_loop_sizes:
        row["open_loop_update_bytes"] = open_bytes
        row["open_loop_mean_update_bytes"] = float(np.mean(open_bytes))
    return row


def _row(method, qp, first_qp, diff_qp, sparsity, factor, streams, accuracies,
         enc_s, dec_s) -> dict:
    updates = streams[1:]
    return {"method": method, "qp": qp, "first_qp": first_qp, "diff_qp": diff_qp,
            "sparsity": sparsity, "struct_spars_factor": factor,
            "first_bytes": streams[0]["bytes"],
            "update_bytes": [s["bytes"] for s in updates],
            "mean_update_bytes": float(np.mean([s["bytes"] for s in updates])),
            "update_weight_ndu_bytes": [s["weight_ndu_bytes"] for s in updates],
            "update_vector_ndu_bytes": [s["vector_ndu_bytes"] for s in updates],
            "update_weight_zero_share": [s["weight_zero_share"] for s in updates],
            "total_bytes": sum(s["bytes"] for s in streams),
            "final_top1": accuracies[-1],
            "checkpoint_top1": accuracies if len(accuracies) > 1 else None,
            "exact": True,           # the asserts above stop the run otherwise
            "encode_s": enc_s, "decode_s": dec_s}


def configurations(args) -> list[tuple]:
    jobs = [("full", qp, 0.0, 0.0) for qp in args.qps]
    jobs += [("diff_ed1", qp, 0.0, 0.0) for qp in args.qps]
    jobs += [("diff_ed2", qp, s, g) for s, g in args.combos for qp in args.qps]
    return jobs


# ----------------------------------------------------------------------------- summary

def _pick(row: dict | None, float32_bytes: int, reference: float) -> dict | None:
    if row is None:
        return None
    keys = ("qp", "first_qp", "diff_qp", "sparsity", "struct_spars_factor", "first_bytes",
            "mean_update_bytes", "final_top1", "final_agreement")
    out = {k: row[k] for k in keys}
    out["update_percent_of_float32"] = 100 * row["mean_update_bytes"] / float32_bytes
    out["mean_update_weight_ndu_bytes"] = float(np.mean(row["update_weight_ndu_bytes"]))
    out["mean_update_vector_ndu_bytes"] = float(np.mean(row["update_vector_ndu_bytes"]))
    if "open_loop_mean_update_bytes" in row:
        out["open_loop_mean_update_bytes"] = row["open_loop_mean_update_bytes"]
    out["change_points"] = row["final_top1"] - reference
    return out


def _saving(a: dict | None, b: dict | None, key: str = "mean_update_bytes") -> float | None:
    """Percent fewer update bytes of ``a`` than of ``b``."""
    if a is None or b is None or key not in a or key not in b:
        return None
    return 100 * (1 - a[key] / b[key])


def summarise(rows: list[dict], reference: float, float32_bytes: int) -> dict:
    summary = {"reference_top1": reference, "float32_model_bytes": float32_bytes,
               "exact_all": all(r["exact"] for r in rows), "paper": PAPER,
               "criterion": "cheapest mean update bytes with |final top-1 - reference_top1| "
                            "<= tolerance_points",
               "at_equal_accuracy": {}}
    for tol in TOLERANCES:
        picks = {}
        for m in METHODS:
            ok = [r for r in rows if r["method"] == m
                  and abs(r["final_top1"] - reference) <= tol + 1e-9]
            best = min(ok, key=lambda r: (r["mean_update_bytes"], -r["final_top1"])) if ok else None
            picks[m] = _pick(best, float32_bytes, reference)
        summary["at_equal_accuracy"][f"{tol:g}"] = {
            "tolerance_points": tol, **picks,
            "saving_ed2_vs_ed1_percent": _saving(picks["diff_ed2"], picks["diff_ed1"]),
            "weight_ndu_saving_ed2_vs_ed1_percent": _saving(
                picks["diff_ed2"], picks["diff_ed1"], "mean_update_weight_ndu_bytes"),
            "saving_ed2_vs_full_percent": _saving(picks["diff_ed2"], picks["full"]),
            "saving_ed1_vs_full_percent": _saving(picks["diff_ed1"], picks["full"])}
    return summary


def _config(row: dict) -> str:
    text = f"qp {row['qp']}"
    if row.get("first_qp") is not None and row["first_qp"] != row["qp"]:
        text += f" (first {row['first_qp']})"
    if row["method"] == "diff_ed2":
        text += f", sparsity {row['sparsity']:g}, struct {row['struct_spars_factor']:g}"
    return text


def print_tables(report: dict) -> None:
    rows, summary = report["rows"], report["summary"]
    f32 = summary["float32_model_bytes"]
    print(f"\nall configurations (final top-1 of the uncompressed checkpoint: "
          f"{summary['reference_top1']:.2f} %, float32 model {f32:,} bytes)")
    print(f"  {'method':9s} {'configuration':36s} {'first B':>9s} {'update B':>9s} "
          f"{'% f32':>6s} {'1-D B':>6s} {'zeros':>6s} {'top-1':>6s} {'agree':>6s}")
    for r in rows:
        print(f"  {r['method']:9s} {_config(r):36s} {r['first_bytes']:9,d} "
              f"{r['mean_update_bytes']:9,.0f} {100 * r['mean_update_bytes'] / f32:6.2f} "
              f"{np.mean(r['update_vector_ndu_bytes']):6,.0f} "
              f"{100 * np.mean(r['update_weight_zero_share']):5.1f}% {r['final_top1']:6.2f} "
              f"{r['final_agreement']:6.2f}")
    for tol, entry in summary["at_equal_accuracy"].items():
        print(f"\nat equal accuracy: cheapest configuration with final top-1 within {tol} "
              f"points of {summary['reference_top1']:.2f} %")
        for m in METHODS:
            p = entry[m]
            if p is None:
                print(f"  {LABELS[m]:34s} none within {tol} points")
                continue
            pick_row = dict(p, method=m)
            print(f"  {LABELS[m]:34s} {_config(pick_row):36s} {p['mean_update_bytes']:9,.0f} B "
                  f"per update ({p['update_percent_of_float32']:.2f} % of float32), "
                  f"top-1 {p['final_top1']:.2f}, agreement {p['final_agreement']:.2f} %")
        for key, text in (("saving_ed2_vs_ed1_percent", "(c) vs (b)"),
                          ("saving_ed2_vs_full_percent", "(c) vs (a)"),
                          ("saving_ed1_vs_full_percent", "(b) vs (a)")):
            value = entry[key]
            print(f"  update bytes saved {text}: " + ("n/a" if value is None else f"{value:.1f} %"))
        value = entry["weight_ndu_saving_ed2_vs_ed1_percent"]
        if value is not None:
            b, c = entry["diff_ed1"], entry["diff_ed2"]
            print(f"  NDUs of multi-dimensional weights only: (b) "
                  f"{b['mean_update_weight_ndu_bytes']:,.0f} B, (c) "
                  f"{c['mean_update_weight_ndu_bytes']:,.0f} B, saved {value:.1f} %; 1-D tensors "
                  f"(b) {b['mean_update_vector_ndu_bytes']:,.0f} B, "
                  f"(c) {c['mean_update_vector_ndu_bytes']:,.0f} B")
        sizes = [f"{key} {entry[m]['open_loop_mean_update_bytes']:,.0f} B"
                 for key, m in (("(b)", "diff_ed1"), ("(c)", "diff_ed2"))
                 if entry[m] is not None and "open_loop_mean_update_bytes" in entry[m]]
        if sizes:
            print("  the same configurations open loop (differences of the uncompressed "
                  "checkpoints, no correction of the reconstruction error): " + ", ".join(sizes))
    print(f"\nreceiver reconstruction == sender's in every run: {summary['exact_all']}")


# ----------------------------------------------------------------------------- plot

def plot(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, summary = report["rows"], report["summary"]
    ref = summary["reference_top1"]
    colors = {"full": "tab:blue", "diff_ed1": "tab:orange", "diff_ed2": "tab:green"}
    fig, (ax, seq) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [3, 2]})
    for m in ("full", "diff_ed1"):
        pts = sorted((r["mean_update_bytes"], r["final_top1"]) for r in rows if r["method"] == m)
        if pts:
            ax.plot(*zip(*pts), "o-", color=colors[m], ms=4, label=LABELS[m])
    ed2 = [r for r in rows if r["method"] == "diff_ed2"]
    combos = sorted({(r["sparsity"], r["struct_spars_factor"]) for r in ed2})
    markers = "sdv^<>phx*"
    for k, (s, g) in enumerate(combos):
        pts = sorted((r["mean_update_bytes"], r["final_top1"]) for r in ed2
                     if (r["sparsity"], r["struct_spars_factor"]) == (s, g))
        ax.plot(*zip(*pts), ls=":", lw=0.8, marker=markers[k % len(markers)], ms=4,
                color=colors["diff_ed2"], alpha=0.6,
                label=f"(c) sparsity {s:g}, struct {g:g}")
    if ed2:    # the best accuracy reached at each rate: upper-left envelope of (c)
        front, best = [], -np.inf
        for r in sorted(ed2, key=lambda r: r["mean_update_bytes"]):
            if r["final_top1"] > best:
                best = r["final_top1"]
                front.append((r["mean_update_bytes"], best))
        ax.plot(*zip(*front), "-", color=colors["diff_ed2"], lw=2,
                label=LABELS["diff_ed2"] + ", best")
    ax.axhline(ref, color="gray", ls="--", lw=1,
               label=f"uncompressed final checkpoint ({ref:.2f} %)")
    for tol, alpha in zip(TOLERANCES, (0.25, 0.1)):
        ax.axhspan(ref - tol, ref + tol, color="gray", alpha=alpha, lw=0,
                   label=f"within {tol:g} points")
    picks = summary["at_equal_accuracy"][f"{TOLERANCES[0]:g}"]
    for m in METHODS:
        if picks[m] is not None:
            ax.plot(picks[m]["mean_update_bytes"], picks[m]["final_top1"], "*", ms=14,
                    color=colors[m], mec="k", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("mean bytes per update (first stream excluded)")
    ax.set_ylabel("top-1 of the reconstructed final model [%]")
    lo = min(r["final_top1"] for r in rows)
    bottom = max(lo - 0.3, ref - 4)
    if lo < bottom:
        ax.text(0.01, 0.01, f"rows below {bottom:.1f} % not shown", transform=ax.transAxes,
                fontsize=7, color="gray")
    ax.set_ylim(bottom, max(ref, max(r["final_top1"] for r in rows)) + 0.3)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    ax.set_title(f"ResNet-20 / Fashion-MNIST, {report['training']['checkpoints']} checkpoints "
                 f"every {report['training']['steps_per_checkpoint']} SGD steps", fontsize=9)
    # stream sizes over the sequence for the picks (0.1 points, else 0.5)
    for m in METHODS:
        pick = next((summary["at_equal_accuracy"][f"{t:g}"][m] for t in TOLERANCES
                     if summary["at_equal_accuracy"][f"{t:g}"][m] is not None), None)
        if pick is None:
            continue
        row = next(r for r in rows if r["method"] == m and all(
            r[k] == pick[k] for k in ("qp", "first_qp", "sparsity", "struct_spars_factor")))
        sizes = [row["first_bytes"], *row["update_bytes"]]
        seq.plot(range(1, len(sizes) + 1), sizes, "o-", color=colors[m], ms=4,
                 label=f"{LABELS[m].split(',')[0]}: {_config(row)}")
    seq.axhline(summary["float32_model_bytes"], color="gray", ls="--", lw=1, label="float32 model")
    seq.axhline(summary["float32_model_bytes"] / 100, color="gray", ls=":", lw=1, label="1 % of it")
    seq.set_yscale("log")
    seq.set_xlabel("stream (1: first checkpoint)")
    seq.set_ylabel("bytes")
    seq.set_title("stream sizes of the configurations picked at equal accuracy", fontsize=9)
    seq.grid(alpha=0.3, which="both")
    seq.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main

def machine() -> dict:
    import torch
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu_model": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    args = resolve(build_parser().parse_args(argv))
    import torch
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    started = time.perf_counter()

    template = build_resnet(args.model_path)
    template.eval()
    train_x, train_y = load_split("train", args.dataset_path)
    test_x, test_y = load_split("test", args.dataset_path)
    if args.test_images:
        test_x, test_y = test_x[:args.test_images], test_y[:args.test_images]
    evaluator = Evaluator(template, test_x, test_y)
    initial_top1 = evaluator.top1(template.state_dict())

    model = copy.deepcopy(template)
    checkpoints, training = fine_tune(model, train_x, train_y, args, progress)
    del train_x, train_y
    final_top1 = evaluator.top1(checkpoints[-1])
    evaluator.set_reference(checkpoints[-1])
    checkpoint_top1 = [evaluator.top1(c) for c in checkpoints] if args.eval_checkpoints else None
    elements = sum(v.numel() for k, v in checkpoints[0].items()
                   if not k.endswith("num_batches_tracked"))
    float32_bytes = 4 * elements

    common = {"nonweight_qp": args.nonweight_qp, "use_dq": not args.no_dq}
    rows = []
    jobs = configurations(args)
    bar = tqdm(jobs, desc="coding", unit="config", disable=not progress, dynamic_ncols=True)
    for method, qp, sparsity, factor in bar:
        bar.set_postfix_str(f"{method} qp {qp}"
                            + (f" s {sparsity:g}/{factor:g}" if sparsity else ""))
        if method == "full":
            row = code_full(template, checkpoints, qp, common, evaluator, args.eval_checkpoints)
        else:
            first_qp = qp if args.first_qp is None else args.first_qp
            row = code_differences(method, template, checkpoints, qp, first_qp, sparsity, factor,
                                   common, evaluator, args.eval_checkpoints,
                                   open_loop_sizes=not args.no_open_loop)
        rows.append(row)
    bar.close()

    report = {
        "settings": {"mode": args.mode, "quick": args.quick, "smoke": args.smoke,
                     "checkpoints": args.checkpoints, "steps_per_checkpoint": args.steps,
                     "qps": args.qps, "first_qp": args.first_qp,
                     "sparsity_settings": [list(c) for c in args.combos],
                     "new_head": not args.keep_head,
                     "nonweight_qp": args.nonweight_qp,
                     "use_dq": not args.no_dq, "test_images": len(test_y),
                     "eval_checkpoints": args.eval_checkpoints, "threads": args.threads,
                     "open_loop_sizes": not args.no_open_loop,
                     "tolerances_points": list(TOLERANCES),
                     "first_stream": "the first checkpoint in full, at first_qp (default: the "
                                     "swept qp), never sparsified",
                     "transparent": "final top-1 within 0.1 points (either way) of the "
                                    "uncompressed final checkpoint on the same test images"},
        "machine": machine(),
        "model": {"name": "resnet20", "checkpoint": os.path.relpath(args.model_path, ROOT)
                  if args.model_path.is_absolute() and ROOT in args.model_path.parents
                  else str(args.model_path),
                  "state_dict_elements": elements, "float32_bytes": float32_bytes,
                  "parameters": sum(p.numel() for p in template.parameters())},
        "training": training,
        "reference": {"initial_top1": initial_top1, "final_top1": final_top1,
                      "checkpoint_top1": checkpoint_top1, "test_images": len(test_y)},
        "rows": rows,
        "summary": summarise(rows, final_top1, float32_bytes),
    }
    report["runtime_s"] = {"total": time.perf_counter() - started,
                           "training": training["seconds"],
                           "evaluation": evaluator.seconds, "evaluations": evaluator.evaluations,
                           "coding": sum(r["encode_s"] + r["decode_s"] for r in rows)}
    print(f"\nshipped model top-1 {initial_top1:.2f} %, after {training['total_steps']} steps "
          f"{final_top1:.2f} % ({len(test_y)} test images)")
    print_tables(report)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "update_coding.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    png = plot(report, args.out / "update_coding.png")
    print(f"wrote {json_path} and {png.name} in {report['runtime_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
