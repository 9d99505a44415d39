"""Berlin V2X telemetry as token sequences: the pre-tokenized layout of NNCodec's federated
tiny-Llama use case (Berlin V2X: Hernangómez et al., "Berlin V2X: A Machine Learning Dataset
from Multiple Vehicles and Radio Access Technologies", VTC 2023-Spring).

Layout of a root folder::

    <root>/train/*.bin    one file per client (a region of Berlin), clients in name order
    <root>/test/*.bin     the same clients' held-out records
    <root>/meta.json      optional: split token, tokenizer and record counts (written by
                          datasets.v2x_tokenizer.write_v2x)

A ``.bin`` file is the concatenation of its records' token ids, one uint8 each. Every record
starts with the token of ``time``, so records are split at that id (17 in the published
layout; ``meta.json`` gives it for layouts written here), then padded with 0 or cut to
``max_seq_len`` tokens; an item is ``(x, y) = (seq[:-1], seq[1:])``, next-token targets, a
padding target being ``IGNORED_TARGET``.

``create_dataset("v2x")`` without a root reads the SYNTHETIC stand-in of
:mod:`datasets.v2x_synthetic` under ``$NNC_DATA_ROOT/v2x_synthetic``, generating it on first
use: the real telemetry is not distributed with this repository.
"""
import glob
import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .registry import DATA_ROOT, IGNORED_TARGET, DatasetInfo, register_dataset

__all__ = ["V2XTokens", "num_clients", "read_meta", "META_FILE", "PUBLISHED_SPLIT_TOKEN",
           "SYNTHETIC_ROOT", "VOCAB_SIZE"]

META_FILE = "meta.json"
PUBLISHED_SPLIT_TOKEN = 17  # id of ``time`` in NNCodec's published tokenization
PAD_ID = 0  # padding of a record, in both tokenizations
VOCAB_SIZE = 237
# the quality-of-service targets of a record, predicted by the use case's language model
QOS_FEATURES = ("rsrp", "rsrq", "snr", "jitter", "ping_ms", "datarate")
SYNTHETIC_ROOT = os.path.join(DATA_ROOT, "v2x_synthetic")


def _missing(root: str, split: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no V2X token files found: looked for {os.path.join(root, split, '*.bin')}. Make them "
        "from the raw Berlin V2X table with datasets.v2x_tokenizer.build_v2x(table_csv, root), "
        "or write the synthetic stand-in with datasets.v2x_synthetic.write_synthetic_v2x(root) "
        f"(create_dataset('v2x') without a root does that in {SYNTHETIC_ROOT})")


def _bin_files(root: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(root, split, "*.bin")))
    if not files:
        raise _missing(root, split)
    return files


def num_clients(root: str) -> int:
    """Number of clients of a layout: its ``train/*.bin`` files."""
    return len(_bin_files(root, "train"))


def read_meta(root: str) -> dict:
    """``<root>/meta.json`` as a dict, ``{}`` for layouts without one."""
    path = os.path.join(root, META_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def split_records(tokens: np.ndarray, split_token: int) -> list[np.ndarray]:
    """The records of a token stream: a new one starts at every ``split_token``."""
    starts = np.flatnonzero(tokens == split_token)
    return [r for r in np.split(tokens, starts) if r.size]


class V2XTokens(Dataset):
    """Records of one split, of one client (``client``: index in name order) or of all.

    Items are ``(x, y)`` LongTensors of ``max_seq_len - 1`` tokens. ``clients`` names the
    files read, ``client_of[i]`` the client of record ``i``; ``synthetic`` says whether the
    layout is the generated stand-in (from ``meta.json``).
    """

    def __init__(self, root: str, split: str = "train", client: int | None = None,
                 max_seq_len: int = 256, split_token: int | None = None):
        files = _bin_files(root, split)
        if client is not None:
            if not 0 <= client < len(files):
                raise ValueError(f"client {client} out of range: {os.path.join(root, split)} "
                                 f"holds {len(files)} clients")
            files = files[client:client + 1]
        meta = read_meta(root)
        if split_token is None:
            split_token = meta.get("split_token", PUBLISHED_SPLIT_TOKEN)
        self.root, self.split, self.split_token = root, split, split_token
        self.synthetic = bool(meta.get("synthetic", False))
        self.clients = [os.path.splitext(os.path.basename(f))[0] for f in files]
        records, owners = [], []
        for k, path in enumerate(files):
            found = split_records(np.fromfile(path, dtype=np.uint8), split_token)
            records += found
            owners += [k] * len(found)
        # uint8 rows, zero-padded: a compact store of the fixed-length sequences
        self.sequences = np.zeros((len(records), max_seq_len), dtype=np.uint8)
        for i, r in enumerate(records):
            r = r[:max_seq_len]
            self.sequences[i, :r.size] = r
        self.client_of = np.asarray(owners, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.from_numpy(self.sequences[i].astype(np.int64))
        targets = seq[1:].clone()
        targets[targets == PAD_ID] = IGNORED_TARGET
        return seq[:-1], targets


def record_length(root: str, default: int = 256) -> int:
    """Tokens of the longest record of a layout (``meta.json``), plus the shifted target."""
    longest = read_meta(root).get("max_record_tokens")
    return default if longest is None else int(longest) + 1


def resolve_root(root: str | None = None, download: bool = True) -> str:
    """``root``, else the synthetic stand-in (written on first use if ``download``)."""
    if root is not None:
        return root
    if not download:
        return SYNTHETIC_ROOT
    from .v2x_synthetic import ensure_v2x   # writing data needs sentencepiece, reading does not
    return ensure_v2x()


@register_dataset("v2x", aliases=("berlin_v2x",), info=DatasetInfo(
    num_classes=VOCAB_SIZE, in_chans=0, task="language_modeling", mean=(), std=(), image_size=0,
    default_root=SYNTHETIC_ROOT))
def v2x(root=None, split="train", download=True, transform=None, client=None, max_seq_len=None,
        split_token=None):
    """Berlin V2X token records; ``"val"`` and ``"test"`` are the test files.

    Without ``root``: the synthetic stand-in, generated on first use unless ``download=False``.
    ``max_seq_len`` defaults to the longest record plus one (:func:`record_length`).
    ``num_classes`` of the info is the vocabulary size; there is no input transform.
    """
    if transform is not None:
        raise ValueError("the v2x data set yields token ids and takes no transform")
    root = resolve_root(root, download)
    return V2XTokens(root, "train" if split == "train" else "test", client=client,
                     max_seq_len=max_seq_len or record_length(root), split_token=split_token)
