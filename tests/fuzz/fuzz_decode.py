#!/usr/bin/env python3
"""Fuzz harness for the NNC decoder (``nnc_core.tensor.decode`` and ``nnc_core.codec.decode_stream``).

The contract under test: on any input bytes the decoder returns or raises
:class:`nnc_core.DecodeError` with a message. Anything else is a failure: another exception
type, a crash of the interpreter, a hang, a decode slower than ``NNC_FUZZ_SLOW_S`` seconds
(default 1) or a memory blow-up (peak RSS above ``NNC_FUZZ_MAX_RSS_MB``, default 1024).

Two engines share the same target and the same structure-aware mutator:

* atheris (coverage-guided, libFuzzer)::

      env/bin/python tests/fuzz/fuzz_decode.py CORPUS_DIR -runs=1000000
      # defaults added unless given: -rss_limit_mb=2048 -timeout=10 -max_len=8192

  An empty CORPUS_DIR is filled with the seed corpus first. Reproduce an artifact with
  ``env/bin/python tests/fuzz/fuzz_decode.py crash-<sha1>`` or ``--reproduce FILE``.

* pure Python, for machines without atheris (random mutation, no coverage feedback)::

      env/bin/python tests/fuzz/fuzz_decode.py --no-atheris --runs 1000000 --corpus CORPUS_DIR

Other options: ``--write-corpus DIR`` writes the seed corpus and exits; ``--reproduce FILE...``
runs inputs once and prints what happens (outcome, time, peak RSS); ``--minimize FILE -o OUT``
shrinks a failing input while keeping its failure signature.

Seeds: bitstreams of :func:`nnc_core.tensor.encode` over many settings (dependent quantization
on and off, codebooks, integer tensors, block scans, row skipping, 1-D and 4-D tensors,
incremental coding with temporal context adaptation) and the reference vectors of
``tests/data/nnc_vectors.json``. The mutator knows the NNR unit framing: besides plain byte
mutations it mutates only the CABAC payload of an NDU (so inputs get past the header checks
and into the level decoding), only a header, re-encodes NDU headers with edited fields (dims,
scan order, codebook, dq flag, unary length, update-tree flags), edits parameter sets and unit
sizes, and splices units of different streams. Inputs are also decoded with a decoder state
primed by the first steps of an incremental sequence, so that temporally predicted NDUs (TCA,
HDSP) are decoded rather than rejected.

Differential inputs (``--target differential``; 30 % of the default mix, ``--target all``):
a multi-tensor update of differential model coding (:func:`nnc_core.nn.encode` with a
``CodingState``) together with the receiver state it is decoded against, right or wrong (one
step behind or ahead, fresh, another device, another model). ``nnc_core.nn.decode(stream,
state=copy)`` must return a finite update shaped like the state's base, or raise DecodeError
and leave the state exactly as it was; a second decode must give the same result. Extra
mutations edit the update-tree fields of NDU headers, drop, duplicate, reorder or borrow NDUs,
truncate, flip payload bits and swap or damage the state. ``--workers N`` runs N pure-Python
processes.
"""
from __future__ import annotations

import argparse
import copy
import faulthandler
import hashlib
import json
import math
import os
import random
import re
import resource
import sys
import threading
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VECTORS = os.path.join(ROOT, "tests", "data", "nnc_vectors.json")

ATHERIS_VERSION = "3.0.0"
ATHERIS_HINT = (f"atheris is not installed. Install it with\n"
                f"    env/bin/pip install -r tests/fuzz/requirements.txt   # atheris=={ATHERIS_VERSION}\n"
                f"or run the pure-Python fuzzer instead:\n"
                f"    env/bin/python tests/fuzz/fuzz_decode.py --no-atheris --runs 100000")

SLOW_SECONDS = float(os.environ.get("NNC_FUZZ_SLOW_S", "1.0"))
# Element cap of the decoder during fuzzing (nnc_core.codec.MAX_ELEMENTS). Row skipping and
# one-entry codebooks make arbitrarily large all-zero tensors valid in a few bytes, so with the
# library default a mutant can legitimately need gigabytes and seconds; the fuzz run lowers the
# cap so that such inputs take the same "too large" path cheaply. --probe-large-dims measures
# the behaviour at the library default. 0 keeps the library default.
FUZZ_MAX_ELEMENTS = int(os.environ.get("NNC_FUZZ_MAX_ELEMENTS", str(1 << 22)))
MAX_RSS_MB = float(os.environ.get("NNC_FUZZ_MAX_RSS_MB", "1024"))
# NNC_FUZZ_DIFFERENTIAL=1 also decodes every input with threads=1 and checks that the default
# (parallel block rows and NDUs) gives the same outcome and values.
DIFFERENTIAL = os.environ.get("NNC_FUZZ_DIFFERENTIAL", "0") not in ("", "0")
DEFAULT_MAX_LEN = 8192
LIBFUZZER_DEFAULTS = {"-rss_limit_mb": "2048", "-timeout": "10", "-max_len": str(DEFAULT_MAX_LEN)}

# Filled by load_codec(): imported late so that atheris can instrument nnc_core first.
np = None
DecodeError = None
decode = decode_stream = CodingState = parse_stream = None
bs = None            # nnc_core.bitstream


def load_codec(instrument: bool = False) -> None:
    """Import the decoder (under atheris instrumentation when ``instrument``)."""
    global np, DecodeError, decode, decode_stream, CodingState, parse_stream, bs
    if decode is not None:
        return
    if instrument:
        # Only the numpy-free header parsing is instrumented: atheris 3.0.0 leaks the result
        # of every instrumented comparison that is not a bool, and numpy array comparisons in
        # codec / incremental / quant then leak whole arrays (about 200 MB per pass over a
        # 4,000-input corpus). The level decoder reports through _feedback instead.
        import atheris
        with atheris.instrument_imports(include=["nnc_core.bitstream", "nnc_core.errors"]):
            import nnc_core.bitstream
    import numpy
    import nnc_core.bitstream
    from nnc_core import DecodeError as _DecodeError
    from nnc_core.codec import decode_stream as _decode_stream
    from nnc_core.incremental import CodingState as _CodingState
    from nnc_core.tensor import decode as _decode
    np, DecodeError, bs = numpy, _DecodeError, nnc_core.bitstream
    decode, decode_stream, CodingState = _decode, _decode_stream, _CodingState
    parse_stream = nnc_core.bitstream.parse_stream


# ============================================================================ seed corpus

def _seed_tensors():
    """(name, encode options, tensor) of the encoded seeds: small tensors, many settings."""
    rng = np.random.default_rng(2024)

    def gauss(shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    sparse = gauss((16, 12))
    sparse[[1, 4, 5, 11], :] = 0                      # rows that row skipping skips
    few = rng.choice(np.array([-0.75, 0.0, 0.25, 1.5], np.float32), (12, 10))
    one_sided = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (8, 8))
    big_int = rng.integers(-2**31, 2**31 - 1, (5, 7), dtype=np.int64).astype(np.int32)
    cases = [
        ("dq_24x20", {}, gauss((24, 20))),
        ("nodq_24x20", {"use_dq": False}, gauss((24, 20))),
        ("dq_noparamopt", {"param_opt": False}, gauss((24, 20))),
        ("nodq_norowskip", {"use_dq": False, "row_skipping": False}, sparse),
        ("dq_rowskip_sparse", {}, sparse),
        ("nodq_rowskip_sparse", {"use_dq": False}, sparse),
        ("codebook_dq", {"approx_method": "codebook", "qp": -40}, few),
        ("codebook_nodq", {"approx_method": "codebook", "qp": -40, "use_dq": False}, few),
        ("codebook_one_sided", {"approx_method": "codebook", "qp": -30, "use_dq": False},
         one_sided),
        ("int_2d", {}, rng.integers(-40, 40, (6, 9)).astype(np.int32)),
        ("int_1d", {}, rng.integers(-1000, 1000, 30).astype(np.int32)),
        ("int_big", {}, big_int),
        ("int_scan1", {"scan_order": 1}, rng.integers(-5, 5, (20, 11)).astype(np.int32)),
        ("scan1_dq", {"scan_order": 1}, gauss((20, 20))),
        ("scan1_nodq", {"scan_order": 1, "use_dq": False}, gauss((20, 20))),
        ("scan2_dq_rowskip", {"scan_order": 2}, np.vstack([gauss((20, 24)), np.zeros((20, 24),
                                                                                  np.float32)])),
        ("scan3_nodq", {"scan_order": 3, "use_dq": False}, gauss((70, 9))),
        ("scan3_4d", {"scan_order": 3}, gauss((40, 3, 2, 2))),
        ("scan_hx1", {"scan_order": 1}, gauss((20, 1))),
        ("vec_1d", {}, gauss(50)),
        ("vec_1d_dq_off", {"use_dq": False, "nonweight_qp": -40}, gauss(33, 1.0)),
        ("scalar", {}, np.float32(0.3)),
        ("conv_4d", {}, gauss((8, 4, 3, 3))),
        ("conv_4d_nodq", {"use_dq": False}, gauss((6, 3, 2, 2))),
        ("coarse_bigvalues", {"qp": -60, "use_dq": False}, gauss((8, 8), 30.0)),
        ("bitdepth4", {"bitdepth": 4}, gauss((12, 12))),
        ("unary0", {"cabac_unary_length_minus1": 0}, gauss((10, 10))),
        ("unary30", {"cabac_unary_length_minus1": 30, "qp": -50}, gauss((10, 10))),
        ("qp_density0", {"qp_density": 0, "qp": -10}, gauss((10, 10))),
        ("qp_density7", {"qp_density": 7, "qp": -900}, gauss((10, 10))),
        ("zeros_2d", {}, np.zeros((4, 6), np.float32)),
        ("named", {"tensor_id": "layer1.weight"}, gauss((5, 5))),
        ("pre_signalling", {"pre_signalling": True}, gauss((6, 6))),
    ]
    return cases


def _incremental_sequences():
    """Streams of incremental coding runs: a list of bitstreams per run."""
    from nnc_core.tensor import encode
    rng = np.random.default_rng(77)
    runs = []
    base = (rng.standard_normal((16, 12)) * 0.05).astype(np.float32)
    for options in ({"tca": True, "compress_differences": True},
                    {"tca": True, "compress_differences": True, "use_dq": False},
                    {"compress_differences": True},
                    {"tca": True, "compress_differences": True, "scan_order": 1}):
        sender = CodingState()
        streams = []
        w = base.copy()
        for step in range(3):
            update = (0.1 * w + rng.normal(0, 2e-3, w.shape)).astype(np.float32)
            update[rng.random(w.shape[0]) < 0.3, :] = 0
            streams.append(encode(update, sender, qp=-36, **options))
            w += update
        runs.append(streams)
    return runs


_SEEDS: list[tuple[str, bytes]] | None = None
_PRIMED: list = []


def seeds() -> list[tuple[str, bytes]]:
    """The seed corpus as (name, bitstream) pairs (computed once)."""
    global _SEEDS
    if _SEEDS is not None:
        return _SEEDS
    load_codec()
    from nnc_core.tensor import encode
    out = []
    for name, options, x in _seed_tensors():
        out.append((name, encode(x, **options)))
    for r, streams in enumerate(_incremental_sequences()):
        receiver = CodingState()
        for step, stream in enumerate(streams):
            out.append((f"incremental{r}_step{step}", stream))
            if step < len(streams) - 1:
                decode_stream(stream, receiver)
                if step in (0, 1) and r in (0, 1):
                    _PRIMED.append(copy.deepcopy(receiver))
    # two NDUs in one stream (a second tensor spliced after the first)
    a, b = out[0][1], out[9][1]
    out.append(("two_ndus", a + _units(b)[-1]))
    try:
        with open(VECTORS) as f:
            for vector in json.load(f):
                out.append((f"vector_{vector['name']}", bytes.fromhex(vector["bitstream_hex"])))
    except (OSError, ValueError, KeyError):
        pass
    _SEEDS = out
    return out


def primed_states() -> list:
    """Decoder states after the first steps of incremental runs (for TCA / HDSP inputs)."""
    seeds()
    return _PRIMED


TARGETS = ("all", "plain", "differential")


def target_seeds(target: str = "all") -> list[tuple[str, bytes]]:
    """Seed inputs of a target: plain streams, differential inputs (stream and state), or both."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return ((seeds() if target != "differential" else [])
            + (diff_seeds() if target != "plain" else []))


def write_corpus(directory: str, target: str = "all") -> int:
    os.makedirs(directory, exist_ok=True)
    inputs = target_seeds(target)
    for name, data in inputs:
        with open(os.path.join(directory, f"seed-{name}.nnc"), "wb") as f:
            f.write(data)
    return len(inputs)


# ============================================================================ differential streams
#
# Differential model coding (nnc_core.nn.encode / decode with a CodingState) decodes a stream
# against a decoder state. A differential input is DIFF_MAGIC, a state selector byte, a state
# tweak byte and the stream: the selector picks one of the receiver states recorded while the
# seed sequences were coded (diff_states()), the tweak damages a copy of it (wrong depth,
# parameter id, device, dropped histories, ...). A failing input may also come with the state
# itself in FILE.state.npz (CodingState.save), which then takes the selector's place.

DIFF_MAGIC = b"NNCd"
DIFF_PREFIX = len(DIFF_MAGIC) + 2
# share of differential inputs in the default mix (--target all)
DIFF_SHARE = 0.3
STEPS = 4

# (name, device id of the sender, encoder options, model options). Each run codes STEPS
# versions of a small model dict; from step 2 on conv1.bias stays unchanged (its difference
# is zero and, under parent signalling, its NDU omitted), "zero_step" codes an all-zero
# update (a stream without NDUs), "fc_rows" changes the element counts of the fc layer.
DIFF_SEQUENCES = (
    ("tca_hdsp_sparse", 1, dict(compress_differences=True, tca=True, hdsp=True, sparsity=0.8,
                                qp=-32, diff_qp=-36), {}),
    ("nodq_norowskip", 2, dict(compress_differences=True, use_dq=False, row_skipping=False,
                               qp=-30), {}),
    ("tca_sparse_norowskip", 1, dict(compress_differences=True, tca=True, row_skipping=False,
                                     sparsity=0.5, qp=-32, diff_qp=-38), {}),
    ("hdsp_nodq_int", 3, dict(compress_differences=True, hdsp=True, use_dq=False, qp=-34),
     {"fc_rows": 12, "with_int": True, "zero_step": 3}),
    ("no_parent_signalling", 4, dict(qp=-32, diff_qp=-34), {"with_int": True}),
)

_DIFF: dict | None = None
_DONORS: list | None = None         # donor streams of the mutators while a differential
                                    # input is mutated (None: the plain seeds)


def _donor_seeds() -> list[tuple[str, bytes]]:
    return _DONORS if _DONORS is not None else seeds()


def _diff_model(rng, fc_rows: int = 10, with_int: bool = False) -> dict:
    def gauss(shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(np.float32)
    model = {"conv1.weight": gauss((8, 3, 3, 3)), "conv1.bias": gauss(8),
             "fc.weight": gauss((fc_rows, 24)), "fc.bias": gauss(fc_rows)}
    if with_int:
        model["steps"] = rng.integers(0, 100, 3).astype(np.int32)
    return model


def _diff_material() -> dict:
    """Streams, receiver states and seed inputs of the differential target (computed once)."""
    global _DIFF
    if _DIFF is not None:
        return _DIFF
    load_codec()
    from nnc_core import nn as nnc_nn
    rng = np.random.default_rng(1517)
    fresh = CodingState()
    states = [("fresh", fresh), ("fresh_device7", CodingState(device_id=7))]
    runs = []
    for name, device, options, model_options in DIFF_SEQUENCES:
        sender, receiver = CodingState(device_id=device), CodingState()
        model = _diff_model(rng, model_options.get("fc_rows", 10),
                            model_options.get("with_int", False))
        streams, indices = [], [0]                   # indices[k]: the state after k streams
        for step in range(STEPS):
            if step:
                model = {k: (v + (rng.integers(-2, 3, v.shape) if v.dtype.kind == "i" else
                                  rng.standard_normal(v.shape) * 0.02)).astype(v.dtype)
                         for k, v in model.items()}
            if step >= 2:                            # unchanged: an all-zero difference
                model["conv1.bias"] = sender.base["conv1.bias"].copy()
            if step == model_options.get("zero_step"):
                model = {k: v.copy() for k, v in sender.base.items()}
            stream = nnc_nn.encode(model, state=sender, **options)
            nnc_nn.decode(stream, state=receiver)
            streams.append(stream)
            states.append((f"{name}_after{step + 1}", receiver.copy()))
            indices.append(len(states) - 1)
        runs.append({"name": name, "device": device, "streams": streams, "states": indices,
                     "fc_rows": model_options.get("fc_rows", 10)})
    assert len(states) <= 256
    inputs = []
    for run in runs:
        other_device = next(x for x in runs if x["device"] != run["device"])
        other_shape = next(x for x in runs if x["fc_rows"] != run["fc_rows"])
        for k, stream in enumerate(run["streams"]):
            cases = [("right", run["states"][k]), ("ahead", run["states"][k + 1]),
                     ("other_device", other_device["states"][k]),
                     ("other_shapes", other_shape["states"][max(k, 1)])]
            if k:
                cases += [("behind", run["states"][k - 1]), ("fresh", 0)]
            for label, index in cases:
                inputs.append((f"diff_{run['name']}_step{k}_{label}", diff_input(index, 0, stream)))
    _DIFF = {"states": states, "runs": runs, "inputs": inputs,
             "donors": [(f"diff_{run['name']}_stream{k}", s) for run in runs
                        for k, s in enumerate(run["streams"])]}
    return _DIFF


def diff_input(selector: int, tweak: int, stream: bytes) -> bytes:
    return DIFF_MAGIC + bytes([selector & 0xFF, tweak & 0xFF]) + stream


def split_diff(data: bytes) -> tuple[int, int, bytes] | None:
    """(selector, tweak, stream) of a differential input; None for a plain one."""
    if len(data) < DIFF_PREFIX or not data.startswith(DIFF_MAGIC):
        return None
    return data[len(DIFF_MAGIC)], data[len(DIFF_MAGIC) + 1], data[DIFF_PREFIX:]


def diff_seeds() -> list[tuple[str, bytes]]:
    """Seed inputs of the differential target: each stream of each sequence with the right
    state, the states one step behind and ahead (wrong depths), a fresh state, a state of
    another device and one of another sequence (other element counts)."""
    return _diff_material()["inputs"]


def diff_states() -> list[tuple[str, object]]:
    """(label, CodingState) that selector bytes choose from (modulo the count)."""
    return _diff_material()["states"]


TWEAKS = ("none", "drop history", "drop base", "depth + 1", "depth - 1", "parameter id + 1",
          "device None", "device + 1", "levels one short", "significance one short",
          "base as int32", "clear histories", "none", "none", "none", "none")


def diff_state(selector: int, tweak: int = 0):
    """A fresh copy of the selected state with the tweak applied: the low 4 bits choose what
    is damaged (TWEAKS), the high 4 bits which tensor."""
    states = diff_states()
    state = states[selector % len(states)][1].copy()
    kind = TWEAKS[tweak & 15]
    names = sorted(state.tensors)
    base_names = sorted(state.base)
    name = names[(tweak >> 4) % len(names)] if names else None
    base_name = base_names[(tweak >> 4) % len(base_names)] if base_names else None
    h = state.tensors.get(name) if name is not None else None
    if kind == "drop history" and h is not None:
        del state.tensors[name]
    elif kind == "drop base" and base_name is not None:
        del state.base[base_name]
    elif kind in ("depth + 1", "depth - 1") and h is not None:
        h.depth = max(0, h.depth + (1 if kind == "depth + 1" else -1))
    elif kind == "parameter id + 1" and h is not None:
        h.parameter_id += 1
    elif kind == "device None":
        state.device_id = None
    elif kind == "device + 1":
        state.device_id = (state.device_id or 0) + 1
    elif kind == "levels one short" and h is not None and h.levels.size:
        h.levels = h.levels[:-1].copy()
    elif kind == "significance one short" and h is not None and h.significant.size:
        h.significant = h.significant[:-1].copy()
    elif kind == "base as int32" and base_name is not None:
        state.base[base_name] = state.base[base_name].astype(np.int32)
    elif kind == "clear histories":
        state.tensors.clear()
    return state


# ============================================================================ the target

class HarnessFailure(Exception):
    """An outcome the contract forbids that is not an exception of the decoder itself."""


class SlowDecode(HarnessFailure):
    pass


class MemoryBlowUp(HarnessFailure):
    pass


class WrongResult(HarnessFailure):
    pass


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process's own
    address space; ru_maxrss would also carry the peak of a large parent that started the
    harness (Linux keeps it across fork and exec), e.g. a pytest run that has loaded torch."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(call, *args, slow_seconds: float):
    """One decoder call; DecodeError is an expected outcome. Returns (result or None, seconds).

    A call slower than ``slow_seconds`` is repeated once and fails if it is slow again.
    """
    times = []
    for attempt in range(2):
        start = time.perf_counter()
        try:
            result = call(*args)
            if attempt == 0:
                _report_outcome(result if call is decode_stream else None, None)
        except DecodeError as error:
            if not str(error):
                raise WrongResult("DecodeError without a message") from error
            result = None
            if attempt == 0:
                _report_outcome(None, error)
        times.append(time.perf_counter() - start)
        if times[-1] <= slow_seconds:
            return result, times[-1]
    raise SlowDecode(f"{call.__name__} took {times[0]:.2f} s and {times[1]:.2f} s "
                     f"(limit {slow_seconds} s)")


# Coverage of the compiled CABAC core is invisible to atheris, which only sees Python code.
# Under atheris, check_input reports what the decoder reached (error kind and how far into the
# tensor it got, or the flags of a decoded tensor) by calling one of FEEDBACK_SLOTS distinct
# instrumented functions, so new outcomes of the level decoding count as new coverage.
FEEDBACK_SLOTS = 2048
_feedback_slots: list | None = None


def _enable_feedback() -> None:
    import atheris
    global _feedback_slots
    namespace: dict = {}
    exec("".join(f"def slot{i}():\n    return {i}\n" for i in range(FEEDBACK_SLOTS)), namespace)
    _feedback_slots = [atheris.instrument_func(namespace[f"slot{i}"])
                       for i in range(FEEDBACK_SLOTS)]


def _feedback(*key) -> None:
    if _feedback_slots is not None:
        _feedback_slots[zlib.crc32(repr(key).encode()) % FEEDBACK_SLOTS]()


_DIGITS = re.compile(r"\d+")


def _report_outcome(result, error: DecodeError | None) -> None:
    """Feedback features of one decode_stream outcome (only under atheris)."""
    if _feedback_slots is None:
        return
    if error is not None:
        message = str(error)
        _feedback("error", _DIGITS.sub("#", message.split(": ", 1)[-1])[:80])
        at = re.search(r"at element (\d+) of (\d+)", message)
        if at:                                  # how far into the levels the decoder got
            _feedback("progress", int(at.group(1)).bit_length(), int(at.group(2)).bit_length())
        return
    for t in result or ():
        h = t.header
        _feedback("ok", int(h.payload_type), bool(h.dq_flag), h.scan_order,
                  min(h.codebook.size, 9) if h.codebook is not None else 0,
                  bool(t.info.get("row_skip")), bool(t.info.get("hdsp")),
                  bool(h.temporal_context_modeling), len(h.dims), t.levels.size.bit_length())
        if t.levels.size:
            _feedback("levels", int(np.abs(t.levels).max()).bit_length(),
                      int(np.count_nonzero(t.levels) * 8 // t.levels.size))


class _FuzzCap:
    """Lowers nnc_core.codec.MAX_ELEMENTS to FUZZ_MAX_ELEMENTS until restore()."""

    def __init__(self):
        import nnc_core.codec as codec
        self.codec, self.library_cap = codec, getattr(codec, "MAX_ELEMENTS", None)
        if FUZZ_MAX_ELEMENTS and self.library_cap is not None:
            codec.MAX_ELEMENTS = min(self.library_cap, FUZZ_MAX_ELEMENTS)

    def restore(self) -> None:
        if self.library_cap is not None:
            self.codec.MAX_ELEMENTS = self.library_cap


def _uses_parent(data: bytes, _cache: dict = {}) -> bool:
    """Whether an NDU of ``data`` refers to a parent (only then a primed state matters)."""
    if data not in _cache:
        if len(_cache) > 64:
            _cache.clear()
        try:
            _cache[data] = any(u.type == bs.UnitType.NDU and u.content.parent_node_id_present
                               for u in parse_stream(data))
        except DecodeError:
            _cache[data] = False
    return _cache[data]


def _outcome(data: bytes, **kwargs):
    try:
        return [(t.name, t.values.dtype.str, t.values.shape, t.values.tobytes())
                for t in decode_stream(data, None, **kwargs)]
    except DecodeError:
        return "DecodeError"


def _compare_threads(data: bytes) -> None:
    """The parallel decoder must agree with the sequential one (same values or both fail)."""
    import inspect
    if "threads" not in inspect.signature(decode_stream).parameters:
        return
    sequential, parallel = _outcome(data, threads=1), _outcome(data, threads=4)
    if sequential != parallel:
        describe = (lambda o: o if isinstance(o, str) else f"{len(o)} tensors decoded")
        raise WrongResult(f"threads=1 gives {describe(sequential)}, threads=4 gives "
                          f"{describe(parallel)}" + (" with different values"
                                                     if describe(sequential) == describe(parallel)
                                                     else ""))


def check_input(data: bytes, slow_seconds: float = SLOW_SECONDS,
                max_rss_mb: float = MAX_RSS_MB, state=None) -> float:
    """Run every decoder entry point on ``data``; returns the slowest call's time.

    Entry points: ``decode(data)``, ``decode_stream(data, CodingState())`` and
    ``decode_stream`` with each primed incremental state. Raises whatever the decoder raises
    other than DecodeError, and HarnessFailure for a wrong result, a call slower than
    ``slow_seconds`` (confirmed by a second run) or a peak RSS above ``max_rss_mb``.
    A differential input (DIFF_MAGIC ...) goes to :func:`check_differential` instead, with
    ``state`` (if given) as its decoder state.
    """
    if split_diff(data) is not None:
        return check_differential(data, slow_seconds, max_rss_mb, state)
    cap = _FuzzCap()
    try:
        result, slowest = _timed(decode, data, slow_seconds=slow_seconds)
        if result is not None and not isinstance(result, np.ndarray):
            raise WrongResult(f"decode returned {type(result).__name__}, not a numpy array")
        for state in [CodingState()] + [copy.deepcopy(s) for s in _PRIMED if _uses_parent(data)]:
            tensors, elapsed = _timed(decode_stream, data, state, slow_seconds=slow_seconds)
            slowest = max(slowest, elapsed)
            for t in tensors or ():
                if t.values.shape != tuple(t.header.dims):
                    raise WrongResult(f"tensor {t.name!r}: values of shape {t.values.shape}, "
                                      f"header dims {list(t.header.dims)}")
                if t.values.dtype not in (np.float32, np.float64, np.int32):
                    raise WrongResult(f"tensor {t.name!r}: unexpected dtype {t.values.dtype}")
        if DIFFERENTIAL:
            _compare_threads(data)
    finally:
        _end_of_check(cap, len(data), max_rss_mb)
    return slowest


def _end_of_check(cap, size: int, max_rss_mb: float) -> None:
    """Restore the element cap; a peak RSS above the limit is a failure."""
    cap.restore()
    rss = peak_rss_mb()
    if rss > max_rss_mb:
        raise MemoryBlowUp(f"peak RSS {rss:.0f} MB after decoding {size} bytes "
                           f"(limit {max_rss_mb:.0f} MB)")


# ---------------------------------------------------------------------------- differential check

def state_fingerprint(state) -> tuple:
    """Everything a CodingState holds, in a comparable form: device id, per tensor its depth,
    parameter id, levels and significance, and the base arrays (dtype, shape, bytes)."""
    def arr(a):
        a = np.asarray(a)
        return a.dtype.str, a.shape, a.tobytes()
    return (state.device_id,
            tuple(sorted((n, int(h.depth), int(h.parameter_id), arr(h.levels), arr(h.significant))
                         for n, h in state.tensors.items())),
            tuple(sorted((n, arr(a)) for n, a in state.base.items())))


def _describe_change(before: tuple, after: tuple) -> str:
    out = []
    if before[0] != after[0]:
        out.append(f"device_id {before[0]} -> {after[0]}")
    for part, label in ((1, "history"), (2, "base")):
        old = {x[0]: x[1:] for x in before[part]}
        new = {x[0]: x[1:] for x in after[part]}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                what = "added" if name not in old else "removed" if name not in new else "changed"
                if part == 1 and what == "changed":
                    (d0, p0, l0, _), (d1, p1, l1, _) = old[name], new[name]
                    what += (f" (depth {d0} -> {d1}, parameter id {p0} -> {p1}, levels "
                             f"{list(l0[1])} -> {list(l1[1])})")
                elif part == 2 and what == "changed":
                    what += f" ({list(old[name][0][1])} -> {list(new[name][0][1])})"
                out.append(f"{label} of {name!r} {what}")
    return "; ".join(out) or "no difference"


# Errors raised while one NDU is decoded carry the prefix "unit N (NDU 'name', byte M): "
# (codec.decode_stream); of those, the state checks (CodingState.check_device / check_node /
# check_parent) say one of STATE_MESSAGES, and the rest come from the level decoding.
NDU_ERROR = re.compile(r"^unit \d+ \(NDU '.*', byte \d+\): ", re.S)
STATE_MESSAGES = ("update-tree depth", "parameter id", "comes from device",
                  "elements, the earlier version", "no earlier version", "the base holds",
                  "the state holds", "this state", "temporal context adaptation",
                  "incremental decoding of")
DIFF_OUTCOMES = ("applied", "empty", "deep", "state", "header")
_last_diff_outcome: tuple[str, bool] | None = None


def classify_diff(error: DecodeError | None, before: tuple, after: tuple) -> str:
    """applied: decoded and at least one NDU advanced the state; empty: decoded, no NDU;
    deep: DecodeError inside an NDU payload (the level decoder was reached); state: rejected
    by the state checks; header: any other DecodeError (framing, headers, parameter sets,
    the element limit, unsupported payload types)."""
    if error is None:
        return "applied" if after[1] != before[1] else "empty"
    message = str(error)
    match = NDU_ERROR.match(message)
    if not match:
        return "header"
    detail = message[match.end():]
    if any(m in detail for m in STATE_MESSAGES):
        return "state"
    return "header" if "is not supported by the decoder" in detail else "deep"


def _diff_decode_once(stream: bytes, state, slow_seconds: float, **kwargs):
    """nn.decode(stream, state=copy of state); returns (result, error, the copy, seconds).
    A call slower than ``slow_seconds`` is repeated on a fresh copy and fails if slow again."""
    from nnc_core import nn as nnc_nn
    times = []
    for attempt in range(2):
        work = state.copy()
        start = time.perf_counter()
        try:
            result, error = nnc_nn.decode(stream, state=work, **kwargs), None
        except DecodeError as exc:
            result, error = None, exc
        times.append(time.perf_counter() - start)
        if times[-1] <= slow_seconds:
            return result, error, work, times[-1]
    raise SlowDecode(f"nn.decode with a state took {times[0]:.2f} s and {times[1]:.2f} s "
                     f"(limit {slow_seconds} s)")


def _result_bytes(result: dict) -> list:
    return [(n, v.dtype.str, v.shape, v.tobytes()) for n, v in result.items()]


def _check_update(result, state) -> None:
    """A successful decode returns, for every tensor of the state's base, a finite array of
    that tensor's shape."""
    if not isinstance(result, dict):
        raise WrongResult(f"nn.decode returned {type(result).__name__}, not a dict")
    if list(result) != list(state.base):
        raise WrongResult(f"nn.decode returned tensors {sorted(result)[:6]}, the state's base "
                          f"holds {sorted(state.base)[:6]}")
    for name, value in result.items():
        if not isinstance(value, np.ndarray):
            raise WrongResult(f"tensor {name!r}: {type(value).__name__}, not a numpy array")
        if value.shape != state.base[name].shape:
            raise WrongResult(f"tensor {name!r}: update of shape {value.shape}, the base has "
                              f"{state.base[name].shape}")
        if value.dtype not in (np.float32, np.float64, np.int32):
            raise WrongResult(f"tensor {name!r}: unexpected dtype {value.dtype}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise WrongResult(f"tensor {name!r}: {int(np.sum(~np.isfinite(value)))} non-finite "
                              "values in the decoded update")


def check_differential(data: bytes, slow_seconds: float = SLOW_SECONDS,
                       max_rss_mb: float = MAX_RSS_MB, state=None) -> float:
    """Decode a differential input against its state; returns the slowest call's time.

    ``nnc_core.nn.decode(stream, state=copy)`` must return or raise DecodeError. After a
    DecodeError the copy must equal the state exactly (the decoder is transactional); after a
    return the update must be finite and shaped like the base. A second decode with a fresh
    copy must give the same outcome, the same values and the same new state (determinism;
    with NNC_FUZZ_DIFFERENTIAL=1 the second decode uses threads=1). ``state`` replaces the
    one the selector and tweak bytes choose.
    """
    global _last_diff_outcome
    _last_diff_outcome = None
    selector, tweak, stream = split_diff(data)
    if state is None:
        state = diff_state(selector, tweak)
    before = state_fingerprint(state)
    cap = _FuzzCap()
    try:
        result, error, work, slowest = _diff_decode_once(stream, state, slow_seconds)
        after = state_fingerprint(work)
        if error is not None:
            if not str(error):
                raise WrongResult("DecodeError without a message") from error
            if after != before:
                raise WrongResult(f"the state changed although decoding failed "
                                  f"({_describe_change(before, after)}); error: {error}")
        else:
            _check_update(result, work)
        if state_fingerprint(state) != before:
            raise WrongResult("decoding a copy changed the original state")
        kwargs = {"threads": 1} if DIFFERENTIAL else {}
        result2, error2, work2, elapsed = _diff_decode_once(stream, state, slow_seconds, **kwargs)
        slowest = max(slowest, elapsed)
        if (error is None) != (error2 is None):
            raise WrongResult("a second decode of the same input with the same state "
                              f"{'failed' if error2 is not None else 'succeeded'}: "
                              f"{error or error2}")
        if error is None and (_result_bytes(result) != _result_bytes(result2)
                              or state_fingerprint(work2) != after):
            raise WrongResult("a second decode of the same input with the same state gave "
                              "other values or another new state")
        outcome = classify_diff(error, before, after)
        _last_diff_outcome = (outcome, bool(state.tensors))
        _feedback("diff", outcome, bool(state.tensors), TWEAKS[tweak & 15],
                  _DIGITS.sub("#", str(error).split("): ", 1)[-1])[:60] if error else "")
    finally:
        _end_of_check(cap, len(data), max_rss_mb)
    return slowest


# ============================================================================ mutation

INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF, 0x40, 0x10, 0x16)
INTERESTING_DIMS = (0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255,
                    256, 1000, 1024, 4096, 2**15, 2**16, 2**20, 2**24, 2**27, 2**28, 2**30,
                    2**31 - 1, 2**31, 2**32)
MAX_ELEMENTS_CLAIM = 2**31 - 1


class RawUnit:
    """One NNR unit as framing form, type/flags byte and body (everything after the framing)."""
    __slots__ = ("long_form", "flags", "body")

    def __init__(self, long_form: bool, flags: int, body: bytes):
        self.long_form, self.flags, self.body = long_form, flags, body

    def to_bytes(self) -> bytes:
        total = 3 + len(self.body)
        if not self.long_form and total <= 0x7FFF:
            return total.to_bytes(2, "big") + bytes([self.flags]) + self.body
        total += 2
        return ((1 << 31) | (total & 0x7FFFFFFF)).to_bytes(4, "big") + bytes([self.flags]) + self.body


def split_units(data: bytes) -> tuple[list[RawUnit], bytes]:
    """Lenient framing walk: the well-framed units and the bytes after the last of them."""
    units, pos = [], 0
    while pos < len(data):
        long_form = data[pos] >> 7
        framing = 5 if long_form else 3
        if len(data) - pos < framing:
            break
        size = int.from_bytes(data[pos:pos + framing - 1], "big") & ((1 << (8 * framing - 9)) - 1)
        if size < framing or size > len(data) - pos:
            break
        units.append(RawUnit(bool(long_form), data[pos + framing - 1],
                             data[pos + framing:pos + size]))
        pos += size
    return units, data[pos:]


def _units(data: bytes) -> list[bytes]:
    units, _ = split_units(data)
    return [u.to_bytes() for u in units]


def join_units(units: list[RawUnit], tail: bytes = b"") -> bytes:
    return b"".join(u.to_bytes() for u in units) + tail


def parsed_units(data: bytes) -> list | None:
    """parse_stream's view of ``data`` or of its longest parsable prefix of whole units."""
    try:
        return parse_stream(data)
    except DecodeError:
        pass
    raw, _ = split_units(data)
    ends, pos = [], 0
    for u in raw:
        pos += len(u.to_bytes())
        ends.append(pos)
    for end in reversed(ends):
        try:
            return parse_stream(data[:end])
        except DecodeError:
            continue
    return None


def byte_mutate(data: bytes, max_size: int, rng: random.Random) -> bytes:
    """libFuzzer-like byte-level mutations without coverage feedback."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op = rng.randrange(11)
        n = len(out)
        if op == 0 and n:                                  # bit flip
            p = rng.randrange(n)
            out[p] ^= 1 << rng.randrange(8)
        elif op == 1 and n:                                # random byte
            out[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:                                # interesting byte
            out[rng.randrange(n)] = rng.choice(INTERESTING_BYTES)
        elif op == 3:                                      # insert bytes
            p = rng.randrange(n + 1)
            out[p:p] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 4, 16))))
        elif op == 4 and n:                                # delete a range
            p = rng.randrange(n)
            del out[p:p + rng.choice((1, 1, 2, 4, 16, 64))]
        elif op == 5 and n:                                # duplicate a range
            p = rng.randrange(n)
            chunk = out[p:p + rng.randrange(1, 64)]
            q = rng.randrange(n + 1)
            out[q:q] = chunk
        elif op == 6 and n:                                # add / subtract on a byte
            p = rng.randrange(n)
            out[p] = (out[p] + rng.choice((-3, -2, -1, 1, 2, 3))) & 0xFF
        elif op == 7 and n:                                # truncate
            del out[rng.randrange(n):]
        elif op == 8:                                      # copy a chunk of a seed
            src = rng.choice(_donor_seeds())[1]
            p = rng.randrange(len(src))
            chunk = src[p:p + rng.randrange(1, 32)]
            q = rng.randrange(n + 1)
            if rng.random() < 0.5:
                out[q:q + len(chunk)] = chunk
            else:
                out[q:q] = chunk
        elif op == 9 and n >= 2:                           # swap two bytes
            p, q = rng.randrange(n), rng.randrange(n)
            out[p], out[q] = out[q], out[p]
        elif op == 10 and n:                               # 16-bit interesting value
            p = rng.randrange(n)
            out[p:p + 2] = rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF)).to_bytes(2, "big")
    return bytes(out[:max_size])


def _ndu_indices(units) -> list[int]:
    return [i for i, u in enumerate(units) if u.type == bs.UnitType.NDU]


def _rebuild(data: bytes, units, index: int, new_unit: bytes) -> bytes:
    u = units[index]
    return data[:u.offset] + new_unit + data[u.offset + u.size:]


def _mutate_payload(data, units, rng, base_mutate, max_size):
    """Keep an NDU's header, mutate its CABAC payload (so decoding reaches the levels)."""
    ndus = _ndu_indices(units)
    if not ndus:
        return None
    i = rng.choice(ndus)
    u = units[i]
    payload = bytes(u.payload)
    choice = rng.randrange(6)
    if choice == 0 and payload:                  # a single bit
        p = bytearray(payload)
        pos = rng.randrange(8 * len(p))
        p[pos >> 3] ^= 0x80 >> (pos & 7)
        payload = bytes(p)
    elif choice == 1 and payload:                # overwrite the tail
        k = rng.randrange(1, min(4, len(payload)) + 1)
        payload = payload[:-k] + bytes(rng.randrange(256) for _ in range(k))
    elif choice == 2:                            # shorten or lengthen by a few bytes
        if rng.random() < 0.5 and len(payload) > 2:
            payload = payload[:-rng.randrange(1, min(8, len(payload) - 1) + 1)]
        else:
            payload += bytes(rng.choice((0, 0xFF, rng.randrange(256)))
                             for _ in range(rng.randrange(1, 9)))
    elif choice == 3:                            # payload of another NDU
        donor = parsed_units(rng.choice(_donor_seeds())[1]) or []
        other = [x for x in donor if x.type == bs.UnitType.NDU]
        if other:
            payload = bytes(rng.choice(other).payload)
    else:
        payload = base_mutate(payload, max(2, max_size - len(data) + len(payload)))
    raw = split_units(data[u.offset:u.offset + u.size])[0]
    if not raw:
        return None
    head = raw[0].body[:u.header_size - (5 if raw[0].long_form else 3)]
    new = RawUnit(raw[0].long_form, raw[0].flags, head + payload).to_bytes()
    return _rebuild(data, units, i, new)


def _mutate_header(data, units, rng, base_mutate, max_size):
    """Mutate the header bytes of one unit, keep its payload, fix the unit size."""
    i = rng.randrange(len(units))
    u = units[i]
    raw = split_units(data[u.offset:u.offset + u.size])[0]
    if not raw:
        return None
    framing = 5 if raw[0].long_form else 3
    head = raw[0].body[:u.header_size - framing]
    tail = raw[0].body[u.header_size - framing:]
    head = base_mutate(head, max(1, min(256, max_size - len(data) + len(head))))
    new = RawUnit(raw[0].long_form, raw[0].flags, head + tail).to_bytes()
    return _rebuild(data, units, i, new)


def _random_dims(rng, old: tuple) -> tuple:
    choice = rng.randrange(6)
    if choice == 0:                              # a huge claim: product close to 2**31 - 1
        rows = rng.choice((1, 2, 3, 16, 17, 64, 1000, 2**15, 2**20))
        return (rows, max(1, MAX_ELEMENTS_CLAIM // rows - rng.randrange(3)))
    if choice == 1:                              # one interesting value
        dims = list(old) or [1]
        dims[rng.randrange(len(dims))] = rng.choice(INTERESTING_DIMS)
        return tuple(dims)
    if choice == 2:                              # scale one dimension
        dims = list(old) or [1]
        k = rng.randrange(len(dims))
        dims[k] = max(0, int(dims[k] * rng.choice((0.5, 2, 3, 10, 1000, 10**6))))
        return tuple(dims)
    if choice == 3:                              # same element count, another shape
        n = 1
        for d in old:
            n *= d
        if n > 1:
            divisors = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
            d = rng.choice(divisors)
            return (d, n // d) if rng.random() < 0.7 else (n,)
        return (n,)
    if choice == 4:                              # permuted / extra unit dims
        dims = list(old)
        rng.shuffle(dims)
        if rng.random() < 0.5:
            dims.insert(rng.randrange(len(dims) + 1), 1)
        return tuple(dims[:16]) or (1,)
    return tuple(rng.choice(INTERESTING_DIMS[:20]) for _ in range(rng.randrange(1, 5)))


def _random_codebook(rng):
    size = rng.choice((1, 1, 2, 3, 4, 7, 16, 255))
    values, v = [], rng.randrange(-300, 300)
    for _ in range(size):
        values.append(v)
        v += rng.choice((1, 1, 2, 5, 100, 2**20))
    return bs.Codebook.create(values, rng.randrange(size))


def _pick_ndu(units, rng):
    """(index, unit, a copy of its header to edit, its MPS) of a random NDU, or None."""
    ndus = _ndu_indices(units)
    if not ndus:
        return None
    i = rng.choice(ndus)
    return i, units[i], copy.deepcopy(units[i].content), units[i].mps or bs.ModelParameterSet()


def _edit_ndu_fields(data, units, rng, base_mutate, max_size):
    """Re-encode an NDU header with edited fields and the same payload."""
    picked = _pick_ndu(units, rng)
    if picked is None:
        return None
    i, u, h, mps = picked
    for _ in range(rng.choice((1, 1, 2, 3))):
        field = rng.randrange(11)
        if field <= 2:
            h.dims = _random_dims(rng, tuple(h.dims))
        elif field == 3:
            h.scan_order = rng.randrange(5)
        elif field == 4:
            h.dq_flag = not h.dq_flag
        elif field == 5:
            h.codebook = None if (h.codebook is not None and rng.random() < 0.5) \
                else _random_codebook(rng)
            if h.codebook is not None:
                h.payload_type = bs.PayloadType.FLOAT
        elif field == 6:
            h.cabac_unary_length_minus1 = rng.choice((0, 1, 2, 9, 10, 11, 31, 63, 254, 255))
        elif field == 7:
            h.payload_type = rng.choice((bs.PayloadType.INT, bs.PayloadType.FLOAT))
            if h.payload_type == bs.PayloadType.INT:
                h.codebook = None
        elif field == 8:
            h.parent_node_id_present = not h.parent_node_id_present
            h.temporal_context_modeling = rng.random() < 0.5
        elif field == 9:
            h.put_node_depth = rng.choice((0, 1, 2, 3, 2**20))
            h.parameter_id = rng.choice((0, 0, 1))
        else:
            h.names = [rng.choice(("0", "1", "", "layer1.weight", "x" * 300))]
    if len(h.dims) > 1 and h.scan_order:
        count = bs.header_entry_point_count(h.dims, h.scan_order)
        if count > 4096:
            h.scan_order = 0
            count = 0
    else:
        count = 0
    old = list(h.entry_points)
    h.entry_points = [old[j] if j < len(old) and rng.random() < 0.8 else
                      bs.EntryPoint(rng.randrange(4096), rng.randrange(256), rng.randrange(8))
                      for j in range(count)]
    if not h.dq_flag:
        for ep in h.entry_points:
            ep.dq_state = 0
    if mps.parent_signalling_enabled is False and h.parent_node_id_present:
        mps = copy.deepcopy(mps)
        mps.parent_signalling_enabled = True
        mps_unit = next((x for x in units if x.type == bs.UnitType.MPS), None)
        if mps_unit is not None and mps_unit.offset < u.offset:
            data = _rebuild(data, units, units.index(mps_unit), bs.encode_mps(mps, u.profile or 1))
            units = parsed_units(data)
            if not units or i >= len(units):
                return None
            u = units[i]
    new = bs.encode_ndu(h, bytes(u.payload), mps, u.profile if u.profile is not None else 1)
    return _rebuild(data, units, i, new)


def _edit_mps(data, units, rng, base_mutate, max_size):
    """Re-encode the model parameter set with other quantization parameters or flags."""
    idx = [i for i, u in enumerate(units) if u.type == bs.UnitType.MPS]
    if not idx:
        return None
    i = rng.choice(idx)
    mps = copy.deepcopy(units[i].content)
    choice = rng.randrange(4)
    if choice == 0:
        mps.qp_density = rng.randrange(8)
    elif choice == 1:
        mps.qp_base = rng.choice((-4096, -4095, -2000, -100, -1, 0, 1, 100, 1000, 2000, 4095))
    elif choice == 2:
        mps.parent_signalling_enabled = not mps.parent_signalling_enabled
        mps.pre_flag = mps.parent_signalling_enabled and rng.random() < 0.5
    else:
        mps.quantization_method_flags = rng.randrange(8)
        mps.topology_indexed_reference = rng.random() < 0.2
    return _rebuild(data, units, i, bs.encode_mps(mps, units[i].profile or 1))


def _edit_framing(data, rng):
    """Edit nnr_unit_size, the size form, the unit type or the flags of one unit."""
    raw, tail = split_units(data)
    if not raw:
        return None
    i = rng.randrange(len(raw))
    u = raw[i]
    choice = rng.randrange(4)
    if choice == 0:
        u.long_form = not u.long_form
        return join_units(raw, tail)
    if choice == 1:
        u.flags = (rng.randrange(8) << 2) | (u.flags & 3)
        return join_units(raw, tail)
    if choice == 2:
        u.flags ^= 1 << rng.randrange(2)
        return join_units(raw, tail)
    out = bytearray(join_units(raw[:i]))
    unit = bytearray(u.to_bytes())
    framing = 5 if u.long_form else 3
    size = rng.choice((0, 1, 2, 3, 4, 5, len(unit) - 1, len(unit) + 1, len(unit) + 100,
                       0x7FFF, 0x7FFFFFFF, rng.randrange(1 << (8 * framing - 9))))
    size &= (1 << (8 * framing - 9)) - 1
    head = ((1 << 31) | size).to_bytes(4, "big") if u.long_form else size.to_bytes(2, "big")
    unit[:framing - 1] = head
    return bytes(out + unit + join_units(raw[i + 1:], tail))


def _splice(data, rng, other: bytes | None = None):
    """Unit-level splicing: insert, drop, duplicate, reorder or borrow whole units."""
    raw, tail = split_units(data)
    donor = split_units(other if other is not None else rng.choice(_donor_seeds())[1])[0]
    choice = rng.randrange(5)
    if choice == 0 and donor:                       # replace a unit by one of the donor
        if raw:
            raw[rng.randrange(len(raw))] = rng.choice(donor)
        else:
            raw = donor
    elif choice == 1 and donor:                     # insert a donor unit
        raw.insert(rng.randrange(len(raw) + 1), rng.choice(donor))
    elif choice == 2 and raw:                       # drop a unit
        del raw[rng.randrange(len(raw))]
    elif choice == 3 and raw:                       # duplicate a unit
        k = rng.randrange(len(raw))
        raw.insert(rng.randrange(len(raw) + 1), raw[k])
    elif len(raw) >= 2:                             # swap two units
        a, b = rng.randrange(len(raw)), rng.randrange(len(raw))
        raw[a], raw[b] = raw[b], raw[a]
    if other is not None and donor and rng.random() < 0.5:   # crossover: head of one, tail of other
        cut_a = rng.randrange(len(raw) + 1)
        cut_b = rng.randrange(len(donor) + 1)
        raw = raw[:cut_a] + donor[cut_b:]
        tail = b""
    return join_units(raw, tail)


def structured_mutate(data: bytes, max_size: int, rng: random.Random, base_mutate) -> bytes:
    """One mutation of ``data``: byte-level or aware of units, headers and payloads.

    ``base_mutate(bytes, max_size)`` is the byte-level mutator (libFuzzer's under atheris).
    Never raises; the result is at most ``max_size`` bytes.
    """
    r = rng.random()
    out = None
    if rng.random() < 0.1:        # libFuzzer keeps only seeds with new Python coverage: use all
        data = rng.choice(_donor_seeds())[1]
    try:
        if r < 0.25:
            out = base_mutate(data, max_size)
        else:
            units = parsed_units(data) if data else None
            if not units and r < 0.85:
                data = rng.choice(_donor_seeds())[1]   # nothing parsable left: restart from a seed
                units = parsed_units(data)
            if r < 0.55:
                out = _mutate_payload(data, units, rng, base_mutate, max_size)
            elif r < 0.65:
                out = _mutate_header(data, units, rng, base_mutate, max_size)
            elif r < 0.80:
                out = _edit_ndu_fields(data, units, rng, base_mutate, max_size)
            elif r < 0.85:
                out = _edit_mps(data, units, rng, base_mutate, max_size)
            elif r < 0.93:
                out = _edit_framing(data, rng)
            else:
                out = _splice(data, rng)
    except Exception:                                  # the mutator must never stop the run
        out = None
    if out is None:
        out = base_mutate(data, max_size)
    return bytes(out[:max_size])


# ---------------------------------------------------------------------------- differential mutation

def _unit_pieces(stream: bytes):
    """(parsed units, their bytes, the bytes after the last parsable unit) or None."""
    units = parsed_units(stream) if stream else None
    if not units:
        return None
    pieces = [stream[u.offset:u.offset + u.size] for u in units]
    end = units[-1].offset + units[-1].size
    return units, pieces, stream[end:]


def _tree_header_edit(stream: bytes, units, rng) -> bytes | None:
    """Re-encode one NDU header with edited update-tree fields (depth, parameter id, device,
    node id / parent flags, parent id type, TCA flag) or another tensor's name, same payload."""
    picked = _pick_ndu(units, rng)
    if picked is None:
        return None
    i, u, h, mps = picked
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        field = rng.randrange(10)
        if field <= 1:
            d = h.put_node_depth
            h.put_node_depth = max(0, rng.choice((d + 1, d - 1, d + 2, d - 2, 0, 1, 2,
                                                  rng.randrange(16), 2**20, 2**31 - 1)))
        elif field == 2:
            p = h.parameter_id
            h.parameter_id = max(0, rng.choice((p + 1, p - 1, 0, rng.randrange(8), 2**20)))
        elif field == 3:
            h.device_id = rng.choice((0, 1, 2, 3, 4, 7, h.device_id + 1, 2**31 - 1))
            h.node_id_present = True
        elif field == 4:
            h.node_id_present = not h.node_id_present
        elif field == 5:
            h.parent_node_id_present = not h.parent_node_id_present
        elif field == 6:
            h.temporal_context_modeling = not h.temporal_context_modeling
            h.parent_node_id_present = h.parent_node_id_present or rng.random() < 0.7
        elif field == 7:
            h.parent_node_id_type = rng.choice((0, 0, 1, 2))
            h.parent_node_payload_hash = bytes(rng.randrange(256) for _ in range(
                bs.ndu.PARENT_HASH_BITS.get(h.parent_node_id_type, 0) // 8)) or None
            h.parent_device_id = rng.choice((0, 1, 2, 7, h.device_id))
        elif field == 8:                          # another tensor's name (element count)
            names = [x.content.names[0] for x in units
                     if x.type == bs.UnitType.NDU and x.content.names]
            names += ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias", "steps", "new"]
            h.names = [rng.choice(names)]
        else:                                     # dims: same count reshaped, or another count
            h.dims = _random_dims(rng, tuple(h.dims)) if rng.random() < 0.3 else \
                _random_dims_small(rng, tuple(h.dims))
    if h.parent_node_id_present and not mps.parent_signalling_enabled:
        mps_i = next((j for j, x in enumerate(units) if x.type == bs.UnitType.MPS), None)
        if mps_i is None or units[mps_i].offset > u.offset:
            return None
        mps = copy.deepcopy(mps)
        mps.parent_signalling_enabled = True
        stream = _rebuild(stream, units, mps_i, bs.encode_mps(mps, units[mps_i].profile or 1))
        units = parsed_units(stream)
        if not units or i >= len(units):
            return None
        u = units[i]
    if len(h.dims) > 1 and h.scan_order:
        count = bs.header_entry_point_count(h.dims, h.scan_order)
        if count > 4096:
            h.scan_order, count = 0, 0
        h.entry_points = (list(h.entry_points) + [bs.EntryPoint(0, 0, 0)] * count)[:count]
    else:
        h.entry_points = []
    new = bs.encode_ndu(h, bytes(u.payload), mps, u.profile if u.profile is not None else 1)
    return _rebuild(stream, units, i, new)


def matching_states(stream: bytes) -> list[int]:
    """Selectors of the states that the first NDU of ``stream`` continues (device and depth)."""
    units = parsed_units(stream) if stream else None
    first = next((u.content for u in units or () if u.type == bs.UnitType.NDU), None)
    if first is None or not first.names:
        return []
    out = []
    for index, (_, state) in enumerate(diff_states()):
        if first.node_id_present and state.device_id not in (None, first.device_id):
            continue
        if first.put_node_depth == state.next_depth(first.names[0]):
            out.append(index)
    return out


def _random_dims_small(rng, old: tuple) -> tuple:
    """Dims near the old ones: the same count reshaped, or one dimension off by a little."""
    dims = list(old) or [1]
    n = math.prod(dims)
    if rng.random() < 0.5 and n > 1:
        divisors = [d for d in range(1, min(n, 4096) + 1) if n % d == 0]
        d = rng.choice(divisors)
        return (d, n // d) if rng.random() < 0.7 else (n,)
    k = rng.randrange(len(dims))
    dims[k] = max(0, dims[k] + rng.choice((-2, -1, 1, 2)))
    return tuple(dims)


def _mutate_update_tree(stream: bytes, rng, base_mutate, max_size: int) -> bytes | None:
    """Mutations aimed at the parameter update tree and the sequence of NDUs of one update."""
    parts = _unit_pieces(stream)
    if parts is None:
        return None
    units, pieces, tail = parts
    ndus = _ndu_indices(units)
    choice = rng.randrange(10)
    if choice <= 3:
        return _tree_header_edit(stream, units, rng)
    if choice == 4 and ndus:                           # drop an NDU (or all of them)
        drop = set(ndus) if rng.random() < 0.1 else {rng.choice(ndus)}
        return b"".join(p for j, p in enumerate(pieces) if j not in drop) + tail
    if choice == 5 and ndus:                           # duplicate an NDU
        k = rng.choice(ndus)
        pieces.insert(rng.choice((k + 1, len(pieces), rng.randrange(len(pieces) + 1))),
                      pieces[k])
        return b"".join(pieces) + tail
    if choice == 6 and len(ndus) >= 2:                 # reorder NDUs
        if rng.random() < 0.5:
            a, b = rng.sample(ndus, 2)
            pieces[a], pieces[b] = pieces[b], pieces[a]
        else:
            order = ndus[:]
            rng.shuffle(order)
            ndu_pieces = [pieces[j] for j in order]
            for j in ndus:
                pieces[j] = ndu_pieces.pop()
        return b"".join(pieces) + tail
    if choice == 7:                                    # an NDU of another update
        donor_stream = rng.choice(_diff_material()["donors"])[1]
        others = [x for x in parsed_units(donor_stream) or [] if x.type == bs.UnitType.NDU]
        if not others:
            return None
        k = rng.choice(ndus) if ndus else None
        mine = units[k] if ndus else None
        same = [x for x in others if mine is not None and x.content.names == mine.content.names]
        unit = rng.choice(same if same and rng.random() < 0.7 else others)
        piece = donor_stream[unit.offset:unit.offset + unit.size]
        if ndus and rng.random() < 0.6:
            pieces[k] = piece
        else:
            pieces.insert(rng.randrange(1, len(pieces) + 1), piece)
        return b"".join(pieces) + tail
    if choice == 8:                                    # truncate
        r = rng.random()
        if r < 0.4 and len(pieces) > 1:                # at a unit boundary
            return b"".join(pieces[:rng.randrange(1, len(pieces))])
        if r < 0.8 and ndus:                           # inside an NDU
            k = rng.choice(ndus)
            cut = rng.randrange(1, len(pieces[k]))
            return b"".join(pieces[:k]) + pieces[k][:cut]
        return stream[:rng.randrange(len(stream))]
    if ndus:                                           # bit flips in one payload
        u = units[rng.choice(ndus)]
        payload = bytearray(u.payload)
        if not payload:
            return None
        for _ in range(rng.choice((1, 1, 2, 3, 8))):
            pos = rng.randrange(8 * len(payload))
            payload[pos >> 3] ^= 0x80 >> (pos & 7)
        start = u.offset + u.header_size
        return stream[:start] + bytes(payload) + stream[start + len(payload):]
    return None


def diff_mutate(data: bytes, max_size: int, rng: random.Random, base_mutate) -> bytes:
    """One mutation of a differential input: another state (selector) or tweak, an update-tree
    mutation of the stream, or one of the plain mutations with differential donor streams."""
    global _DONORS
    parts = split_diff(data)
    if parts is None:
        selector, tweak, stream = 0, 0, data
    else:
        selector, tweak, stream = parts
    room = max(0, max_size - DIFF_PREFIX)
    r = rng.random()
    if r < 0.06:
        matching = matching_states(stream) if rng.random() < 0.5 else []
        selector = rng.choice(matching) if matching else rng.randrange(len(diff_states()))
    elif r < 0.10:
        tweak = rng.randrange(256) if rng.random() < 0.7 else 0
    if r >= 0.10 or rng.random() < 0.5:
        out = None
        if rng.random() < 0.45:
            try:
                out = _mutate_update_tree(stream, rng, base_mutate, room)
            except Exception:                          # the mutator must never stop the run
                out = None
        if out is None:
            _DONORS = _diff_material()["donors"] if rng.random() < 0.8 else None
            try:
                out = structured_mutate(stream, room, rng, base_mutate)
            finally:
                _DONORS = None
        stream = out
        if rng.random() < 0.25:                        # a state that the mutant continues
            matching = matching_states(stream[:room])
            if matching:
                selector = rng.choice(matching)
    return diff_input(selector, tweak, stream[:room])[:max_size]


# ============================================================================ atheris engine

def _libfuzzer_argv(argv: list[str]) -> list[str]:
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    extra = [f"{k}={v}" for k, v in LIBFUZZER_DEFAULTS.items() if k not in given]
    return argv[:1] + extra + argv[1:]


def run_atheris(argv: list[str], target: str = "all") -> None:
    try:
        import atheris
    except ImportError:
        print(ATHERIS_HINT, file=sys.stderr)
        sys.exit(2)
    load_codec(instrument=True)
    target_seeds(target)
    _enable_feedback()
    # an empty corpus directory starts from the seeds; one without differential seeds gets
    # them when the target includes differential inputs
    for arg in argv[1:]:
        if not arg.startswith("-") and os.path.isdir(arg):
            names = os.listdir(arg)
            if not names:
                write_corpus(arg, target)
            elif target != "plain" and not any(n.startswith("seed-diff_") for n in names):
                write_corpus(arg, "differential")
    differential_only = target == "differential"

    def test_one_input(data: bytes) -> None:
        if differential_only and split_diff(data) is None:
            data = diff_input(0, 0, data)
        check_input(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if split_diff(data) is not None or differential_only:
            return diff_mutate(data, max_size, rng, atheris.Mutate)
        return structured_mutate(data, max_size, rng, atheris.Mutate)

    def custom_crossover(data1: bytes, data2: bytes, max_out_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        first, second = split_diff(data1), split_diff(data2)
        prefix = data1[:DIFF_PREFIX] if first is not None else b""
        a = first[2] if first is not None else data1
        b = second[2] if second is not None else data2
        try:
            out = prefix + _splice(a, rng, b)
        except Exception:
            out = prefix + a[:len(a) // 2] + b[len(b) // 2:]
        return out[:max_out_size]

    atheris.Setup(_libfuzzer_argv(argv), test_one_input, custom_mutator=custom_mutator,
                  custom_crossover=custom_crossover)
    atheris.Fuzz()


# ============================================================================ pure-Python engine

def failure_signature(exc: BaseException) -> str:
    """Exception type and innermost frame inside nnc_core (or the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "nnc_core" in f.filename] or frames
    where = f"{os.path.basename(inner[-1].filename)}:{inner[-1].lineno}" if inner else "?"
    return f"{type(exc).__name__} at {where}"


def _save(crash_dir: str, kind: str, data: bytes, note: str) -> str:
    """Writes a failing input, a note and, for a differential input, its decoder state."""
    os.makedirs(crash_dir, exist_ok=True)
    path = os.path.join(crash_dir, f"{kind}-{hashlib.sha1(data).hexdigest()}")
    with open(path, "wb") as f:
        f.write(data)
    parts = split_diff(data)
    if parts is not None:
        try:
            diff_state(parts[0], parts[1]).save(state_path(path))
            note += f"\n\ndifferential input: {_describe_diff(data)} (saved: {state_path(path)})\n"
        except Exception as error:                         # noqa: BLE001 - keep the input
            note += f"\n\n(the decoder state could not be saved: {error!r})\n"
    with open(path + ".txt", "w") as f:
        f.write(note)
    return path


class _Watchdog(threading.Thread):
    """Ends the process when one input runs longer than ``timeout`` (the input is saved)."""

    def __init__(self, timeout: float, crash_dir: str):
        super().__init__(daemon=True)
        self.timeout, self.crash_dir = timeout, crash_dir
        self.current: bytes | None = None
        self.started = 0.0

    def run(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            data, started = self.current, self.started
            if data is not None and time.monotonic() - started > self.timeout:
                path = _save(self.crash_dir, "timeout", data,
                             f"input ran for more than {self.timeout} s\n")
                print(f"\nTIMEOUT: input ran for more than {self.timeout} s; saved to {path}",
                      file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(70)


def pure_fuzz(runs: int = 100_000, seed: int = 0, corpus: str | None = None,
              crash_dir: str | None = None, timeout: float = 10.0, max_len: int = DEFAULT_MAX_LEN,
              slow_seconds: float = SLOW_SECONDS, max_rss_mb: float = MAX_RSS_MB,
              progress: bool = False, watchdog: bool = True, pool_limit: int = 4096,
              target: str = "plain", tag: str = "") -> dict:
    """Random structure-aware mutation without coverage feedback.

    Keeps a pool of seeds plus mutants that decoded without error or failed deep inside the
    payload (a crude stand-in for coverage); differential inputs have their own pool, used for
    a DIFF_SHARE of the inputs with ``target="all"`` and for all of them with "differential".
    Returns statistics and the failures found as ``{"runs", "failures": [(signature, path or
    None, traceback)], "max_seconds", "diff": {outcome: count}, "diff_primed": {...}, ...}``.
    """
    load_codec()
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    rng = random.Random(seed)
    pools = {"plain": [data for _, data in seeds()] if target != "differential" else [],
             "diff": [data for _, data in diff_seeds()] if target != "plain" else []}
    fixed = {k: len(v) for k, v in pools.items()}
    if corpus and os.path.isdir(corpus):
        for name in sorted(os.listdir(corpus)):
            path = os.path.join(corpus, name)
            if os.path.isfile(path) and os.path.getsize(path) <= max_len:
                with open(path, "rb") as f:
                    data = f.read()
                kind = "diff" if split_diff(data) is not None else "plain"
                if target in ("all", "differential" if kind == "diff" else "plain"):
                    pools[kind].append(data)
    dog = None
    if watchdog and crash_dir:
        dog = _Watchdog(timeout, crash_dir)
        dog.start()
        faulthandler.enable()

    def base(d, m):
        return byte_mutate(d, m, rng)

    failures, signatures = [], set()
    stats = {"runs": 0, "decoded": 0, "deep": 0, "max_seconds": 0.0, "slowest": b"",
             "diff_runs": 0, "diff": dict.fromkeys(DIFF_OUTCOMES, 0),
             "diff_primed": dict.fromkeys(DIFF_OUTCOMES, 0)}
    started = time.monotonic()
    for i in range(runs):
        kind = {"plain": "plain", "differential": "diff"}.get(target) or \
            ("diff" if rng.random() < DIFF_SHARE else "plain")
        pool = pools[kind]
        data = rng.choice(pool)
        mutate = diff_mutate if kind == "diff" else structured_mutate
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate(data, max_len, rng, base)
        if dog:
            dog.started, dog.current = time.monotonic(), data
        try:
            elapsed = check_input(data, slow_seconds, max_rss_mb)
            if elapsed > stats["max_seconds"]:
                stats["max_seconds"], stats["slowest"] = elapsed, data
            if kind == "diff":
                outcome, primed = _last_diff_outcome
                stats["diff_runs"] += 1
                stats["diff"][outcome] += 1
                stats["diff_primed"][outcome] += primed
                outcome = {"applied": "decoded", "deep": "deep"}.get(outcome)
            else:
                outcome = _classify(data)
            if outcome:
                stats[outcome] += 1
                if len(pool) < pool_limit:
                    pool.append(data)
                else:
                    pool[rng.randrange(fixed[kind], pool_limit)] = data
        except Exception as exc:                            # noqa: BLE001 - all are findings
            sig = failure_signature(exc)
            tb = "".join(traceback.format_exception(exc))
            path = None
            if sig not in signatures:
                signatures.add(sig)
                if crash_dir:
                    path = _save(crash_dir, "crash", data, f"{sig}\n\n{tb}")
                print(f"\n{tag}FAILURE #{len(signatures)} at input {i}: {sig}"
                      + (f" (saved to {path})" if path else "") + f"\n{tb}",
                      file=sys.stderr, flush=True)
            failures.append((sig, path, tb))
            if isinstance(exc, MemoryBlowUp):              # the peak RSS stays high: stop
                stats["runs"] = i + 1
                break
        finally:
            if dog:
                dog.current = None
        stats["runs"] = i + 1
        if progress and (i + 1) % 10000 == 0:
            rate = (i + 1) / (time.monotonic() - started)
            print(f"{tag}#{i + 1} inputs, {len(signatures)} distinct failures, "
                  f"{rate:.0f} inputs/s, "
                  f"pool {len(pools['plain'])}+{len(pools['diff'])}, decoded {stats['decoded']}, "
                  f"deep {stats['deep']}, differential {stats['diff_runs']} "
                  f"{_format_outcomes(stats['diff'])}, peak RSS {peak_rss_mb():.0f} MB", flush=True)
    stats["failures"] = failures
    stats["seconds"] = time.monotonic() - started
    return stats


def _format_outcomes(counts: dict) -> str:
    return "(" + ", ".join(f"{k} {counts.get(k, 0)}" for k in DIFF_OUTCOMES) + ")"


def _classify(data: bytes) -> str | None:
    """'decoded' when the whole stream decodes, 'deep' when it fails inside a payload."""
    cap = _FuzzCap()
    try:
        decode(data)
        return "decoded"
    except DecodeError as error:
        message = str(error)
        if "payload" in message or "element" in message or "levels" in message:
            return "deep"
    except Exception:                                        # noqa: BLE001 - reported elsewhere
        pass
    finally:
        cap.restore()
    return None


def parallel_fuzz(workers: int, runs: int, seed: int, argv_extra: list[str]) -> dict:
    """Runs ``workers`` pure-Python fuzzing processes (seeds ``seed``, ``seed + 1``, ...) that
    share the runs, and adds up their statistics."""
    import subprocess
    import tempfile
    procs, summaries = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(workers):
            summary = os.path.join(tmp, f"worker{k}.json")
            share = runs // workers + (1 if k < runs % workers else 0)
            cmd = [sys.executable, os.path.abspath(__file__), "--no-atheris", "--runs", str(share),
                   "--seed", str(seed + k), "--summary-json", summary, "--worker-tag", f"[w{k}] ",
                   *argv_extra]
            procs.append(subprocess.Popen(cmd))
            summaries.append(summary)
        codes = [p.wait() for p in procs]
        parts = []
        for k, (code, summary) in enumerate(zip(codes, summaries)):
            try:
                with open(summary) as f:
                    parts.append(json.load(f))
            except (OSError, ValueError):
                parts.append({"runs": 0, "failures": [[f"worker {k} exited with {code}", None,
                                                       ""]], "seconds": 0, "max_seconds": 0,
                              "peak_rss_mb": 0})
    total = {"runs": sum(p["runs"] for p in parts), "workers": workers,
             "failures": [tuple(f) for p in parts for f in p["failures"]],
             "seconds": max(p["seconds"] for p in parts),
             "max_seconds": max(p["max_seconds"] for p in parts),
             "peak_rss_mb": max(p["peak_rss_mb"] for p in parts)}
    for key in ("decoded", "deep", "diff_runs"):
        total[key] = sum(p.get(key, 0) for p in parts)
    for key in ("diff", "diff_primed"):
        total[key] = {o: sum(p.get(key, {}).get(o, 0) for p in parts) for o in DIFF_OUTCOMES}
    return total


# ============================================================================ reproduce / minimize

def reproduce(paths: list[str]) -> int:
    """Runs inputs once and reports the outcome; each in its own process when there are
    several (the peak RSS of one must not be blamed on the next)."""
    if len(paths) > 1:
        import subprocess
        codes = [subprocess.run([sys.executable, os.path.abspath(__file__), "--reproduce", path]
                                ).returncode for path in paths]
        return 1 if any(codes) else 0
    load_codec()
    primed_states()
    bad = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        state = load_state_for(path, data)
        start = time.perf_counter()
        try:
            elapsed = check_input(data, state=state)
            print(f"{path}: OK ({len(data)} bytes, {elapsed * 1000:.1f} ms, "
                  f"peak RSS {peak_rss_mb():.0f} MB)")
            if split_diff(data) is not None:
                print(f"  differential input: {_describe_diff(data, state)}; outcome "
                      f"{_last_diff_outcome[0]}")
                from nnc_core import nn as nnc_nn
                selector, tweak, stream = split_diff(data)
                work = (state or diff_state(selector, tweak)).copy()
                cap = _FuzzCap()
                try:
                    update = nnc_nn.decode(stream, state=work)
                    print(f"  nn.decode returned an update of {len(update)} tensors")
                except DecodeError as error:
                    print(f"  DecodeError: {error}")
                finally:
                    cap.restore()
                continue
            cap = _FuzzCap()
            try:
                decode(data)
                print("  decode returned normally")
            except DecodeError as error:
                print(f"  DecodeError: {error}")
            finally:
                cap.restore()
        except Exception as exc:                            # noqa: BLE001
            bad += 1
            print(f"{path}: FAILURE after {time.perf_counter() - start:.2f} s, "
                  f"peak RSS {peak_rss_mb():.0f} MB: {failure_signature(exc)}")
            traceback.print_exception(exc)
    return 1 if bad else 0


def state_path(path: str) -> str:
    """Where the decoder state of a differential input is kept (CodingState.save)."""
    return path + ".state.npz"


def load_state_for(path: str, data: bytes):
    """The saved state next to a differential input, or None (the selector byte decides)."""
    if split_diff(data) is None or not os.path.exists(state_path(path)):
        return None
    return CodingState.load(state_path(path))


def _describe_diff(data: bytes, state=None) -> str:
    selector, tweak, stream = split_diff(data)
    if state is not None:
        where = "state from the .state.npz file"
    else:
        labels = diff_states()
        where = (f"state {selector % len(labels)} ({labels[selector % len(labels)][0]}), "
                 f"tweak {TWEAKS[tweak & 15]!r}")
    return f"{where}, stream of {len(stream)} bytes"


def _signature_of(data: bytes, state=None) -> str | None:
    try:
        check_input(data, state=state)
    except Exception as exc:                                # noqa: BLE001
        return failure_signature(exc)
    return None


def minimize(data: bytes, keep=None, state=None) -> bytes:
    """Delta debugging: drop byte ranges and zero bytes while the failure signature stays.
    A differential input keeps its 6-byte prefix (and ``state``, if given, stays its state)."""
    load_codec()
    primed_states()
    target = _signature_of(data, state)
    if target is None:
        raise SystemExit("the input does not fail; nothing to minimize")
    if split_diff(data) is not None:
        prefix, data = data[:DIFF_PREFIX], data[DIFF_PREFIX:]
        inner = keep or (lambda d: _signature_of(d, state) == target)
        return prefix + minimize_bytes(data, lambda d: inner(prefix + d))
    return minimize_bytes(data, keep or (lambda d: _signature_of(d) == target))


def minimize_bytes(data: bytes, keep) -> bytes:
    """Drop whole units (byte ranges rarely line up with the unit framing), then byte ranges,
    then zero the remaining bytes, as long as ``keep`` holds."""
    raw, tail = split_units(data)
    i = 0
    while len(raw) > 1 and i < len(raw):
        candidate = join_units(raw[:i] + raw[i + 1:], tail)
        if keep(candidate):
            raw = raw[:i] + raw[i + 1:]
            data = candidate
        else:
            i += 1
    chunk = max(1, len(data) // 2)
    while chunk >= 1:
        i, changed = 0, False
        while i < len(data):
            candidate = data[:i] + data[i + chunk:]
            if candidate and keep(candidate):
                data, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    for i in range(len(data)):                              # simplify remaining bytes
        if data[i]:
            candidate = data[:i] + b"\x00" + data[i + 1:]
            if keep(candidate):
                data = candidate
    return data


# ============================================================================ large-dims probe

PROBE_SIZES = (1 << 20, 1 << 24, 1 << 26, 1 << 28, (1 << 28) + 16, (1 << 31) - 1)
PROBE_KINDS = {
    "raster_1d": "FLOAT [n], no tensor flags: a few bytes of levels, then the payload ends",
    "raster_2d": "FLOAT [2, n/2], row skipping off",
    "rowskip_all": "FLOAT [2, n/2], row skipping on and both rows skipped (a valid stream)",
    "codebook1": "FLOAT [2, n/2] with a one-entry codebook: no level is coded (a valid stream)",
    "blockscan": "FLOAT [16, n/16], scan_order 1 (8x8 blocks), row skipping off",
    "int_1d": "INT [n]",
    "blockscan_rowskip": "FLOAT [16, n/16], scan_order 1, all 16 rows skipped (a valid stream)",
    "blockscan_codebook1": "FLOAT [16, n/16], scan_order 1, one-entry codebook (a valid stream)",
}


def probe_stream(kind: str, n: int) -> bytes:
    """A stream whose NDU claims ``n`` elements while its payload is a few bytes.

    The payload is the one an encoder writes for a tiny tensor with the same rows and
    options, so the decoder gets as far as it can before the payload runs out.
    """
    load_codec()
    from nnc_core.cabac import PayloadEncoder
    mps = bs.ModelParameterSet()
    header = bs.NDUHeader(payload_type=bs.PayloadType.FLOAT, names=["0"])
    enc = PayloadEncoder()
    rows, small_cols, args = 1, 8, {}
    if kind == "raster_1d":
        dims = (n,)
    elif kind in ("raster_2d", "rowskip_all", "codebook1"):
        rows, dims = 2, (2, n // 2)
    elif kind.startswith("blockscan"):
        rows, dims, small_cols = 16, (16, n // 16), 16
        header.scan_order = 1
        header.entry_points = [bs.EntryPoint(0, 0, 0)]
        args["scan_order"] = 1
    else:
        dims = (n,)
        header.payload_type = bs.PayloadType.INT
    if kind.endswith("codebook1"):
        header.codebook = bs.Codebook([5], 0, 0)
        args.update(cb_size=1, cb_zero=0)
    if header.payload_type == bs.PayloadType.FLOAT:
        enc.bypass_bits(0xDC, 8)                          # qp -36
    levels = np.zeros(rows * small_cols, np.int32)
    if kind in ("raster_1d", "raster_2d", "blockscan", "int_1d"):
        levels[:] = 1                                     # non-zero: no row is skipped
    enc.encode_tensor(levels, rows, small_cols if rows > 1 else rows * small_cols,
                      row_skipping=kind.endswith("rowskip") or kind == "rowskip_all",
                      param_opt=False, **args)
    header.dims = dims
    return (bs.encode_start_unit(1) + bs.encode_mps(mps, 1) + bs.encode_topology(bs.Topology())
            + bs.encode_ndu(header, enc.finish(), mps, 1))


def _probe_case(kind: str, n: int) -> None:
    """Child process: decode one probe stream and print one JSON line."""
    data = probe_stream(kind, n)
    before = peak_rss_mb()
    start = time.perf_counter()
    import inspect
    # one thread: the probe's entry points are placeholders, which the parallel path would use
    kwargs = {"threads": 1} if "threads" in inspect.signature(decode).parameters else {}
    try:
        shape = decode(data, **kwargs).shape
        outcome = f"decoded, shape {list(shape)}"
    except DecodeError as error:
        outcome = f"DecodeError: {error}"
    except Exception as error:                              # noqa: BLE001
        outcome = f"{type(error).__name__}: {error}"
    print(json.dumps({"kind": kind, "n": n, "bytes": len(data), "outcome": outcome,
                      "seconds": round(time.perf_counter() - start, 3),
                      "rss_before_mb": round(before), "peak_rss_mb": round(peak_rss_mb())}))


def probe_large_dims(as_limit_mb: int = 12288) -> list[dict]:
    """Decode each probe stream in its own process (address space capped at ``as_limit_mb``)
    and report the outcome, time and peak RSS."""
    import subprocess
    results = []
    for kind in PROBE_KINDS:
        for n in PROBE_SIZES:
            cmd = [sys.executable, os.path.abspath(__file__), "--probe-case", kind, str(n),
                   "--as-limit-mb", str(as_limit_mb)]
            env = dict(os.environ, NNC_FUZZ_MAX_ELEMENTS="0")     # the library default cap
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            line = proc.stdout.strip().splitlines()[-1:] or [""]
            try:
                row = json.loads(line[0])
            except ValueError:
                row = {"kind": kind, "n": n, "outcome": f"process exit {proc.returncode}: "
                                                     f"{proc.stderr.strip()[-300:]}"}
            results.append(row)
            print(f"{kind:12s} n={n:>10d} {row.get('bytes', '?'):>4} B  "
                  f"{row.get('seconds', '?'):>7} s  peak RSS {row.get('peak_rss_mb', '?'):>6} MB  "
                  f"{row['outcome'][:110]}", flush=True)
    return results


# ============================================================================ command line

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Arguments starting with a single '-' and corpus directories go to libFuzzer.")
    parser.add_argument("--no-atheris", action="store_true",
                        help="pure-Python random mutation instead of atheris")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs (pure-Python mode)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (pure-Python mode)")
    parser.add_argument("--corpus", help="extra inputs for the pool (pure-Python mode)")
    parser.add_argument("--crash-dir", default=os.environ.get("NNC_FUZZ_CRASH_DIR",
                                                              "fuzz-artifacts"),
                        help="where failing inputs go (pure-Python mode)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    parser.add_argument("--target", choices=TARGETS, default="all",
                        help="inputs to fuzz: plain streams, differential streams decoded against "
                             "a decoder state, or both (default; %d %%%% differential)"
                             % round(100 * DIFF_SHARE))
    parser.add_argument("--workers", type=int, default=1,
                        help="pure-Python mode: processes sharing --runs (seeds --seed, +1, ...)")
    parser.add_argument("--write-corpus", metavar="DIR", help="write the seed corpus and exit")
    parser.add_argument("--reproduce", nargs="+", metavar="FILE", help="run inputs once")
    parser.add_argument("--minimize", metavar="FILE", help="shrink a failing input")
    parser.add_argument("-o", "--output", help="output file of --minimize")
    parser.add_argument("--probe-large-dims", action="store_true",
                        help="decode headers claiming up to 2**31-1 elements with a few payload "
                             "bytes, each in its own process, and report time and peak RSS")
    # internal: the child process of --probe-large-dims
    parser.add_argument("--probe-case", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--as-limit-mb", type=int, help=argparse.SUPPRESS)
    # internal: the worker processes of --workers
    parser.add_argument("--summary-json", help=argparse.SUPPRESS)
    parser.add_argument("--worker-tag", default="", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv[1:])

    if args.probe_case:
        if args.as_limit_mb:
            limit = args.as_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _probe_case(args.probe_case[0], int(args.probe_case[1]))
        return 0

    if args.write_corpus:
        load_codec()
        print(f"wrote {write_corpus(args.write_corpus, args.target)} seeds to {args.write_corpus}")
        return 0
    if args.reproduce:
        return reproduce(args.reproduce)
    if args.probe_large_dims:
        probe_large_dims()
        return 0
    if args.minimize:
        with open(args.minimize, "rb") as f:
            data = f.read()
        load_codec()
        state = load_state_for(args.minimize, data)
        small = minimize(data, state=state)
        out = args.output or args.minimize + ".min"
        with open(out, "wb") as f:
            f.write(small)
        if split_diff(small) is not None:
            (state or diff_state(*split_diff(small)[:2])).save(state_path(out))
        print(f"{len(data)} -> {len(small)} bytes: {out} ({_signature_of(small, state)})")
        return 0
    if args.no_atheris:
        for a in rest:                                      # accept -runs=N as well
            if a.startswith("-runs="):
                args.runs = int(a.split("=", 1)[1])
        if args.workers > 1:
            extra = ["--target", args.target, "--crash-dir", args.crash_dir, "--timeout",
                     str(args.timeout), "--max-len", str(args.max_len)]
            extra += ["--corpus", args.corpus] if args.corpus else []
            stats = parallel_fuzz(args.workers, args.runs, args.seed, extra)
            engine = f"pure-Python mutator, {args.workers} workers"
            peak = stats["peak_rss_mb"]
        else:
            stats = pure_fuzz(args.runs, args.seed, args.corpus, args.crash_dir, args.timeout,
                              args.max_len, progress=True, target=args.target,
                              tag=args.worker_tag)
            engine, peak = "pure-Python mutator", peak_rss_mb()
            if args.summary_json:
                summary = {k: v for k, v in stats.items() if k != "slowest"}
                summary["peak_rss_mb"] = peak
                with open(args.summary_json, "w") as f:
                    json.dump(summary, f)
        distinct = sorted({sig for sig, _, _ in stats["failures"]})
        print(f"{args.worker_tag}Done {stats['runs']} runs in {stats['seconds']:.0f} s ({engine}, "
              f"target {args.target}); {len(stats['failures'])} failing inputs, "
              f"{len(distinct)} distinct failures; slowest input "
              f"{stats['max_seconds'] * 1000:.1f} ms; peak RSS {peak:.0f} MB")
        if stats["diff_runs"]:
            print(f"{args.worker_tag}differential inputs {stats['diff_runs']}: "
                  f"{_format_outcomes(stats['diff'])}; with a primed state "
                  f"{_format_outcomes(stats['diff_primed'])}")
        for sig in distinct:
            print(f"{args.worker_tag}  {sig}")
        return 1 if stats["failures"] else 0
    run_atheris([argv[0]] + rest, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
