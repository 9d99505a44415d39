"""Local Hugging Face checkpoints, named ``hf:<path>`` (``main.py --model hf:<path>``).

``<path>`` is a model folder as Hugging Face writes it (``config.json`` and its weights in
``model.safetensors``, or sharded into several ``*.safetensors`` files listed by
``model.safetensors.index.json``) or a bare ``.safetensors`` file. The tensors are read
lazily through :func:`nnc_core.checkpoints.read_checkpoint`. Nothing is downloaded: a hub
id that is not a local path is an error saying what was expected.

A folder whose config names a causal language model is also built as one by
:func:`load_causal_lm` (with the optional ``transformers`` package), together with its
tokenizer, so that ``main.py`` can measure its perplexity before and after coding.
"""
from __future__ import annotations

import json
from pathlib import Path

from nnc_core.checkpoints import Checkpoint, read_checkpoint

__all__ = ["PREFIX", "is_hf", "HFCheckpoint", "load_hf", "load_causal_lm"]

PREFIX = "hf:"
EXPECTED = ("a local Hugging Face model folder (config.json and *.safetensors, sharded or "
            "not) or a .safetensors file; nothing is downloaded")


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


class HFCheckpoint:
    """The tensors of an ``hf:`` checkpoint and its ``config.json`` (empty if it has none)."""

    def __init__(self, path: Path, tensors: Checkpoint, config: dict):
        self.path, self.tensors, self.config = path, tensors, config

    @property
    def architecture(self) -> str | None:
        """The class named by config.json (``architectures[0]``), if any."""
        names = self.config.get("architectures") or []
        return names[0] if names else None


def load_hf(name: str) -> HFCheckpoint:
    """Open ``hf:<path>``; FileNotFoundError if the path does not exist, ValueError if it
    is neither a folder nor a .safetensors file (both messages say what was expected)."""
    if not is_hf(name):
        raise ValueError(f"{name!r} is not an hf: name (expected hf:<path>, {EXPECTED})")
    path = Path(name[len(PREFIX):]).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected {EXPECTED})")
    if path.is_file() and path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path} is not a .safetensors file (expected {EXPECTED})")
    tensors = read_checkpoint(path)
    config_file = path / "config.json" if path.is_dir() else None
    config = {}
    if config_file is not None and config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_file}: not a JSON config ({error})") from None
    return HFCheckpoint(path, tensors, config if isinstance(config, dict) else {})


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("evaluating an hf: model needs the transformers package "
                          "(pip install transformers); coding its tensors does not") from None
    return transformers


def load_causal_lm(hf: HFCheckpoint):
    """``(model, tokenizer)`` of a causal language model folder: the model in float32 (the
    precision NNC codes from) in eval mode, and a function from text to token ids (the
    folder's tokenizer, special tokens such as BOS added as the model expects them).
    Everything is read from the folder (``local_files_only``)."""
    if not (hf.path.is_dir() and hf.config):
        raise ValueError(f"{hf.path}: evaluating needs a model folder with its config.json "
                         "and tokenizer; a bare .safetensors file has no architecture")
    transformers = _transformers()
    import torch

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(hf.path, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            hf.path, local_files_only=True, dtype=torch.float32)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{hf.path} is not a causal language model folder transformers "
                         f"can read ({error})") from None

    def encode(text: str) -> list[int]:
        # verbose=False: a whole corpus is longer than the model's context, by design
        return tokenizer(text, verbose=False)["input_ids"]

    return model.eval(), encode
