"""Compression configs in NNCF's JSON shape (the ``NNCFConfig`` of NNCF 2.x)::

    {"input_info": {"sample_size": [1, 1, 28, 28]},
     "compression": [{"algorithm": "quantization",
                      "initializer": {"range": {"num_init_samples": 256, "type": "mean_min_max"}},
                      "weights": {"mode": "symmetric", "bits": 8, "per_channel": true},
                      "activations": {"mode": "asymmetric", "bits": 8}}]}

``compression`` is one algorithm section or a list of them, applied in order. Every section
is checked by its algorithm (:data:`ALGORITHMS`); an unknown key anywhere is an error that
names it and its place, so that a misspelt option never goes unnoticed.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ConfigError", "CompressionConfig", "load_config", "check_keys", "ALGORITHMS",
           "register_algorithm", "integer_option", "adaptation_samples"]

TOP_KEYS = {"input_info", "compression", "description"}
INPUT_INFO_KEYS = {"sample_size", "type"}


class ConfigError(ValueError):
    """A compression config that cannot be applied as written."""


# algorithm name -> class taking (section) and checking it
ALGORITHMS: dict[str, type] = {}


def register_algorithm(name: str):
    def decorator(cls):
        ALGORITHMS[name] = cls
        cls.name = name
        return cls
    return decorator


def check_keys(section: dict, allowed: set, where: str) -> dict:
    """``section`` if it is a dict whose keys are all ``allowed``, else ConfigError."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected an object, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(sorted(allowed))})")
    return section


def integer_option(section: dict, key: str, default: int, least: int, where: str) -> int:
    """``section[key]`` (or ``default``), an integer of at least ``least``, else ConfigError."""
    value = section.get(key, default)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        raise ConfigError(f"{where}: {key} must be an integer >= {least}, got {value!r}")
    return value


def adaptation_samples(initializer: dict, default: int, where: str) -> int:
    """``initializer.batchnorm_adaptation.num_bn_adaptation_samples``, checked."""
    where = f"{where}: initializer.batchnorm_adaptation"
    adaptation = check_keys(initializer.get("batchnorm_adaptation", {}), {"num_bn_adaptation_samples"}, where)
    return integer_option(adaptation, "num_bn_adaptation_samples", default, 0, where)


class CompressionConfig:
    """A checked config: ``sample_size`` (the model input, batch first) and the
    algorithm objects in order."""

    def __init__(self, raw: dict, source: str = "config"):
        check_keys(raw, TOP_KEYS, source)
        if "compression" not in raw:
            raise ConfigError(f"{source}: no 'compression' section")
        info = check_keys(raw.get("input_info", {}), INPUT_INFO_KEYS, f"{source}: input_info")
        size = info.get("sample_size")
        if size is not None and not (isinstance(size, list) and all(isinstance(d, int) and d > 0 for d in size)):
            raise ConfigError(f"{source}: input_info.sample_size must be a list of positive "
                              f"integers, got {size!r}")
        if info.get("type", "float") != "float":
            raise ConfigError(f"{source}: input_info.type {info['type']!r} is not supported "
                              "(the models here take float inputs)")
        self.sample_size = size
        sections = raw["compression"]
        sections = sections if isinstance(sections, list) else [sections]
        if not sections:
            raise ConfigError(f"{source}: 'compression' lists no algorithm")
        self.algorithms = []
        for i, section in enumerate(sections):
            where = f"{source}: compression[{i}]"
            if not isinstance(section, dict) or "algorithm" not in section:
                raise ConfigError(f"{where}: expected an object with an 'algorithm' key")
            name = section["algorithm"]
            if name not in ALGORITHMS:
                raise ConfigError(f"{where}: unknown algorithm {name!r} (known: "
                                  f"{', '.join(sorted(ALGORITHMS))})")
            self.algorithms.append(ALGORITHMS[name](section, where))
        for algorithm in self.algorithms:
            algorithm.check_with([a for a in self.algorithms if a is not algorithm])
        self.raw = raw

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.algorithms]


def load_config(path: str | Path) -> CompressionConfig:
    """Read and check a JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return CompressionConfig(raw, str(path))
