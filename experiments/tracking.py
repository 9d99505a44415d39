"""Console output and optional Weights & Biases logging of a run.

With ``--wandb`` the run's numbers go to W&B as well; ``WANDB_MODE=offline`` keeps them in
``./wandb`` for a later ``wandb sync``. ``--wandb_key`` logs in first (it is never saved
with the run's arguments).
"""
from __future__ import annotations


class RunLogger:
    def __init__(self, args, project: str = "nnc"):
        self.verbose = getattr(args, "verbose", True)
        self.run = None
        if getattr(args, "wandb", False):
            import wandb
            if args.wandb_key:
                wandb.login(key=args.wandb_key)
            config = {k: v for k, v in vars(args).items() if k != "wandb_key"}
            self.run = wandb.init(project=project, name=args.wandb_run_name, config=config,
                                  dir=args.results)

    def print(self, text: str) -> None:
        print(text, flush=True)

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
