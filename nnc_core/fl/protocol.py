"""The two ends of federated learning with coded updates, independent of the engine.

Downstream, the server keeps the master global model ``G`` and what every client holds,
``Ĝ`` (version ``v``): each aggregation codes ``G - Ĝ`` once (closed loop, so with
``err_accumulation`` what the broadcast drops is sent later; without it the master follows
``Ĝ``). Every client keeps its copy of ``Ĝ`` and a decoder state; the server keeps the last
``window`` broadcasts, so that a client that missed rounds catches up from them, and sends
``Ĝ`` with the broadcast's coding state (a *resync*) to a client that is further behind or
new. Upstream, each client codes its trained model against the ``Ĝ`` it started from (the
server holds the same ``Ĝ``), adding its residual first with ``err_accumulation``; the
server keeps one decoder state per client. An upload that does not decode is counted as a
failure, the server's state for that client stays as it was, and both ends restart that
link's state next round. Uploads are averaged weighted by the samples each client trained
on. Every transfer is counted in real bytes and as its float32 equivalent.

Each end holds only its own state; a client's whole state packs into bytes
(:meth:`ClientLink.to_bytes`), so that it can live in Flower's context or on disk.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import DecodeError
from ..incremental import CodingState
from .codecs import Tensors, UpdateCodec, create_codec

NNC_OPTIONS = ("qp", "diff_qp", "nonweight_qp", "use_dq", "sparsity", "struct_spars_factor",
               "tca", "hdsp", "row_skipping", "bitdepth", "compress_differences")


@dataclass
class FLOptions:
    """Options of NNCodec's federated pipeline (its flag names and defaults), plus the
    codec of the update (``nnc`` or a baseline of :mod:`.codecs`). ``initial_qp`` codes the
    first distribution of the model (NNCodec sends it uncompressed; a coarse update qp such as
    -18 would zero most of a fresh initialisation). ``bnf`` folds BatchNorm
    on the clients (:class:`.views.FedBNF`, blending at ``bnf_momentum``)."""
    compress_upstream: bool = True
    compress_downstream: bool = True
    compress_differences: bool = True
    err_accumulation: bool = False
    qp: int = -32
    diff_qp: int | None = None
    initial_qp: int = -32
    nonweight_qp: int = -75
    use_dq: bool = True
    sparsity: float = 0.0
    struct_spars_factor: float = 0.0
    tca: bool = False
    hdsp: bool = False
    bnf: bool = False
    bnf_momentum: float = 0.3
    row_skipping: bool = True
    bitdepth: int | None = None
    codec: str = "nnc"
    topk_share: float = 0.01
    window: int = 8

    def __post_init__(self):
        if not 0.0 < self.bnf_momentum <= 1.0:
            raise ValueError(f"bnf_momentum must be in (0, 1], got {self.bnf_momentum}")
        if self.window < 1:
            raise ValueError("window must be >= 1")

    def codec_for(self, compressed: bool) -> UpdateCodec:
        """The codec of one direction: float32 when that direction is not compressed."""
        if not compressed:
            return create_codec("float32")
        if self.codec == "nnc":
            options = {k: getattr(self, k) for k in NNC_OPTIONS}
            return create_codec("nnc", **{k: v for k, v in options.items() if v is not None})
        if self.codec == "topk":
            return create_codec("topk", topk_share=self.topk_share)
        return create_codec(self.codec)

    def initial_codec(self, down: UpdateCodec) -> UpdateCodec:
        """The codec of the first distribution: NNC at ``initial_qp`` (not sparsified) where
        NNC codes the broadcasts, else float32 (a baseline codes updates, not models)."""
        if self.codec != "nnc" or not self.compress_downstream:
            return create_codec("float32")
        options = {k: getattr(self, k) for k in NNC_OPTIONS}
        options["qp"] = self.initial_qp
        return create_codec("nnc", **{k: v for k, v in options.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


def float32_bytes(template: Tensors) -> int:
    return 4 * sum(v.size for v in template.values())


# ----------------------------------------------------------------------------- packing

def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as error:          # any malformed archive
        raise DecodeError(f"not a packed state ({type(error).__name__}: {error})") from None


def _pack_tensors(prefix: str, tensors: Tensors | None, out: dict) -> None:
    if tensors is not None:
        out[f"{prefix}names"] = np.array(list(tensors), dtype=str)
        for i, v in enumerate(tensors.values()):
            out[f"{prefix}{i}"] = v


def _unpack_tensors(prefix: str, arrays: dict) -> Tensors | None:
    if f"{prefix}names" not in arrays:
        return None
    return OrderedDict((str(n), arrays[f"{prefix}{i}"].astype(np.float32))
                       for i, n in enumerate(arrays[f"{prefix}names"]))


def _state_bytes(state: CodingState | None) -> np.ndarray:
    if state is None:
        return np.zeros(0, np.uint8)
    buffer = io.BytesIO()
    state.save(buffer)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _state_from(array: np.ndarray) -> CodingState | None:
    if array.size == 0:
        return None
    try:
        return CodingState.load(io.BytesIO(array.tobytes()))
    except ValueError as error:
        raise DecodeError(str(error)) from None


def pack_resync(model: Tensors, state: CodingState | None, version: int) -> bytes:
    """The global model as clients hold it, with the broadcast's coding state."""
    arrays = {"version": np.array(version), "state": _state_bytes(state)}
    _pack_tensors("model_", model, arrays)
    return _pack(arrays)


# ----------------------------------------------------------------------------- client

@dataclass
class ClientLink:
    """A client's end: its copy of the global model, its decoder state for broadcasts, its
    encoder state and residual for uploads, and the tensors it keeps to itself (``kept``,
    see :mod:`.views`)."""
    device_id: int
    template: Tensors
    options: FLOptions
    global_model: Tensors | None = None
    version: int = 0
    down_state: CodingState | None = None
    up_state: CodingState | None = None
    residual: Tensors | None = None
    kept: Tensors | None = None

    def __post_init__(self):
        self.down = self.options.codec_for(self.options.compress_downstream)
        self.up = self.options.codec_for(self.options.compress_upstream)
        if self.down_state is None:
            self.down_state = self.down.new_state(None)
        if self.up_state is None:
            self.up_state = self.up.new_state(self.device_id)

    def receive(self, message: dict) -> Tensors:
        """Apply a downstream message (see :meth:`ServerLink.downstream`); returns the
        global model. Broadcasts already applied are skipped, a gap raises DecodeError."""
        if message.get("resync"):
            arrays = _unpack(message["resync"])
            self.global_model = _unpack_tensors("model_", arrays)
            self.down_state = _state_from(arrays["state"])
            self.version = int(arrays["version"])
        first = int(message.get("first_version", 0))
        for offset, stream in enumerate(message.get("streams", [])):
            version = first + offset
            if version <= self.version:
                continue
            if version != self.version + 1:
                raise DecodeError(f"broadcast {version} cannot follow version {self.version}")
            if version == 1:
                zeros = {k: np.zeros_like(v) for k, v in self.template.items()}
                codec = self.options.initial_codec(self.down)
                self.global_model = codec.decode(stream, zeros, self.down_state)
            elif self.global_model is None:
                raise DecodeError(f"broadcast {version} needs the global model first")
            else:
                self.global_model = self.down.decode(stream, self.global_model, self.down_state)
            self.version = version
        if message.get("reset_upstream"):
            self.up_state, self.residual = self.up.new_state(self.device_id), None
        if self.global_model is None:
            raise DecodeError("no global model received yet")
        return self.global_model

    def send(self, local: Tensors) -> bytes:
        """The upload: the trained model coded against the global model it started from."""
        local = {k: np.asarray(local[k], np.float32) for k in self.template}
        target = local
        if self.options.err_accumulation and self.residual is not None:
            target = {k: v + self.residual[k] for k, v in local.items()}
        payload, reconstruction = self.up.encode(target, self.global_model, self.up_state)
        if self.options.err_accumulation:
            self.residual = {k: target[k] - reconstruction[k] for k in target}
        return payload

    def to_bytes(self) -> bytes:
        arrays = {"device_id": np.array(self.device_id), "version": np.array(self.version),
                  "down_state": _state_bytes(self.down_state),
                  "up_state": _state_bytes(self.up_state)}
        _pack_tensors("global_", self.global_model, arrays)
        _pack_tensors("residual_", self.residual, arrays)
        _pack_tensors("kept_", self.kept, arrays)
        return _pack(arrays)

    @classmethod
    def from_bytes(cls, data: bytes, template: Tensors, options: FLOptions) -> "ClientLink":
        arrays = _unpack(data)
        return cls(int(arrays["device_id"]), template, options,
                   _unpack_tensors("global_", arrays), int(arrays["version"]),
                   _state_from(arrays["down_state"]), _state_from(arrays["up_state"]),
                   _unpack_tensors("residual_", arrays), _unpack_tensors("kept_", arrays))


# ----------------------------------------------------------------------------- server

@dataclass
class RoundTraffic:
    """Bytes of one round: real and float32 equivalent, the first distribution apart."""
    up: int = 0
    down: int = 0
    initial: int = 0
    up_float32: int = 0
    down_float32: int = 0
    initial_float32: int = 0
    failures: int = 0
    uploads: int = 0


class ServerLink:
    """The server's end: master and broadcast global model, the broadcast's encoder state
    and its recent streams, one decoder state per client."""

    def __init__(self, initial: Tensors, options: FLOptions, model_bytes: int | None = None):
        """``initial``: the exchanged tensors of the first model; ``model_bytes``: the float32
        size of what uncompressed FedAvg would exchange (default: of ``initial``), the
        yardstick of every transfer."""
        self.options = options
        self.template = OrderedDict((k, np.asarray(v, np.float32)) for k, v in initial.items())
        self.model_bytes = float32_bytes(self.template) if model_bytes is None else model_bytes
        self.down = options.codec_for(options.compress_downstream)
        self.up = options.codec_for(options.compress_upstream)
        self.down_state = self.down.new_state(0)
        zeros = {k: np.zeros_like(v) for k, v in self.template.items()}
        payload, self.broadcast = self.options.initial_codec(self.down).encode(
            self.template, zeros, self.down_state, full=True)
        self.master = {k: v.copy() for k, v in self.template.items()}
        self.version = 1
        self.streams: OrderedDict[int, bytes] = OrderedDict({1: payload})
        self.client_versions: dict[int, int] = {}
        self.up_states: dict[int, CodingState | None] = {}
        self.reset: set[int] = set()
        self.traffic = RoundTraffic()
        self.pending: list[tuple[Tensors, float]] = []
        self.last_error: str | None = None       # why the last failed upload did not decode

    def downstream(self, node: int) -> dict:
        """The message that brings ``node`` to the current global model; counted."""
        have = self.client_versions.get(node, 0)
        message = {"version": self.version, "reset_upstream": node in self.reset,
                   "first_version": have + 1, "streams": [], "resync": b""}
        if have + 1 in self.streams or have == self.version:
            message["streams"] = [self.streams[v] for v in range(have + 1, self.version + 1)]
        else:
            message["resync"] = pack_resync(self.broadcast, self.down_state, self.version)
            message["first_version"] = self.version + 1
        for offset, stream in enumerate(message["streams"]):
            if have + 1 + offset == 1:
                self.traffic.initial += len(stream)
                self.traffic.initial_float32 += self.model_bytes
            else:
                self.traffic.down += len(stream)
                self.traffic.down_float32 += self.model_bytes
        self.traffic.down += len(message["resync"])
        self.traffic.down_float32 += self.model_bytes if message["resync"] else 0
        if node in self.reset:
            self.up_states.pop(node, None)
            self.reset.discard(node)
        return message

    def receive(self, node: int, payload: bytes, samples: float, version: int) -> bool:
        """Decode one upload; False (and the link restarted next round) if it does not."""
        self.traffic.uploads += 1
        self.traffic.up += len(payload)
        self.traffic.up_float32 += self.model_bytes
        if version != self.version or samples <= 0:
            self.traffic.failures += 1
            return False
        if node not in self.up_states:
            self.up_states[node] = self.up.new_state(None)
        try:
            model = self.up.decode(bytes(payload), self.broadcast, self.up_states[node])
        except (DecodeError, ValueError, TypeError) as error:
            self.traffic.failures += 1
            self.reset.add(node)
            self.last_error = f"node {node}: {error}"
            return False
        self.client_versions[node] = version
        self.pending.append((model, float(samples)))
        return True

    def acknowledge(self, node: int, version: int) -> None:
        """A node reported the broadcast version it holds (even if its upload failed)."""
        if 0 < version <= self.version:
            self.client_versions[node] = version

    def aggregate(self) -> RoundTraffic:
        """Average the round's uploads, code the next broadcast; returns the round's traffic."""
        if self.pending:
            total = sum(n for _, n in self.pending)
            delta = {k: sum((m[k] - v) * (n / total) for m, n in self.pending)
                     for k, v in self.broadcast.items()}
            start = self.master if self.options.err_accumulation else self.broadcast
            self.master = {k: (start[k] + delta[k]).astype(np.float32) for k in start}
            payload, self.broadcast = self.down.encode(self.master, self.broadcast,
                                                       self.down_state)
            self.version += 1
            self.streams[self.version] = payload
            while len(self.streams) > self.options.window:
                self.streams.popitem(last=False)
        self.pending = []
        traffic, self.traffic = self.traffic, RoundTraffic()
        return traffic
