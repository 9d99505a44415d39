"""``run.py pnc train|eval|simulate``: progressive neural compression for image offloading
under deadlines (Wang et al., "Progressive Neural Compression for Adaptive Image Offloading
under Timing Constraints", RTSS 2023).

* ``train``: the autoencoder's stages (reconstruction, then joint with the frozen classifier;
  optionally distillation), then the latent clip value and per-channel Huffman tables from
  training images; saved as one checkpoint.
* ``eval``: accuracy against kilobytes for PNC (1..C channels) and JPEG, progressive JPEG and
  WebP at several qualities, Huffman against DeepCABAC channel sizes, encoder latency per
  image, and (with ``--compare``) a model trained without tail-drop.
* ``simulate``: images released every deadline T over bandwidth traces; accuracy against T
  for every method.

The offline default works on Fashion-MNIST with the shipped ResNet-20 as the edge classifier
and the shipped PNC checkpoint (trained here with ``run.py pnc train``); the paper's preset
(``--preset imagenet --dataset imagenet --classifier efficientnet_b0``) needs ImageNet and
downloadable weights.

``train`` runs data-parallel under torchrun (``torchrun --nproc_per_node N run.py pnc train``):
the autoencoder trains in DDP, every process calibrates the same codec, rank 0 saves it.
``eval`` and ``simulate`` do not train: under torchrun every process repeats them and only
rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pnc import offload
from pnc.codec import PNCCodec
from pnc.link import Trace
from pnc.model import PNC, PRESETS, PNCConfig
from pnc.train import STAGES, PixelClassifier, to_pixels, train_stage

from . import report
from .builders import WEIGHTS, build_model, loader, start_run
from .config import add_run_arguments

ACTIONS = ("train", "eval", "simulate")
SIMULATED_QUALITIES = (10, 50, 90)      # the baselines' qualities shown against deadlines
DEFAULT_CHECKPOINT = WEIGHTS / "fmnist_pnc.pt"
EXAMPLES = """examples:
  python run.py pnc simulate                       # the shipped Fashion-MNIST model, two traces
  python run.py pnc eval --compare example/weights/fmnist_pnc_no_taildrop.pt
  python run.py pnc train --epochs 3 --checkpoint my_pnc.pt
  python run.py pnc train --no_tail_drop --checkpoint example/weights/fmnist_pnc_no_taildrop.pt
  python run.py pnc simulate --trace constant:8 jamming:16 my_trace.csv --deadlines 0.05 0.1 0.2
  python run.py pnc train --preset imagenet --dataset imagenet --dataset_path /data/imagenet \\
      --classifier efficientnet_b0 --batch_size 4 --checkpoint pnc_imagenet.pt
  torchrun --nproc_per_node 2 run.py pnc train --epochs 3 --checkpoint my_pnc.pt   # data parallel

train runs data parallel under torchrun (DDP; gloo on the CPU, nccl on CUDA); --batch_size is
per process, only rank 0 prints and writes.
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    model = parser.add_argument_group("model, data and classifier")
    model.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                       help="PNC checkpoint to write (train) or read (eval, simulate)")
    model.add_argument("--preset", default="fmnist", choices=sorted(PRESETS), help="autoencoder sizes")
    model.add_argument("--dataset", default="fashion_mnist")
    model.add_argument("--dataset_path", default=None)
    model.add_argument("--classifier", default="resnet20", help="registered model name of the edge classifier")
    model.add_argument("--classifier_path", default=None,
                       help="its checkpoint (default: the shipped one, else pretrained weights)")
    train = parser.add_argument_group("train")
    train.add_argument("--stages", nargs="+", default=["reconstruction", "joint"], choices=list(STAGES))
    train.add_argument("--epochs", type=int, default=2, help="epochs per stage (default 2)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine decay (default 1e-3)")
    train.add_argument("--batch_size", type=int, default=64,
                       help="batch size per process (default 64; under torchrun a step sees "
                            "N times as many)")
    train.add_argument("--max_batches", type=int, default=None,
                       help="batches (steps) per epoch, in every process (default: all)")
    train.add_argument("--no_tail_drop", action="store_true", help="train without tail-drop (ablation)")
    train.add_argument("--bits", type=int, default=6, help="bits per latent after the uint8 stage (default 6)")
    train.add_argument("--calibration_images", type=int, default=10000,
                       help="training images for the clip value and Huffman tables (default 10000)")
    evaluation = parser.add_argument_group("eval and simulate")
    evaluation.add_argument("--images", type=int, default=1000, help="test images used (default 1000)")
    evaluation.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 20, 30, 50, 70, 90],
                            help="JPEG/WebP qualities")
    evaluation.add_argument("--compare", default=None,
                            help="a second PNC checkpoint (e.g. trained without tail-drop) to evaluate alongside")
    evaluation.add_argument("--trace", nargs="+", default=["constant:16", "jamming:16"],
                            help="bandwidth traces: constant:KBPS, jamming:KBPS or a CSV file of time_s,kbps")
    evaluation.add_argument("--deadlines", type=float, nargs="+",
                            default=[0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5],
                            help="seconds per image (release period = deadline)")
    parser.add_argument("--workers", type=int, default=0)
    add_run_arguments(parser, results="results/pnc")
    return parser


# --------------------------------------------------------------------------- building blocks

def edge_classifier(args, info, device) -> PixelClassifier:
    model, _ = build_model(args.classifier, args.dataset, info, args.classifier_path)
    return PixelClassifier(model, info.mean, info.std).to(device).eval().requires_grad_(False)


def load_pnc(path: str | Path) -> PNCCodec:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = PNC(PNCConfig(**state["config"]), tail_drop=state["tail_drop"])
    model.load_state_dict(state["state_dict"])
    return PNCCodec.from_state(model.eval(), state["codec"])


def first_images(args, info, count: int, split: str = "test") -> tuple[torch.Tensor, np.ndarray]:
    """The first ``count`` images of ``split`` in [0, 1] and their labels."""
    in_bulk = argparse.Namespace(**{**vars(args), "batch_size": 500})
    images, labels, seen = [], [], 0
    for batch, target in loader(in_bulk, split, info, shuffle=False):
        images.append(to_pixels(batch, info.mean, info.std))
        labels.append(target)
        seen += len(batch)
        if seen >= count:
            break
    return torch.cat(images)[:count], torch.cat(labels)[:count].numpy()


# --------------------------------------------------------------------------- actions

def train(args, info, device, log) -> dict:
    config = PRESETS[args.preset]
    model = PNC(config, tail_drop=not args.no_tail_drop).to(device)
    classifier = edge_classifier(args, info, device) if set(args.stages) - {"reconstruction"} else None
    dist = log.dist
    data = loader(args, "train", info, shuffle=True, dist=dist)
    history = {}
    for stage in args.stages:
        history[stage] = train_stage(model, classifier, data, stage, epochs=args.epochs, lr=args.lr,
                                     device=device, mean=info.mean, std=info.std,
                                     max_batches=args.max_batches, verbose=args.verbose,
                                     log=log.print, dist=dist)
    model.cpu().eval()
    calibration, _ = first_images(args, info, args.calibration_images, split="train")
    codec = PNCCodec.calibrate(model, calibration, bits=args.bits)
    path = Path(args.checkpoint)
    if dist.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "config": asdict(config),
                    "tail_drop": model.tail_drop, "codec": codec.state_dict(),
                    "metadata": {"dataset": args.dataset, "classifier": args.classifier,
                                 "stages": args.stages, "epochs": args.epochs, "lr": args.lr,
                                 "losses": history}}, path)
    dist.barrier()                      # eval and simulate read the checkpoint next
    log.print(f"saved PNC ({'with' if model.tail_drop else 'without'} tail-drop, clip "
              f"{codec.quantizer.clip:.3f}, {codec.quantizer.bits} bits) to {path}")
    return {"checkpoint": str(path), "losses": history, "clip": codec.quantizer.clip}


def _ladders(args, info, device, log, qualities):
    """Ladders of PNC and of every baseline at ``qualities`` on the first ``--images`` test images."""
    codec = _codec_or_train(args, info, device, log)
    classifier = edge_classifier(args, info, device).cpu()
    images, labels = first_images(args, info, args.images)
    ladders = {"PNC": offload.pnc_ladder(codec, classifier, images, labels, verbose=args.verbose)}
    if args.compare:
        ladders["PNC without tail-drop"] = offload.pnc_ladder(load_pnc(args.compare), classifier, images,
                                                              labels, name="PNC without tail-drop",
                                                              verbose=args.verbose)
    for q in qualities:
        for codec_name in ("jpeg", "webp"):
            ladder = offload.file_ladder(codec_name, q, classifier, images, labels)
            ladders[ladder.method] = ladder
        ladder = offload.progressive_jpeg_ladder(q, classifier, images, labels)
        ladders[ladder.method] = ladder
    with torch.no_grad():
        full = 100.0 * float((offload.predict(classifier, images) == labels).mean())
    return codec, classifier, images, labels, ladders, full


def _codec_or_train(args, info, device, log) -> PNCCodec:
    path = Path(args.checkpoint)
    if not path.exists():
        if path.resolve() != DEFAULT_CHECKPOINT.resolve():
            raise SystemExit(f"error: PNC checkpoint {path} not found (make one with run.py pnc train)")
        log.print(f"{path} is missing: training the default PNC first")
        train(args, info, device, log)
    return load_pnc(path)


def evaluate(args, info, device, log) -> dict:
    codec, classifier, images, labels, ladders, full = _ladders(args, info, device, log, args.qualities)
    sizes = {"huffman": [], "cabac": []}
    for image in images[:min(200, len(images))]:
        for coder in sizes:
            sizes[coder].append([len(c) for c in codec.encode(image, coder)])
    coders = {coder: {"mean_bytes_per_channel": np.mean(v, axis=0).round(2).tolist(),
                      "mean_bytes_all_channels": float(np.sum(v, axis=1).mean())}
              for coder, v in sizes.items()}
    latency = offload.encode_latency(codec, images[:200], qualities=(10, 50))
    results = {"dataset": args.dataset, "classifier": args.classifier, "images": len(images),
               "uncompressed_accuracy": full, "curves": {name: l.step_points() for name, l in ladders.items()},
               "entropy_coders": coders, "encode_seconds": latency}
    pnc = results["curves"]["PNC"]
    log.print(f"classifier on the uncompressed images: {full:.2f}%")
    log.print("PNC: " + ", ".join(f"{k + 1} ch {b:.0f} B {a:.1f}%" for k, (b, a) in enumerate(pnc)))
    if "PNC without tail-drop" in results["curves"]:
        log.print("without tail-drop: " + ", ".join(
            f"{k + 1} ch {a:.1f}%" for k, (_, a) in enumerate(results["curves"]["PNC without tail-drop"])))
    log.print(f"all 10 channels: Huffman {coders['huffman']['mean_bytes_all_channels']:.1f} B, "
              f"DeepCABAC {coders['cabac']['mean_bytes_all_channels']:.1f} B per image")
    log.print("encode latency per image: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in latency.items()))
    if log.dist.is_main:
        out = Path(args.results)
        results["plot"] = str(plot_rate_accuracy(results, out / "pnc_rate_accuracy.png"))
        log.print(f"results: {report.write_json(results, out / 'pnc_rate_accuracy.json')}")
    return results


def parse_trace(spec: str, duration: float) -> Trace:
    kind, _, value = spec.partition(":")
    if kind == "constant" and value:
        return Trace.constant(float(value))
    if kind == "jamming" and value:
        return Trace.jamming(float(value), duration)
    if Path(spec).exists():
        return Trace.from_csv(spec)
    raise SystemExit(f"error: trace {spec!r}: use constant:KBPS, jamming:KBPS or an existing CSV file")


def simulate(args, info, device, log) -> dict:
    qualities = [q for q in args.qualities if q in SIMULATED_QUALITIES] or args.qualities
    codec, classifier, images, labels, ladders, full = _ladders(args, info, device, log, qualities)
    latency = offload.encode_latency(codec, images[:100], qualities=qualities)
    traces = {}
    for spec in args.trace:
        trace = parse_trace(spec, duration=len(images) * max(args.deadlines))
        rows = {}
        for name in ladders:
            encode_s = latency["PNC" if name.startswith("PNC") else name]
            rows[name] = [ladders[name].accuracy(trace.budgets(len(images), t, encode_s)) for t in args.deadlines]
        traces[trace.name] = rows
        log.print(f"\n{trace.name}: accuracy % per deadline {args.deadlines} s")
        for name, accs in rows.items():
            log.print(f"  {name:<28}" + " ".join(f"{a:6.1f}" for a in accs))
    results = {"dataset": args.dataset, "images": len(images), "uncompressed_accuracy": full,
               "deadlines": args.deadlines, "encode_seconds": latency, "traces": traces}
    if log.dist.is_main:
        out = Path(args.results)
        results["plot"] = str(plot_deadlines(results, out / "pnc_deadlines.png"))
        log.print(f"results: {report.write_json(results, out / 'pnc_deadlines.json')}")
    return results


ACTION_FUNCTIONS = {"train": train, "eval": evaluate, "simulate": simulate}


def run(args) -> dict:
    device, info, out_dir, log = start_run(args, project="pnc", args_file=f"pnc_{args.action}_args.yaml")
    result = ACTION_FUNCTIONS[args.action](args, info, device, log)
    log.finish()
    return result


# --------------------------------------------------------------------------- plots

def _style(name: str) -> dict:
    if name == "PNC":
        return dict(color="C3", marker="o", lw=2)
    if name.startswith("PNC"):
        return dict(color="C7", marker="x", ls="--")
    family = name.rsplit(" q", 1)[0]
    return {"jpeg": dict(color="C0", marker="s", ls=":"), "webp": dict(color="C2", marker="^", ls=":"),
            "progressive jpeg": dict(color="C1", marker=".", ls="-", alpha=0.5)}[family]


def plot_rate_accuracy(results: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = results["curves"]
    for family, label in (("jpeg", "JPEG"), ("webp", "WebP")):
        points = sorted(v[0] for k, v in curves.items() if k.startswith(family + " q"))
        ax.plot([b for b, _ in points], [a for _, a in points], label=f"{label} (one point per quality)",
                **_style(family + " q"))
    shown = [k for k in curves if k.startswith("progressive jpeg")]
    shown = [k for k in shown if k.endswith(tuple(f" q{q}" for q in SIMULATED_QUALITIES))] or shown
    for name in shown:
        points = curves[name]
        ax.plot([b for b, _ in points], [a for _, a in points], **_style(name),
                label="progressive JPEG q" + "/".join(k.rsplit("q", 1)[1] for k in shown) + " (scan prefixes)"
                if name == shown[0] else None)
    for name, points in curves.items():
        if name.startswith("PNC"):
            ax.plot([b for b, _ in points], [a for _, a in points], label=f"{name} (1..C channels)",
                    **_style(name))
    ax.axhline(results["uncompressed_accuracy"], color="gray", ls="--", lw=0.8, label="uncompressed")
    ax.set_xscale("log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("bytes received per image")
    ax.set_ylabel("top-1 accuracy of the edge classifier [%]")
    ax.set_title(f"PNC vs image codecs on {results['dataset']} ({results['images']} test images)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_deadlines(results: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    traces = results["traces"]
    fig, axes = plt.subplots(1, len(traces), figsize=(6 * len(traces), 4.2), squeeze=False)
    for ax, (trace, rows) in zip(axes[0], traces.items()):
        for name, accs in rows.items():
            ax.plot(results["deadlines"], accs, label=name, **_style(name))
        ax.set_title(trace)
        ax.set_xlabel("deadline per image [s]")
        ax.set_ylabel("accuracy [%]")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
