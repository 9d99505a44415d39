"""Console output and optional Weights & Biases logging of a run.

With ``--wandb`` the run's numbers go to W&B as well; ``WANDB_MODE=offline`` keeps them in
``./wandb`` for a later ``wandb sync``. ``--wandb_key`` logs in first (it is never saved
with the run's arguments). In a data-parallel run only rank 0 prints and logs; the others
stay quiet.
"""
from __future__ import annotations

from .distributed import Distributed


class RunLogger:
    """Prints and logs for the run; ``dist`` (a one-process context by default) says which
    process this is, and the loops of the run take it from here."""

    def __init__(self, args, project: str = "nnc", dist: Distributed | None = None):
        self.dist = dist or Distributed()
        self.verbose = getattr(args, "verbose", True)
        self.run = None
        if getattr(args, "wandb", False) and self.dist.is_main:
            import wandb
            if args.wandb_key:
                wandb.login(key=args.wandb_key)
            config = {k: v for k, v in vars(args).items() if k != "wandb_key"}
            self.run = wandb.init(project=project, name=args.wandb_run_name, config=config,
                                  dir=args.results)

    def print(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
