"""Batch driver for the reference NNC software (NNCodec 2.1.3).

Run with the interpreter of the reference environment (numpy < 2), never with the
project's own environment::

    python ref_driver.py JOBS.json RESULTS.json

``JOBS.json`` holds a list of jobs; all of them run in this one process, so torch and
nncodec are imported once. Relative paths in a job are resolved against the current
working directory. Jobs:

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

``{"op": "decode", "bitstream": "in.nnc", "tensor_id": "0", "decoded": "out.npy"}``
    ``nncodec.tensor.decode``; with ``"tensor_id": null`` (or absent) the whole stream is
    decoded with ``nncodec.nnc.decompress`` and saved as ``.npz``.

Optional for every job: ``"state": "KEY"``. Jobs naming the same key share one incremental
state dictionary (``approx_param_base``); an encode job keeps a second, separate state for
its own decode (``KEY`` plus ``"#selfdec"``), so an encoder state and a decoder state never
mix. Optional ``"id"``: copied into the result.

``RESULTS.json`` receives a list with one entry per job, in job order:
``{"index", "id", "op", "ok", "error", "traceback", "seconds", "bitstream_len",
"decoded_dtype", "decoded_shape"}``. It is rewritten after every job, so a caller can see
how far a crashed run got. A failing job never stops the others. Everything the reference
prints goes to stderr; stdout stays clean.
"""
import json
import os
import sys
import tempfile
import time
import traceback


def _redirect_stdout_to_stderr():
    """The reference (Python and C++ parts) prints progress; keep it off stdout."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), 1)


def _fresh_state():
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


class Driver:
    def __init__(self):
        import numpy as np
        import torch  # noqa: F401  (imported once up front: it dominates the start-up time)
        import nncodec
        import nncodec.tensor
        import nncodec.nnc

        self.np = np
        self.tensor_api = nncodec.tensor
        self.nnc = nncodec.nnc
        self.states = {}
        # nncodec.tensor.encode always writes a copy of the bitstream into args["results"]
        self._tmp = tempfile.TemporaryDirectory(prefix="nnc_ref_")
        self.tmpdir = self._tmp.name

    def close(self):
        self._tmp.cleanup()

    # -- helpers -----------------------------------------------------------------------
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

    # -- operations --------------------------------------------------------------------
    def decode_stream(self, data, tensor_id, state):
        if tensor_id is None:
            return self.nnc.decompress(
                bytearray(data), approx_param_base=state, update_base_param=state is not None
            )
        return self.tensor_api.decode(bytearray(data), tensor_id=str(tensor_id), approx_param_base=state)

    def op_encode(self, job, result):
        api = job.get("api", "tensor")
        args = dict(job.get("args") or {})
        x = self.load_input(job["input"]) if "input" in job else None
        key = job.get("state")
        enc_state = self.state(key)
        dec_state = self.state(None if key is None else key + "#selfdec")

        if api == "tensor":
            if isinstance(x, dict):
                raise ValueError("the tensor API codes one array; got an .npz input")
            out_dir = tempfile.mkdtemp(dir=self.tmpdir)
            args["results"] = out_dir
            tensor_id = str(args.get("tensor_id", job.get("tensor_id", "0")))
            args["tensor_id"] = tensor_id
            bs = self.tensor_api.encode(x, args, approx_param_base=enc_state)
            multi = False
        elif api == "model":
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import model_zoo
            model = model_zoo.build(job["model"], job.get("seed", 0))
            kwargs = dict(bitstream_path=None, return_bitstream=True, verbose=False)
            kwargs.update(args)
            bs = self.nnc.compress_model(model, **kwargs)
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
            bs = self.nnc.compress(params, **kwargs)
        else:
            raise ValueError("unknown api %r" % (api,))

        if bs is None:
            raise RuntimeError("the reference encoder returned no bitstream")
        self.write_bytes(job["bitstream"], bs)
        result["bitstream_len"] = len(bs)

        if job.get("decoded"):
            dec = self.decode_stream(bs, None if multi else tensor_id, dec_state)
            self.save_decoded(job["decoded"], dec, result)

    def op_decode(self, job, result):
        data = self.read_bytes(job["bitstream"])
        tensor_id = job.get("tensor_id")
        dec = self.decode_stream(data, tensor_id, self.state(job.get("state")))
        self.save_decoded(job["decoded"], dec, result)

    def run(self, jobs, results_path):
        results = []
        for i, job in enumerate(jobs):
            result = {"index": i, "id": job.get("id"), "op": job.get("op"), "ok": False,
                      "error": None, "traceback": None}
            t0 = time.perf_counter()
            try:
                op = job.get("op")
                if op == "encode":
                    self.op_encode(job, result)
                elif op == "decode":
                    self.op_decode(job, result)
                else:
                    raise ValueError("unknown op %r" % (op,))
                result["ok"] = True
            except BaseException as e:  # the reference raises SystemExit on bad input
                if isinstance(e, KeyboardInterrupt):
                    raise
                result["error"] = "%s: %s" % (type(e).__name__, e)
                result["traceback"] = traceback.format_exc()
            result["seconds"] = time.perf_counter() - t0
            results.append(result)
            _write_json(results_path, results)
        return results


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: %s JOBS.json RESULTS.json\n" % argv[0])
        return 2
    with open(argv[1]) as f:
        jobs = json.load(f)
    if not isinstance(jobs, list):
        sys.stderr.write("the job file must hold a JSON list\n")
        return 2
    results_path = os.path.abspath(argv[2])
    _redirect_stdout_to_stderr()
    driver = Driver()
    _write_json(results_path, [])  # marks a successful start (imports done)
    try:
        driver.run(jobs, results_path)
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
