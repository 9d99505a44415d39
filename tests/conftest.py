"""Test-wide settings: offline, deterministic.

The repository root and ``tests/`` (for helpers such as ``golden_cases``) are on the import
path through ``pythonpath`` in ``[tool.pytest.ini_options]`` of pyproject.toml.
"""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
