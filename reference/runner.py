"""Access to the reference NNC software (NNCodec 2.1.3) from the project's environment.

The reference pins numpy < 2, so it lives in its own virtual environment and is driven in a
subprocess through ``reference/driver.py`` (the job operations are listed there). One
subprocess runs a whole list of jobs (importing torch and nncodec takes seconds, coding a
small tensor takes milliseconds), so callers should collect their cases and submit them
together: :meth:`ReferenceRunner.encode_many`, :meth:`ReferenceRunner.decode_many` and
:meth:`ReferenceRunner.run_jobs` do that. :meth:`ReferenceRunner.session` keeps one
subprocess serving jobs one at a time instead, for callers that interleave the reference's
work with their own (the benchmarks).

Where the reference interpreter comes from:

* ``NNC_REF_PYTHON`` (environment variable), if set;
* otherwise ``tests/conformance/.refenv/bin/python``, created by ``bash tests/conformance/env.sh``.

In the tests the session fixture ``reference`` (tests/conformance/conftest.py) hands out a
runner. Elsewhere (from the repository root)::

    from reference import ReferenceRunner, EncodeCase, DecodeCase
    ref = ReferenceRunner()              # raises ReferenceUnavailable with a how-to message
    enc, dec = ref.run_cases([EncodeCase(x, {"qp": -20}), DecodeCase(my_bitstream)])
    enc.bitstream, enc.decoded, dec.decoded

``python -m reference`` checks the installation.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVER = HERE / "driver.py"
DEFAULT_VENV = ROOT / "tests" / "conformance" / ".refenv"
REF_VERSION = "2.1.3"
SETUP_HINT = "run `bash tests/conformance/env.sh` (or point NNC_REF_PYTHON to a python with nncodec==2.1.3)"


class ReferenceUnavailable(RuntimeError):
    """The reference environment is missing or broken. The message says how to fix it."""


class ReferenceJobError(RuntimeError):
    """A reference job failed; carries the reference's error text."""


def reference_python() -> Path:
    """Path of the interpreter that runs the reference (not checked)."""
    env = os.environ.get("NNC_REF_PYTHON")
    if env:
        return Path(env)
    return DEFAULT_VENV / "bin" / "python"


def check_reference(python: Optional[os.PathLike] = None, full: bool = True, timeout: float = 300.0) -> str:
    """Check that ``python`` has nncodec at the expected version; return that version.

    ``full=True`` imports nncodec (and with it torch: a few seconds); ``full=False`` only reads
    the installed package's metadata, leaving import problems to surface when a batch starts
    (reported as :class:`ReferenceUnavailable` too). Raises :class:`ReferenceUnavailable`
    with an explanation if the check fails.
    """
    py = Path(python) if python is not None else reference_python()
    env = os.environ.get("NNC_REF_PYTHON")
    source = "from NNC_REF_PYTHON" if env and Path(env) == py else "default location"
    if not py.exists():
        raise ReferenceUnavailable(
            f"reference interpreter not found at {py} ({source}); {SETUP_HINT}"
        )
    if full:
        code = (
            "import importlib.metadata as m, nncodec, nncodec.tensor, nncodec.nnc; "
            "print(m.version('nncodec'))"
        )
    else:
        code = (
            "import importlib.metadata as m, importlib.util as u; "
            "assert u.find_spec('nncodec') is not None, 'No module named nncodec'; "
            "print(m.version('nncodec'))"
        )
    try:
        proc = subprocess.run(
            [str(py), "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ReferenceUnavailable(f"cannot run {py} ({source}): {e}; {SETUP_HINT}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ReferenceUnavailable(
            f"{py} ({source}) cannot import nncodec:\n    " + "\n    ".join(tail) + f"\n{SETUP_HINT}"
        )
    lines = proc.stdout.strip().splitlines()
    version = lines[-1].strip() if lines else ""
    if version != REF_VERSION:
        raise ReferenceUnavailable(
            f"{py} ({source}) has nncodec {version or '(unknown)'}, the conformance tests need "
            f"{REF_VERSION}; {SETUP_HINT}"
        )
    return version


def unavailable_banner(reason: str) -> str:
    """The message shown when the conformance tests cannot reach the reference."""
    line = "=" * 78
    return (
        f"\n{line}\n"
        "CONFORMANCE TESTS CANNOT RUN: the reference NNCodec 2.1.3 environment is not usable.\n\n"
        f"    {reason}\n\n"
        "Fix it with:\n\n"
        "    bash tests/conformance/env.sh\n\n"
        "(creates tests/conformance/.refenv; or set NNC_REF_PYTHON to a python that imports\n"
        "nncodec 2.1.3). To skip these tests deliberately, set NNC_SKIP_CONFORMANCE=1.\n"
        f"{line}"
    )


# ----------------------------------------------------------------------------------------
# convenience cases and results


@dataclasses.dataclass
class EncodeCase:
    """One reference encode: ``x`` coded with reference ``args``.

    ``api="tensor"``: ``nncodec.tensor.encode(x, args)``; ``api="compress"``:
    ``nncodec.nnc.compress({tensor_id: x}, bitstream_path=None, return_bitstream=True,
    device_id=0, **args)`` (``x`` may also be a dict name -> array there).
    ``state``: jobs with the same key share an incremental state dictionary.
    """

    x: Any
    args: dict = dataclasses.field(default_factory=dict)
    api: str = "tensor"
    tensor_id: str = "0"
    state: Optional[str] = None
    id: Optional[str] = None


@dataclasses.dataclass
class ModelEncodeCase:
    """One reference model encode: ``nnc.compress_model`` on ``model_zoo.build(model, seed)``
    with reference keyword ``args``; decoded with ``nnc.decompress`` (a dict)."""

    model: str
    args: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    state: Optional[str] = None
    id: Optional[str] = None


@dataclasses.dataclass
class DecodeCase:
    """One reference decode of ``bitstream``; ``tensor_id=None`` decodes all tensors (dict)."""

    bitstream: bytes
    tensor_id: Optional[str] = "0"
    state: Optional[str] = None
    id: Optional[str] = None


@dataclasses.dataclass
class RefResult:
    """Outcome of one job. ``bitstream`` for encodes; ``decoded`` is an ndarray (or a dict of
    them for multi-tensor decodes); ``error`` holds the reference's exception text."""

    ok: bool
    id: Optional[str] = None
    bitstream: Optional[bytes] = None
    decoded: Any = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    seconds: float = 0.0

    def unwrap(self) -> "RefResult":
        if not self.ok:
            raise ReferenceJobError(f"reference job {self.id!r} failed: {self.error}\n{self.traceback or ''}")
        return self


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------------------


class ReferenceRunner:
    """Runs jobs with the reference software: a batch in one subprocess per call
    (:meth:`run_jobs`, :meth:`run_cases`), or one at a time in a long-lived subprocess
    (:meth:`session`)."""

    def __init__(self, python: Optional[os.PathLike] = None, check: bool = True,
                 full_check: bool = False, timeout: float = 3600.0,
                 torch_threads: Optional[int] = None, env: Optional[dict] = None):
        """``check``: verify the installation now (``full_check``: by importing nncodec,
        which costs a torch import; otherwise from package metadata, and a broken import
        shows up as :class:`ReferenceUnavailable` when the first batch starts).
        ``torch_threads``: ``torch.set_num_threads`` in the subprocess (default: torch's
        own). ``env``: variables set for the subprocess on top of this process's.

        ``python`` may be any interpreter: the driver's operations that do not use the
        reference (``memory`` of ``"ours"``) run with the project's own (``check=False``)."""
        self.python = Path(python) if python is not None else reference_python()
        self.version = check_reference(self.python, full=full_check) if check else None
        self.timeout = timeout
        self.torch_threads = torch_threads
        self.extra_env = dict(env or {})
        self.launches = 0          # subprocess launches so far
        self.seconds = 0.0         # wall time spent in them

    def command(self, *args: str) -> list[str]:
        """The command line that starts the driver with ``args``."""
        cmd = [str(self.python), str(DRIVER)]
        if self.torch_threads:
            cmd += ["--torch-threads", str(int(self.torch_threads))]
        return cmd + list(args)

    # -- raw interface -------------------------------------------------------------------
    def run_jobs(self, jobs: Sequence[dict], workdir: os.PathLike) -> list[dict]:
        """Run raw driver jobs (see ``reference/driver.py``) in ``workdir``; relative paths in
        the jobs are relative to it. Returns one result dict per job, in order.

        If the reference process dies (e.g. a crash in its compiled core), the job that was
        running is reported as failed and the remaining jobs are run in a new process.
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        jobs = [_jsonable(dict(j)) for j in jobs]
        results: list[dict] = []
        start = 0
        attempt = 0
        while start < len(jobs):
            attempt += 1
            job_file = workdir / f"ref_jobs_{attempt}.json"
            res_file = workdir / f"ref_results_{attempt}.json"
            log_file = workdir / f"ref_log_{attempt}.txt"
            job_file.write_text(json.dumps(jobs[start:]))
            if res_file.exists():
                res_file.unlink()
            t0 = time.perf_counter()
            with open(log_file, "w") as log:
                try:
                    proc = subprocess.run(
                        self.command(str(job_file), str(res_file)),
                        cwd=str(workdir), stdout=log, stderr=subprocess.STDOUT,
                        timeout=self.timeout, env=self._env(),
                    )
                    rc = proc.returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
            self.launches += 1
            self.seconds += time.perf_counter() - t0
            started = res_file.exists()  # the driver writes [] before its first job
            part = json.loads(res_file.read_text()) if started else []
            for r in part:
                r["index"] = start + r["index"]
            results.extend(part)
            start += len(part)
            if start >= len(jobs):
                break
            log_tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
            if rc == "timeout":
                raise ReferenceJobError(f"reference batch timed out after {self.timeout} s; log tail:\n{log_tail}")
            if not started:
                raise ReferenceUnavailable(
                    f"reference driver failed to start (exit status {rc}); {SETUP_HINT}; log tail:\n{log_tail}"
                )
            # the process died inside job `start`: record that and go on with the next one
            results.append({
                "index": start, "id": jobs[start].get("id"), "op": jobs[start].get("op"),
                "ok": False, "crashed": True, "seconds": 0.0,
                "error": f"reference process died (exit status {rc})", "traceback": log_tail,
            })
            start += 1
        return results

    def session(self, workdir: os.PathLike) -> "ReferenceSession":
        """A long-lived driver subprocess (``--serve``) running in ``workdir``, for jobs
        submitted one at a time; use it as a context manager or call ``close()``."""
        return ReferenceSession(self, Path(workdir))

    def _env(self) -> dict:
        env = dict(os.environ)
        # the reference does not need a GPU; keep it from initialising one
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONSAFEPATH", None)   # the driver imports model_zoo from its own directory
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    # -- convenience ---------------------------------------------------------------------
    def encode_many(self, cases: Iterable[EncodeCase], decode: bool = True,
                    workdir: Optional[os.PathLike] = None) -> list[RefResult]:
        """Encode every case (and decode its bitstream with the reference) in one subprocess."""
        return self.run_cases(list(cases), workdir=workdir, decode_encodes=decode)

    def decode_many(self, cases: Iterable[DecodeCase], workdir: Optional[os.PathLike] = None) -> list[RefResult]:
        """Decode every bitstream with the reference in one subprocess."""
        return self.run_cases(list(cases), workdir=workdir)

    def run_cases(self, cases: Sequence[Any], workdir: Optional[os.PathLike] = None,
                  decode_encodes: bool = True) -> list[RefResult]:
        """Run a mixed list of :class:`EncodeCase` and :class:`DecodeCase` in one subprocess,
        in the given order (order matters for cases sharing a ``state``)."""
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="nnc_ref_") as tmp:
                return self._run_cases(cases, Path(tmp), decode_encodes)
        return self._run_cases(cases, Path(workdir), decode_encodes)

    def _run_cases(self, cases, workdir: Path, decode_encodes: bool) -> list[RefResult]:
        workdir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for i, c in enumerate(cases):
            stem = f"c{i:05d}"
            if isinstance(c, EncodeCase):
                if isinstance(c.x, dict):
                    inp = f"{stem}_in.npz"
                    np.savez(workdir / inp, **{str(k): _as_numpy(v) for k, v in c.x.items()})
                    dec = f"{stem}_dec.npz"
                else:
                    inp = f"{stem}_in.npy"
                    np.save(workdir / inp, _as_numpy(c.x))
                    dec = f"{stem}_dec.npy"
                job = {"op": "encode", "api": c.api, "input": inp, "args": dict(c.args),
                       "tensor_id": c.tensor_id, "bitstream": f"{stem}.nnc",
                       "decoded": dec if decode_encodes else None}
            elif isinstance(c, ModelEncodeCase):
                job = {"op": "encode", "api": "model", "model": c.model, "seed": c.seed,
                       "args": dict(c.args), "bitstream": f"{stem}.nnc",
                       "decoded": f"{stem}_dec.npz" if decode_encodes else None}
            elif isinstance(c, DecodeCase):
                (workdir / f"{stem}_in.nnc").write_bytes(bytes(c.bitstream))
                dec = f"{stem}_dec.npz" if c.tensor_id is None else f"{stem}_dec.npy"
                job = {"op": "decode", "bitstream": f"{stem}_in.nnc", "tensor_id": c.tensor_id,
                       "decoded": dec}
            else:
                raise TypeError(f"not a reference case: {c!r}")
            job["state"] = c.state
            job["id"] = c.id if c.id is not None else stem
            jobs.append(job)

        raw = self.run_jobs(jobs, workdir)
        out = []
        for job, r in zip(jobs, raw):
            res = RefResult(ok=bool(r.get("ok")), id=job["id"], error=r.get("error"),
                            traceback=r.get("traceback"), seconds=float(r.get("seconds") or 0.0))
            if res.ok:
                if job["op"] == "encode":
                    res.bitstream = (workdir / job["bitstream"]).read_bytes()
                if job.get("decoded"):
                    res.decoded = _load_array(workdir / job["decoded"])
            out.append(res)
        return out


class ReferenceSession:
    """One driver subprocess in serve mode: :meth:`run` sends a job and waits for its result.

    The subprocess imports torch and nncodec once, when the session starts (a failure to
    start raises :class:`ReferenceUnavailable`); if it dies later, :meth:`run` raises
    :class:`ReferenceJobError` with the end of its output. A job that fails inside the
    driver is only reported (``"ok": False`` in its result)."""

    def __init__(self, runner: ReferenceRunner, workdir: Path):
        self.runner = runner
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.workdir / "ref_session_log.txt"
        self._log = open(self.log_file, "w")
        self.jobs = 0
        self.proc = subprocess.Popen(
            runner.command("--serve"), cwd=str(self.workdir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=runner._env())
        runner.launches += 1
        line = self.proc.stdout.readline()
        try:
            ready = json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if not ready:
            rc, tail = self._stop()
            raise ReferenceUnavailable(
                f"reference driver failed to start (exit status {rc}); {SETUP_HINT}; log tail:\n{tail}")

    def run(self, job: dict) -> dict:
        """Run one driver job in the session's process; returns its result dict."""
        if self.proc.poll() is not None:
            rc, tail = self._stop()
            raise ReferenceJobError(f"the reference driver has ended (exit status {rc}); log tail:\n{tail}")
        try:
            self.proc.stdin.write(json.dumps(_jsonable(dict(job))) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            rc, tail = self._stop()
            raise ReferenceJobError(f"the reference driver ended unexpectedly (exit status {rc}) in job "
                                    f"{job.get('id')!r}; log tail:\n{tail}")
        self.jobs += 1
        return json.loads(line)

    def _stop(self) -> tuple:
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait()
        if not self._log.closed:
            self._log.close()
        tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        return rc, tail

    def close(self) -> Optional[int]:
        """End the subprocess (politely: an empty line ends the serve loop); its exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        rc = self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return rc

    def __enter__(self) -> "ReferenceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _load_array(path: Path) -> Any:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return np.load(path)


# ----------------------------------------------------------------------------------------
# module-level conveniences (one shared runner)

_default_runner: Optional[ReferenceRunner] = None


def default_runner() -> ReferenceRunner:
    global _default_runner
    if _default_runner is None:
        _default_runner = ReferenceRunner()
    return _default_runner


def run_jobs(jobs: Sequence[dict], workdir: os.PathLike) -> list[dict]:
    """Run raw driver jobs with the default reference runner."""
    return default_runner().run_jobs(jobs, workdir)


def ref_encode(x: Any, args: Optional[dict] = None, api: str = "tensor", tensor_id: str = "0"):
    """Encode one array with the reference; returns ``(bitstream bytes, reference decode)``.

    One subprocess per call: prefer :func:`ref_encode_many` for more than one case.
    """
    r = default_runner().encode_many([EncodeCase(x, dict(args or {}), api=api, tensor_id=tensor_id)])[0]
    r.unwrap()
    return r.bitstream, r.decoded


def ref_encode_many(cases: Iterable[EncodeCase]) -> list[RefResult]:
    """Encode all cases in one subprocess."""
    return default_runner().encode_many(cases)


def ref_decode(bitstream: bytes, tensor_id: Optional[str] = "0"):
    """Decode one bitstream with the reference (one subprocess; prefer :func:`ref_decode_many`)."""
    return default_runner().decode_many([DecodeCase(bitstream, tensor_id)])[0].unwrap().decoded


def ref_decode_many(cases: Iterable[DecodeCase]) -> list[RefResult]:
    """Decode all bitstreams in one subprocess."""
    return default_runner().decode_many(cases)


def main() -> int:
    """Self-check of the installation: ``python -m reference``."""
    try:
        print("nncodec", check_reference(full=True), "at", reference_python())
    except ReferenceUnavailable as e:
        print(e, file=sys.stderr)
        return 1
    return 0
