"""Training and evaluation loops shared by the experiment scripts.

Classification reports top-1/top-5 accuracy in percent; segmentation reports the mean
intersection over union (mIoU, Everingham et al. 2010) over the classes present in the
ground truth or the prediction, accumulated over the whole set (not averaged per image);
language modelling reports next-token top-1 accuracy and perplexity ``exp(mean loss)``
over the tokens that are not padding (target id ``datasets.IGNORED_TARGET``).

Given the run's :class:`~experiments.distributed.Distributed` (``dist``), the loops work
data-parallel: training through DistributedDataParallel, evaluation on this process's shard
with the counts added up over all processes (:mod:`experiments.distributed`).
"""
from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets import IGNORED_TARGET

if TYPE_CHECKING:
    from .distributed import Distributed

IGNORE_INDEX = 255


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given ("cpu", "cuda", "cuda:1", "mps"), else cuda when available."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _logits(output):
    """The logits of a model's output: Hugging Face models return them as ``.logits``,
    torchvision's segmentation models in a dict under "out"."""
    if isinstance(output, torch.Tensor):
        return output
    return output.logits if hasattr(output, "logits") else output["out"]


def _batches(loader, max_batches: int | None, desc: str, verbose: bool = True):
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    return tqdm(itertools.islice(loader, total), total=total, desc=desc, leave=False,
                disable=not verbose, dynamic_ncols=True)


def _pixel_loss(output, targets):
    return F.cross_entropy(_logits(output), targets, ignore_index=IGNORE_INDEX)


def _token_loss(logits, targets):
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORED_TARGET)


# task -> training loss of (model output, targets)
LOSSES = {"classification": _pixel_loss, "segmentation": _pixel_loss,
          "language_modeling": _token_loss}


def train_one_epoch(model, loader, optimizer, device, *, task: str = "classification",
                    max_batches: int | None = None, desc: str = "train", verbose: bool = True,
                    scheduler=None, clip_grad: float | None = None, regularizer=None,
                    dist: Distributed | None = None, epoch: int = 0) -> float:
    """One pass of cross-entropy training (the task's loss, see ``LOSSES``), plus the
    term ``regularizer()`` returns for each batch if given (None adds nothing); gradients
    clipped to norm ``clip_grad`` if given; returns the mean task loss.

    With ``dist``, ``model`` (unwrapped) trains in its DDP wrapper, the loader's sampler is
    set to ``epoch``, rank 0's BatchNorm statistics are copied to every process at the end
    and the loss is the mean over all processes' samples."""
    loss_of = LOSSES[task]
    network = model
    if dist is not None:
        network = dist.wrap(model)
        dist.set_epoch(loader, epoch)
    network.train()
    total, count = 0.0, 0
    bar = _batches(loader, max_batches, desc, verbose)
    for inputs, targets in bar:
        inputs, targets = inputs.to(device), targets.to(device)
        loss = loss_of(network(inputs), targets)
        extra = regularizer() if regularizer is not None else None
        optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * inputs.shape[0]
        count += inputs.shape[0]
        bar.set_postfix(loss=f"{total / count:.4f}")
    if dist is not None:
        dist.broadcast_buffers(model)
        total, count = dist.all_reduce_sums(total, count)
    return total / max(count, 1)


@torch.no_grad()
def evaluate_classification(model, loader, device, *, max_batches: int | None = None,
                            desc: str = "eval", verbose: bool = True,
                            dist: Distributed | None = None) -> dict:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy; with ``dist``, of the
    shards of all processes together."""
    model.eval()
    correct1 = correct5 = count = 0
    loss = 0.0
    for inputs, targets in _batches(loader, max_batches, desc, verbose):
        inputs, targets = inputs.to(device), targets.to(device)
        logits = _logits(model(inputs))
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += targets.numel()
    if dist is not None:
        loss, correct1, correct5, count = dist.all_reduce_sums(loss, correct1, correct5, count)
        correct1, correct5, count = int(correct1), int(correct5), int(count)
    count = max(count, 1)
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count,
            "loss": loss / count, "samples": count}


@torch.no_grad()
def evaluate_segmentation(model, loader, device, num_classes: int, *,
                          max_batches: int | None = None, desc: str = "eval",
                          verbose: bool = True, dist: Distributed | None = None) -> dict:
    """Mean IoU and pixel accuracy (percent) from a confusion matrix over the whole set
    (with ``dist``, over the shards of all processes); pixels labelled 255 are ignored."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for inputs, targets in _batches(loader, max_batches, desc, verbose):
        logits = _logits(model(inputs.to(device)))
        if logits.shape[-2:] != targets.shape[-2:]:
            logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear",
                                   align_corners=False)
        pred = logits.argmax(1).cpu().flatten()
        truth = targets.flatten()
        valid = truth != IGNORE_INDEX
        confusion += torch.bincount(truth[valid] * num_classes + pred[valid],
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
    if dist is not None:
        dist.all_reduce_([confusion])
    return segmentation_scores(confusion)


def segmentation_scores(confusion: torch.Tensor) -> dict:
    """mIoU over classes that occur in the ground truth or the prediction; pixel accuracy."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    iou = tp[present] / union[present]
    pixels = confusion.sum().item()
    return {"mIoU": 100.0 * iou.mean().item() if present.any() else 0.0,
            "pixel_acc": 100.0 * tp.sum().item() / pixels if pixels else 0.0,
            "samples": int(pixels)}


@torch.no_grad()
def evaluate_language_model(model, loader, device, *, max_batches: int | None = None,
                            desc: str = "eval", verbose: bool = True,
                            dist: Distributed | None = None) -> dict:
    """Next-token top-1 accuracy (percent), mean cross-entropy and perplexity over the
    tokens that are not padding (with ``dist``, of the shards of all processes)."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for inputs, targets in _batches(loader, max_batches, desc, verbose):
        logits = _logits(model(inputs.to(device))).flatten(0, -2)
        targets = targets.to(device).flatten()
        real = targets != IGNORED_TARGET
        loss += F.cross_entropy(logits[real], targets[real], reduction="sum").item()
        correct += (logits[real].argmax(1) == targets[real]).sum().item()
        count += int(real.sum())
    if dist is not None:
        loss, correct, count = dist.all_reduce_sums(loss, correct, count)
        correct, count = int(correct), int(count)
    count = max(count, 1)
    return {"top1": 100.0 * correct / count, "loss": loss / count,
            "perplexity": math.exp(min(loss / count, 700.0)), "tokens": count}


# task -> evaluate(model, loader, device, num_classes, **kwargs)
EVALUATORS = {
    "classification": lambda m, l, d, n, **kw: evaluate_classification(m, l, d, **kw),
    "segmentation": evaluate_segmentation,
    "language_modeling": lambda m, l, d, n, **kw: evaluate_language_model(m, l, d, **kw),
}
# task -> the number a paper table shows (higher is better)
HEADLINES = {"classification": "top1", "segmentation": "mIoU", "language_modeling": "top1"}


def evaluate(model, loader, device, task: str, num_classes: int, **kwargs) -> dict:
    """Evaluate for the task (a key of ``EVALUATORS``)."""
    return EVALUATORS[task](model, loader, device, num_classes, **kwargs)


def headline(metrics: dict, task: str) -> tuple[str, float]:
    """The number a paper table shows for the task."""
    name = HEADLINES[task]
    return name, metrics[name]


class EarlyStopping:
    """Tracks the best score of a run; ``stop`` after ``patience`` epochs without a better one."""

    def __init__(self, patience: int):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.best, self.stale = patience, None, 0

    def update(self, score: float) -> bool:
        """Record an epoch's score; True if it is the best so far."""
        if self.best is None or score > self.best:
            self.best, self.stale = score, 0
            return True
        self.stale += 1
        return False

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience
