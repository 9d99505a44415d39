"""Bandwidth traces and the offloading timeline (Wang et al., RTSS 2023, Sec. VI-C).

A trace is a piecewise-constant bandwidth: segment start times (s) and rates (bytes/s).
Images are released periodically, one every ``deadline`` seconds; image ``i`` may use the
link from its release plus the sender's encoding time until the release of the next image
(its deadline), so its byte budget is the integral of the bandwidth over that window.
``constant`` and ``jamming`` traces are built in (a jammer knocks the rate down to a
fraction during random bursts); users bring their own as CSV files of ``time_s,kbps``
lines (the rate holds from that time until the next line).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Trace:
    name: str
    times: np.ndarray          # segment start times, increasing, times[0] == 0
    rates: np.ndarray          # bytes per second in each segment

    def __post_init__(self):
        if len(self.times) == 0 or len(self.times) != len(self.rates) or self.times[0] != 0:
            raise ValueError("a trace needs matching times and rates starting at time 0")
        if (np.diff(self.times) <= 0).any() or (self.rates < 0).any():
            raise ValueError("trace times must increase and rates must be non-negative")

    def delivered(self, t) -> np.ndarray:
        """Bytes the link carries from time 0 to ``t`` (array-valued)."""
        t = np.asarray(t, dtype=np.float64)
        ends = np.append(self.times[1:], np.inf)
        spans = np.clip(t[..., None] - self.times, 0.0, ends - self.times)
        return (spans * self.rates).sum(-1)

    def budgets(self, count: int, deadline: float, encode_seconds: float = 0.0) -> np.ndarray:
        """Whole bytes available to each of ``count`` images released every ``deadline`` s."""
        release = np.arange(count) * deadline
        start = release + min(encode_seconds, deadline)
        # a tolerance keeps float round-off (0.1 + 0.2) from costing a whole byte
        return np.floor(self.delivered(release + deadline) - self.delivered(start) + 1e-6).astype(np.int64)

    @classmethod
    def constant(cls, kbps: float) -> "Trace":
        return cls(f"constant {kbps:g} kbit/s", np.zeros(1), np.array([kbps * 125.0]))

    @classmethod
    def jamming(cls, kbps: float, duration: float, *, jammed_share: float = 0.3,
                burst: float = 0.5, residual: float = 0.1, seed: int = 0) -> "Trace":
        """``kbps`` with bursts of ``burst`` seconds in which the rate falls to ``residual``
        of it, covering about ``jammed_share`` of ``duration``."""
        rng = np.random.default_rng(seed)
        slots = int(np.ceil(duration / burst))
        jammed = rng.random(slots) < jammed_share
        rates = np.where(jammed, residual, 1.0) * kbps * 125.0
        return cls(f"jamming {kbps:g} kbit/s ({jammed_share:.0%} jammed)",
                   np.arange(slots) * burst, rates)

    @classmethod
    def from_csv(cls, path: str | Path) -> "Trace":
        rows = []
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().startswith("#") or not _is_number(row[0]):
                    continue
                rows.append((float(row[0]), float(row[1])))
        if not rows:
            raise ValueError(f"{path}: no 'time_s,kbps' rows")
        times, kbps = map(np.array, zip(*rows))
        return cls(Path(path).stem, times, kbps * 125.0)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        lines = ["time_s,kbps"] + [f"{t:g},{r / 125.0:g}" for t, r in zip(self.times, self.rates)]
        path.write_text("\n".join(lines) + "\n")
        return path


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
