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
"""
from __future__ import annotations

import argparse
import copy
import faulthandler
import hashlib
import json
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


def write_corpus(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(directory, f"seed-{name}.nnc"), "wb") as f:
            f.write(data)
    return len(seeds())


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
                max_rss_mb: float = MAX_RSS_MB) -> float:
    """Run every decoder entry point on ``data``; returns the slowest call's time.

    Entry points: ``decode(data)``, ``decode_stream(data, CodingState())`` and
    ``decode_stream`` with each primed incremental state. Raises whatever the decoder raises
    other than DecodeError, and HarnessFailure for a wrong result, a call slower than
    ``slow_seconds`` (confirmed by a second run) or a peak RSS above ``max_rss_mb``.
    """
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
        cap.restore()
        rss = peak_rss_mb()
        if rss > max_rss_mb:
            raise MemoryBlowUp(f"peak RSS {rss:.0f} MB after decoding {len(data)} bytes "
                               f"(limit {max_rss_mb:.0f} MB)")
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
            src = rng.choice(seeds())[1]
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
        donor = parsed_units(rng.choice(seeds())[1]) or []
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


def _edit_ndu_fields(data, units, rng, base_mutate, max_size):
    """Re-encode an NDU header with edited fields and the same payload."""
    ndus = _ndu_indices(units)
    if not ndus:
        return None
    i = rng.choice(ndus)
    u = units[i]
    h = copy.deepcopy(u.content)
    mps = u.mps or bs.ModelParameterSet()
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
    donor = split_units(other if other is not None else rng.choice(seeds())[1])[0]
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
        data = rng.choice(seeds())[1]
    try:
        if r < 0.25:
            out = base_mutate(data, max_size)
        else:
            units = parsed_units(data) if data else None
            if not units and r < 0.85:
                data = rng.choice(seeds())[1]       # nothing parsable left: restart from a seed
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


# ============================================================================ atheris engine

def _libfuzzer_argv(argv: list[str]) -> list[str]:
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    extra = [f"{k}={v}" for k, v in LIBFUZZER_DEFAULTS.items() if k not in given]
    return argv[:1] + extra + argv[1:]


def run_atheris(argv: list[str]) -> None:
    try:
        import atheris
    except ImportError:
        print(ATHERIS_HINT, file=sys.stderr)
        sys.exit(2)
    load_codec(instrument=True)
    seeds()
    _enable_feedback()
    # an empty corpus directory starts from the seeds
    for arg in argv[1:]:
        if not arg.startswith("-") and os.path.isdir(arg) and not os.listdir(arg):
            write_corpus(arg)

    def test_one_input(data: bytes) -> None:
        check_input(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        return structured_mutate(data, max_size, rng, atheris.Mutate)

    def custom_crossover(data1: bytes, data2: bytes, max_out_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        try:
            out = _splice(data1, rng, data2)
        except Exception:
            out = data1[:len(data1) // 2] + data2[len(data2) // 2:]
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
    os.makedirs(crash_dir, exist_ok=True)
    path = os.path.join(crash_dir, f"{kind}-{hashlib.sha1(data).hexdigest()}")
    with open(path, "wb") as f:
        f.write(data)
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
              progress: bool = False, watchdog: bool = True, pool_limit: int = 4096) -> dict:
    """Random structure-aware mutation without coverage feedback.

    Keeps a pool of seeds plus mutants that decoded without error or failed deep inside the
    payload (a crude stand-in for coverage). Returns statistics and the failures found as
    ``{"runs", "failures": [(signature, path or None, traceback)], "max_seconds", ...}``.
    """
    load_codec()
    rng = random.Random(seed)
    pool = [data for _, data in seeds()]
    if corpus and os.path.isdir(corpus):
        for name in sorted(os.listdir(corpus)):
            path = os.path.join(corpus, name)
            if os.path.isfile(path) and os.path.getsize(path) <= max_len:
                with open(path, "rb") as f:
                    pool.append(f.read())
    dog = None
    if watchdog and crash_dir:
        dog = _Watchdog(timeout, crash_dir)
        dog.start()
        faulthandler.enable()

    def base(d, m):
        return byte_mutate(d, m, rng)

    failures, signatures = [], set()
    stats = {"runs": 0, "decoded": 0, "deep": 0, "max_seconds": 0.0, "slowest": b""}
    started = time.monotonic()
    for i in range(runs):
        data = rng.choice(pool)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = structured_mutate(data, max_len, rng, base)
        if dog:
            dog.started, dog.current = time.monotonic(), data
        try:
            elapsed = check_input(data, slow_seconds, max_rss_mb)
            if elapsed > stats["max_seconds"]:
                stats["max_seconds"], stats["slowest"] = elapsed, data
            outcome = _classify(data)
            if outcome:
                stats[outcome] += 1
                if len(pool) < pool_limit:
                    pool.append(data)
                else:
                    pool[rng.randrange(len(seeds()), pool_limit)] = data
        except Exception as exc:                            # noqa: BLE001 - all are findings
            sig = failure_signature(exc)
            tb = "".join(traceback.format_exception(exc))
            path = None
            if sig not in signatures:
                signatures.add(sig)
                if crash_dir:
                    path = _save(crash_dir, "crash", data, f"{sig}\n\n{tb}")
                print(f"\nFAILURE #{len(signatures)} at input {i}: {sig}"
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
            print(f"#{i + 1} inputs, {len(signatures)} distinct failures, {rate:.0f} inputs/s, "
                  f"pool {len(pool)}, decoded {stats['decoded']}, deep {stats['deep']}, "
                  f"peak RSS {peak_rss_mb():.0f} MB", flush=True)
    stats["failures"] = failures
    stats["seconds"] = time.monotonic() - started
    return stats


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
        start = time.perf_counter()
        try:
            elapsed = check_input(data)
            print(f"{path}: OK ({len(data)} bytes, {elapsed * 1000:.1f} ms, "
                  f"peak RSS {peak_rss_mb():.0f} MB)")
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


def _signature_of(data: bytes) -> str | None:
    try:
        check_input(data)
    except Exception as exc:                                # noqa: BLE001
        return failure_signature(exc)
    return None


def minimize(data: bytes, keep=None) -> bytes:
    """Delta debugging: drop byte ranges and zero bytes while the failure signature stays."""
    load_codec()
    primed_states()
    target = _signature_of(data)
    if target is None:
        raise SystemExit("the input does not fail; nothing to minimize")
    keep = keep or (lambda d: _signature_of(d) == target)
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
    args, rest = parser.parse_known_args(argv[1:])

    if args.probe_case:
        if args.as_limit_mb:
            limit = args.as_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _probe_case(args.probe_case[0], int(args.probe_case[1]))
        return 0

    if args.write_corpus:
        load_codec()
        print(f"wrote {write_corpus(args.write_corpus)} seeds to {args.write_corpus}")
        return 0
    if args.reproduce:
        return reproduce(args.reproduce)
    if args.probe_large_dims:
        probe_large_dims()
        return 0
    if args.minimize:
        with open(args.minimize, "rb") as f:
            data = f.read()
        small = minimize(data)
        out = args.output or args.minimize + ".min"
        with open(out, "wb") as f:
            f.write(small)
        print(f"{len(data)} -> {len(small)} bytes: {out} ({_signature_of(small)})")
        return 0
    if args.no_atheris:
        for a in rest:                                      # accept -runs=N as well
            if a.startswith("-runs="):
                args.runs = int(a.split("=", 1)[1])
        stats = pure_fuzz(args.runs, args.seed, args.corpus, args.crash_dir, args.timeout,
                          args.max_len, progress=True)
        distinct = sorted({sig for sig, _, _ in stats["failures"]})
        print(f"Done {stats['runs']} runs in {stats['seconds']:.0f} s (pure-Python mutator); "
              f"{len(stats['failures'])} failing inputs, {len(distinct)} distinct failures; "
              f"slowest input {stats['max_seconds'] * 1000:.1f} ms; peak RSS {peak_rss_mb():.0f} MB")
        for sig in distinct:
            print(f"  {sig}")
        return 1 if stats["failures"] else 0
    run_atheris([argv[0]] + rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
