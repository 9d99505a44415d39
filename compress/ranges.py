"""Range initialisation of activation quantizers from calibration data: the initialisers of
NNCF's ``"initializer": {"range": {"type": ...}}``.

An :class:`Observer` sees the batches of one quantizer's input and gives ``(low, high)``:

- ``min_max``: the smallest and largest value seen over all batches;
- ``mean_min_max``: the mean over batches of each batch's minimum and maximum (less
  sensitive to one outlier batch);
- ``percentile``: the ``min_percentile`` and ``max_percentile`` (default 0.1 and 99.9) of
  the values seen, from a fixed-size random sample of each batch;
- ``threesigma``: the median ± 3 standard deviations of the values seen.

Per-channel observers keep the statistics of every channel (``axis``).
"""
from __future__ import annotations

import torch

__all__ = ["Observer", "OBSERVERS", "create_observer"]

SAMPLE_PER_BATCH = 65536


class Observer:
    """Collects statistics of a tensor's batches; :meth:`range` gives ``(low, high)``."""

    def __init__(self, per_channel: bool = False, axis: int = 1):
        self.per_channel, self.axis = per_channel, axis
        self.batches = 0

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as rows of values: one row per channel, or a single row."""
        x = x.detach().float()
        if self.per_channel:
            return x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        return x.reshape(1, -1)

    def update(self, x: torch.Tensor) -> None:
        self.batches += 1
        self._update(self._rows(x))

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batches:
            raise RuntimeError("the observer has seen no data: calibration ran no batch "
                               "through this quantizer")
        low, high = self._range()
        return (low, high) if self.per_channel else (low[0], high[0])


class MinMax(Observer):
    def __init__(self, per_channel: bool = False, axis: int = 1):
        super().__init__(per_channel, axis)
        self.low = self.high = None

    def _update(self, rows):
        low, high = rows.min(1).values, rows.max(1).values
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)

    def _range(self):
        return self.low, self.high


class MeanMinMax(Observer):
    def __init__(self, per_channel: bool = False, axis: int = 1):
        super().__init__(per_channel, axis)
        self.low_sum = self.high_sum = 0.0

    def _update(self, rows):
        self.low_sum = self.low_sum + rows.min(1).values
        self.high_sum = self.high_sum + rows.max(1).values

    def _range(self):
        return self.low_sum / self.batches, self.high_sum / self.batches


class _Sampled(Observer):
    """Keeps a random sample of every batch's values (per row), for order statistics."""

    def __init__(self, per_channel: bool = False, axis: int = 1, seed: int = 0):
        super().__init__(per_channel, axis)
        self.samples = []
        self.generator = torch.Generator().manual_seed(seed)

    def _update(self, rows):
        if rows.shape[1] > SAMPLE_PER_BATCH:
            pick = torch.randint(rows.shape[1], (SAMPLE_PER_BATCH,), generator=self.generator)
            rows = rows[:, pick]
        self.samples.append(rows)

    def values(self) -> torch.Tensor:
        return torch.cat(self.samples, dim=1)


class Percentile(_Sampled):
    def __init__(self, per_channel: bool = False, axis: int = 1, min_percentile: float = 0.1,
                 max_percentile: float = 99.9):
        super().__init__(per_channel, axis)
        if not 0 <= min_percentile < max_percentile <= 100:
            raise ValueError("percentiles must satisfy 0 <= min_percentile < max_percentile "
                             f"<= 100, got {min_percentile} and {max_percentile}")
        self.quantiles = torch.tensor([min_percentile / 100, max_percentile / 100])

    def _range(self):
        low, high = torch.quantile(self.values(), self.quantiles, dim=1)
        return low, high


class ThreeSigma(_Sampled):
    def _range(self):
        values = self.values()
        median, sigma = values.median(1).values, values.std(1)
        return median - 3 * sigma, median + 3 * sigma


# NNCF's range type -> observer (parameters of "params" are its keyword arguments)
OBSERVERS = {"min_max": MinMax, "mean_min_max": MeanMinMax, "percentile": Percentile,
             "threesigma": ThreeSigma}


def create_observer(kind: str, per_channel: bool = False, axis: int = 1, **params) -> Observer:
    """The observer of range type ``kind``; unknown types and parameters are errors."""
    if kind not in OBSERVERS:
        raise ValueError(f"unknown range initializer {kind!r} (known: {', '.join(OBSERVERS)})")
    try:
        return OBSERVERS[kind](per_channel=per_channel, axis=axis, **params)
    except TypeError as error:
        raise ValueError(f"range initializer {kind!r}: {error}") from None
