"""Tensor coding API: one tensor in, one standard NNC bitstream out, and back.

    >>> import numpy as np
    >>> from nnc_core.tensor import encode, decode
    >>> x = np.random.default_rng(0).normal(0, 0.05, (64, 64)).astype(np.float32)
    >>> bs = encode(x, qp=-32, use_dq=True)
    >>> y = decode(bs)
    >>> y.shape, y.dtype
    ((64, 64), dtype('float32'))

Floating-point tensors are quantized (uniform or dependent quantization, optionally a
codebook or an integer-aligned bit depth) and DeepCABAC-coded; integer tensors are coded
losslessly. Options are named and defaulted like the reference software's ``args`` dict
(see :mod:`nnc_core.options`). Tensors with two or more dimensions count as weights and
use ``qp``; vectors use ``nonweight_qp``.
"""
from __future__ import annotations

import numpy as np

from .codec import QuantizedTensor, StreamSettings, decode_stream, encode_stream
from .errors import DecodeError
from .incremental import CodingState
from .options import TensorOptions, resolve_options
from .quant.codebook import choose_codebook, trial_bytes
from .quant.dependent import quantize_dependent
from .quant.rdoq import quantize_rd
from .quant.step import bitdepth_qp, overflow_safe_qp, step_size
from .quant.uniform import quantize_uniform
from .tools.sparsify import sparsify

__all__ = ["encode", "decode", "encode_with_reconstruction", "CodingState", "DecodeError"]

_INT32 = np.iinfo(np.int32)


def encode(x, state: CodingState | None = None, **options) -> bytes:
    """Encode one tensor (numpy array or torch tensor) into an NNC bitstream.

    For incremental coding pass the same ``state`` to every call (and a separate one to
    the decoder): NDUs then carry their depth in the update tree, ``tca=True`` uses the
    previous version of the tensor as context, and with ``compress_differences=True`` an
    all-zero update is not sent at all.
    """
    return encode_with_reconstruction(x, state, **options)[0]


def encode_with_reconstruction(x, state: CodingState | None = None,
                               **options) -> tuple[bytes, np.ndarray]:
    """Like :func:`encode`, also returning exactly what :func:`decode` will return."""
    opts = resolve_options(options)
    array = as_numpy(x, opts.tensor_id)
    if opts.sparsity > 0:
        array = sparsify({opts.tensor_id: array}, opts.sparsity, opts.qp, opts.qp_density,
                         opts.struct_spars_factor)[opts.tensor_id]
    tensor = quantize_tensor(array, opts)
    settings = StreamSettings.from_options(opts)
    bitstream, (reconstruction,) = encode_stream([tensor], settings, state)
    if reconstruction is None:          # all-zero tensor, NDU omitted under parent signalling
        reconstruction = np.zeros(tensor.dims, dtype=np.float32)
    return bitstream, reconstruction


def decode(bitstream: bytes, tensor_id: str | None = None, state: CodingState | None = None,
           threads: int | None = None, max_elements: int | None = None) -> np.ndarray:
    """Decode a tensor from an NNC bitstream.

    Returns float32 values for uniformly quantized tensors, float64 for codebook-coded
    ones and int32 for integer tensors. ``tensor_id`` picks a tensor by name when the
    stream holds several (default: the first). ``state`` is the decoder's incremental
    coding memory (see :func:`encode`). Block-scanned tensors (``scan_order > 0``) decode
    their block rows on ``threads`` cores (default: all) from the entry points.
    Streams holding more than ``max_elements`` elements (default
    ``nnc_core.codec.MAX_ELEMENTS``, 2^28) raise DecodeError instead of being allocated.
    """
    tensors = decode_stream(bitstream, state, threads=threads, max_elements=max_elements)
    if not tensors:
        raise DecodeError("the bitstream holds no tensor (no NDU unit)")
    if tensor_id is None:
        return tensors[0].values
    for t in tensors:
        if t.name == tensor_id:
            return t.values
    raise KeyError(f"no tensor named {tensor_id!r}; the stream holds {[t.name for t in tensors]}")


# ----------------------------------------------------------------------------- input

def as_numpy(x, name: str = "tensor") -> np.ndarray:
    """A C-contiguous numpy view/copy of ``x``: float32 for floats, int32 for integers.

    Raises ValueError for NaN/Inf or integers outside int32, TypeError for other dtypes.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):          # torch.Tensor
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() == 2:  # float16 / bfloat16
            x = x.float()
        x = x.numpy()
    array = np.asarray(x)
    kind = array.dtype.kind
    if kind == "b":
        array = array.astype(np.int32)
    elif kind in "iu":
        if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
            raise ValueError(f"tensor {name!r}: integer values outside the int32 range "
                             "cannot be coded losslessly")
        array = array.astype(np.int32, copy=False)
    elif kind == "f":
        with np.errstate(over="ignore"):
            array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"tensor {name!r} contains NaN or Inf values "
                             "(or values beyond the float32 range)")
    else:
        raise TypeError(f"tensor {name!r}: cannot code dtype {array.dtype}")
    if array.ndim == 0:                  # scalars travel as shape [1]
        array = array.reshape(1)
    return np.ascontiguousarray(array)


# ----------------------------------------------------------------------------- quantization

def quantize_tensor(array: np.ndarray, opts: TensorOptions, name: str | None = None,
                    parameter_id: int = 0) -> QuantizedTensor:
    """Choose qp, quantizer and (optionally) codebook for one tensor."""
    name = opts.tensor_id if name is None else name
    dims = tuple(int(d) for d in array.shape)
    if array.dtype == np.int32:
        return QuantizedTensor(name, dims, array.reshape(-1), scan_order=opts.scan_order,
                               parameter_id=parameter_id)
    rows = dims[0]
    cols = array.size // rows if rows else 0
    is_weight = array.ndim >= 2
    qp = opts.qp_for(name, is_weight)
    clip = None
    if opts.bitdepth is not None:
        bits = opts.bitdepth if (is_weight or opts.bitdepth > 7) else 8
        qp, lo, hi = bitdepth_qp(array, bits, opts.qp_density)
        clip = (lo, hi)
    qp, levels = _quantize(array, qp, opts, rows, cols, opts.use_dq)
    if opts.lambda_scale > 0:
        levels = quantize_rd(array, step_size(qp, opts.qp_density), levels, rows, cols,
                             dq=opts.use_dq, lambda_scale=opts.lambda_scale,
                             scan_order=opts.scan_order, row_skipping=opts.row_skipping,
                             num_gt=opts.cabac_unary_length_minus1 + 1)
    if clip is not None:
        levels = np.clip(levels, *clip)
    tensor = QuantizedTensor(name, dims, levels.reshape(-1), qp, opts.use_dq,
                             scan_order=opts.scan_order, parameter_id=parameter_id)
    if opts.approx_method == "codebook" and is_weight:     # vectors are never codebook-coded
        return _with_codebook(array, tensor, opts, rows, cols)
    return tensor


def _quantize(array, qp, opts, rows, cols, dq):
    """Quantize at ``qp``; if levels would overflow int32, at the finest safe qp instead."""
    for attempt in range(2):
        step = step_size(qp, opts.qp_density)
        if dq:
            levels = quantize_dependent(array, step, rows, cols, opts.scan_order)
        else:
            levels = quantize_uniform(array, step)
        if levels is not None:
            return qp, levels
        qp = overflow_safe_qp(float(np.max(np.abs(array))), opts.qp_density)
    raise ValueError(f"tensor {opts.tensor_id!r} cannot be quantized within int32 levels")


def _with_codebook(array, direct: QuantizedTensor, opts, rows, cols) -> QuantizedTensor:
    """Codebook mode: try a codebook of uniform levels, one qp octave step finer with DQ."""
    qp = direct.qp - (1 << opts.qp_density) if opts.use_dq else direct.qp
    qp, levels = _quantize(array, qp, opts, rows, cols, dq=False)
    direct_cost = trial_bytes(direct.levels, rows, cols, dq=direct.dq)
    choice = choose_codebook(levels, rows, cols, direct_cost)
    if choice is None:
        return direct
    return QuantizedTensor(direct.name, direct.dims, choice.indices, qp, dq=False,
                           codebook=choice.codebook, scan_order=direct.scan_order,
                           parameter_id=direct.parameter_id)
