"""What every experiment script builds first: the run's output folder and logger, data
loaders, the model (from a checkpoint, pretrained weights or a random init) and, if asked, a
full-precision training of it.

Registry complaints (unknown name, missing data, no download) become one-line errors
instead of tracebacks. Under torchrun every process starts the same run; the loaders split
the data over the processes and only rank 0 writes (:mod:`.distributed`).
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

import torch

import datasets
import models

from . import distributed
from .config import save_args
from .engine import evaluate, headline, train_one_epoch
from .tracking import RunLogger

WEIGHTS = Path(__file__).resolve().parents[1] / "example" / "weights"

# The checkpoints that ship with the repository, used when no --model_path is given.
SHIPPED_CHECKPOINTS = {
    ("resnet20", "fashion_mnist"): WEIGHTS / "fmnist_resnet20.pt",
    ("fmnist_segnet", "fashion_mnist_seg"): WEIGHTS / "fmnist_segnet.pt",
}


@contextmanager
def setup_errors(what: str):
    """Turn a registry's complaint into ``SystemExit("error: <what>: <complaint>")``."""
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise SystemExit(f"error: {what}: {error}") from error


TORCHRUN_NOTE = ("data parallel: torchrun --nproc_per_node N {prog} ... trains in N processes "
                 "(DDP; gloo on the CPU, nccl on CUDA); --batch_size is per process, only "
                 "rank 0 prints and writes.")


def experiment_parser(prog: str | None, description: str, examples: str, *,
                      data_parallel: bool = False) -> argparse.ArgumentParser:
    """The parser of a ``run.py`` pipeline; its epilog lists the registered models and data
    sets and, for a pipeline that trains (``data_parallel``), how to run it under torchrun."""
    note = "\n" + TORCHRUN_NOTE.format(prog=prog or "run.py PIPELINE") if data_parallel else ""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=examples + note +
                                   f"\nmodels: {', '.join(models.list_models())}; timm/<name>."
                                   f"\ndatasets: {', '.join(datasets.list_datasets())}.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def dataset_info(name: str):
    with setup_errors("--dataset"):
        return datasets.dataset_info(name)


def start_run(args, *, project: str, args_file: str = "args.yaml"):
    """Seed, device, data set info, the output folder (with the resolved flags saved in it)
    and the run's logger: ``(device, info, out_dir, log)``. Under torchrun the process
    joins the job first (``log.dist``, :func:`.distributed.setup`) and trains on its own
    device; only rank 0 makes the folder, saves the flags and shows progress bars."""
    torch.manual_seed(args.seed)        # the same on every process: identical initial models
    with setup_errors("torchrun"):
        dist = distributed.setup(args.device)
    info = dataset_info(args.dataset)
    out_dir = Path(args.results)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_args(args, out_dir, args_file)
    else:
        args.verbose = False
    return dist.device, info, out_dir, RunLogger(args, project=project, dist=dist)


def loader(args, split: str, info, shuffle: bool, augment: bool = False, tokenizer=None, *,
           dist: distributed.Distributed | None = None, max_batches: int | None = None):
    """DataLoader of ``args.dataset`` (``dataset_path``, ``batch_size``, ``workers``); a raw
    text data set is tokenized with ``tokenizer`` (the model's).

    With ``dist`` of several processes, a shuffled (training) loader draws this process's
    part through a DistributedSampler seeded with ``args.seed``; an unshuffled (evaluation)
    one holds its contiguous shard of the first ``max_batches`` batches of one process
    (all when None), for evaluators given the same ``dist``."""
    kwargs = {"train_augment": True} if augment and info.task == "classification" else {}
    if info.task == "language_modeling":
        kwargs["max_seq_len"] = getattr(args, "max_seq_len", None)
    if info.needs_tokenizer:
        kwargs["tokenizer"] = tokenizer
    with setup_errors(f"data set {args.dataset!r}"):
        dataset = datasets.create_dataset(args.dataset, root=args.dataset_path, split=split, **kwargs)
    collate = datasets.segmentation_collate if info.task == "segmentation" else None
    sampler = None
    if dist is not None and shuffle:
        sampler = dist.sampler(dataset, seed=args.seed)
    elif dist is not None:
        dataset = dist.shard(dataset, None if max_batches is None else max_batches * args.batch_size)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                       shuffle=shuffle and sampler is None, sampler=sampler,
                                       num_workers=getattr(args, "workers", 0), collate_fn=collate)


def file_stem(model: str) -> str:
    """``model`` as part of a file name: ``"timm/resnet18"`` becomes ``"timm_resnet18"``,
    ``"hf:<path>"`` ``"hf_"`` and the folder's or file's name."""
    if model.startswith("hf:"):
        return "hf_" + Path(model[len("hf:"):].rstrip("/")).stem
    return model.replace("/", "_")


def checkpoint_path(model: str, dataset: str, model_path: str | None) -> Path | None:
    """``model_path``, else the shipped checkpoint of (model, dataset), else None."""
    return Path(model_path) if model_path else SHIPPED_CHECKPOINTS.get((model, dataset))


def build_model(name: str, dataset: str, info, model_path: str | None = None, *,
                train_first: bool = False, random_init: bool = False) -> tuple[torch.nn.Module, str]:
    """The model and where its weights came from: the checkpoint (``model_path`` or the
    shipped one), else the registry's pretrained weights; a random init when
    ``random_init``, or when no checkpoint exists yet and the model is ``train_first``."""
    path = None if random_init else checkpoint_path(name, dataset, model_path)
    pretrained = path is None and not (train_first or random_init)
    # timm's fixed-size models (ViT, Swin, ...) are built for the data set's input size
    size = {"img_size": info.image_size} if name.startswith("timm/") else {}
    with setup_errors(f"model {name!r}"):
        model = models.create_model(name, num_classes=info.num_classes, in_chans=info.in_chans,
                                    pretrained=pretrained, **size)
    if path is not None and path.exists():
        models.load_checkpoint(model, path)
        return model, str(path)
    if path is not None and not train_first:
        raise SystemExit(f"error: checkpoint {path} not found (train one first)")
    return model, "pretrained" if pretrained else "random init"


def build_causal_lm(name: str):
    """``(model, source, tokenizer)`` of an ``hf:<folder>`` causal language model."""
    from models.hf import load_causal_lm, load_hf
    with setup_errors(f"--model {name}"):
        hf = load_hf(name)
        model, tokenizer = load_causal_lm(hf)
    return model, str(hf.path), tokenizer


def full_precision_training(model, args, info, device, log, *, epochs: int, lr: float,
                            save_to: str | Path) -> dict:
    """SGD with Nesterov momentum and a one-cycle schedule for ``epochs`` epochs, test after
    each; the model is saved to ``save_to`` with its test metrics, which are returned.
    Data parallel over the processes of ``log.dist``; rank 0 saves."""
    dist = log.dist
    train = loader(args, "train", info, shuffle=True, augment=True, dist=dist)
    test = loader(args, "test", info, shuffle=False, dist=dist, max_batches=args.max_eval_batches)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4,
                                nesterov=True)
    steps = epochs * (len(train) if args.max_batches is None else min(len(train), args.max_batches))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    metrics = {}
    for epoch in range(epochs):
        loss = train_one_epoch(model, train, optimizer, device, task=info.task,
                               max_batches=args.max_batches, desc=f"pre-train {epoch + 1}/{epochs}",
                               verbose=args.verbose, scheduler=scheduler, dist=dist, epoch=epoch)
        metrics = evaluate(model, test, device, info.task, info.num_classes,
                           max_batches=args.max_eval_batches, verbose=args.verbose, dist=dist)
        name, value = headline(metrics, info.task)
        log.print(f"epoch {epoch + 1}: train loss {loss:.4f}, test {name} {value:.2f}%")
        log.log({"pretrain/loss": loss, f"pretrain/{name}": value}, step=epoch)
    if dist.is_main:
        models.save_checkpoint(model, save_to, arch=args.model, dataset=args.dataset, epochs=epochs,
                               **{f"test_{k}": v for k, v in metrics.items()})
    log.print(f"saved the trained model to {save_to}")
    return metrics
