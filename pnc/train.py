"""Training stages of PNC (Wang et al., RTSS 2023, Sec. IV-B).

1. ``reconstruction``: the autoencoder alone, mean squared error, with tail-drop;
2. ``joint``: the same network behind the frozen classifier,
   ``10 * MSE + cross-entropy(classifier(decoded), label)``, so the decoded images keep what
   the classifier needs;
3. ``distill`` (optional): ``10 * MSE + KL(classifier(image) || classifier(decoded))``, the
   classifier's own soft outputs on the original image as the target.
The classifier is never updated. With ``dist`` (:class:`experiments.distributed.Distributed`)
the autoencoder trains data-parallel in DistributedDataParallel.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

MSE_WEIGHT = 10.0


class PixelClassifier(nn.Module):
    """A classifier trained on normalised inputs, fed with images in [0, 1]."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def reconstruction_loss(decoded, images, labels, classifier):
    return F.mse_loss(decoded, images)


def joint_loss(decoded, images, labels, classifier):
    return MSE_WEIGHT * F.mse_loss(decoded, images) + F.cross_entropy(classifier(decoded), labels)


def distill_loss(decoded, images, labels, classifier):
    with torch.no_grad():
        target = F.softmax(classifier(images), dim=1)
    student = F.log_softmax(classifier(decoded), dim=1)
    return MSE_WEIGHT * F.mse_loss(decoded, images) + F.kl_div(student, target, reduction="batchmean")


STAGES = {"reconstruction": reconstruction_loss, "joint": joint_loss, "distill": distill_loss}


def to_pixels(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo a data set's normalisation: images in [0, 1]."""
    mean = torch.tensor(mean, dtype=batch.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch * std + mean).clamp(0, 1)


def train_stage(model, classifier: PixelClassifier | None, loader, stage: str, *, epochs: int,
                lr: float, device, mean, std, max_batches: int | None = None,
                verbose: bool = True, log=print, dist=None) -> list[float]:
    """Train ``model`` for one stage; returns the mean loss of every epoch (over all
    processes with ``dist``, whose DDP wrapper trains ``model``; the loader's sampler is
    set to each epoch)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    if stage != "reconstruction" and classifier is None:
        raise ValueError(f"stage {stage!r} needs a classifier")
    loss_fn = STAGES[stage]
    if classifier is not None:
        classifier.eval().requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = len(loader) if max_batches is None else min(len(loader), max_batches)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * per_epoch))
    # every parameter of the autoencoder takes part in every step (tail-drop zeroes latents,
    # it does not skip layers): DDP need not look for unused ones
    network = model if dist is None else dist.wrap(model, find_unused_parameters=False)
    losses = []
    for epoch in range(epochs):
        if dist is not None:
            dist.set_epoch(loader, epoch)
        network.train()
        total, count = 0.0, 0
        bar = tqdm(itertools.islice(loader, per_epoch), total=per_epoch, leave=False,
                   desc=f"{stage} {epoch + 1}/{epochs}", disable=not verbose, dynamic_ncols=True)
        for batch, labels in bar:
            images = to_pixels(batch, mean, std).to(device)
            loss = loss_fn(network(images), images, labels.to(device), classifier)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(images)
            count += len(images)
            bar.set_postfix(loss=f"{total / count:.4f}")
        if dist is not None:
            total, count = dist.all_reduce_sums(total, count)
        losses.append(total / max(count, 1))
        log(f"{stage} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    return losses
