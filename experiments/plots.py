"""Figures of compression runs: rate-accuracy curves, training curves and segmentation masks."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_rate_accuracy(runs: list[dict], path: str | Path, title: str = "") -> Path:
    """Decoded accuracy (or mIoU) against compressed size, one point per qp, with the
    uncompressed model as a horizontal line."""
    runs = sorted(runs, key=lambda r: r["compressed_bytes"])
    fig, ax = plt.subplots(figsize=(6, 4))
    kib = [r["compressed_bytes"] / 1024 for r in runs]
    ax.plot(kib, [r["decoded"] for r in runs], "o-", label="NNC (decoded)")
    for r, x in zip(runs, kib):
        ax.annotate(f"qp {r['qp']}", (x, r["decoded"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7)
    ax.axhline(runs[0]["original"], color="gray", ls="--", label="uncompressed")
    ax.set_xscale("log")
    ax.set_xlabel("compressed size [KiB]")
    ax.set_ylabel(runs[0]["metric_name"] + " [%]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bits_metric(runs: list[dict], baselines: list[dict], original: dict, metric: str,
                     path: str | Path, title: str = "") -> Path:
    """``metric`` (e.g. perplexity) against bits per parameter: NNC at each qp as a line,
    the rounding baselines as points, the uncompressed model as a horizontal line."""
    runs = sorted(runs, key=lambda r: r["bits_per_param"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["bits_per_param"] for r in runs], [r["decoded_metrics"][metric] for r in runs],
            "o-", label="NNC")
    for r in runs:
        ax.annotate(f"qp {r['qp']}", (r["bits_per_param"], r["decoded_metrics"][metric]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, b in enumerate(baselines):
        ax.plot(b["bits_per_param"], b["decoded_metrics"][metric], "s", color=f"C{i + 1}",
                label=b["method"])
    ax.axhline(original[metric], color="gray", ls="--", label="float32")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per parameter")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Test score, sparsity and compressed size of a quantized training run, per epoch
    (epoch 0 is the network right after its first quantization)."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row["metric"] for row in history], "o-")
    left.set_ylabel(history[0]["metric_name"] + " [%]")
    right.plot(epochs, [row["sparsity"] for row in history], "o-", color="C1", label="zeros")
    right.set_ylabel("zero weights [%]")
    size = right.twinx()
    size.plot(epochs, [row["compressed_bytes"] / 1024 for row in history], "s--", color="C2",
              label="size")
    size.set_ylabel("compressed size [KiB]")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def colorize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB image of a class-index mask (255 = ignore, shown white)."""
    cmap = plt.get_cmap("tab20", max(num_classes, 2))
    rgb = cmap(np.clip(mask, 0, num_classes - 1) % cmap.N)[..., :3]
    rgb[mask == 255] = 1.0
    return rgb


def plot_segmentation_masks(images, truths, predictions: dict, num_classes: int,
                            path: str | Path, mean=None, std=None) -> Path:
    """Grid: one row per image; columns image, ground truth, then one prediction per
    label of ``predictions`` (e.g. "original", "qp -32")."""
    n = len(images)
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    for i in range(n):
        img = np.asarray(images[i], dtype=np.float32)
        if mean is not None:
            img = img * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
        img = np.clip(img.transpose(1, 2, 0), 0, 1)
        panels = [("image", img.squeeze(-1) if img.shape[-1] == 1 else img),
                  ("ground truth", colorize(np.asarray(truths[i]), num_classes))]
        panels += [(label, colorize(np.asarray(p[i]), num_classes)) for label, p in predictions.items()]
        for ax, (label, picture) in zip(axes[i], panels):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(label, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_traffic_accuracy(runs: list[dict], path: str | Path, title: str = "") -> Path:
    """Test accuracy of the global model against the cumulative bytes exchanged (both
    directions, the first distribution included), one curve per update codec."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        rows = run["rounds"]
        ax.plot([r["cumulative_bytes"] / 2**20 for r in rows], [r.get("accuracy", 0) for r in rows],
                "o-", ms=3, label=f"{run['codec']} ({100 * run['summary']['traffic_share']:.2f} %)")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative traffic, both directions [MiB]")
    ax.set_ylabel("test accuracy [%]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="codec (traffic share)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_layer_bits(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Bits of every layer's weights and input activations (a compressed model's report)."""
    names = [row["layer"] for row in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.5))
    ax.bar(x - 0.2, [row["weight_bits"] for row in rows], 0.4, label="weights")
    ax.bar(x + 0.2, [row["activation_bits"] for row in rows], 0.4, label="input activations")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("bits")
    ax.set_yscale("log", base=2)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
