"""Data-parallel training over the processes that ``torchrun`` starts.

``torchrun --nproc_per_node N main.py ...`` (or ``run.py ...``) starts N copies of a script
and tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` reads it, joins the process group once
(``nccl`` when the device is CUDA, else ``gloo``) and returns the run's
:class:`Distributed`; started without torchrun, it returns a one-process context whose
helpers leave everything as it is.

What every training loop does with it:

* ``--batch_size`` is per process, as in timm and NNCF: one optimizer step sees
  ``N * batch_size`` samples. ``--max_batches`` caps the steps per epoch, the same on every
  process, so N processes train on N times the samples of one;
* a :class:`~torch.utils.data.distributed.DistributedSampler` splits the training data,
  shuffled from the run's seed and the epoch; it repeats up to N - 1 samples so that every
  process takes as many steps;
* the model trains wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages the gradients; BatchNorm statistics are each process's own, and rank 0's are
  copied to the others after every epoch (DDP copies them before every forward pass);
* evaluation splits the samples one process would test (the first ``max_eval_batches``
  batches, or all) into contiguous shards without padding and adds up the counts and sums
  over the processes, so the metrics are those of one process;
* only rank 0 prints, shows progress bars, logs to W&B and writes files.
"""
from __future__ import annotations

import atexit
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .engine import pick_device

# torchrun's variables that place a process in the job
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}

_joined: Distributed | None = None      # the context of the process group this process joined


class DistributedError(RuntimeError):
    """The process cannot take part in the data-parallel job as asked."""


@dataclass(eq=False)
class Distributed:
    """Where this process stands in the job, and the collective steps the loops need.
    Every method is a no-op (or returns its input) in a one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    _wrapped: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, *, find_unused_parameters: bool = True) -> torch.nn.Module:
        """``model`` in DistributedDataParallel, made on the first call and returned by every
        later one (a second wrapper would reduce every gradient twice); ``model`` itself
        in a one-process run. Evaluate the unwrapped model: a DDP forward pass is a
        collective step, which shards of different lengths would leave unmatched.

        ``find_unused_parameters`` (on by default) lets DDP skip parameters a step does not
        use, at the cost of a walk over the autograd graph per step: the loops train any
        model, with heads the loss ignores (segmentation's auxiliary classifier) or
        quantizers and masks that compression algorithms switch on and off."""
        if not self.enabled:
            return model
        if model not in self._wrapped:
            from torch.nn.parallel import DistributedDataParallel
            devices = [self.device] if self.device.type == "cuda" else None
            self._wrapped[model] = DistributedDataParallel(
                model, device_ids=devices, find_unused_parameters=find_unused_parameters)
        return self._wrapped[model]

    def sampler(self, dataset, seed: int, shuffle: bool = True):
        """The DistributedSampler of a training set (shuffled from ``seed`` and the epoch);
        None in a one-process run (the loader shuffles as before)."""
        if not self.enabled:
            return None
        from torch.utils.data.distributed import DistributedSampler
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                  shuffle=shuffle, seed=seed)

    def shard(self, dataset, limit: int | None = None):
        """This process's contiguous part of the first ``limit`` samples (all when None)
        of an evaluation set, without padding; the data set itself in a one-process run."""
        if not self.enabled:
            return dataset
        start, stop = shard_bounds(len(dataset), self.rank, self.world_size, limit)
        return torch.utils.data.Subset(dataset, range(start, stop))

    @staticmethod
    def set_epoch(loader, epoch: int) -> None:
        """Give the loader's DistributedSampler the epoch, so that each epoch is shuffled anew."""
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)

    def all_reduce_sums(self, *values: float) -> tuple[float, ...]:
        """The sums over all processes of numbers every process has (counts are exact in
        float64 up to 2^53)."""
        if not self.enabled:
            return values
        import torch.distributed as dist
        totals = torch.tensor(values, dtype=torch.float64, device=self._transport)
        dist.all_reduce(totals)
        return tuple(totals.tolist())

    def mean(self, value: float) -> float:
        """The mean of a number over the processes (of equal weight: as many samples each)."""
        return self.all_reduce_sums(value)[0] / self.world_size

    def all_reduce_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Replace each tensor by its sum over all processes, in place."""
        if not self.enabled:
            return
        import torch.distributed as dist
        for tensor in tensors:
            moved = tensor.to(self._transport)
            dist.all_reduce(moved)
            if moved is not tensor:
                tensor.copy_(moved)

    @torch.no_grad()
    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every process."""
        if not self.enabled:
            return
        import torch.distributed as dist
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. for a file rank 0 writes)."""
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    @property
    def _transport(self) -> torch.device:
        """Where collective tensors live: NCCL reduces CUDA tensors only."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def shard_bounds(length: int, rank: int, world_size: int, limit: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of process ``rank``'s shard of the first ``limit`` of ``length``
    samples: contiguous, sizes differing by at most one, together each sample once."""
    total = length if limit is None else min(length, limit)
    return total * rank // world_size, total * (rank + 1) // world_size


def setup(device: str | None = None, backend: str | None = None) -> Distributed:
    """The context of this process: under torchrun the process joins the process group
    (once; later calls return the same context), its device is ``cuda:LOCAL_RANK`` when
    ``device`` is None or ``"cuda"`` and CUDA is there, else the CPU; ``backend`` defaults
    to ``nccl`` on CUDA and ``gloo`` on the CPU. Without torchrun (``WORLD_SIZE`` unset or
    1): one process on ``device`` (as :func:`~experiments.engine.pick_device`), no group.

    Raises :class:`DistributedError` when torchrun's environment is incomplete, when
    torch.distributed or the backend is missing, or when the device does not fit."""
    global _joined
    world_size = _int_variable("WORLD_SIZE", default=1)
    if world_size <= 1:
        return Distributed(device=pick_device(device))
    if _joined is not None:
        if device is not None and _device(device, _joined.local_rank) != _joined.device:
            raise DistributedError(f"this process already trains on {_joined.device}, not {device}")
        return _joined
    missing = [name for name in ENVIRONMENT if name not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: "
                               "start data-parallel runs with torchrun")
    import torch.distributed as dist
    if not dist.is_available():
        raise DistributedError(f"WORLD_SIZE={world_size}, but this torch build has no "
                               "torch.distributed")
    rank, local_rank = _int_variable("RANK"), _int_variable("LOCAL_RANK")
    chosen = _device(device, local_rank)
    backend = backend or BACKENDS.get(chosen.type)
    _check_backend(backend, chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                device_id=chosen if backend == "nccl" else None)
        atexit.register(shutdown)
    _joined = Distributed(rank=rank, world_size=world_size, local_rank=local_rank,
                          device=chosen, backend=backend)
    return _joined


def shutdown() -> None:
    """Leave the process group (at exit; a later :func:`setup` joins a new one)."""
    global _joined
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _joined = None


def _int_variable(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistributedError(f"{name}={value!r} is not an integer") from None


def _device(name: str | None, local_rank: int) -> torch.device:
    """The device of process ``local_rank`` of this machine: one GPU each."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(name)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(f"--device {name}: CUDA is not available")
        if chosen.index is not None:
            raise DistributedError(f"--device {name} names one GPU for every process; give "
                                   "--device cuda (process LOCAL_RANK uses cuda:LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank}, but only "
                                   f"{torch.cuda.device_count()} GPU(s): one process per GPU")
        return torch.device("cuda", local_rank)
    if chosen.type != "cpu":
        raise DistributedError(f"--device {name}: data-parallel training runs on cpu or cuda")
    return chosen


def _check_backend(backend: str | None, device: torch.device) -> None:
    import torch.distributed as dist
    if backend == "nccl":
        if device.type != "cuda":
            raise DistributedError(f"the nccl backend needs CUDA, the device is {device}")
        if not dist.is_nccl_available():
            raise DistributedError("the nccl backend is not part of this torch build")
    elif backend == "gloo":
        if not dist.is_gloo_available():
            raise DistributedError("the gloo backend is not part of this torch build")
    else:
        raise DistributedError(f"unknown backend {backend!r} (nccl, gloo)")
