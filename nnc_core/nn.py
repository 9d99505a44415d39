"""Model coding API: a ``torch.nn.Module`` or a state dict in, one NNC bitstream out, and back.

    >>> import torch
    >>> from nnc_core import nn as nnc_nn
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
    ...                             torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
    >>> bs = nnc_nn.encode(model, qp=-32, use_dq=True)
    >>> sd = nnc_nn.decode(bs)
    >>> sorted(sd)[:3]
    ['0.bias', '0.weight', '1.bias']

Every floating-point entry of the state dict is quantized and DeepCABAC-coded in its own
NDU (integer buffers are coded losslessly; ``num_batches_tracked`` is dropped), in
state-dict order, with its state-dict position as the NDU's parameter id. NDUs are
quantized, priced and coded concurrently on ``threads`` threads (default: all cores; the
compiled core releases the GIL in its loops), and decoded concurrently; the bitstream and
the decoded tensors do not depend on the thread count. As in the
reference software, a module is coded with the PyTorch topology format and tensors are
typed by shape and name: tensors with two or more dimensions and 1-D ``*.weight`` tensors
are weights and use ``qp``, other 1-D tensors (biases, BatchNorm statistics) use
``nonweight_qp``. A plain dict is typed by shape alone.

Model tools (NNCodec, Becker et al., ICML 2023 workshop):

* ``opt_qp``: a qp per weight tensor from its relative size and spread (:mod:`.tools.opt_qp`);
* ``bnf``: BatchNorm folding; each weight travels in a BLOCK NDU with a per-channel scale
  and a folded bias instead of the four BatchNorm vectors (:mod:`.tools.bnf`);
* ``lsa``: local scaling adaptation; per-channel scales trained after quantization on the
  data of ``train_loader`` (:mod:`.tools.lsa`; data parallel over the processes of a
  torchrun job when ``train_loader`` draws through a DistributedSampler);
* ``sparsity``, ``struct_spars_factor``: unstructured, then structured zeroing of weights
  before quantization (:mod:`.tools.sparsify`).

Differential coding (NNC second edition; Becking et al., IEEE TMM 2024): with
``state=CodingState(...)`` the encoder codes the difference of the model to the base the
state holds (the sum of everything sent so far; zero at first) and advances it;
``decode(bitstream, state=...)`` returns that difference and advances the receiver's copy.
Weights of differences use ``diff_qp`` (default ``qp``; sparsification keeps using
``qp``'s step, as NNCodec does). ``compress_differences=True`` signals the update tree
(parent node ids) and omits all-zero NDUs, ``tca=True`` codes each tensor in the context of
its previous levels and ``hdsp=True`` tries the significance history per NDU:

    >>> from nnc_core.incremental import CodingState
    >>> sender, receiver = CodingState(device_id=1), CodingState()
    >>> w0 = {"fc.weight": np.full((4, 8), 0.5, np.float32)}
    >>> w1 = {"fc.weight": w0["fc.weight"] + 0.01}
    >>> for w in (w0, w1):
    ...     update = nnc_nn.decode(nnc_nn.encode(w, state=sender, compress_differences=True,
    ...                                          tca=True, hdsp=True), state=receiver)
    >>> bool(np.array_equal(receiver.base["fc.weight"], sender.base["fc.weight"]))
    True

:func:`decode` returns the transmitted tensors with any local scales multiplied into their
weights; :func:`load_decoded` puts them into a model (BatchNorm layers that were folded
become identities).

Checkpoints. A :class:`~nnc_core.checkpoints.Checkpoint` (a file opened with
:func:`nnc_core.checkpoints.read_checkpoint`) is coded like a dict, with every tensor it
holds, ``num_batches_tracked`` included. :func:`encode_iter` yields the stream unit by unit
and reads, quantizes and codes one tensor at a time unless a tool needs the whole model
first (``sparsity``, ``opt_qp``, ``bnf``, ``lsa``), so that writing its units to a file
needs the memory of about one tensor. Names that share one tensor (tied weights, such as
an input embedding reused as the output layer) are coded once, under the first name, and
decoding restores the others (not for differences with a ``state``, which are coded per
name). ``keep_dtypes=True`` records each tensor's dtype (float16, bfloat16, int8, uint8, ...)
and scalar shape, and decoding restores them (:mod:`nnc_core.stream_info` says where the
stream carries them); integer tensors are always coded losslessly:

    >>> sd = {"w": np.arange(-6, 6, dtype=np.int8).reshape(3, 4),
    ...       "scale": np.float16([0.25]), "step": np.int64(7)}
    >>> out, kinds = decode_with_dtypes(encode(sd, keep_dtypes=True))
    >>> kinds, bool(np.array_equal(out["w"], sd["w"])), out["step"].shape
    ({'w': 'int8', 'scale': 'float16', 'step': 'int64'}, True, ())
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from . import dtypes as dt
from . import stream_info
from .bitstream import UnitType, parse_stream
from .checkpoints import Checkpoint, tied_names
from .codec import (BN_ROLES, QuantizedBlock, QuantizedTensor, StreamSettings, decode_stream,
                    encode_item, encode_ndu_unit, encode_units, reconstruct, stream_head)
from .errors import DecodeError
from .incremental import CodingState
from .options import TensorOptions, resolve_options
from .stream_info import StreamNote
from .tensor import as_numpy, quantize_tensor
from .tools import fold_batchnorm, optimise_qps, sparsify
from .workers import ordered_map, resolve_threads

__all__ = ["encode", "encode_iter", "encode_with_reconstruction", "encode_model", "decode",
           "decode_with_dtypes", "load_decoded", "batchnorm_blocks", "BatchNormBlock",
           "EncodedModel", "CodedUnit", "StreamPart", "CodingState"]

TOPOLOGY_UNRECOGNISED, TOPOLOGY_PYTORCH = 0, 3
BN_SUFFIXES = {"bias": "bn_beta", "weight": "bn_gamma", "running_mean": "bn_mean",
               "running_var": "bn_var"}

# model-level options of the reference's args dict (nncodec.nn), with their defaults
MODEL_DEFAULTS = {"bnf": False, "lsa": False, "opt_qp": False, "lr": 1e-3, "epochs": 1,
                  "max_batches": None, "ioq": False, "diff_qp": None, "keep_dtypes": False}
# reference keys that steer its data loading, logging or file output: accepted, no effect
MODEL_NO_EFFECT = {"wandb", "dataset_path", "model", "workers", "batch_size"}


@dataclass(frozen=True)
class ModelTools:
    bnf: bool = False
    lsa: bool = False
    opt_qp: bool = False
    lr: float = 1e-3
    epochs: int = 1
    max_batches: int | None = None
    diff_qp: int | None = None       # qp of weights in differences (None: qp)
    keep_dtypes: bool = False        # record dtypes and scalar shapes, restored on decoding


def resolve_model_options(options: dict) -> tuple[TensorOptions, ModelTools]:
    """Split keyword options into tensor options and model tools; validate both."""
    options = dict(options)
    tools = {k: options.pop(k) for k in list(options) if k in MODEL_DEFAULTS}
    for key in MODEL_NO_EFFECT & set(options):
        options.pop(key)
    if tools.pop("ioq", False):
        raise NotImplementedError("ioq (inference-based qp optimisation) is not implemented")
    opts = resolve_options(options)
    model_tools = ModelTools(**tools)
    if model_tools.epochs < 0 or model_tools.lr <= 0:
        raise ValueError("epochs must be >= 0 and lr > 0")
    if model_tools.diff_qp is not None:
        resolve_options({"qp": model_tools.diff_qp})      # same checks as qp
    return opts, model_tools


# ----------------------------------------------------------------------------- reports

@dataclass
class CodedUnit:
    """One NDU of a coded model: a tensor, or a weight with its block members."""
    name: str
    shape: tuple[int, ...]
    kind: str                        # "weight", "bias", ..., or "block(ls+bi)" etc.
    qp: int | None
    size: int                        # coded elements
    original_bytes: int              # the uncompressed tensors, at their original precision
    unit_bytes: int
    payload_bytes: int
    members: list[str] = field(default_factory=list)
    levels: np.ndarray | None = None  # transmitted levels of the weight (None for integers)
    weight_payload_bytes: int = 0     # its payload coded on its own (= payload_bytes if alone)

    def row(self) -> dict:
        zeros = 100.0 * float(np.mean(self.levels == 0)) if self.levels is not None and self.levels.size else None
        return {"name": self.name, "shape": list(self.shape), "kind": self.kind, "qp": self.qp,
                "params": self.size, "bytes": self.unit_bytes, "payload_bytes": self.payload_bytes,
                "bits_per_param": 8 * self.unit_bytes / max(self.size, 1), "sparsity": zeros,
                "members": self.members}


@dataclass
class EncodedModel:
    bitstream: bytes
    tensors: list[CodedUnit]
    reconstruction: dict[str, np.ndarray]    # exactly what decode() returns
    params: int                              # elements of the model's state dict (tied once)
    original_bytes: int                      # their size at their original precision
    tied: dict[str, str] = field(default_factory=dict)   # name -> the name it is coded under


@dataclass
class StreamPart:
    """One piece of a bitstream from :func:`encode_iter`: the leading units (start, MPS,
    topology; ``tensors`` empty) or one NDU and what :func:`decode` returns for the tensors
    it carries (tied names included)."""
    data: bytes
    tensors: dict[str, np.ndarray]
    kind: str | None = None          # "weight", "bias", "integer", "block(...)", ...
    qp: int | None = None            # qp of the (weight) tensor; None for integers


# ----------------------------------------------------------------------------- encoder

@dataclass
class _Entry:
    name: str
    array: np.ndarray
    parameter_id: int
    kind: str
    original_bytes: int
    dtype: str = "float32"           # before coding (nnc_core.dtypes names)


def _is_module(model) -> bool:
    return hasattr(model, "state_dict") and hasattr(model, "named_modules")


def _kind(name: str, ndim: int, torch_path: bool, bn_role: str | None) -> str:
    """Parameter type as the reference assigns it: by shape, then by name for 1-D tensors."""
    if ndim > 1:
        return "weight"
    if bn_role is not None:
        return bn_role
    if not torch_path or ndim == 0:
        return "other"
    for marker, kind in ((".bias", "bias"), (".running_mean", "bn_mean"),
                         (".running_var", "bn_var"), (".weight_scaling", "scaling"),
                         ("gamma", "bn_gamma"), (".weight", "weight")):
        if marker in name:
            return kind
    return "other"


def _batchnorms(model) -> dict[str, object]:
    import torch
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@dataclass
class _Source:
    """A model's tensors in state-dict order: a module's state dict, a dict, or a
    Checkpoint (which reads each tensor when it is looked up)."""
    values: Mapping
    torch_path: bool                 # a module: PyTorch topology, tensors typed by name
    dtypes: dict[str, str]
    ties: dict[str, str]             # name -> earlier name holding the same tensor
    scalars: set[str]                # 0-d tensors (they travel as shape [1])
    bns: dict
    keep_all: bool                   # a Checkpoint: num_batches_tracked is coded too


def _source(model, blocks_on: bool, share_ties: bool = True) -> _Source:
    torch_path = _is_module(model)
    values = model.state_dict() if torch_path else model
    if isinstance(model, Checkpoint):
        dtypes, ties = model.dtypes, model.ties
        scalars = {n for n, shape in model.shapes.items() if not shape}
    else:
        dtypes = {name: dt.dtype_name(v) for name, v in values.items()}
        ties = tied_names(values)
        scalars = {n for n, v in values.items() if np.ndim(v) == 0}
    bns = _batchnorms(model) if torch_path and blocks_on else {}
    return _Source(values, torch_path, dtypes, ties if share_ties else {}, scalars, bns,
                   isinstance(model, Checkpoint))


def _dropped(name: str, source: _Source) -> bool:
    return name.endswith("num_batches_tracked") and not source.keep_all


def _iter_entries(source: _Source) -> Iterator[_Entry]:
    """The entries to code, each tensor read and converted only when it is reached."""
    index = 0
    for name in source.values:
        if _dropped(name, source):
            index += source.torch_path     # the reference keeps its slot in the parameter ids
            continue
        if name in source.ties:            # coded under the first name; its slot is kept
            index += 1
            continue
        value = source.values[name]
        ndim = len(value.shape) if hasattr(value, "shape") else np.ndim(value)
        array = as_numpy(value, name)
        prefix, _, suffix = name.rpartition(".")
        bn_role = BN_SUFFIXES.get(suffix) if prefix in source.bns else None
        kind = _kind(name, ndim, source.torch_path, bn_role)
        dtype = source.dtypes[name]
        yield _Entry(name, array, index, kind, int(array.size * dt.itemsize(dtype)), dtype)
        del value, array             # hold no tensor while the next one is read
        index += 1


def _entries(model, blocks_on: bool) -> tuple[list[_Entry], dict]:
    """State-dict entries to code, in order, and the BatchNorm modules (by prefix)."""
    source = _source(model, blocks_on)
    return list(_iter_entries(source)), source.bns


@dataclass
class _Block:
    weight: _Entry
    bias: _Entry | None = None
    bn: dict[str, _Entry] = field(default_factory=dict)   # role -> entry
    bn_module: object = None
    scaled: bool = False


def _form_blocks(entries: list[_Entry], bns: dict, scaled: set[str]) -> dict[str, _Block]:
    """Group each weight with its bias, the BatchNorm that follows it (the nearest earlier
    weight with as many output channels) and its local scales; keyed by weight name."""
    by_name = {e.name: e for e in entries}
    blocks: dict[str, _Block] = {}
    for e in entries:
        if e.kind == "weight" and e.array.ndim > 1:
            prefix = e.name.rpartition(".")[0]
            bias = by_name.get(f"{prefix}.bias") if e.name.endswith(".weight") else None
            blocks[e.name] = _Block(e, bias if bias is not None and bias.array.ndim == 1 else None,
                                    scaled=e.name in scaled)
    order = list(blocks.values())
    for prefix, module in bns.items():
        members = {BN_SUFFIXES[s]: by_name.get(f"{prefix}.{s}") for s in BN_SUFFIXES}
        if any(m is None for m in members.values()):
            continue
        position = members["bn_gamma"].parameter_id
        channels = members["bn_gamma"].array.shape[0]
        candidates = [b for b in order if b.weight.parameter_id < position and not b.bn
                      and b.weight.array.shape[0] == channels]
        if candidates:
            block = candidates[-1]
            block.bn, block.bn_module = members, module
    # a weight alone (no bias, BatchNorm or scales) stays a single-tensor NDU
    return {k: b for k, b in blocks.items() if b.bias or b.bn or b.scaled}


@dataclass(frozen=True)
class BatchNormBlock:
    """A weight followed by a BatchNorm, by state-dict names (``bias`` None if the layer
    has none)."""
    weight: str
    bias: str | None
    gamma: str
    beta: str
    mean: str
    var: str
    eps: float


def batchnorm_blocks(model) -> list[BatchNormBlock]:
    """The (weight, BatchNorm) pairs of a torch module that BatchNorm folding merges, found
    as the encoder finds them."""
    entries, bns = _entries(model, True)
    blocks = _form_blocks(entries, bns, set())
    return [BatchNormBlock(b.weight.name, b.bias.name if b.bias else None,
                           b.bn["bn_gamma"].name, b.bn["bn_beta"].name, b.bn["bn_mean"].name,
                           b.bn["bn_var"].name, float(getattr(b.bn_module, "eps", 1e-5)))
            for b in blocks.values() if b.bn]


def _nonweight_qp(opts: TensorOptions) -> int:
    # the reference treats a missing (or zero) nonweight_qp as a step four times finer
    return opts.nonweight_qp if opts.nonweight_qp else opts.qp - (2 << opts.qp_density)


def _qp_of(e: _Entry, opts: TensorOptions) -> int:
    if opts.qp_per_tensor and e.name in opts.qp_per_tensor:
        return int(opts.qp_per_tensor[e.name])
    return opts.qp if e.kind == "weight" else _nonweight_qp(opts)


def _base_qps(entries: list[_Entry], opts: TensorOptions, tools: ModelTools) -> dict[str, int]:
    qps = {e.name: _qp_of(e, opts) for e in entries}
    if tools.opt_qp:
        qps = optimise_qps({e.name: e.array for e in entries if e.kind == "weight"
                            and e.array.dtype == np.float32}, qps)
    return qps


def _quantize(array: np.ndarray, name: str, qp: int, opts: TensorOptions, parameter_id: int,
              uniform_only: bool = False) -> QuantizedTensor:
    # members of BLOCK NDUs share the block's raster scan and carry no codebook
    tensor_opts = replace(opts, qp_per_tensor={name: qp}, tensor_id=name,
                          scan_order=0 if uniform_only else opts.scan_order,
                          approx_method="uniform" if uniform_only else opts.approx_method)
    return quantize_tensor(array, tensor_opts, name, parameter_id)


def _values(t: QuantizedTensor, qp_density: int) -> np.ndarray:
    return reconstruct(t.levels, t.dims, t.qp, qp_density, t.codebook)


def _local_scales(model, entries, qps, opts, tools, ties, train_loader, device, verbose):
    """Train LSA scales with every other parameter quantized at its final qp."""
    import torch
    if train_loader is None:
        raise ValueError("lsa=True trains local scales on data: pass train_loader=")
    fixed = {}
    for e in entries:
        if e.array.dtype == np.float32:
            t = _quantize(e.array, e.name, qps[e.name], opts, e.parameter_id)
            fixed[e.name] = torch.from_numpy(np.asarray(_values(t, opts.qp_density),
                                                        dtype=np.float32).copy())
        else:
            fixed[e.name] = torch.from_numpy(e.array.copy())
    for name, first in ties.items():      # one storage: loading the original would undo it
        fixed[name] = fixed[first]
    state = model.state_dict()
    for name, value in state.items():     # dropped entries (num_batches_tracked) as they are
        fixed.setdefault(name, value)
    from .tools.lsa import train_local_scales
    scales = train_local_scales(model, fixed, train_loader, epochs=tools.epochs, lr=tools.lr,
                                max_batches=tools.max_batches, device=device, verbose=verbose)
    return {k: v.numpy().astype(np.float32) for k, v in scales.items()}


def _quantize_block(b: _Block, qps, opts, tools, scales) -> QuantizedBlock:
    nwqp = _nonweight_qp(opts)
    w = b.weight
    scale = scales.get(w.name)
    bias = b.bias.array if b.bias is not None else None
    bias_name = b.bias.name if b.bias is not None else f"{w.name}.bias"
    bias_qp = qps[b.bias.name] if b.bias is not None else nwqp
    bn = None
    if b.bn and tools.bnf:
        eps = float(getattr(b.bn_module, "eps", 1e-5))
        scale, bias = fold_batchnorm(b.bn["bn_gamma"].array, b.bn["bn_beta"].array,
                                     b.bn["bn_mean"].array, b.bn["bn_var"].array, eps,
                                     bias=bias, scale=scale)
    elif b.bn:
        bn = tuple(_quantize(b.bn[r].array, b.bn[r].name, qps[b.bn[r].name], opts,
                             b.bn[r].parameter_id, True) for r in BN_ROLES)
    pid = w.parameter_id
    return QuantizedBlock(
        weight=_quantize(w.array, w.name, qps[w.name], opts, pid, uniform_only=True),
        scaling=None if scale is None else _quantize(scale, f"{w.name}_scaling", nwqp, opts, pid, True),
        bn=bn,
        bias=None if bias is None else _quantize(bias, bias_name, bias_qp, opts, pid, True))


def encode(model, /, *, state: CodingState | None = None, train_loader=None, device=None,
           verbose: bool = False, threads: int | None = None, **options) -> bytes:
    """Encode a ``torch.nn.Module``, a state dict (name -> numpy array or torch tensor) or a
    :class:`~nnc_core.checkpoints.Checkpoint` into one NNC bitstream; with ``state``, its
    difference to the state's base. See the module docstring and :func:`encode_model`.

    ``threads`` (default: all cores) quantize and code NDUs concurrently; the bitstream does
    not depend on it."""
    if state is not None:
        return _encode(model, state, train_loader, device, verbose, options, threads).bitstream
    parts = _parts(model, train_loader, device, verbose, threads, options, with_tensors=False)
    return b"".join(part.data for part in parts)


def encode_iter(model, /, *, train_loader=None, device=None, verbose: bool = False,
                threads: int | None = None, **options) -> Iterator[StreamPart]:
    """The bitstream of :func:`encode` (no ``state``) as :class:`StreamPart` s: first the
    leading units, then one NDU at a time, each with what :func:`decode` returns for it.

    Tensors are read, quantized and coded as the iteration reaches them unless a tool needs
    the whole model first (``sparsity``, ``opt_qp``, ``bnf``, ``lsa``), so that writing
    the parts to a file as they come needs the memory of a few tensors: ``threads``
    (default: all cores) code that many NDUs at once, each tensor read when a thread is
    free for it; the parts come in stream order and do not depend on the thread count.
    Options are checked here, before the first part."""
    return _parts(model, train_loader, device, verbose, threads, options, with_tensors=True)


def _parts(model, train_loader, device, verbose, threads, options,
           with_tensors: bool) -> Iterator[StreamPart]:
    """The parts of :func:`encode_iter`; without ``with_tensors`` their ``tensors`` are left
    empty (what :func:`encode` needs: the reconstructions are not computed)."""
    threads = resolve_threads(threads)
    plan = _plan(model, None, train_loader, device, verbose, options, whole=False)

    def code(entry: _Entry) -> StreamPart | None:
        made = plan.quantize(entry)
        if made is None:
            return None
        item, kind = made
        unit = encode_item(item, plan.settings)
        if unit is None:
            return None
        weight = item.weight if isinstance(item, QuantizedBlock) else item
        tensors = plan.decoded([(unit, item)]) if with_tensors else {}
        return StreamPart(unit.unit, tensors, kind, weight.qp)

    def parts():
        yield StreamPart(b"".join(stream_head(plan.settings)), {}, None, None)
        # weighted by size: a few large tensors in flight at a time, however many small ones
        for part in ordered_map(code, plan.entries, threads, weight=lambda e: e.array.size):
            if part is not None:
                yield part
            del part                     # hold no tensor while the next one is coded
    return parts()


def encode_with_reconstruction(model, /, *, state: CodingState | None = None, train_loader=None,
                               device=None, verbose: bool = False, threads: int | None = None,
                               **options) -> tuple[bytes, dict[str, np.ndarray]]:
    """Like :func:`encode`, also returning what :func:`decode` gives for the transmitted
    tensors (local scales applied), without the per-NDU report of :func:`encode_model`."""
    coded = _encode(model, state, train_loader, device, verbose, options, threads)
    return coded.bitstream, coded.plan.decoded(zip(coded.units, coded.items))


def encode_model(model, /, *, state: CodingState | None = None, train_loader=None,
                 device=None, verbose: bool = False, threads: int | None = None,
                 **options) -> EncodedModel:
    """Encode a model and report, per NDU, its size, qp and coded levels.

    Options are the reference's ``args`` names (``qp``, ``nonweight_qp``, ``use_dq``,
    ``bnf``, ``lsa``, ``opt_qp``, ``lr``, ``epochs``, ``max_batches``, ``sparsity``,
    ``struct_spars_factor``, ``compress_differences``, ``tca``, ``diff_qp``, ...) plus
    ``hdsp``, ``scan_order`` (block scans of single-tensor NDUs) and ``keep_dtypes``.
    ``bnf`` and ``lsa`` need a module; ``lsa`` also a ``train_loader`` yielding
    (inputs, targets) and shows a progress bar with ``verbose``. With ``state`` the
    difference to the state's base is coded (module docstring); the reconstruction and
    the report are then of that difference, omitted all-zero NDUs reported with 0 bytes.
    """
    decoder_view = state.snapshot() if state is not None else None
    coded = _encode(model, state, train_loader, device, verbose, options, threads)
    return EncodedModel(coded.bitstream, _reports(coded, decoder_view, threads),
                        coded.plan.decoded(zip(coded.units, coded.items)),
                        sum(e.array.size for e in coded.entries),
                        sum(e.original_bytes for e in coded.entries), dict(coded.plan.note.tied))


@dataclass
class _Plan:
    """What the encoder decided before coding a tensor: the stream's signalling, the
    entries (a list, or an iterator that reads them one by one) and how to quantize them."""
    settings: StreamSettings
    note: StreamNote
    entries: list[_Entry] | Iterator[_Entry]
    quantize: Callable[[_Entry], tuple | None]   # -> (item, kind), None for block members

    def decoded(self, units_and_items) -> dict[str, np.ndarray]:
        """What :func:`decode` returns for these units: local scales applied, recorded
        dtypes and scalar shapes restored, tied names next to the tensor they share."""
        values, recorded = {}, {}
        for unit, item in units_and_items:
            if unit is not None:
                values.update(zip(unit.names, unit.reconstructions))
                recorded.update(_recorded_dtypes(item, self.note))
        return _finish(_apply_scaling(values), recorded, self.note)


def _recorded_dtypes(item, note: StreamNote) -> dict[str, str]:
    """The dtypes a decoder will find for the tensors of ``item`` (as :func:`_stream_dtypes`
    reads them back)."""
    if isinstance(item, QuantizedBlock):
        return {t.name: note.dtypes[t.name] for _, t in item.payload_members()
                if t.name in note.dtypes}
    if item.name in note.dtypes:
        return {item.name: note.dtypes[item.name]}
    if item.data_format is not None:
        return {item.name: stream_info.DATA_FORMATS[item.data_format]}
    return {}


def _decodes_to(t: QuantizedTensor) -> str:
    """What the payload of ``t`` decodes to without a data format (codec.reconstruct)."""
    return "int32" if t.qp is None else "float64" if t.codebook is not None else "float32"


def _note(source: _Source, tools: ModelTools, in_block: set[str], folded: set[str]) -> StreamNote:
    """The checkpoint facts that go into the topology data (nnc_core.stream_info)."""
    coded = [n for n in source.values if not _dropped(n, source) and n not in source.ties]
    for name, first in source.ties.items():
        if first in folded:
            raise ValueError(f"{name!r} is tied to {first!r}, which bnf folds into its layer")
    if not tools.keep_dtypes:
        return StreamNote(tied=dict(source.ties))
    default = {n: "float32" if dt.is_float(source.dtypes[n]) else "int32" for n in coded}
    noted = {n: source.dtypes[n] for n in coded if source.dtypes[n] != default[n] and (
        n in in_block or not stream_info.carried_by_ndu(source.dtypes[n]))}
    return StreamNote(noted, [n for n in coded if n in source.scalars], dict(source.ties))


@dataclass
class _Coded:
    bitstream: bytes
    items: list
    kinds: list[str]
    units: list
    entries: list[_Entry]
    settings: StreamSettings
    plan: _Plan


def _plan(model, state, train_loader, device, verbose, options, whole: bool) -> _Plan:
    """Check the options and decide how to code ``model``; ``whole`` reads every entry
    first (else only the tools that need the whole model do)."""
    opts, tools = resolve_model_options(options)
    blocks_on = tools.bnf or tools.lsa
    if blocks_on and not _is_module(model):
        raise ValueError("bnf and lsa need the torch.nn.Module (a state dict does not say "
                         "which tensors belong to BatchNorm layers)")
    if blocks_on and state is not None:
        raise ValueError("bnf and lsa code BLOCK NDUs, which the update tree cannot carry: "
                         "code differences without them")
    if blocks_on and opts.scan_order:
        raise ValueError("scan_order > 0 cannot be combined with bnf or lsa: BLOCK NDUs are "
                         "coded in raster order")
    if state is not None and not isinstance(state, CodingState):
        raise TypeError(f"state must be a nnc_core.CodingState, got {type(state).__name__}")
    if tools.keep_dtypes and state is not None:
        raise ValueError("keep_dtypes records a model's dtypes; differences with a state are "
                         "coded and decoded as float32 and int32")
    if not _is_module(model) and not isinstance(model, Mapping):
        raise TypeError(f"expected a torch.nn.Module, a dict or a Checkpoint, got "
                        f"{type(model).__name__}")
    source = _source(model, blocks_on, share_ties=state is None)
    differences = state is not None or opts.compress_differences
    if tools.diff_qp is not None and not differences:
        raise ValueError("diff_qp is the qp of differences: pass state= (or "
                         "compress_differences=True for a difference you took yourself)")
    entries = _iter_entries(source)
    if whole or blocks_on or opts.sparsity > 0 or tools.opt_qp:
        entries = list(entries)
    if state is not None:
        entries = _differences(entries, state.base)
    if opts.sparsity > 0:
        sparse = sparsify({e.name: e.array for e in entries}, opts.sparsity, opts.qp,
                          opts.qp_density, opts.struct_spars_factor)
        entries = [replace(e, array=sparse[e.name]) for e in entries]
    if differences and tools.diff_qp is not None:
        opts = replace(opts, qp=tools.diff_qp)
    qps = _base_qps(entries, opts, tools) if isinstance(entries, list) else None
    scales = _local_scales(model, entries, qps, opts, tools, source.ties, train_loader, device,
                           verbose) if tools.lsa else {}
    blocks = _form_blocks(entries, source.bns, set(scales)) if blocks_on else {}
    in_block = {m.name for b in blocks.values()
                for m in [b.weight, b.bias, *b.bn.values()] if m is not None}
    folded = {m.name for b in blocks.values() for m in b.bn.values()} if tools.bnf else set()
    note = _note(source, tools, in_block, folded)

    def quantize(e: _Entry):
        if e.name in blocks:
            block = _quantize_block(blocks[e.name], qps, opts, tools, scales)
            return block, "block(" + "+".join(r for r, _ in block.payload_members()) + ")"
        if e.name in in_block:
            return None
        t = _quantize(e.array, e.name, qps[e.name] if qps else _qp_of(e, opts), opts,
                      e.parameter_id)
        if tools.keep_dtypes and e.name not in note.dtypes:
            t.data_format = stream_info.data_format(e.dtype, _decodes_to(t))
        return t, e.kind if t.qp is not None else "integer"

    settings = StreamSettings.from_options(
        opts, TOPOLOGY_PYTORCH if source.torch_path else TOPOLOGY_UNRECOGNISED, note.text())
    return _Plan(settings, note, entries, quantize)


def _encode(model, state, train_loader, device, verbose, options, threads=None) -> _Coded:
    """Code the whole model at once, keeping every item and unit (for reports, the
    reconstruction and differences); tensors are quantized, and NDUs without a ``state``
    coded, on ``threads`` threads."""
    threads = resolve_threads(threads)
    plan = _plan(model, state, train_loader, device, verbose, options, whole=True)
    made = [m for m in ordered_map(plan.quantize, plan.entries, threads)
            if m is not None]
    items, kinds = [m[0] for m in made], [m[1] for m in made]
    del made
    head, units = encode_units(items, plan.settings, state, threads)
    if state is not None:
        state.advance_base({n: r for u in units if u is not None
                            for n, r in zip(u.names, u.reconstructions)})
    body = [u.unit for u in units if u is not None]
    return _Coded(b"".join(head + body), items, kinds, units, plan.entries, plan.settings, plan)


def _differences(entries: list[_Entry], base: dict[str, np.ndarray]) -> list[_Entry]:
    """Entries holding ``value - base`` (the value itself where the base has no tensor)."""
    out = []
    for e in entries:
        ref = base.get(e.name)
        if ref is None:
            out.append(e)
            continue
        if ref.shape != e.array.shape or ref.dtype != e.array.dtype:
            raise ValueError(f"tensor {e.name!r}: {e.array.dtype} {list(e.array.shape)}, the "
                             f"state's base holds {ref.dtype} {list(ref.shape)}")
        out.append(replace(e, array=e.array - ref))
    return out


def _reports(coded: _Coded, decoder_state: CodingState | None = None,
             threads: int | None = None) -> list[CodedUnit]:
    """Per-NDU report. The transmitted levels come from decoding the stream itself (with a
    copy of the receiver's state for differences); a block's weight is also coded alone, so
    that entropy coders can be compared on the weights."""
    original = {e.name: e.original_bytes for e in coded.entries}
    transmitted = {t.name: t.info.get("transmitted")
                   for t in decode_stream(coded.bitstream, decoder_state, transmitted=True,
                                          threads=threads)}
    settings = coded.settings
    reports = []
    for item, kind, unit in zip(coded.items, coded.kinds, coded.units):
        weight = item.weight if isinstance(item, QuantizedBlock) else item
        if unit is None:                  # all-zero difference: no NDU
            reports.append(CodedUnit(weight.name, tuple(weight.dims), "omitted", weight.qp,
                                     weight.levels.size, original.get(weight.name, 0), 0, 0,
                                     [weight.name], weight.levels))
            continue
        alone = unit.payload_bytes
        if isinstance(item, QuantizedBlock):
            alone = encode_ndu_unit(weight, settings, settings.mps())[1]
        reports.append(CodedUnit(
            name=weight.name, shape=tuple(weight.dims), kind=kind, qp=weight.qp,
            size=sum(r.size for r in unit.reconstructions),
            original_bytes=sum(original.get(n, 4 * r.size) for n, r in zip(unit.names, unit.reconstructions)),
            unit_bytes=len(unit.unit), payload_bytes=unit.payload_bytes, members=unit.names,
            levels=transmitted.get(weight.name), weight_payload_bytes=alone))
    return reports


# ----------------------------------------------------------------------------- decoder

def _apply_scaling(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Multiply local scales ``<weight>_scaling`` into the rows of their weights."""
    out = {}
    for name, v in values.items():
        if name.endswith("_scaling") and name[:-len("_scaling")] in values:
            continue
        scale = values.get(f"{name}_scaling")
        if scale is not None:
            v = (v * scale.astype(v.dtype).reshape(-1, *([1] * (v.ndim - 1)))).astype(v.dtype)
        out[name] = v
    return out


def _finish(values: dict[str, np.ndarray], recorded: dict[str, str],
            note: StreamNote) -> dict[str, np.ndarray]:
    """Decoded values with their recorded dtypes and scalar shapes, and each tied name right
    after the tensor it shares (where that tensor is present)."""
    scalars = set(note.scalars)
    tied = {}
    for name, first in note.tied.items():
        tied.setdefault(first, []).append(name)
    out = {}
    for name, value in values.items():
        if name in recorded:
            try:
                value = dt.narrow(value, recorded[name], f"tensor {name!r}")
            except ValueError as error:
                raise DecodeError(str(error)) from None
        if name in scalars:
            if value.size != 1:
                raise DecodeError(f"tensor {name!r} is recorded as a scalar but holds "
                                  f"{value.size} values")
            value = value.reshape(())
        out[name] = value
        for other in tied.get(name, ()):
            out[other] = value
    return out


def _stream_note(units) -> StreamNote:
    topology = next((u.content for u in units if u.type == UnitType.TPL), None)
    return StreamNote.parse(topology.data) if topology is not None and topology.data else StreamNote()


def _stream_dtypes(tensors, note: StreamNote) -> dict[str, str]:
    """The dtypes a stream records for its tensors: in the topology data, else in the NDU's
    nnr_decompressed_data_format (stream_info); values of the int2/3/4 formats must fit."""
    recorded = {}
    for t in tensors:
        where = f"tensor {t.name!r}"
        if t.name in note.dtypes:
            recorded[t.name] = note.dtypes[t.name]
        elif t.header.decompressed_data_format is not None:
            dtype, bits = stream_info.format_dtype(t.header.decompressed_data_format,
                                                   t.qp is None, where)
            if bits is not None and t.values.size and (
                    t.values.min() < -(1 << bits - 1) or t.values.max() >= 1 << bits - 1):
                raise DecodeError(f"{where}: values do not fit int{bits}")
            recorded[t.name] = dtype
    return recorded


def decode(bitstream: bytes, *, state: CodingState | None = None, apply_scaling: bool = True,
           threads: int | None = None, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """Decode a model bitstream into ``{name: numpy array}`` in stream order.

    With ``apply_scaling`` (default) the local scales of BLOCK NDUs are multiplied into
    their weights and not returned separately, as a decoder does to reconstruct the model.
    Dtypes and scalar shapes the stream records (``keep_dtypes``) are restored, bfloat16 as
    float32 arrays holding bfloat16 values (:func:`decode_with_dtypes` names them), and
    tied names follow the tensor they share.
    With ``state`` the stream is a difference: the result is the update of every tensor the
    state's base holds (zeros where the NDU was omitted), and the base advances by it;
    ``state.base`` is then the sender's reconstructed model. Raises
    :class:`nnc_core.DecodeError` on a damaged stream, or one that does not continue the
    state's update tree (the state is then left unchanged).
    """
    if state is None:
        return decode_with_dtypes(bitstream, apply_scaling=apply_scaling, threads=threads,
                                  max_elements=max_elements)[0]
    units = parse_stream(bitstream)
    if _stream_note(units) or any(u.content.decompressed_data_format is not None
                                  for u in units if u.type == UnitType.NDU):
        raise DecodeError("the stream records checkpoint dtypes or tied names, which a "
                          "difference (decoded with a state) does not carry")
    saved = state.snapshot()
    tensors = decode_stream(bitstream, state, threads=threads, max_elements=max_elements,
                            units=units)
    values = {t.name: t.values for t in tensors}
    try:
        state.advance_base(values)
    except ValueError as error:         # cannot happen for a stream the checks let through
        state.restore(saved)
        raise DecodeError(f"the update does not fit the state's base: {error}") from None
    return {name: values[name].reshape(base.shape) if name in values else np.zeros_like(base)
            for name, base in state.base.items()}


def decode_with_dtypes(bitstream: bytes, *, apply_scaling: bool = True, threads: int | None = None,
                       max_elements: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Like :func:`decode` (without a state), also returning each tensor's dtype name: the
    one the stream records, else the decoded array's. Tensors recorded as ``bfloat16`` are
    float32 arrays whose values are bfloat16 values (numpy has no bfloat16);
    :func:`nnc_core.checkpoints.write_checkpoint` stores them as bfloat16."""
    units = parse_stream(bitstream)
    note = _stream_note(units)
    tensors = decode_stream(bitstream, None, threads=threads, max_elements=max_elements,
                            units=units, keep_levels=False)
    values = {t.name: t.values for t in tensors}
    values = _apply_scaling(values) if apply_scaling else values
    recorded = _stream_dtypes(tensors, note)
    out = _finish(values, recorded, note)
    names = {name: recorded.get(name) or value.dtype.name for name, value in out.items()}
    for name, first in note.tied.items():
        if name in names:
            names[name] = names[first]
    return out, names


def load_decoded(model, decoded: dict[str, np.ndarray], strict: bool = True):
    """Load decoded tensors into ``model`` (in place; returns it).

    BatchNorm layers whose parameters were folded (absent from ``decoded``) become
    identities; a folded bias named ``<layer>.weight.bias`` becomes the layer's bias (a new
    parameter if the layer had none). Tied tensors (one storage under several names) are
    loaded by any of their names. With ``strict``, tensors of the model that the stream does
    not reconstruct, and decoded names the model lacks, raise KeyError.
    """
    import torch
    state = model.state_dict()
    modules = dict(model.named_modules())
    loaded, unexpected = set(), []
    with torch.no_grad():
        for name, value in decoded.items():
            target = name
            if name not in state and name.endswith(".weight.bias"):
                layer = modules.get(name[:-len(".weight.bias")])
                if layer is not None and getattr(layer, "bias", None) is None:
                    layer.bias = torch.nn.Parameter(torch.zeros(layer.weight.shape[0],
                                                                dtype=layer.weight.dtype,
                                                                device=layer.weight.device))
                    state = model.state_dict()
                target = name[:-len(".weight.bias")] + ".bias"
            if target not in state:
                unexpected.append(name)
                continue
            state[target].copy_(torch.from_numpy(np.asarray(value)).reshape(state[target].shape))
            loaded.add(target)
        for prefix, bn in _batchnorms(model).items():
            names = [f"{prefix}.{s}" for s in BN_SUFFIXES]
            if not any(n in loaded for n in names):      # folded into the preceding layer
                if bn.affine:
                    bn.weight.fill_(1.0)
                    bn.bias.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                loaded.update(n for n in names if n in state)
    for name, first in tied_names(state).items():   # one storage: loading either loads both
        if name in loaded or first in loaded:
            loaded.update((name, first))
    missing = [n for n in state if n not in loaded and not n.endswith("num_batches_tracked")]
    if strict and (missing or unexpected):
        raise KeyError(f"decoded tensors do not match the model: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    return model
