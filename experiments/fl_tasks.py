"""What the clients of ``run.py fl`` train: one task per kind of data set.

A task holds the model and the clients' shares of the training set and trains the model
locally for one round (:class:`nnc_core.fl.flower.Task`). ``VisionTask`` trains a
classifier on a share of an image data set (IID or Dirichlet label-skewed);
``LanguageTask`` trains a causal language model on one client's token file (the V2X
telemetry of the EuCNC 2025 use case: a client per region), with AdamW, linear warm-up and
cosine decay over the federation's steps and gradients clipped to norm 1.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

import datasets
from datasets.partition import partition_indices
from nnc_core.checkpoints import tied_names
from nnc_core.nn import batchnorm_blocks

from .builders import build_model, dataset_info, setup_errors
from .engine import evaluate, train_one_epoch

WARMUP_SHARE = 0.05        # of the training steps


def cosine_with_warmup(steps: int, warmup_share: float = WARMUP_SHARE):
    """``LambdaLR`` factor: linear warm-up, then cosine decay to zero at ``steps``."""
    warmup = max(1, int(warmup_share * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))
    return factor


def float_state(model) -> dict[str, np.ndarray]:
    """The model's float tensors (weights, biases, BatchNorm statistics), in order; a tensor
    tied to an earlier one (a language model's output layer and embedding) only under the
    first name, so that it travels once."""
    state = model.state_dict()
    ties = tied_names(state)
    return {k: v.detach().cpu().numpy().astype(np.float32).copy()
            for k, v in state.items() if v.is_floating_point() and k not in ties}


def adamw(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not on norms and biases)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


class LocalTraining:
    """One round of local training of ``self.model`` on a client's data (subclasses give
    ``client_data`` and, optionally, a learning-rate schedule and gradient clipping)."""

    clip_grad: float | None = None

    def template(self) -> dict[str, np.ndarray]:
        return float_state(self.model)

    def batchnorm_blocks(self):
        return batchnorm_blocks(self.model)

    def client_data(self, partition: int):
        raise NotImplementedError

    def schedule(self, server_round: int):
        """``LambdaLR`` factor of the round's local steps, or None for a constant rate."""
        return None

    def train(self, weights, partition: int, server_round: int):
        torch.set_num_threads(1)
        torch.manual_seed(self.args.seed + 1000 * server_round + partition)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()},
                                   strict=False)
        data = self.client_data(partition)
        batches = torch.utils.data.DataLoader(data, batch_size=self.args.batch_size, shuffle=True)
        optimizer = adamw(self.model, self.args.lr, self.args.weight_decay)
        factor = self.schedule(server_round)
        scheduler = None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        loss = train_one_epoch(self.model, batches, optimizer, "cpu", task=self.info.task,
                               max_batches=self.args.max_batches, verbose=False,
                               scheduler=scheduler, clip_grad=self.clip_grad)
        samples = min(len(data), self.args.max_batches * self.args.batch_size)
        return float_state(self.model), samples, {"train_loss": loss}

    def evaluate(self, weights, test_loader) -> dict:
        model = copy.deepcopy(self.model)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        metrics = evaluate(model, test_loader, "cpu", self.info.task, self.info.num_classes,
                           max_batches=self.args.max_batches_test or None, verbose=False)
        out = {"accuracy": metrics.get("top1", metrics.get("mIoU", 0.0)),
               "test_loss": metrics["loss"]}
        if "perplexity" in metrics:
            out["perplexity"] = metrics["perplexity"]
        return out


class VisionTask(LocalTraining):
    """A registered image model on one client's share (``--partition``) of a data set."""

    def __init__(self, args):
        torch.manual_seed(args.seed)
        self.args, self.info = args, dataset_info(args.dataset)
        self.model, _ = build_model(args.model, args.dataset, self.info, args.model_path,
                                    random_init=args.model_rand_int)
        with setup_errors(f"data set {args.dataset!r}"):
            self.train_set = datasets.create_dataset(args.dataset, root=args.dataset_path,
                                                     split="train")
        labels = getattr(self.train_set, "targets", None)
        if labels is None:
            labels = [self.train_set[i][1] for i in range(len(self.train_set))]
        self.parts = partition_indices(np.asarray(labels), args.num_clients,
                                       args.partition, args.seed)

    def client_data(self, partition: int):
        return torch.utils.data.Subset(self.train_set, self.parts[partition].tolist())


class LanguageTask(LocalTraining):
    """A causal language model (``--model tinyllama --TLM_size N``) on token files, one per
    client (``--partition regions``) or pooled and split evenly (``--partition iid``)."""

    clip_grad = 1.0

    def __init__(self, args):
        torch.manual_seed(args.seed)
        self.args, self.info = args, dataset_info(args.dataset)
        self.model = build_language_model(args, self.info)
        with setup_errors(f"data set {args.dataset!r}"):
            files = datasets.v2x.num_clients(datasets.v2x.resolve_root(args.dataset_path))
            # one data set per file: a client's records are its region's
            self.files = [datasets.create_dataset(args.dataset, root=args.dataset_path,
                                                  split="train", client=c,
                                                  max_seq_len=args.max_seq_len)
                          for c in range(files)]
        if args.partition == "regions":
            if args.num_clients != files:
                raise ValueError(f"--partition regions gives one client per file: "
                                 f"{args.dataset} has {files}, not --num_clients {args.num_clients}")
            self.parts = self.files
        elif args.partition == "iid":
            pooled = torch.utils.data.ConcatDataset(self.files)
            order = np.random.default_rng(args.seed).permutation(len(pooled))
            self.parts = [torch.utils.data.Subset(pooled, share.tolist())
                          for share in np.array_split(order, args.num_clients)]
        else:
            raise ValueError(f"--partition for {args.dataset} must be 'regions' or 'iid', "
                             f"got {args.partition!r}")

    def client_data(self, partition: int):
        return self.parts[partition]

    def schedule(self, server_round: int):
        factor = cosine_with_warmup(self.args.epochs * self.args.max_batches)
        done = (server_round - 1) * self.args.max_batches
        return lambda step: factor(done + step)


def build_language_model(args, info):
    """``args.model`` (tinyllama) at ``--TLM_size`` for the data set's vocabulary; weights
    from ``--model_path`` unless ``--model_rand_int``."""
    import models
    with setup_errors(f"model {args.model!r}"):
        model = models.create_model(args.model, size=args.TLM_size, vocab_size=info.num_classes,
                                    max_seq_len=args.max_seq_len)
    if args.model_path and not args.model_rand_int:
        models.load_checkpoint(model, args.model_path)
    return model


# data set task -> the federated task that trains it
TASKS = {"classification": VisionTask, "segmentation": VisionTask,
         "language_modeling": LanguageTask}


def create_task(args):
    return TASKS[dataset_info(args.dataset).task](args)
