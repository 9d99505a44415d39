"""Driver of the reference NNC software (NNCodec 2.1.3): runs jobs inside its environment.

Run it as a script with the interpreter of the reference environment (numpy < 2); the
project's side (:mod:`reference.runner`) starts it in a subprocess. At module level it imports
the standard library only, so the project's own interpreter can run it too for the jobs that
do not use the reference (``memory`` with ``"impl": "ours"``). Two modes::

    python driver.py [--torch-threads N] JOBS.json RESULTS.json
    python driver.py [--torch-threads N] --serve

Batch mode: ``JOBS.json`` holds a list of jobs; all of them run in this one process, so torch
and nncodec are imported once (only if a job needs them). ``RESULTS.json`` receives a list
with one result per job, in job order; it is written as ``[]`` once the imports are done
(which tells a caller the driver started) and rewritten after every job, so a caller can see
how far a crashed run got. A failing job never stops the others.

Serve mode: after the imports the driver prints ``{"ready": true}`` as one line on stdout,
then reads one JSON job per line from stdin and answers each with one JSON result line; an
empty line or the end of input stops it. A caller can so interleave the reference's work with
its own (the benchmark times both implementations in alternation).

In both modes everything the reference prints goes to stderr; stdout carries nothing but the
protocol. Relative paths in a job are resolved against the current working directory.
``--torch-threads N`` calls ``torch.set_num_threads(N)`` right after importing torch.

Every job is a JSON object with ``"op"`` naming one of the operations below (the ``OPS``
registry), an optional ``"id"`` copied into the result, and operation-specific fields. Every
result has ``{"index", "id", "op", "ok", "error", "traceback", "seconds"}`` plus the fields
its operation adds.

``{"op": "encode", "api": "tensor", "input": "x.npy", "args": {...},
   "bitstream": "out.nnc", "decoded": "out_dec.npy"}``
    ``nncodec.tensor.encode(x, args)`` (``args`` merged into the reference defaults by the
    reference itself); the bitstream is written to ``bitstream`` and, if ``decoded`` is
    given, decoded again with ``nncodec.tensor.decode`` and saved there.

``{"op": "encode", "api": "compress", "input": "x.npy" | "xs.npz", "args": {...}, ...}``
    ``nncodec.nnc.compress({tensor_id: x}, bitstream_path=None, return_bitstream=True,
    device_id=0, **args)``. ``tensor_id`` (default ``"0"``) is taken from the job, or from
    ``args`` if present there. An ``.npz`` input codes all its arrays (names = keys) and
    the decoded result is then saved as ``.npz`` (decoded with ``nncodec.nnc.decompress``).

``{"op": "encode", "api": "model", "model": "conv_bn_fc", "seed": 0, "args": {...}, ...}``
    ``nncodec.nnc.compress_model(model, bitstream_path=None, return_bitstream=True,
    verbose=False, **args)`` on ``model_zoo.build(model, seed)``; decoded with
    ``nncodec.nnc.decompress`` into an ``.npz`` (local scales not applied).

    Encode results add ``"bitstream_len"`` and, with ``decoded``, ``"decoded_dtype"`` and
    ``"decoded_shape"``.

``{"op": "decode", "bitstream": "in.nnc", "tensor_id": "0", "decoded": "out.npy"}``
    ``nncodec.tensor.decode``; with ``"tensor_id": null`` (or absent) the whole stream is
    decoded with ``nncodec.nnc.decompress`` and saved as ``.npz``.

    Optional for ``encode`` and ``decode``: ``"state": "KEY"``. Jobs naming the same key share
    one incremental state dictionary (``approx_param_base``); an encode job keeps a second,
    separate state for its own decode (``KEY`` plus ``"#selfdec"``), so an encoder state and a
    decoder state never mix.

``{"op": "update_sequence", "inputs": [...], "args": {...}, "device_id": N, "bitstreams": [...],
   "decoded": [...], "foreign": [...], "foreign_decoded": [...]}``
    A sequence of model differences coded and decoded incrementally (see the function); adds
    ``"bitstream_len"`` (a list).

``{"op": "info"}``
    Adds ``"versions"`` (python, numpy, torch, nncodec) and ``"torch_threads"``.

``{"op": "warmup"}``
    One untimed ``nncodec.tensor`` encode + decode of a small tensor with dependent
    quantization on and off, so that later timings do not pay for lazy imports and
    allocator growth.

``{"op": "time", "input": "x.npy", "args": {...}, "bitstream": "out.nnc", "decoded": "y.npy"}``
    One ``nncodec.tensor.encode(x, args)`` and one ``nncodec.tensor.decode(bytearray(bs))``,
    each timed with ``time.perf_counter`` around the call alone; adds ``"encode_s"``,
    ``"decode_s"``, ``"bitstream_len"`` and ``"sha256"`` of the bitstream. ``bitstream`` and
    ``decoded`` are optional and written if given (outside the timings). Inputs are loaded
    once per process and path.

``{"op": "memory", "impl": "ref" | "ours", "input": "x.npy", "args": {...}}``
    Peak memory of one encode + decode; run it as the only job of a fresh process. After the
    codec's imports, one small round trip and loading the input, the peak resident set size
    is reset and the RSS recorded as the baseline; then one encode + decode. Adds
    ``"implementation"``, ``"method"``, ``"baseline_rss"``, ``"peak_rss"``,
    ``"peak_minus_baseline"``, ``"bytes"``, ``"decoded_shape"`` (bytes) and for ``ours`` also
    ``"tracemalloc_peak"`` of a second encode + decode. ``args`` are the reference's args dict
    for ``ref`` and ``nnc_core.tensor.encode`` keyword arguments for ``ours`` (which runs
    with the project's interpreter and needs no reference).

A new kind of job is a function ``f(driver, job, result)`` registered with ``@op("name")``
(``needs_reference=False`` if it does not use nncodec): it reads its fields from ``job``,
uses the :class:`Driver` helpers (inputs, outputs, incremental states) and writes what it
measured into ``result``; raising an exception marks the job as failed.
"""
import argparse
import dataclasses
import gc
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from typing import Callable, Union


# ------------------------------------------------------------------------------ registry


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    run: Callable
    needs_reference: Union[bool, Callable]   # or a function of the job

    def needs(self, job):
        nr = self.needs_reference
        return bool(nr(job) if callable(nr) else nr)


OPS = {}


def op(name, needs_reference=True):
    """Register ``f(driver, job, result)`` as the job operation ``name``."""
    def register(fn):
        if name in OPS:
            raise ValueError("job operation %r is registered twice" % (name,))
        OPS[name] = Op(name, fn, needs_reference)
        return fn
    return register


def lookup(job):
    name = job.get("op") if isinstance(job, dict) else None
    if name not in OPS:
        raise ValueError("unknown op %r (known: %s)" % (name, ", ".join(sorted(OPS))))
    return OPS[name]


# ------------------------------------------------------------------------------ driver


def _fresh_state():
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


def _model_zoo():
    if __package__:
        from . import model_zoo
    else:  # run as a script: its own directory is the first entry of the import path
        import model_zoo
    return model_zoo


class Driver:
    """What the job operations share: the imported reference, incremental states, inputs."""

    def __init__(self, torch_threads=None):
        import numpy as np

        self.np = np
        self.torch_threads = torch_threads
        self.torch = None
        self.tensor_api = None      # nncodec.tensor
        self.nnc = None             # nncodec.nnc
        self.states = {}
        self.inputs = {}            # cached inputs (path -> array) of the "time" operation
        # nncodec.tensor.encode always writes a copy of the bitstream into args["results"]
        self._tmp = tempfile.TemporaryDirectory(prefix="nnc_ref_")
        self.tmpdir = self._tmp.name

    def close(self):
        self._tmp.cleanup()

    def load_reference(self):
        """Import torch and nncodec (once; torch dominates the start-up time)."""
        if self.nnc is not None:
            return
        import torch

        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        import nncodec.nnc
        import nncodec.tensor

        self.torch = torch
        self.tensor_api = nncodec.tensor
        self.nnc = nncodec.nnc

    # -- helpers for the operations ------------------------------------------------------
    def state(self, key):
        if key is None:
            return None
        if key not in self.states:
            self.states[key] = _fresh_state()
        return self.states[key]

    def load_input(self, path):
        np = self.np
        if path.endswith(".npz"):
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        return np.load(path)

    def cached_input(self, path):
        if path not in self.inputs:
            self.inputs[path] = self.load_input(path)
        return self.inputs[path]

    def save_decoded(self, path, value, result):
        np = self.np
        if isinstance(value, dict):
            arrays = {str(k): np.asarray(v) for k, v in value.items()}
            if not path.endswith(".npz"):
                raise ValueError("a multi-tensor result needs an .npz path, got %r" % path)
            np.savez(path, **arrays)
            result["decoded_dtype"] = {k: str(v.dtype) for k, v in arrays.items()}
            result["decoded_shape"] = {k: list(v.shape) for k, v in arrays.items()}
        else:
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            np.save(path, arr)
            result["decoded_dtype"] = str(arr.dtype)
            result["decoded_shape"] = list(arr.shape)

    @staticmethod
    def write_bytes(path, data):
        with open(path, "wb") as f:
            f.write(bytes(data))

    @staticmethod
    def read_bytes(path):
        with open(path, "rb") as f:
            # the reference decoder accepts a bytearray (anything else is taken as a path)
            return bytearray(f.read())

    def results_args(self, args, fresh=True):
        """A copy of reference tensor-API ``args`` with ``results`` set to a scratch directory
        (a new one per call with ``fresh``, else the driver's own)."""
        args = dict(args or {})
        args["results"] = tempfile.mkdtemp(dir=self.tmpdir) if fresh else self.tmpdir
        return args

    def decode_stream(self, data, tensor_id, state):
        if tensor_id is None:
            return self.nnc.decompress(
                bytearray(data), approx_param_base=state, update_base_param=state is not None
            )
        return self.tensor_api.decode(bytearray(data), tensor_id=str(tensor_id), approx_param_base=state)

    # -- running jobs ----------------------------------------------------------------------
    def run_job(self, index, job):
        """Run one job; never raises (except KeyboardInterrupt). Returns its result dict."""
        is_dict = isinstance(job, dict)
        result = {"index": index, "id": job.get("id") if is_dict else None,
                  "op": job.get("op") if is_dict else None, "ok": False,
                  "error": None, "traceback": None}
        t0 = time.perf_counter()
        try:
            operation = lookup(job)
            if operation.needs(job):
                self.load_reference()
            operation.run(self, job, result)
            result["ok"] = True
        except BaseException as e:  # the reference raises SystemExit on bad input
            if isinstance(e, KeyboardInterrupt):
                raise
            result["error"] = "%s: %s" % (type(e).__name__, e)
            result["traceback"] = traceback.format_exc()
        result["seconds"] = time.perf_counter() - t0
        return result

    def run(self, jobs, results_path):
        results = []
        for i, job in enumerate(jobs):
            results.append(self.run_job(i, job))
            _write_json(results_path, results)
        return results


# ------------------------------------------------------------------------------ operations


@op("encode")
def op_encode(d, job, result):
    api = job.get("api", "tensor")
    args = dict(job.get("args") or {})
    x = d.load_input(job["input"]) if "input" in job else None
    key = job.get("state")
    enc_state = d.state(key)
    dec_state = d.state(None if key is None else key + "#selfdec")

    if api == "tensor":
        if isinstance(x, dict):
            raise ValueError("the tensor API codes one array; got an .npz input")
        args = d.results_args(args)
        tensor_id = str(args.get("tensor_id", job.get("tensor_id", "0")))
        args["tensor_id"] = tensor_id
        bs = d.tensor_api.encode(x, args, approx_param_base=enc_state)
        multi = False
    elif api == "model":
        model = _model_zoo().build(job["model"], job.get("seed", 0))
        kwargs = dict(bitstream_path=None, return_bitstream=True, verbose=False)
        kwargs.update(args)
        bs = d.nnc.compress_model(model, **kwargs)
        tensor_id, multi = None, True
    elif api == "compress":
        if isinstance(x, dict):
            params = x
            tensor_id = None
            multi = True
        else:
            tensor_id = str(args.pop("tensor_id", job.get("tensor_id", "0")))
            params = {tensor_id: x}
            multi = False
        kwargs = dict(bitstream_path=None, return_bitstream=True, device_id=0)
        kwargs.update(args)
        if enc_state is not None:
            kwargs.setdefault("approx_param_base", enc_state)
            kwargs.setdefault("update_base_param", True)
        bs = d.nnc.compress(params, **kwargs)
    else:
        raise ValueError("unknown api %r" % (api,))

    if bs is None:
        raise RuntimeError("the reference encoder returned no bitstream")
    d.write_bytes(job["bitstream"], bs)
    result["bitstream_len"] = len(bs)

    if job.get("decoded"):
        dec = d.decode_stream(bs, None if multi else tensor_id, dec_state)
        d.save_decoded(job["decoded"], dec, result)


@op("decode")
def op_decode(d, job, result):
    data = d.read_bytes(job["bitstream"])
    dec = d.decode_stream(data, job.get("tensor_id"), d.state(job.get("state")))
    d.save_decoded(job["decoded"], dec, result)


@op("update_sequence")
def op_update_sequence(d, job, result):
    """Differential model coding as NNCodec's federated pipeline does it (``nncodec.fl.encode``),
    with the encoder's ``approx_param_base`` advanced after each update: every difference
    in ``inputs`` (``.npz``) is sparsified by the reference's own functions (unstructured at
    ``qp``'s step, then structured with ``struct_spars_factor`` > 0) and coded with
    ``nnc.compress`` at ``diff_qp``, with an HDSP tool if ``hdsp``; each stream is decoded
    with a separate decoder state and HDSP history into ``decoded``. The streams named in
    ``foreign`` (another implementation's, same sequence) are decoded with a third state
    into ``foreign_decoded``."""
    from nncodec.framework.applications.utils.sparsification import (apply_struct_spars_v2,
                                                                     apply_unstruct_spars_v2)
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool

    np = d.np
    args = dict(job.get("args") or {})
    qp, qp_density = args.pop("qp"), args.get("qp_density", 2)
    diff_qp = args.pop("diff_qp", None)
    sparsity = args.pop("sparsity", 0.0)
    struct = args.pop("struct_spars_factor", 0.9)
    hdsp = args.pop("hdsp", False)
    encoder_state, encoder_tool = _fresh_state(), HdspTool(True) if hdsp else None

    def decoder():
        state, tool = _fresh_state(), HdspTool(True)
        return lambda bs: d.nnc.decompress(bytearray(bs), approx_param_base=state,
                                           update_base_param=True, hdsp_tool=tool,
                                           return_hls=True)[0]

    own, foreign = decoder(), decoder()
    result["bitstream_len"] = []
    for src, out, dec_out in zip(job["inputs"], job["bitstreams"], job["decoded"]):
        difference = d.load_input(src)
        if sparsity > 0:
            difference = apply_unstruct_spars_v2(qp, difference, target_sparsity=sparsity,
                                                 qp_density=np.int32(qp_density))
            if struct > 0:
                difference = apply_struct_spars_v2(difference, gain=struct)
        bs = d.nnc.compress(difference, bitstream_path=None, return_bitstream=True,
                            qp=qp if diff_qp is None else diff_qp, hdsp_tool=encoder_tool,
                            approx_param_base=encoder_state, update_base_param=True,
                            device_id=job.get("device_id", 0), **args)
        d.write_bytes(out, bs)
        result["bitstream_len"].append(len(bs))
        d.save_decoded(dec_out, own(bs), {})
    for src, dec_out in zip(job.get("foreign", []), job.get("foreign_decoded", [])):
        d.save_decoded(dec_out, foreign(d.read_bytes(src)), {})


@op("info")
def op_info(d, job, result):
    import importlib.metadata as md

    result["versions"] = {"python": platform.python_version(), "numpy": d.np.__version__,
                          "torch": d.torch.__version__, "nncodec": md.version("nncodec")}
    result["torch_threads"] = d.torch.get_num_threads()


@op("warmup")
def op_warmup(d, job, result):
    np = d.np
    w = (np.random.default_rng(1).standard_normal((64, 64)) * 0.05).astype(np.float32)
    for dq in (True, False):
        args = d.results_args({"use_dq": dq}, fresh=False)
        d.tensor_api.decode(bytearray(d.tensor_api.encode(w, args)))


@op("time")
def op_time(d, job, result):
    x = d.cached_input(job["input"])
    args = d.results_args(job.get("args"), fresh=False)
    api = d.tensor_api
    t0 = time.perf_counter()
    bs = api.encode(x, args)
    t1 = time.perf_counter()
    data = bytearray(bs)
    t2 = time.perf_counter()
    y = api.decode(data)
    t3 = time.perf_counter()
    result["encode_s"] = t1 - t0
    result["decode_s"] = t3 - t2
    result["bitstream_len"] = len(bs)
    result["sha256"] = hashlib.sha256(bytes(bs)).hexdigest()
    if job.get("bitstream"):
        d.write_bytes(job["bitstream"], bs)
    if job.get("decoded"):
        d.save_decoded(job["decoded"], y, result)


@op("model_time")
def op_model_time(d, job, result):
    """A whole model coded as NNCodec's model API does it: the state dict in ``input`` (a
    ``.pt`` file, as ``torch.save(model.state_dict())`` writes it) is, with ``"sparsity"``
    > 0, first sparsified by the reference's own functions (unstructured at ``args["qp"]``'s
    step, then structured if ``"struct_spars_factor"`` > 0; the sparse values are written back
    into the state dict, so that every entry keeps its position), then coded with
    ``nnc.compress_model`` and decoded with ``nnc.decompress``. Adds ``"sparsify_s"``,
    ``"compress_s"``, ``"encode_s"`` (their sum), ``"decode_s"``, ``"bitstream_len"`` and
    ``"sha256"``; the bitstream is written to ``"bitstream"`` if given. With ``"memory"``
    the peak resident set size over encode and decode is measured as in the ``memory``
    operation (``"baseline_rss"``, ``"peak_rss"``, ``"peak_minus_baseline"``, ``"method"``),
    the baseline being taken after the state dict is loaded."""
    np, torch = d.np, d.torch
    args = dict(job.get("args") or {})
    sparsity = float(job.get("sparsity") or 0.0)
    struct = float(job.get("struct_spars_factor") or 0.0)
    path = job["input"]
    sparsify_s = 0.0
    if job.get("memory"):
        gc.collect()
        reset = _reset_peak()
        baseline, baseline_peak, method = _memory_probe()
        if not reset:
            baseline = baseline_peak
    if sparsity > 0:
        from nncodec.framework.applications.utils.sparsification import (
            apply_struct_spars_v2, apply_unstruct_spars_v2)
        state = torch.load(path, map_location="cpu")
        params = {k: v.detach().cpu().numpy() for k, v in state.items()
                  if "num_batches_tracked" not in k}
        t0 = time.perf_counter()
        params = apply_unstruct_spars_v2(args["qp"], params, target_sparsity=sparsity,
                                         qp_density=np.int32(args.get("qp_density", 2)))
        if struct > 0:
            params = apply_struct_spars_v2(params, gain=struct)
        sparsify_s = time.perf_counter() - t0
        for k, v in params.items():
            state[k] = torch.from_numpy(np.ascontiguousarray(v))
        path = os.path.join(d.tmpdir, "sparse_%d.pt" % os.getpid())
        torch.save(state, path)
        del state, params
    t0 = time.perf_counter()
    bs = d.nnc.compress_model(path, bitstream_path=None, return_bitstream=True, verbose=False,
                              **args)
    t1 = time.perf_counter()
    data = bytearray(bs)
    t2 = time.perf_counter()
    decoded = d.nnc.decompress(data)
    t3 = time.perf_counter()
    if job.get("memory"):
        peak = _memory_probe()[1]
        result.update({"method": method + (" after clear_refs" if reset else ""),
                       "baseline_rss": baseline, "peak_rss": peak,
                       "peak_minus_baseline": peak - baseline})
    del decoded
    result.update({"sparsify_s": sparsify_s, "compress_s": t1 - t0, "encode_s": sparsify_s + t1 - t0,
                   "decode_s": t3 - t2, "bitstream_len": len(bs),
                   "sha256": hashlib.sha256(bytes(bs)).hexdigest()})
    if job.get("bitstream"):
        d.write_bytes(job["bitstream"], bs)


def _memory_probe():
    """(current RSS, peak RSS) in bytes, and the method used.

    ``ru_maxrss`` of a freshly started process is not a clean starting point: the kernel
    carries the high-water mark of the image it replaced across ``exec``, and with
    ``vfork`` that image is the (large) parent process. On Linux the peak of this process
    alone is ``VmHWM`` in /proc/self/status, and writing 5 to /proc/self/clear_refs resets
    it to the current RSS; elsewhere ``ru_maxrss`` is used as it is."""
    try:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    fields[line.split(":")[0]] = int(line.split()[1]) * 1024
        return fields["VmRSS"], fields["VmHWM"], "VmHWM"
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kilobytes on Linux
        return peak, peak, "ru_maxrss"


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@op("memory", needs_reference=lambda job: job.get("impl", "ref") == "ref")
def op_memory(d, job, result):
    impl = job.get("impl", "ref")
    args = dict(job.get("args") or {})
    np = d.np
    if impl == "ref":
        api = d.tensor_api
        args["results"] = d.tmpdir

        def encode(x):
            return api.encode(x, dict(args))

        def decode(bs):
            return api.decode(bytearray(bs))
    elif impl == "ours":
        import nnc_core.tensor as api

        def encode(x):
            return api.encode(x, **args)

        def decode(bs):
            return api.decode(bs)
    else:
        raise ValueError("unknown implementation %r" % (impl,))
    # one small round trip first, so that lazily imported code is in the baseline
    w = (np.random.default_rng(1).standard_normal((8, 8)) * 0.05).astype(np.float32)
    decode(encode(w))
    x = np.load(job["input"])
    gc.collect()
    reset = _reset_peak()
    baseline, baseline_peak, method = _memory_probe()
    if not reset:
        baseline = baseline_peak
    bs = encode(x)
    y = decode(bs)
    peak = _memory_probe()[1]
    result.update({"implementation": impl, "method": method + (" after clear_refs" if reset else ""),
                   "baseline_rss": baseline, "peak_rss": peak, "peak_minus_baseline": peak - baseline,
                   "bytes": len(bs), "decoded_shape": list(np.shape(y))})
    if impl == "ours":
        import tracemalloc

        del bs, y
        gc.collect()
        tracemalloc.start()
        bs = encode(x)
        y = decode(bs)
        result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# ------------------------------------------------------------------------------ command line


def _protocol_stream():
    """Keep a private handle on stdout for the protocol and send fd 1 to stderr, so that
    whatever the reference (Python or C++ parts) prints cannot mix with it."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(sys.stderr.fileno(), 1)
    return os.fdopen(saved, "w", buffering=1)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def run_batch(driver, jobs_path, results_path):
    with open(jobs_path) as f:
        jobs = json.load(f)
    if not isinstance(jobs, list):
        sys.stderr.write("the job file must hold a JSON list\n")
        return 2
    results_path = os.path.abspath(results_path)
    needed = False
    for job in jobs:
        try:
            needed = needed or lookup(job).needs(job)
        except ValueError:
            pass                                   # reported by the job itself
    if needed:
        driver.load_reference()
    _write_json(results_path, [])  # marks a successful start (imports done)
    driver.run(jobs, results_path)
    return 0


def run_serve(driver, protocol):
    driver.load_reference()
    protocol.write(json.dumps({"ready": True}) + "\n")
    index = 0
    for line in sys.stdin:
        if not line.strip():
            break
        try:
            result = driver.run_job(index, json.loads(line))
        except ValueError as e:
            result = {"index": index, "id": None, "op": None, "ok": False, "seconds": 0.0,
                      "error": "not a JSON job: %s" % (e,), "traceback": None}
        protocol.write(json.dumps(result) + "\n")
        index += 1
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog=os.path.basename(argv[0]),
                                     description="Run jobs with the reference NNC software.")
    parser.add_argument("--torch-threads", type=int, metavar="N",
                        help="torch.set_num_threads(N) after importing torch")
    parser.add_argument("--serve", action="store_true",
                        help="read one JSON job per line from stdin, answer one JSON line each")
    parser.add_argument("files", nargs="*", metavar="JOBS.json RESULTS.json")
    args = parser.parse_args(argv[1:])
    if args.serve == bool(args.files) or (args.files and len(args.files) != 2):
        parser.print_usage(sys.stderr)
        sys.stderr.write("give either JOBS.json RESULTS.json or --serve\n")
        return 2
    protocol = _protocol_stream()
    driver = Driver(torch_threads=args.torch_threads)
    try:
        if args.serve:
            return run_serve(driver, protocol)
        return run_batch(driver, *args.files)
    finally:
        driver.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
