"""What every compression algorithm of a config is given and offers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Context", "CompressionAlgorithm"]


@dataclass
class Context:
    """The data and settings an algorithm may use when it is applied: ``calibration``
    yields (inputs, targets) batches of the training split, ``loss`` is the task's loss of
    (model output, targets)."""

    calibration: object
    device: torch.device
    loss: Callable
    verbose: bool = True


class CompressionAlgorithm:
    """A config section (``algorithm`` key) turned into a change of the model.

    ``apply`` changes the model in place (and initialises what it inserted);
    ``epoch_start`` is called before every fine-tuning epoch (schedules);
    ``loss`` is a term added to the task loss while fine-tuning (or None);
    ``finalize`` makes the result permanent once training is over (masks multiplied into
    the weights, pruned filters removed: NNCF's ``strip``);
    ``layer_report`` says, per compressed layer, what it became."""

    name = ""

    def __init__(self, section: dict, where: str):
        self.section, self.where = section, where

    def apply(self, model: torch.nn.Module, context: Context) -> None:
        raise NotImplementedError

    def epoch_start(self, model: torch.nn.Module, epoch: int, optimizer) -> None:
        """Nothing by default."""

    def check_with(self, others: list["CompressionAlgorithm"]) -> None:
        """Raise ConfigError if this algorithm cannot run with ``others`` (the config's
        other algorithms); nothing by default."""

    def loss(self) -> torch.Tensor | None:
        """None by default."""
        return None

    def finalize(self, model: torch.nn.Module) -> None:
        """Nothing by default."""

    def layer_report(self, model: torch.nn.Module) -> list[dict]:
        return []
