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
state-dict order, with its state-dict position as the NDU's parameter id. As in the
reference software, a module is coded with the PyTorch topology format and tensors are
typed by shape and name: tensors with two or more dimensions and 1-D ``*.weight`` tensors
are weights and use ``qp``, other 1-D tensors (biases, BatchNorm statistics) use
``nonweight_qp``. A plain dict is typed by shape alone.

Model tools (NNCodec, Becker et al., ICML 2023 workshop):

* ``opt_qp``: a qp per weight tensor from its relative size and spread (:mod:`.tools.opt_qp`);
* ``bnf``: BatchNorm folding; each weight travels in a BLOCK NDU with a per-channel scale
  and a folded bias instead of the four BatchNorm vectors (:mod:`.tools.bnf`);
* ``lsa``: local scaling adaptation; per-channel scales trained after quantization on the
  data of ``train_loader`` (:mod:`.tools.lsa`);
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
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .codec import (BN_ROLES, QuantizedBlock, QuantizedTensor, StreamSettings, decode_stream,
                    encode_ndu_unit, encode_units, reconstruct)
from .errors import DecodeError
from .incremental import CodingState
from .options import TensorOptions, resolve_options
from .tensor import as_numpy, quantize_tensor
from .tools import fold_batchnorm, optimise_qps, sparsify

__all__ = ["encode", "encode_with_reconstruction", "encode_model", "decode", "load_decoded", "EncodedModel", "CodedUnit",
           "CodingState"]

TOPOLOGY_UNRECOGNISED, TOPOLOGY_PYTORCH = 0, 3
BN_SUFFIXES = {"bias": "bn_beta", "weight": "bn_gamma", "running_mean": "bn_mean",
               "running_var": "bn_var"}

# model-level options of the reference's args dict (nncodec.nn), with their defaults
MODEL_DEFAULTS = {"bnf": False, "lsa": False, "opt_qp": False, "lr": 1e-3, "epochs": 1,
                  "max_batches": None, "ioq": False, "diff_qp": None}
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
    params: int                              # elements of the model's state dict
    original_bytes: int                      # their size at their original precision


# ----------------------------------------------------------------------------- encoder

@dataclass
class _Entry:
    name: str
    array: np.ndarray
    parameter_id: int
    kind: str
    original_bytes: int


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


def _entries(model, blocks_on: bool) -> tuple[list[_Entry], dict]:
    """State-dict entries to code, in order, and the BatchNorm modules (by prefix)."""
    torch_path = _is_module(model)
    state = model.state_dict() if torch_path else dict(model)
    bns = _batchnorms(model) if torch_path and blocks_on else {}
    entries, index = [], 0
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            index += torch_path        # the reference keeps its slot in the parameter ids
            continue
        ndim = len(value.shape) if hasattr(value, "shape") else np.ndim(value)
        array = as_numpy(value, name)
        prefix, _, suffix = name.rpartition(".")
        bn_role = BN_SUFFIXES.get(suffix) if prefix in bns else None
        kind = _kind(name, ndim, torch_path, bn_role)
        itemsize = getattr(value, "element_size", lambda: np.asarray(value).itemsize)()
        entries.append(_Entry(name, array, index, kind, int(array.size * itemsize)))
        index += 1
    return entries, bns


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


def _nonweight_qp(opts: TensorOptions) -> int:
    # the reference treats a missing (or zero) nonweight_qp as a step four times finer
    return opts.nonweight_qp if opts.nonweight_qp else opts.qp - (2 << opts.qp_density)


def _base_qps(entries: list[_Entry], opts: TensorOptions, tools: ModelTools) -> dict[str, int]:
    qps = {e.name: opts.qp if e.kind == "weight" else _nonweight_qp(opts) for e in entries}
    for name, qp in (opts.qp_per_tensor or {}).items():
        if name in qps:
            qps[name] = int(qp)
    if tools.opt_qp:
        qps = optimise_qps({e.name: e.array for e in entries if e.kind == "weight"
                            and e.array.dtype == np.float32}, qps)
    return qps


def _quantize(array: np.ndarray, name: str, qp: int, opts: TensorOptions, parameter_id: int,
              uniform_only: bool = False) -> QuantizedTensor:
    tensor_opts = replace(opts, qp_per_tensor={name: qp}, tensor_id=name, scan_order=0,
                          approx_method="uniform" if uniform_only else opts.approx_method)
    return quantize_tensor(array, tensor_opts, name, parameter_id)


def _values(t: QuantizedTensor, qp_density: int) -> np.ndarray:
    return reconstruct(t.levels, t.dims, t.qp, qp_density, t.codebook)


def _local_scales(model, entries, qps, opts, tools, train_loader, device, verbose):
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
           verbose: bool = False, **options) -> bytes:
    """Encode a ``torch.nn.Module`` or a state dict (name -> numpy array or torch tensor)
    into one NNC bitstream; with ``state``, its difference to the state's base. See the
    module docstring and :func:`encode_model`."""
    return _encode(model, state, train_loader, device, verbose, options).bitstream


def encode_with_reconstruction(model, /, *, state: CodingState | None = None, train_loader=None,
                               device=None, verbose: bool = False,
                               **options) -> tuple[bytes, dict[str, np.ndarray]]:
    """Like :func:`encode`, also returning what :func:`decode` gives for the transmitted
    tensors (local scales applied), without the per-NDU report of :func:`encode_model`."""
    coded = _encode(model, state, train_loader, device, verbose, options)
    return coded.bitstream, _reconstruction(coded.units)


def encode_model(model, /, *, state: CodingState | None = None, train_loader=None,
                 device=None, verbose: bool = False, **options) -> EncodedModel:
    """Encode a model and report, per NDU, its size, qp and coded levels.

    Options are the reference's ``args`` names (``qp``, ``nonweight_qp``, ``use_dq``,
    ``bnf``, ``lsa``, ``opt_qp``, ``lr``, ``epochs``, ``max_batches``, ``sparsity``,
    ``struct_spars_factor``, ``compress_differences``, ``tca``, ``diff_qp``, ...) plus
    ``hdsp``. ``bnf`` and ``lsa`` need a module; ``lsa`` also a ``train_loader`` yielding
    (inputs, targets) and shows a progress bar with ``verbose``. With ``state`` the
    difference to the state's base is coded (module docstring); the reconstruction and
    the report are then of that difference, omitted all-zero NDUs reported with 0 bytes.
    """
    decoder_view = state.snapshot() if state is not None else None
    coded = _encode(model, state, train_loader, device, verbose, options)
    return EncodedModel(coded.bitstream, _reports(coded, decoder_view),
                        _reconstruction(coded.units),
                        sum(e.array.size for e in coded.entries),
                        sum(e.original_bytes for e in coded.entries))


@dataclass
class _Coded:
    bitstream: bytes
    items: list
    kinds: list[str]
    units: list
    entries: list[_Entry]
    settings: StreamSettings


def _encode(model, state, train_loader, device, verbose, options) -> _Coded:
    opts, tools = resolve_model_options(options)
    blocks_on = tools.bnf or tools.lsa
    if blocks_on and not _is_module(model):
        raise ValueError("bnf and lsa need the torch.nn.Module (a state dict does not say "
                         "which tensors belong to BatchNorm layers)")
    if blocks_on and state is not None:
        raise ValueError("bnf and lsa code BLOCK NDUs, which the update tree cannot carry: "
                         "code differences without them")
    if state is not None and not isinstance(state, CodingState):
        raise TypeError(f"state must be a nnc_core.CodingState, got {type(state).__name__}")
    if not _is_module(model) and not isinstance(model, dict):
        raise TypeError(f"expected a torch.nn.Module or a dict, got {type(model).__name__}")
    entries, bns = _entries(model, blocks_on)
    differences = state is not None or opts.compress_differences
    if tools.diff_qp is not None and not differences:
        raise ValueError("diff_qp is the qp of differences: pass state= (or "
                         "compress_differences=True for a difference you took yourself)")
    if state is not None:
        entries = _differences(entries, state.base)
    if opts.sparsity > 0:
        sparse = sparsify({e.name: e.array for e in entries}, opts.sparsity, opts.qp,
                          opts.qp_density, opts.struct_spars_factor)
        entries = [replace(e, array=sparse[e.name]) for e in entries]
    if differences and tools.diff_qp is not None:
        opts = replace(opts, qp=tools.diff_qp)
    qps = _base_qps(entries, opts, tools)
    scales = _local_scales(model, entries, qps, opts, tools, train_loader, device, verbose) \
        if tools.lsa else {}
    blocks = _form_blocks(entries, bns, set(scales)) if blocks_on else {}
    in_block = {m.name for b in blocks.values()
                for m in [b.weight, b.bias, *b.bn.values()] if m is not None}
    items, kinds = [], []
    for e in entries:
        if e.name in blocks:
            block = _quantize_block(blocks[e.name], qps, opts, tools, scales)
            items.append(block)
            kinds.append("block(" + "+".join(r for r, _ in block.payload_members()) + ")")
        elif e.name not in in_block:
            items.append(_quantize(e.array, e.name, qps[e.name], opts, e.parameter_id))
            kinds.append(e.kind if items[-1].qp is not None else "integer")
    settings = StreamSettings.from_options(
        opts, TOPOLOGY_PYTORCH if _is_module(model) else TOPOLOGY_UNRECOGNISED)
    head, units = encode_units(items, settings, state)
    if state is not None:
        state.advance_base({n: r for u in units if u is not None
                            for n, r in zip(u.names, u.reconstructions)})
    body = [u.unit for u in units if u is not None]
    return _Coded(b"".join(head + body), items, kinds, units, entries, settings)


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


def _reports(coded: _Coded, decoder_state: CodingState | None = None) -> list[CodedUnit]:
    """Per-NDU report. The transmitted levels come from decoding the stream itself (with a
    copy of the receiver's state for differences); a block's weight is also coded alone, so
    that entropy coders can be compared on the weights."""
    original = {e.name: e.original_bytes for e in coded.entries}
    transmitted = {t.name: t.info.get("transmitted")
                   for t in decode_stream(coded.bitstream, decoder_state, transmitted=True)}
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


def _reconstruction(units) -> dict[str, np.ndarray]:
    values = {}
    for unit in units:
        if unit is not None:
            values.update(zip(unit.names, unit.reconstructions))
    return _apply_scaling(values)


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


def decode(bitstream: bytes, *, state: CodingState | None = None, apply_scaling: bool = True,
           threads: int | None = None, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """Decode a model bitstream into ``{name: numpy array}`` in stream order.

    With ``apply_scaling`` (default) the local scales of BLOCK NDUs are multiplied into
    their weights and not returned separately, as a decoder does to reconstruct the model.
    With ``state`` the stream is a difference: the result is the update of every tensor the
    state's base holds (zeros where the NDU was omitted), and the base advances by it;
    ``state.base`` is then the sender's reconstructed model. Raises
    :class:`nnc_core.DecodeError` on a damaged stream, or one that does not continue the
    state's update tree (the state is then left unchanged).
    """
    saved = state.snapshot() if state is not None else None
    tensors = decode_stream(bitstream, state, threads=threads, max_elements=max_elements)
    values = {t.name: t.values for t in tensors}
    if state is None:
        return _apply_scaling(values) if apply_scaling else values
    try:
        state.advance_base(values)
    except ValueError as error:         # cannot happen for a stream the checks let through
        state.restore(saved)
        raise DecodeError(f"the update does not fit the state's base: {error}") from None
    return {name: values[name].reshape(base.shape) if name in values else np.zeros_like(base)
            for name, base in state.base.items()}


def load_decoded(model, decoded: dict[str, np.ndarray], strict: bool = True):
    """Load decoded tensors into ``model`` (in place; returns it).

    BatchNorm layers whose parameters were folded (absent from ``decoded``) become
    identities; a folded bias named ``<layer>.weight.bias`` becomes the layer's bias (a new
    parameter if the layer had none). With ``strict``, tensors of the model that the
    stream does not reconstruct, and decoded names the model lacks, raise KeyError.
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
    missing = [n for n in state if n not in loaded and not n.endswith("num_batches_tracked")]
    if strict and (missing or unexpected):
        raise KeyError(f"decoded tensors do not match the model: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    return model
