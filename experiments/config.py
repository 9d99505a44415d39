"""Command-line arguments with YAML defaults, as in timm's ``train.py``.

``--config file.yaml`` supplies defaults for any flag (keys are the flag names without
dashes); flags given on the command line win. A pipeline whose ``--config`` is its own
file (``run.py compress``: an NNCF-style JSON config) says so to :func:`add_run_arguments`. The resolved arguments are saved next to
each run's results so that the run can be repeated exactly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` replace the parser's defaults first."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config and getattr(parser, "config_holds_flags", True):
        parser.set_defaults(**load_config(parser, known.config))
    return parser.parse_args(argv)


def load_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The YAML mapping in ``path``, checked against the parser's flags."""
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise SystemExit(f"error: {path} must hold a mapping of flag names to values")
    flags = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - flags)
    if unknown:
        raise SystemExit(f"error: {path}: unknown setting(s) {', '.join(unknown)}")
    return values


def save_args(args: argparse.Namespace, directory: str | Path, name: str = "args.yaml") -> Path:
    """Write the resolved arguments (secrets removed) as YAML; returns the path."""
    values = {k: v for k, v in vars(args).items() if k != "wandb_key"}
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(values, f, sort_keys=True)
    return path


def add_run_arguments(parser: argparse.ArgumentParser, results: str, *,
                      config: tuple[str, str] | None = None) -> None:
    """The flags every experiment script shares: device, seed, output, config, W&B, verbosity.
    ``config``: ``(default, help)`` of a pipeline whose ``--config`` is its own file (not
    YAML flag defaults)."""
    add = parser.add_argument
    add("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    add("--seed", type=int, default=0)
    add("--results", default=results, help=f"output directory (default {results})")
    if config is None:
        add("--config", default=None, help="YAML file of flag defaults (command-line flags win)")
    else:
        add("--config", default=config[0], help=config[1])
        parser.config_holds_flags = False
    add("--wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline works)")
    add("--wandb_key", default=None, help="W&B API key (never saved)")
    add("--wandb_run_name", default=None)
    add("--verbose", action=argparse.BooleanOptionalAction, default=True,
        help="progress bars and result tables")
