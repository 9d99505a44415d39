"""How a model (or its change) travels in federated learning: update codecs.

Every codec turns a *target* model into bytes given a *reference* model that both ends hold
(the global model a client started the round from, or the global model every client has),
and back: ``encode(target, reference)`` returns the payload and the reconstruction that
``decode(payload, reference)`` will give the receiver. Error feedback (what the codec drops is added to the next target) is the
caller's business, the same for all codecs, so that they compare on equal terms.

* ``nnc``: NNC differential coding (NNCodec 2.x; Becking et al., IEEE TMM 2024): the
  difference ``target - reference`` sparsified, quantized and DeepCABAC-coded with the
  update tree, TCA and HDSP of a per-link :class:`~nnc_core.incremental.CodingState`; with
  ``compress_differences=False`` the whole target model is coded instead (edition 1).
* ``float32``: the target itself, 4 bytes a value (uncompressed FedAvg).
* ``float16``: the difference in half precision.
* ``int8``: the difference uniformly quantized to 8 bits with one float32 scale per tensor
  (QSGD-style, deterministic rounding).
* ``topk``: the ``topk_share`` largest-magnitude values of the difference per tensor, sent
  as uint32 indices and float32 values (Aji & Heafield 2017; with error feedback, Stich et
  al. 2018).

Payloads are checked on decoding: a malformed one raises :class:`nnc_core.DecodeError`.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import DecodeError
from ..incremental import CodingState

Tensors = dict[str, np.ndarray]

CODECS: dict[str, type] = {}


def register_codec(name: str):
    def add(cls):
        cls.name = name
        CODECS[name] = cls
        return cls
    return add


def create_codec(name: str, **options) -> "UpdateCodec":
    if name not in CODECS:
        raise ValueError(f"unknown update codec {name!r}; choose from {', '.join(CODECS)}")
    return CODECS[name](**options)


class UpdateCodec:
    """Base class: stateless codecs need no per-link state."""
    name = "codec"

    def new_state(self, device_id: int) -> CodingState | None:
        return None

    def encode(self, target: Tensors, reference: Tensors, state=None,
               full: bool = False) -> tuple[bytes, Tensors]:
        """Payload and reconstruction; ``full``: the reference is zero (the first model)."""
        payload = self.payload(target, reference, full)
        return payload, self.decode(payload, _zeros(reference) if full else reference)

    def payload(self, target: Tensors, reference: Tensors, full: bool) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes, reference: Tensors, state=None) -> Tensors:
        raise NotImplementedError


def _zeros(reference: Tensors) -> Tensors:
    return {k: np.zeros_like(v) for k, v in reference.items()}


def _difference(target: Tensors, reference: Tensors) -> Tensors:
    return {k: target[k] - reference[k] for k in reference}


def _add(reference: Tensors, delta: Tensors) -> Tensors:
    return {k: (v + delta[k]).astype(np.float32) for k, v in reference.items()}


def _check_size(payload: bytes, expected: int, what: str) -> None:
    if len(payload) != expected:
        raise DecodeError(f"{what} payload of {len(payload)} bytes, expected {expected}")


@register_codec("nnc")
class NNCCodec(UpdateCodec):
    """NNC coding of the difference (or, without ``compress_differences``, of the model).

    ``options`` are :func:`nnc_core.nn.encode` options; ``diff_qp`` sets the qp of
    differences, ``qp`` that of a whole model (the first distribution)."""

    def __init__(self, **options):
        from .. import nn as nnc_nn
        self._nn = nnc_nn
        self.options = dict(options)
        self.differences = self.options.get("compress_differences", True)
        self._nn.resolve_model_options(self._options(full=False))   # checked up front

    def _options(self, full: bool) -> dict:
        options = dict(self.options)
        if full:            # the first model: at qp, not sparsified (NNCodec sends it raw)
            for key in ("diff_qp", "sparsity", "struct_spars_factor"):
                options.pop(key, None)
        if not self.differences:        # whole models, coded at diff_qp as NNCodec does
            diff_qp = options.pop("diff_qp", None)
            if diff_qp is not None:
                options["qp"] = diff_qp
        return options

    def new_state(self, device_id: int) -> CodingState | None:
        return CodingState(device_id=device_id) if self.differences else None

    def encode(self, target, reference, state=None, full: bool = False):
        if not self.differences:
            payload, decoded = self._nn.encode_with_reconstruction(target, **self._options(full))
            return payload, {k: decoded[k].astype(np.float32).reshape(v.shape)
                             for k, v in reference.items()}
        state.base.clear()      # the difference is taken here, to a reference both ends hold
        delta = target if full else _difference(target, reference)
        payload, decoded = self._nn.encode_with_reconstruction(delta, state=state,
                                                                **self._options(full))
        state.base.clear()
        start = _zeros(reference) if full else reference
        return payload, _add(start, {k: decoded[k].reshape(v.shape) if k in decoded
                                     else np.zeros_like(v) for k, v in reference.items()})

    def decode(self, payload, reference, state=None) -> Tensors:
        if not self.differences:
            decoded = self._nn.decode(bytes(payload))
            _check_names(decoded, reference)
            return {k: decoded[k].astype(np.float32).reshape(v.shape) for k, v in reference.items()}
        state.base.clear()
        delta = self._nn.decode(bytes(payload), state=state)
        state.base.clear()
        unknown = set(delta) - set(reference)
        if unknown:
            raise DecodeError(f"the update holds tensors the model lacks: {sorted(unknown)[:4]}")
        zeros = {k: np.zeros_like(v) for k, v in reference.items()}
        return _add(reference, {k: delta[k].reshape(v.shape) if k in delta else zeros[k]
                                for k, v in reference.items()})


def _check_names(decoded: Tensors, reference: Tensors) -> None:
    if set(decoded) != set(reference):
        raise DecodeError(f"the stream holds {len(decoded)} tensors that do not match the "
                          f"model's {len(reference)}")


@register_codec("float32")
class Float32Codec(UpdateCodec):
    """The target model as raw float32 values in the reference's tensor order."""

    def payload(self, target, reference, full):
        return b"".join(np.ascontiguousarray(target[k], np.float32).tobytes() for k in reference)

    def decode(self, payload, reference, state=None) -> Tensors:
        _check_size(payload, 4 * sum(v.size for v in reference.values()), "float32")
        flat, out, at = np.frombuffer(payload, np.float32), {}, 0
        for k, v in reference.items():
            out[k] = flat[at:at + v.size].reshape(v.shape).copy()
            at += v.size
        return out


@register_codec("float16")
class Float16Codec(UpdateCodec):
    """The difference in IEEE half precision."""

    def payload(self, target, reference, full):
        delta = target if full else _difference(target, reference)
        return b"".join(delta[k].astype(np.float16).tobytes() for k in reference)

    def decode(self, payload, reference, state=None) -> Tensors:
        _check_size(payload, 2 * sum(v.size for v in reference.values()), "float16")
        flat, delta, at = np.frombuffer(payload, np.float16), {}, 0
        for k, v in reference.items():
            delta[k] = flat[at:at + v.size].astype(np.float32).reshape(v.shape)
            at += v.size
        if not np.all(np.isfinite(flat)):
            raise DecodeError("float16 payload holds NaN or Inf values")
        return _add(reference, delta)


@register_codec("int8")
class Int8Codec(UpdateCodec):
    """Per tensor: a float32 scale ``max|d| / 127`` and ``round(d / scale)`` as int8."""

    def payload(self, target, reference, full):
        delta = target if full else _difference(target, reference)
        parts = []
        for k in reference:
            d = delta[k].astype(np.float32)
            scale = np.float32(np.abs(d).max() / 127) if d.size and np.any(d) else np.float32(1)
            parts.append(struct.pack("<f", scale))
            parts.append(np.clip(np.rint(d / scale), -127, 127).astype(np.int8).tobytes())
        return b"".join(parts)

    def decode(self, payload, reference, state=None) -> Tensors:
        _check_size(payload, sum(4 + v.size for v in reference.values()), "int8")
        delta, at = {}, 0
        for k, v in reference.items():
            (scale,) = struct.unpack_from("<f", payload, at)
            if not math.isfinite(scale):
                raise DecodeError(f"int8 payload: scale of {k!r} is not finite")
            levels = np.frombuffer(payload, np.int8, v.size, at + 4)
            delta[k] = (levels.astype(np.float32) * np.float32(scale)).reshape(v.shape)
            at += 4 + v.size
        return _add(reference, delta)


@register_codec("topk")
class TopKCodec(UpdateCodec):
    """Per tensor: a uint32 count, then that many uint32 indices and float32 values."""

    def __init__(self, topk_share: float = 0.01):
        if not 0 < topk_share <= 1:
            raise ValueError(f"topk_share must be in (0, 1], got {topk_share}")
        self.share = topk_share

    def payload(self, target, reference, full):
        delta = target if full else _difference(target, reference)
        parts = []
        for k in reference:
            d = delta[k].reshape(-1).astype(np.float32)
            keep = min(d.size, max(1, math.ceil(self.share * d.size))) if d.size else 0
            index = np.sort(np.argpartition(np.abs(d), d.size - keep)[d.size - keep:]) if keep else \
                np.zeros(0, np.int64)
            parts += [struct.pack("<I", keep), index.astype(np.uint32).tobytes(),
                      d[index].astype(np.float32).tobytes()]
        return b"".join(parts)

    def decode(self, payload, reference, state=None) -> Tensors:
        delta, at = {}, 0
        for k, v in reference.items():
            if at + 4 > len(payload):
                raise DecodeError(f"top-k payload ends before tensor {k!r}")
            (keep,) = struct.unpack_from("<I", payload, at)
            at += 4
            if keep > v.size or at + 8 * keep > len(payload):
                raise DecodeError(f"top-k payload: {keep} values claimed for {k!r} "
                                  f"({v.size} elements)")
            index = np.frombuffer(payload, np.uint32, keep, at).astype(np.int64)
            values = np.frombuffer(payload, np.float32, keep, at + 4 * keep)
            if keep and (index.max() >= v.size or not np.all(np.isfinite(values))):
                raise DecodeError(f"top-k payload: bad index or value for {k!r}")
            flat = np.zeros(v.size, np.float32)
            flat[index] = values
            delta[k] = flat.reshape(v.shape)
            at += 8 * keep
        if at != len(payload):
            raise DecodeError(f"top-k payload has {len(payload) - at} bytes too many")
        return _add(reference, delta)
