"""``main.py --model hf:<path>``: code a checkpoint whose architecture main.py does not build
(a local Hugging Face model folder or a .safetensors file) and report, per tensor, its rate
(bits per weight) and reconstruction error (relative L2 error ``||x - x'|| / ||x||``; the
total is taken over the floating-point tensors, the integer ones being coded losslessly).

Without a language-modelling data set there is nothing to evaluate such a checkpoint on, so
the run measures no accuracy and says so (with one, :mod:`experiments.nnc_run` builds the
folder's causal LM and measures its perplexity). The checkpoint is coded with :func:`nnc_core.nn.encode_iter`, one tensor at a time with
its dtype recorded, and every unit goes to the ``.nnc`` file as it is made; the original
tensor is read again from the checkpoint to measure its error.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from models.hf import load_hf
from nnc_core import nn as nnc_nn
from nnc_core.checkpoints import checkpoint_bytes
from nnc_core.dtypes import is_float

from . import report
from .builders import file_stem, setup_errors
from .config import save_args
from .tracking import RunLogger

TENSOR_COLUMNS = [("name", "tensor", "s"), ("shape", "shape", "s"), ("dtype", "dtype", "s"),
                  ("qp", "qp", "d"), ("params", "params", "d"), ("bytes", "bytes", "d"),
                  ("bits_per_param", "bits/param", ".3f"), ("relative_error", "rel. error", ".2e")]

# main.py flags that need a model main.py builds, or (coding only) data to evaluate on
NEEDS_ARCHITECTURE = {"pre_train_model": "trains a model", "model_rand_int": "initialises a model",
                      "plot_segmentation_masks": "evaluates a segmentation model",
                      "model_path": "loads weights into a model (the path is part of hf:<path>)"}
NEEDS_EVALUATION = {"dataset_path": "evaluates on a data set",
                    "max_eval_batches": "evaluates on a data set"}


def check_flags(args, evaluated: bool) -> None:
    """Refuse the main.py flags that do not apply to an hf: checkpoint (``evaluated``: as a
    causal language model on a language-modelling data set)."""
    refused = {**NEEDS_ARCHITECTURE, **({} if evaluated else NEEDS_EVALUATION)}
    given = [f"--{flag} {why}" for flag, why in refused.items() if getattr(args, flag, None)]
    if given:
        what = ("is evaluated as the causal LM its folder describes" if evaluated else
                "without a language-modelling --dataset (text, v2x) is coded, not evaluated")
        raise SystemExit(f"error: --model {args.model}: a checkpoint {what}; {'; '.join(given)}")


def coding_options(args, qp: int) -> dict:
    """The nnc_core.nn options of the run (LSA's training settings do not apply: a
    checkpoint has no module to train; asking for lsa or bnf is refused by the codec)."""
    return dict(qp=qp, nonweight_qp=args.nonweight_qp, qp_density=args.qp_density,
                use_dq=args.use_dq, opt_qp=args.opt_qp, bnf=args.bnf, lsa=args.lsa,
                approx_method=args.approx_method, bitdepth=args.bitdepth,
                sparsity=args.sparsity, struct_spars_factor=args.struct_spars_factor,
                lambda_scale=args.lambda_scale, threads=args.threads, keep_dtypes=True)


def _squared_error(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(squared error, squared norm of the original), in float64."""
    x = np.asarray(original, dtype=np.float64)
    return float(np.sum((x - np.asarray(decoded, dtype=np.float64)) ** 2)), float(np.sum(x * x))


def _ratio(sq_error: float, sq_norm: float) -> float:
    """Relative L2 error; 0 for an exact zero tensor, infinite for a wrong one."""
    if sq_norm:
        return (sq_error / sq_norm) ** 0.5
    return 0.0 if sq_error == 0 else float("inf")


def code_checkpoint(checkpoint, qp: int, args, out_dir: Path, log: RunLogger) -> dict:
    """Code ``checkpoint`` at ``qp`` into ``<stem>_qp<qp>.nnc``; per-tensor rows and totals.
    Without a module every NDU carries one tensor."""
    path = out_dir / f"{file_stem(args.model)}_qp{qp}.nnc"
    rows, size, error, norm = [], 0, 0.0, 0.0
    start = time.perf_counter()
    with setup_errors(f"--model {args.model}"), open(path, "wb") as out:
        for part in nnc_nn.encode_iter(checkpoint, **coding_options(args, qp)):
            out.write(part.data)
            size += len(part.data)
            for name, decoded in part.tensors.items():
                if name in checkpoint.ties:
                    continue
                sq_error, sq_norm = _squared_error(checkpoint[name], decoded)
                if is_float(checkpoint.dtypes[name]):     # integers are coded losslessly
                    error, norm = error + sq_error, norm + sq_norm
                rows.append({"name": name, "shape": "x".join(map(str, decoded.shape)) or "scalar",
                             "dtype": checkpoint.dtypes[name], "kind": part.kind, "qp": part.qp,
                             "params": int(decoded.size), "bytes": len(part.data),
                             "bits_per_param": 8 * len(part.data) / max(decoded.size, 1),
                             "relative_error": _ratio(sq_error, sq_norm)})
                del decoded
            del part                               # not kept while the next tensor is coded
    encode_s = time.perf_counter() - start
    params = sum(r["params"] for r in rows)
    original_bytes = checkpoint_bytes(checkpoint)
    result = {"qp": qp, "params": params, "original_bytes": original_bytes,
              "compressed_bytes": size, "ratio": original_bytes / size,
              "bits_per_param": 8 * size / max(params, 1),
              "relative_error": _ratio(error, norm),        # over the float tensors
              "encode_s": encode_s, "bitstream": path.name, "tensors": rows}
    if args.verbose:
        log.print(f"\nqp {qp}: per-tensor rate and reconstruction error\n"
                  f"{report.format_table(rows, TENSOR_COLUMNS)}")
    log.print(f"qp {qp}: {size} bytes ({result['ratio']:.2f}x smaller than the "
              f"{original_bytes}-byte checkpoint), {result['bits_per_param']:.3f} bits per "
              f"weight, relative error of the float tensors {result['relative_error']:.2e}")
    log.log({"qp": qp, "compressed_bytes": size, "ratio": result["ratio"],
             "bits_per_param": result["bits_per_param"],
             "relative_error": result["relative_error"]})
    return result


def run(args) -> dict:
    """Code the ``hf:`` checkpoint of ``args.model`` at every qp; returns the results."""
    check_flags(args, evaluated=False)
    with setup_errors(f"--model {args.model}"):
        hf = load_hf(args.model)
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_args(args, out_dir)
    log = RunLogger(args, project="nnc")
    tensors = hf.tensors
    log.print(f"{args.model}: {len(tensors)} tensors, {checkpoint_bytes(tensors)} bytes, "
              f"architecture {hf.architecture or 'unknown'}. No evaluation: main.py evaluates "
              "models it builds on a data set; this checkpoint is coded and its reconstruction "
              "error reported (a causal LM folder is evaluated with --dataset text or v2x).")
    runs = [code_checkpoint(tensors, qp, args, out_dir, log) for qp in args.qp_sweep or [args.qp]]
    results = {"model": args.model, "weights": str(hf.path), "architecture": hf.architecture,
               "evaluated": False,
               "options": {k: v for k, v in coding_options(args, 0).items() if k != "qp"},
               "runs": runs}
    path = report.write_json(results, out_dir / f"{file_stem(args.model)}_results.json")
    log.print(f"results: {path}")
    log.finish()
    return results
