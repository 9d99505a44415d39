"""Tokenization of Berlin V2X records: record texts, a SentencePiece model and the .bin layout.

A measurement (one row of the Berlin V2X table) becomes a record text::

    time = 1 4 3 5 --> protocol = udp --> rsrp = - 9 5 . 2 --> datarate = 3 1 . 7

``time = H H M M`` first, then ``key = value`` groups joined by ``" --> "``. Numbers are
written one character per word, so they tokenize digit by digit; other values are single
words. :func:`parse_record` inverts this for evaluation.

:class:`V2XTokenizer` trains a byte-pair-encoding SentencePiece model (Kudo and Richardson,
"SentencePiece", EMNLP 2018) of at most 237 pieces on record texts. ``time``, the separator
``" -->"`` and ``" ="`` are user-defined symbols, so each is always one piece and every record
starts with the piece of ``time``, the token the reader splits records at. Id 0 is the padding
piece, 1 the unknown piece; there are no begin/end-of-sequence pieces. No dummy whitespace
prefix and no normalisation, so ``decode(encode(text)) == text``. A corpus with few distinct
words supports fewer merges than requested: the vocabulary then stays below 237 (the model's
237 embedding rows cover it either way).

:func:`write_v2x` writes the layout read by :mod:`datasets.v2x` (``train/<client>.bin``,
``test/<client>.bin``, ``tokenizer.model``, ``meta.json``); :func:`build_v2x` makes it from
the raw table, one client per region.
"""
import csv
import io
import json
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import sentencepiece as spm

from .v2x import META_FILE, VOCAB_SIZE

__all__ = ["V2XTokenizer", "record_text", "parse_record", "write_v2x", "build_v2x", "SEPARATOR"]

SEPARATOR = " --> "
TOKENIZER_FILE = "tokenizer.model"
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLIENT = re.compile(r"[A-Za-z0-9_.-]+")


def _spaced(number: str) -> str:
    return " ".join(number)


def record_text(row: Mapping) -> str:
    """The record text of a row: ``row["time"]`` as ``HHMM``, then the other items in order.

    Values are written with ``str``; number strings (``-?digits[.digits]``) are spaced out.
    Keys must be identifiers, values single words, and neither may contain ``time`` (the
    piece that starts a record).
    """
    row = dict(row)
    hhmm = str(row.pop("time"))
    if not re.fullmatch(r"\d{4}", hhmm):
        raise ValueError(f"time must be HHMM (4 digits), got {hhmm!r}")
    groups = [f"time = {_spaced(hhmm)}"]
    for key, value in row.items():
        value = str(value)
        if not _KEY.fullmatch(key) or "time" in key:
            raise ValueError(f"record key {key!r} must be an identifier without 'time'")
        if not value or re.search(r"\s", value) or "time" in value:
            raise ValueError(f"value of {key!r} must be one word without 'time', got {value!r}")
        groups.append(f"{key} = {_spaced(value) if _NUMBER.fullmatch(value) else value}")
    return SEPARATOR.join(groups)


def parse_record(text: str) -> dict[str, str]:
    """``key -> value`` of a record text, numbers joined back (``"- 9 5 . 2"`` -> ``"-95.2"``).

    Groups without ``" = "`` (e.g. a truncated generation) are skipped.
    """
    fields = {}
    for group in text.split(SEPARATOR):
        key, sep, value = group.strip().partition(" = ")
        if sep:
            fields[key] = value.replace(" ", "")
    return fields


class V2XTokenizer:
    """A SentencePiece model of record texts (see the module docstring for its pieces)."""

    SEPARATOR_PIECE = "\u2581-->"  # " -->": SentencePiece writes a space as U+2581

    def __init__(self, processor: spm.SentencePieceProcessor):
        self.processor = processor

    @classmethod
    def train(cls, texts: Iterable[str], model_prefix: str,
              vocab_size: int = VOCAB_SIZE) -> "V2XTokenizer":
        """Train on ``texts`` and write the model to ``<model_prefix>.model``."""
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type="bpe",
            vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
            user_defined_symbols=["time", cls.SEPARATOR_PIECE, "\u2581="],
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, add_dummy_prefix=False,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            num_threads=os.cpu_count() or 1, minloglevel=2)
        with open(model_prefix + ".model", "wb") as f:
            f.write(model.getvalue())
        return cls(spm.SentencePieceProcessor(model_proto=model.getvalue()))

    @classmethod
    def load(cls, path: str) -> "V2XTokenizer":
        """A model written by :meth:`train` (``path`` is the ``.model`` file)."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"no SentencePiece model at {path}")
        return cls(spm.SentencePieceProcessor(model_file=path))

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def time_id(self) -> int:
        """Id of the piece ``time``: the first token of every record."""
        return self.processor.piece_to_id("time")

    @property
    def separator(self) -> str:
        """Text of the separator piece, ``" -->"``."""
        return self.SEPARATOR_PIECE.replace("\u2581", " ")

    @property
    def separator_id(self) -> int:
        return self.processor.piece_to_id(self.SEPARATOR_PIECE)

    @property
    def pad_id(self) -> int:
        return self.processor.pad_id()


def write_v2x(out_root: str, train: Mapping[str, Sequence[str]], test: Mapping[str, Sequence[str]],
              vocab_size: int = VOCAB_SIZE, meta: Mapping | None = None) -> V2XTokenizer:
    """Write record texts per client as the .bin layout, with a tokenizer trained on ``train``.

    ``train`` and ``test`` map client names (file names) to record texts. ``meta`` adds
    entries to ``meta.json``, which also records the split token, vocabulary, clients and counts.
    """
    clients = sorted(train)
    if sorted(test) != clients:
        raise ValueError(f"train and test clients differ: {clients} vs {sorted(test)}")
    for client in clients:
        if not _CLIENT.fullmatch(client):
            raise ValueError(f"client name {client!r} is not a plain file name")
    os.makedirs(out_root, exist_ok=True)
    tokenizer = V2XTokenizer.train((t for c in clients for t in train[c]),
                                   os.path.join(out_root, os.path.splitext(TOKENIZER_FILE)[0]),
                                   vocab_size)
    if tokenizer.vocab_size > 256:
        raise ValueError(f"{tokenizer.vocab_size} pieces do not fit the uint8 layout")
    longest = 0
    for split, texts_of in (("train", train), ("test", test)):
        os.makedirs(os.path.join(out_root, split), exist_ok=True)
        for client in clients:
            records = [tokenizer.encode(t) for t in texts_of[client]]
            for ids in records:
                # the reader splits at time_id: it must open each record and occur nowhere else
                if not ids or ids[0] != tokenizer.time_id or tokenizer.time_id in ids[1:]:
                    raise ValueError(f"a {client} record does not start with its only 'time'")
                longest = max(longest, len(ids))
            flat = np.fromiter((i for ids in records for i in ids), dtype=np.uint8)
            flat.tofile(os.path.join(out_root, split, client + ".bin"))
    info = {"synthetic": False, **(meta or {}), "split_token": tokenizer.time_id,
            "pad_id": tokenizer.pad_id, "separator_id": tokenizer.separator_id,
            "vocab_size": tokenizer.vocab_size, "tokenizer": TOKENIZER_FILE, "clients": clients,
            "records": {"train": {c: len(train[c]) for c in clients},
                        "test": {c: len(test[c]) for c in clients}},
            "max_record_tokens": longest}
    with open(os.path.join(out_root, META_FILE), "w") as f:
        json.dump(info, f, indent=1)
    return tokenizer


def _hhmm(value: str) -> str:
    """``HHMM`` of a timestamp (``"2021-06-24 14:35:12"``, ``"14:35"``) or of ``"1435"``."""
    found = re.search(r"(\d{1,2}):(\d{2})", value)
    if found:
        return f"{int(found[1]):02d}{found[2]}"
    if re.fullmatch(r"\d{4}", value):
        return value
    raise ValueError(f"cannot read a time of day from {value!r}")


def _word(value: str, decimals: int | None) -> str | None:
    """A table cell as a record value: None when empty, floats rounded, blanks as '_'."""
    value = value.strip()
    if not value or value.lower() in ("nan", "none", "null"):
        return None
    if decimals is not None and re.fullmatch(r"-?\d*\.\d+|-?\d+(\.\d*)?[eE][-+]?\d+", value):
        value = f"{round(float(value), decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.0"
    return re.sub(r"\s+", "_", value)


def build_v2x(table_csv_or_records, out_root: str, client_column: str = "area",
              time_column: str = "time", columns: Mapping[str, str] | None = None,
              test_fraction: float = 0.1, decimals: int | None = 2, vocab_size: int = VOCAB_SIZE,
              seed: int = 0) -> V2XTokenizer:
    """Write the layout from the Berlin V2X table: one client per value of ``client_column``.

    Args:
        table_csv_or_records: path of a CSV file (one row per measurement) or an iterable
            of row mappings.
        out_root: folder of the layout.
        client_column: the column naming the client (the region in the use case).
        time_column: timestamp or ``HHMM`` column; becomes the record's ``time``.
        columns: record key -> table column, in record order; default: every other column,
            keys lower-cased with non-word characters as ``_``.
        test_fraction: share of each client's records held out (a seeded random choice).
        decimals: floats are rounded to this many places (None keeps the cells as written).
        vocab_size: the tokenizer's vocabulary limit.
        seed: seed of the train/test choice.
    """
    if isinstance(table_csv_or_records, (str, os.PathLike)):
        with open(table_csv_or_records, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [dict(r) for r in table_csv_or_records]
    if not rows:
        raise ValueError("the V2X table has no rows")
    if columns is None:
        columns = {re.sub(r"\W+", "_", c).strip("_").lower(): c for c in rows[0]
                   if c not in (client_column, time_column)}
    texts: dict[str, list[str]] = {}
    for row in rows:
        record = {"time": _hhmm(str(row[time_column]))}
        for key, column in columns.items():
            value = _word(str(row.get(column, "")), decimals)
            if value is not None:
                record[key] = value
        client = re.sub(r"\W+", "_", str(row[client_column]).strip()).lower()
        texts.setdefault(client, []).append(record_text(record))
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for client, records in sorted(texts.items()):
        held_out = set(rng.permutation(len(records))[:round(test_fraction * len(records))].tolist())
        train[client] = [t for i, t in enumerate(records) if i not in held_out]
        test[client] = [t for i, t in enumerate(records) if i in held_out]
    return write_v2x(out_root, train, test, vocab_size=vocab_size,
                     meta={"source": "Berlin V2X table", "test_fraction": test_fraction,
                           "seed": seed})
