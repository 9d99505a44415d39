"""Plain text as next-token windows, for the perplexity of a causal language model.

The text of a split is tokenized once with the model's own tokenizer (``tokenizer``: a
callable from a string to token ids) and cut into windows of ``max_seq_len`` tokens that
overlap by one, so that every token but the first is predicted exactly once and only from
tokens of its own window (the fixed-window perplexity of the Hugging Face perplexity guide
with stride equal to the window). An item is ``(x, y) = (window[:-1], window[1:])``; the
last window is padded, its padding targets being ``IGNORED_TARGET``.

``root`` is a ``.txt`` (or ``.raw``) file, read as the test split, or a folder holding
``{train,val,test}.txt`` or WikiText's ``wiki.{train,valid,test}.raw`` (Merity et al.,
"Pointer Sentinel Mixture Models", 2016). Without ``root`` the data is looked for in
``$NNC_DATA_ROOT/wikitext-2-raw-v1``; nothing is downloaded.
"""
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .registry import DATA_ROOT, IGNORED_TARGET, DatasetInfo, register_dataset

__all__ = ["TextWindows", "split_file", "DEFAULT_ROOT"]

DEFAULT_ROOT = os.path.join(DATA_ROOT, "wikitext-2-raw-v1")
DEFAULT_WINDOW = 256
# file names tried for a split in a folder, in order
SPLIT_FILES = {"train": ("train.txt", "wiki.train.raw"),
               "val": ("val.txt", "valid.txt", "wiki.valid.raw"),
               "test": ("test.txt", "wiki.test.raw")}


def split_file(root: str, split: str) -> str:
    """The file holding ``split`` under ``root`` (a file is the test split)."""
    if os.path.isfile(root):
        if split != "test":
            raise ValueError(f"{root} is one text file, read as the test split; for the "
                             f"{split!r} split give a folder with {' or '.join(SPLIT_FILES[split])}")
        return root
    for name in SPLIT_FILES[split]:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"no {split!r} text in {root}: looked for {', '.join(SPLIT_FILES[split])}. Give "
        "--dataset_path a .txt file or a folder of them (WikiText-2 raw, unpacked, works "
        f"as it is; without a path it is looked for in {DEFAULT_ROOT})")


class TextWindows(Dataset):
    """Windows of ``max_seq_len`` tokens of one text, overlapping by one token."""

    def __init__(self, path: str, tokenizer, max_seq_len: int = DEFAULT_WINDOW):
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be at least 2 (an input and a target), got {max_seq_len}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.tokens = np.asarray(tokenizer(text), dtype=np.int64)
        if self.tokens.size < 2:
            raise ValueError(f"{path} holds {self.tokens.size} token(s): nothing to predict")
        self.path, self.max_seq_len = path, max_seq_len
        self.starts = range(0, self.tokens.size - 1, max_seq_len - 1)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.tokens[self.starts[i]:self.starts[i] + self.max_seq_len]
        x = np.zeros(self.max_seq_len - 1, dtype=np.int64)
        y = np.full(self.max_seq_len - 1, IGNORED_TARGET, dtype=np.int64)
        x[:window.size - 1], y[:window.size - 1] = window[:-1], window[1:]
        return torch.from_numpy(x), torch.from_numpy(y)


@register_dataset("text", aliases=("wikitext2", "wikitext"), info=DatasetInfo(
    num_classes=0, in_chans=0, task="language_modeling", mean=(), std=(), image_size=0,
    default_root=DEFAULT_ROOT, needs_tokenizer=True))
def text(root=None, split="test", download=True, transform=None, tokenizer=None, max_seq_len=None):
    """Token windows of a text split; ``tokenizer`` (the model's) is required, the
    vocabulary being the model's (``num_classes`` of the info is 0)."""
    if transform is not None:
        raise ValueError("the text data set yields token ids and takes no transform")
    if tokenizer is None:
        raise ValueError("the text data set is tokenized with the model's tokenizer: use it "
                         "with --model hf:<folder>, a model folder that has one")
    return TextWindows(split_file(root or DEFAULT_ROOT, split), tokenizer,
                       max_seq_len or DEFAULT_WINDOW)
