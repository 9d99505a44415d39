"""Splitting a training set over federated clients: IID, or label-skewed by a Dirichlet
distribution (Hsu et al., "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", 2019): per class, the share of each client is drawn from
Dir(alpha); small alpha gives each client few classes."""
from __future__ import annotations

import numpy as np


def parse_partition(spec: str) -> tuple[str, float | None]:
    """``"iid"`` or ``"dirichlet:ALPHA"`` -> (scheme, alpha); ValueError otherwise."""
    if spec == "iid":
        return "iid", None
    scheme, _, alpha = spec.partition(":")
    try:
        value = float(alpha)
    except ValueError:
        value = -1.0
    if scheme != "dirichlet" or not value > 0:
        raise ValueError(f"partition must be 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, got {spec!r}")
    return scheme, value


def partition_indices(labels, num_clients: int, spec: str = "iid", seed: int = 0) -> list[np.ndarray]:
    """Disjoint index arrays, one per client, covering every sample once."""
    if num_clients < 1:
        raise ValueError("num_clients must be >= 1")
    scheme, alpha = parse_partition(spec)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), num_clients)]
    parts = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients)) * len(members)).astype(int)[:-1]
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]
