"""Schedules of a compression level (the share of zero weights, or of pruned filters) over
fine-tuning epochs, as NNCF's sparsity and filter-pruning ``params`` name them. Epochs count
from 0; ``level(epoch)`` is the level set at the start of that epoch.

- ``polynomial``: from ``init`` at epoch 0 to ``target`` at ``target_epoch`` along
  ``f = epoch / target_epoch``: ``target - (target - init) * (1 - f)^power`` when
  ``concave`` (fast early, the usual choice: weights go while the network still adapts
  easily), else ``init + (target - init) * f^power``;
- ``exponential``: the kept share falls geometrically, ``1 - level`` from ``1 - init`` to
  ``1 - target`` at ``target_epoch`` (every epoch removes the same fraction of what is left);
- ``multistep``: ``levels[i]`` from ``steps[i - 1]`` on (``levels[0]`` before ``steps[0]``);
- ``baseline`` (filter pruning): ``init`` (usually 0) before ``target_epoch``, ``target`` from
  it on.

Each is shifted by ``start_epoch`` (filter pruning's ``num_init_steps``: epochs of plain
fine-tuning first) and reaches its target at ``start_epoch + target_epoch``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError

__all__ = ["LevelSchedule", "SCHEDULES", "make_schedule"]


@dataclass(frozen=True)
class LevelSchedule:
    kind: str
    init: float
    target: float
    target_epoch: int
    start_epoch: int = 0
    power: float = 0.9
    concave: bool = True
    steps: tuple[int, ...] = ()
    levels: tuple[float, ...] = ()

    def level(self, epoch: int) -> float:
        epoch -= self.start_epoch
        if epoch < 0:
            return 0.0 if self.start_epoch else self.init
        return SCHEDULES[self.kind](self, epoch)


def _fraction(s: LevelSchedule, epoch: int) -> float:
    return 1.0 if s.target_epoch <= 0 else min(1.0, epoch / s.target_epoch)


def _polynomial(s: LevelSchedule, epoch: int) -> float:
    f = _fraction(s, epoch)
    if s.concave:
        return s.target - (s.target - s.init) * (1 - f) ** s.power
    return s.init + (s.target - s.init) * f ** s.power


def _exponential(s: LevelSchedule, epoch: int) -> float:
    kept_init, kept_target = 1 - s.init, 1 - s.target      # both > 0: levels are below 1
    return 1 - kept_init * (kept_target / kept_init) ** _fraction(s, epoch)


def _multistep(s: LevelSchedule, epoch: int) -> float:
    return s.levels[sum(epoch >= step for step in s.steps)]


def _baseline(s: LevelSchedule, epoch: int) -> float:
    return s.target if epoch >= s.target_epoch else s.init


# schedule name -> its level at an epoch (counted from start_epoch)
SCHEDULES = {"polynomial": _polynomial, "exponential": _exponential,
             "multistep": _multistep, "baseline": _baseline}


def _share(value, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{where}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _epochs(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {name} must be an integer >= 0, got {value!r}")
    return value


def make_schedule(kind: str, *, init, target, target_epoch, where: str, start_epoch=0,
                  power=0.9, concave=True, steps=(), levels=()) -> LevelSchedule:
    """A checked schedule; ``where`` names the config section in errors."""
    if kind not in SCHEDULES:
        raise ConfigError(f"{where}: schedule {kind!r} is unknown (known: {', '.join(SCHEDULES)})")
    init, target = _share(init, "the initial level", where), _share(target, "the target level", where)
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
        raise ConfigError(f"{where}: power must be a positive number, got {power!r}")
    if not isinstance(concave, bool):
        raise ConfigError(f"{where}: concave must be true or false, got {concave!r}")
    if kind == "multistep":
        steps, levels = list(steps), list(levels)
        if not levels or len(levels) != len(steps) + 1:
            raise ConfigError(f"{where}: multistep_sparsity_levels needs one level more than "
                              f"multistep_steps ({len(steps)} steps, {len(levels)} levels)")
        steps = [_epochs(v, "a multistep step", where) for v in steps]
        if steps != sorted(set(steps)):
            raise ConfigError(f"{where}: multistep_steps must increase, got {steps}")
        levels = [_share(v, "a multistep level", where) for v in levels]
        init, target = levels[0], levels[-1]
    return LevelSchedule(kind, init, target, _epochs(target_epoch, "the target epoch", where),
                         _epochs(start_epoch, "the start epoch", where), float(power), concave,
                         tuple(steps), tuple(levels))
