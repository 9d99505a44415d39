"""Timing and memory helper for ``codec_bench.py``, run in a subprocess.

The reference NNCodec 2.1.3 pins numpy < 2, so it lives in its own virtual environment
(``tests/conformance/.refenv``). ``codec_bench.py`` starts this script there once for all
timings (importing torch and nncodec takes seconds). The peak-memory measurement runs it in
a fresh process per implementation, with the reference interpreter (``ref``) and with the
project's interpreter (``ours``), so that both are measured by the same code. Only the
public tensor API of the reference is used: ``nncodec.tensor.encode(x, args)`` and
``nncodec.tensor.decode(bytearray)``.

    python ref_timer.py time JOBS.json RESULTS.json
    python ref_timer.py memory ref|ours INPUT.npy ARGS_JSON RESULTS.json

``time``: ``JOBS.json`` is ``{"warmup": bool, "jobs": [{"id", "input" (.npy), "args"
(reference args dict), "bitstream" (path to write), "decoded" (.npy path to write)}]}``.
After the imports and the warm-up the helper prints ``ready`` and then serves requests read
from stdin, one per line: ``run I`` encodes and decodes job ``I`` once, timing each call
with ``time.perf_counter``, and answers ``done I`` (``failed I``); ``end`` stops. The caller
can so interleave the repeats of both implementations, so that load from other processes
hits both alike. Everything the reference prints goes to stderr. At the end
``RESULTS.json`` receives ``{"versions": {...}, "threads": ..., "results": [{"id", "ok",
"error", "encode_s": [...], "decode_s": [...], "bytes", "deterministic"}]}``; the bitstream
and the decoded array of the first run of each job are written to the paths of the job.

``memory``: imports the codec, does one small round trip, loads the input, resets the peak
resident set size and records the RSS as the baseline, encodes and decodes once and writes
``{"method", "baseline_rss", "peak_rss", "peak_minus_baseline", "bytes"}`` (bytes; for
``ours`` also ``tracemalloc_peak`` of a second encode + decode). ``ARGS_JSON`` holds the
options (the reference's args dict, or nnc_core.tensor.encode keyword arguments).
"""
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback


def _progress_stream():
    """Keep a private handle on stdout for progress lines and send fd 1 to stderr, so that
    whatever the reference (Python or C++) prints cannot mix with them."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(saved, "w", buffering=1)


def _import_reference():
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import nncodec.tensor

    return np, torch, nncodec.tensor


def _versions(np, torch):
    import importlib.metadata as md

    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "nncodec": md.version("nncodec")}


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class Jobs:
    """The timing jobs and what has been measured for them so far."""

    def __init__(self, spec, np, api, results_dir):
        self.np = np
        self.api = api
        self.results_dir = results_dir
        self.jobs = spec["jobs"]
        self.inputs = [None] * len(self.jobs)
        self.results = [{"id": job.get("id"), "ok": True, "error": None, "encode_s": [],
                         "decode_s": [], "bytes": None, "deterministic": None}
                        for job in self.jobs]
        self.first = [None] * len(self.jobs)

    def run(self, i):
        """One timed encode and decode of job ``i``; False if it failed."""
        job, res = self.jobs[i], self.results[i]
        if not res["ok"]:
            return False
        try:
            if self.inputs[i] is None:
                self.inputs[i] = self.np.load(job["input"])
            x = self.inputs[i]
            args = dict(job.get("args") or {})
            args["results"] = self.results_dir     # the reference always writes a copy there
            t0 = time.perf_counter()
            bs = self.api.encode(x, args)
            t1 = time.perf_counter()
            data = bytearray(bs)
            t2 = time.perf_counter()
            y = self.api.decode(data)
            t3 = time.perf_counter()
            res["encode_s"].append(t1 - t0)
            res["decode_s"].append(t3 - t2)
            if self.first[i] is None:
                self.first[i] = bytes(bs)
                with open(job["bitstream"], "wb") as f:
                    f.write(self.first[i])
                if hasattr(y, "detach"):
                    y = y.detach().cpu().numpy()
                self.np.save(job["decoded"], self.np.asarray(y))
                res["bytes"] = len(bs)
                res["deterministic"] = True
            elif bytes(bs) != self.first[i]:
                res["deterministic"] = False
            return True
        except Exception as e:  # report it and go on with the other jobs
            res["ok"] = False
            res["error"] = "%s: %s" % (type(e).__name__, e)
            res["traceback"] = traceback.format_exc()
            return False


def run_time(jobs_path, results_path):
    """Serve timing requests from stdin until ``end`` (or end of input)."""
    progress = _progress_stream()
    np, torch, api = _import_reference()
    with open(jobs_path) as f:
        spec = json.load(f)
    out = {"versions": _versions(np, torch), "threads": torch.get_num_threads(), "results": []}
    with tempfile.TemporaryDirectory(prefix="nnc_bench_ref_") as results_dir:
        if spec.get("warmup"):
            # first calls pay for lazy imports and allocator growth; keep that out of the timings
            w = (np.random.default_rng(1).standard_normal((64, 64)) * 0.05).astype(np.float32)
            for dq in (True, False):
                api.decode(bytearray(api.encode(w, {"use_dq": dq, "results": results_dir})))
        jobs = Jobs(spec, np, api, results_dir)
        progress.write("ready\n")
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "end":
                break
            if words[0] == "run" and len(words) == 2:
                i = int(words[1])
                ok = 0 <= i < len(jobs.jobs) and jobs.run(i)
                progress.write("%s %d\n" % ("done" if ok else "failed", i))
            else:
                progress.write("unknown %s\n" % line.strip())
        out["results"] = jobs.results
    _write_json(results_path, out)
    return 0


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


def run_memory(impl, input_path, args_json, results_path):
    """Peak memory of one encode + decode of ``input_path`` in this fresh process."""
    progress = _progress_stream()
    args = json.loads(args_json)
    if impl == "ref":
        np, torch, api = _import_reference()
        tmp = tempfile.TemporaryDirectory(prefix="nnc_bench_ref_")
        args["results"] = tmp.name

        def encode(x):
            return api.encode(x, dict(args))

        def decode(bs):
            return api.decode(bytearray(bs))
    elif impl == "ours":
        import numpy as np
        import nnc_core.tensor as api

        def encode(x):
            return api.encode(x, **args)

        def decode(bs):
            return api.decode(bs)
    else:
        raise SystemExit("unknown implementation %r" % (impl,))
    # one small round trip first, so that lazily imported code is in the baseline
    w = (np.random.default_rng(1).standard_normal((8, 8)) * 0.05).astype(np.float32)
    decode(encode(w))
    x = np.load(input_path)
    gc.collect()
    reset = _reset_peak()
    baseline, baseline_peak, method = _memory_probe()
    if not reset:
        baseline = baseline_peak
    bs = encode(x)
    y = decode(bs)
    peak = _memory_probe()[1]
    out = {"implementation": impl, "method": method + (" after clear_refs" if reset else ""),
           "baseline_rss": baseline, "peak_rss": peak, "peak_minus_baseline": peak - baseline,
           "bytes": len(bs), "decoded_shape": list(np.shape(y))}
    if impl == "ours":
        import tracemalloc

        del bs, y
        gc.collect()
        tracemalloc.start()
        bs = encode(x)
        y = decode(bs)
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    _write_json(results_path, out)
    progress.write("done\n")
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "time":
        return run_time(argv[2], argv[3])
    if len(argv) == 6 and argv[1] == "memory":
        return run_memory(argv[2], argv[3], argv[4], argv[5])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
