#!/usr/bin/env python
"""A qp per layer chosen by rate against task loss, compared with NNCodec's ``opt_qp`` and one
qp for all, at equal top-1 on the offline default (the shipped ResNet-20, Fashion-MNIST).

For every weight tensor ``l`` (two or more dimensions) and candidate qp ``q`` the benchmark
measures the bytes ``R_l(q)`` of the tensor coded alone with DQ and the rise ``D_l(q)`` of
the cross-entropy on calibration images when only that tensor is quantized at ``q`` (its
sensitivity; made non-negative and non-decreasing in ``q``, see :func:`monotone`). With the layers' effects taken as additive, the qps minimising
``sum_l R_l(q_l) + mu * D_l(q_l)`` are chosen per layer independently; a sweep over ``mu``
gives one model per value, each coded with ``qp_per_tensor``, decoded and tested on the full
test set. The same model is coded with one qp for all layers and with ``--opt_qp`` over a qp
sweep, all with DQ (no BNF, no LSA); sizes are read at equal accuracy as in
:mod:`benchmarks.rdoq_model`. With ``--lambda_scale`` the rates and codes are RDOQ's
(rate against the task loss jointly with the quantizer's own lambda).

    python -m benchmarks.layer_qp                        # ~10 min on 2 cores
    python -m benchmarks.layer_qp --quick --output /tmp/layer_qp.json   # smoke run

Writes ``benchmarks/results/layer_qp.json`` and ``layer_qp.png``.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

if not __package__:  # started as a file: the repository's packages are not importable then
    raise SystemExit("run it from the repository root as a module: python -m benchmarks.layer_qp ...")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.rdoq_model import bytes_at, plot  # noqa: E402
from experiments.builders import build_model, dataset_info  # noqa: E402
from experiments.engine import LOSSES, evaluate, headline  # noqa: E402
from experiments.report import write_json  # noqa: E402
from nnc_core import nn as nnc_nn  # noqa: E402
from nnc_core.tensor import encode_with_reconstruction  # noqa: E402

import datasets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES = (-40, -36, -32, -28, -24, -20, -16, -12)
DROPS = (0.1, 0.25, 0.5, 1.0)


class Setup:
    """The model, its data and the coding options every point shares."""

    def __init__(self, calibration: int, max_eval_batches: int | None, lambda_scale: float):
        self.info = dataset_info("fashion_mnist")
        self.model, _ = build_model("resnet20", "fashion_mnist", self.info)
        self.model.eval()
        train = datasets.create_dataset("fashion_mnist", split="train")
        batch = torch.utils.data.DataLoader(torch.utils.data.Subset(train, range(calibration)),
                                            batch_size=calibration)
        self.inputs, self.targets = next(iter(batch))
        self.test = torch.utils.data.DataLoader(datasets.create_dataset("fashion_mnist", split="test"),
                                                batch_size=256)
        self.max_eval_batches = max_eval_batches
        self.options = {"use_dq": True, "lambda_scale": lambda_scale}

    @torch.no_grad()
    def loss(self, state: dict) -> float:
        model = copy.deepcopy(self.model)
        model.load_state_dict(state)
        return float(LOSSES["classification"](model(self.inputs), self.targets))

    def top1(self, bitstream: bytes) -> float:
        restored = copy.deepcopy(self.model)
        nnc_nn.load_decoded(restored, nnc_nn.decode(bitstream))
        metrics = evaluate(restored, self.test, "cpu", "classification", 10,
                           max_batches=self.max_eval_batches, verbose=False)
        return headline(metrics, "classification")[1]

    def code(self, **options) -> dict:
        coded = nnc_nn.encode_model(self.model, **self.options, **options)
        return {"bytes": len(coded.bitstream), "top1": self.top1(coded.bitstream)}


def sensitivities(setup: Setup, candidates) -> tuple[dict, dict, float]:
    """``R[l][q]`` (bytes) and ``D[l][q]`` (loss rise) of every weight tensor, and the loss."""
    state = {k: v.detach().clone() for k, v in setup.model.state_dict().items()}
    base = setup.loss(state)
    weights = [k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2]
    rates, rises = {}, {}
    for name in tqdm(weights, desc="layer sensitivities"):
        rates[name], rises[name] = {}, {}
        for qp in candidates:
            data, reconstruction = encode_with_reconstruction(state[name].numpy(), qp=qp,
                                                              tensor_id=name, **setup.options)
            trial = dict(state)
            trial[name] = torch.from_numpy(np.asarray(reconstruction, dtype=np.float32))
            rates[name][qp], rises[name][qp] = len(data), setup.loss(trial) - base
        rises[name] = monotone(rises[name])
    return rates, rises, base


def monotone(rises: dict[int, float]) -> dict[int, float]:
    """The rises made non-negative and non-decreasing towards coarser qps: a measured fall of
    the loss, or a coarse step that seems to cost less than a finer one, is noise of the
    calibration images, and a tiny layer would take the coarsest qp for it."""
    out, worst = {}, 0.0
    for qp in sorted(rises):
        worst = max(worst, rises[qp])
        out[qp] = worst
    return out


def choose(rates: dict, rises: dict, mu: float) -> dict[str, int]:
    """Per layer the qp of least ``R + mu * D``."""
    return {name: min(rates[name], key=lambda q: rates[name][q] + mu * rises[name][q]) for name in rates}


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layer_qp",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--qps", type=int, nargs="+", default=[-36, -32, -28, -24, -20, -16],
                        help="qps of the one-qp and opt_qp curves")
    parser.add_argument("--mus", type=float, nargs="+",
                        default=[1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 1e9],
                        help="bytes per unit of loss rise of the per-layer choice")
    parser.add_argument("--calibration", type=int, default=1024, help="images of the loss (default 1024)")
    parser.add_argument("--lambda_scale", type=float, default=0.0, help="RDOQ for all codes (default off)")
    parser.add_argument("--max_eval_batches", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few points, 2 test batches")
    parser.add_argument("--output", default=str(RESULTS / "layer_qp.json"))
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.qps, opts.mus, opts.calibration, opts.max_eval_batches = [-32, -20], [1e5, 1e7], 64, 2
    setup = Setup(opts.calibration, opts.max_eval_batches, opts.lambda_scale)
    original = headline(evaluate(setup.model, setup.test, "cpu", "classification", 10,
                                 max_batches=opts.max_eval_batches, verbose=False), "classification")[1]
    rates, rises, base = sensitivities(setup, CANDIDATES[::3] if opts.quick else CANDIDATES)
    curves = {"one qp": [], "opt_qp": [], "qp per layer (rate + mu loss)": []}
    for qp in tqdm(opts.qps, desc="one qp, opt_qp"):
        curves["one qp"].append({"qp": qp, **setup.code(qp=qp)})
        curves["opt_qp"].append({"qp": qp, **setup.code(qp=qp, opt_qp=True)})
    for mu in tqdm(opts.mus, desc="per-layer qps"):
        qps = choose(rates, rises, mu)
        curves["qp per layer (rate + mu loss)"].append({"mu": mu, "qps": qps, **setup.code(qp_per_tensor=qps)})
    table = []
    for drop in DROPS:
        sizes = {label: bytes_at(points, original - drop) for label, points in curves.items()}
        table.append({"drop": drop, "target_top1": original - drop, "bytes": sizes})
    output = Path(opts.output)
    write_json({"model": "resnet20", "dataset": "fashion_mnist", "use_dq": True,
                "lambda_scale": opts.lambda_scale, "float32_top1": original,
                "calibration_images": opts.calibration, "calibration_loss": base,
                "rates": rates, "loss_rises": rises, "curves": curves, "at_equal_accuracy": table},
               output)
    plot(curves, original, output.with_suffix(".png"), "ResNet-20 on Fashion-MNIST: a qp per layer (DQ)")
    for row in table:
        print(f"top-1 >= {row['target_top1']:.2f}: " + ", ".join(
            f"{label}: {'-' if b is None else f'{b / 1000:.1f} kB'}" for label, b in row["bytes"].items()))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
