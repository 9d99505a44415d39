"""Federated learning with coded updates (nnc_core.fl): codecs, the two ends, the Flower
strategy and client in process, hostile and dropping clients, bounded server state."""
import numpy as np
import pytest

from nnc_core import DecodeError
from nnc_core.fl import CODECS, ClientLink, FLOptions, ServerLink, create_codec
from nnc_core.fl.engines import run_inprocess
from nnc_core.fl.flower import UP, NNCFedAvg, NNClient, client_app
from flwr.app import ConfigRecord
from flwr.clientapp import ClientApp

SHAPES = {"conv.weight": (8, 4, 3, 3), "conv.bias": (8,), "fc.weight": (10, 32), "fc.bias": (10,)}


def initial_model(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in SHAPES.items()}


class PullTask:
    """Client p pulls every tensor a step towards its own target (so updates differ)."""

    def template(self):
        return {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}

    def train(self, weights, partition, server_round):
        rng = np.random.default_rng(100 + partition)
        target = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in SHAPES.items()}
        new = {k: (v + 0.3 * (target[k] - v)).astype(np.float32) for k, v in weights.items()}
        return new, 10 * (partition + 1), {"train_loss": 1.0 / server_round}


def federation(options, num_clients=3, rounds=4, drop=None, app=None):
    holder = {}

    def make_strategy(context):
        holder["s"] = NNCFedAvg(ServerLink(initial_model(), options),
                                min_available_nodes=num_clients, min_train_nodes=num_clients)
        return holder["s"]

    app = app or client_app(lambda context: PullTask(), options)
    run_inprocess(make_strategy, app, num_clients, rounds, drop=drop)
    return holder["s"]


# ----------------------------------------------------------------------------- codecs

@pytest.mark.parametrize("name", sorted(CODECS))
def test_codecs_reconstruct_what_they_promise(name):
    codec = create_codec(name, **({"compress_differences": True} if name == "nnc" else {}))
    reference, target = initial_model(0), initial_model(1)
    sender, receiver = codec.new_state(1), codec.new_state(None)
    payload, promised = codec.encode(target, reference, sender)
    decoded = codec.decode(payload, reference, receiver)
    for k in reference:
        assert np.array_equal(decoded[k], promised[k]), (name, k)
        assert decoded[k].dtype == np.float32 and decoded[k].shape == reference[k].shape
    error = max(np.abs(decoded[k] - target[k]).max() for k in target)
    limit = {"float32": 0, "float16": 1e-3, "int8": 0.01, "nnc": 0.01, "topk": 0.5}[name]
    assert error <= limit, (name, error)
    sizes = {"float32": 4, "float16": 2}
    if name in sizes:
        assert len(payload) == sizes[name] * sum(v.size for v in reference.values())


@pytest.mark.parametrize("name", sorted(CODECS))
def test_codecs_reject_damaged_payloads(name):
    codec = create_codec(name)
    reference = initial_model(0)
    payload, _ = codec.encode(initial_model(1), reference, codec.new_state(1))
    for bad in (b"", payload[:-3], payload + b"\x00\x01\x02"):
        with pytest.raises(DecodeError):
            codec.decode(bad, reference, codec.new_state(None))


def test_topk_counts_indices_and_values():
    codec = create_codec("topk", topk_share=0.1)
    reference = initial_model(0)
    payload, _ = codec.encode(initial_model(1), reference)
    kept = sum(int(np.ceil(0.1 * np.prod(s))) for s in SHAPES.values())
    assert len(payload) == 4 * len(SHAPES) + 8 * kept


# ----------------------------------------------------------------------------- the two ends

def test_client_state_round_trips_through_bytes():
    options = FLOptions(tca=True, err_accumulation=True)
    server = ServerLink(initial_model(), options)
    client = ClientLink(1, PullTask().template(), options)
    client.receive(server.downstream(7))
    payload = client.send(PullTask().train(client.global_model, 0, 1)[0])
    restored = ClientLink.from_bytes(client.to_bytes(), PullTask().template(), options)
    assert restored.version == client.version == 1
    for k in SHAPES:
        assert np.array_equal(restored.global_model[k], client.global_model[k])
        assert np.array_equal(restored.residual[k], client.residual[k])
    assert restored.up_state.tensors.keys() == client.up_state.tensors.keys()
    assert server.receive(7, payload, 10, 1)


@pytest.mark.parametrize("codec", ["nnc", "float32", "int8"])
def test_federation_keeps_every_client_in_sync(codec):
    options = FLOptions(codec=codec, tca=codec == "nnc", err_accumulation=True, qp=-36)
    strategy = federation(options, rounds=4)
    server = strategy.server
    assert [h.traffic.uploads for h in strategy.history] == [3, 3, 3, 3]
    assert all(h.traffic.failures == 0 for h in strategy.history)
    # weighted FedAvg of the pulls moves the global model towards the clients' targets
    assert server.version == 5
    first = strategy.history[0].traffic
    assert first.initial > 0 and first.down == 0 and first.initial_float32 == 3 * server.model_bytes
    later = strategy.history[1].traffic
    assert later.down_float32 == later.up_float32 == 3 * server.model_bytes
    if codec == "float32":
        assert later.down == later.down_float32 and later.up == later.up_float32


def test_weighted_average_uses_the_samples_trained_on():
    options = FLOptions(codec="float32")
    server = ServerLink(initial_model(), options)
    models = []
    for node, samples in ((1, 10), (2, 30)):
        client = ClientLink(node, PullTask().template(), options)
        client.receive(server.downstream(node))
        local = {k: np.full(s, float(node), np.float32) for k, s in SHAPES.items()}
        models.append(local)
        assert server.receive(node, client.send(local), samples, 1)
    server.aggregate()
    for k in SHAPES:
        assert np.allclose(server.master[k], 0.25 * 1 + 0.75 * 2)


def hostile_app(options, bad_partition, bad_round, make_payload):
    """A client app whose client ``bad_partition`` uploads ``make_payload(upload)`` in
    ``bad_round``."""
    app = ClientApp()

    @app.train()
    def train(message, context):
        partition = int(context.node_config["partition-id"])
        reply = NNClient(PullTask(), options, partition).handle(message, context)
        if partition == bad_partition and int(message.content["config"]["server-round"]) == bad_round:
            up = reply.content[UP]
            reply.content[UP] = ConfigRecord({"upload": make_payload(up["upload"]),
                                              "version": up["version"]})
        return reply

    return app


def foreign_stream(upload):
    """A valid NNC stream that does not continue the server's state for this client."""
    from nnc_core import nn as nnc_nn
    from nnc_core.incremental import CodingState
    return nnc_nn.encode(initial_model(5), state=CodingState(device_id=9),
                         compress_differences=True, tca=True)


@pytest.mark.parametrize("make_payload", [lambda up: b"\x00garbage" * 20, lambda up: up[:len(up) // 2],
                                          foreign_stream], ids=["garbage", "truncated", "wrong_state"])
def test_a_hostile_upload_is_a_failure_and_the_round_goes_on(make_payload):
    options = FLOptions(tca=True, err_accumulation=True)
    honest = federation(options, rounds=4)
    strategy = federation(options, rounds=4, app=hostile_app(options, 1, 2, make_payload))
    failures = [h.traffic.failures for h in strategy.history]
    assert failures == [0, 1, 0, 0]
    assert [h.traffic.uploads for h in strategy.history] == [3, 3, 3, 3]
    # the client's link restarts and its next uploads decode again
    assert strategy.history[2].traffic.failures == 0
    # the other clients' contributions still moved the model; it differs from the honest run
    diff = max(np.abs(strategy.server.master[k] - honest.server.master[k]).max() for k in SHAPES)
    assert 0 < diff < 0.1


def test_a_client_that_drops_out_catches_up_or_resyncs():
    options = FLOptions(tca=True, err_accumulation=True, window=2)
    # partition 1 misses round 2 (one broadcast behind: catches up from the stored streams)
    # and partition 2 misses rounds 2-4 (further than the window: gets a resync)
    drops = {(2, 1), (2, 2), (3, 2), (4, 2)}
    strategy = federation(options, rounds=6, drop=lambda r, p: (r, p) in drops)
    uploads = [h.traffic.uploads for h in strategy.history]
    assert uploads == [3, 1, 2, 2, 3, 3]
    assert all(h.traffic.failures == 0 for h in strategy.history)
    assert strategy.history[4].traffic.down > strategy.history[5].traffic.down   # the resync
    assert len(strategy.server.streams) <= 2


def test_server_state_does_not_grow_with_rounds():
    options = FLOptions(tca=True, hdsp=True, err_accumulation=True, window=3)

    def held_bytes(server):
        states = [server.down_state, *server.up_states.values()]
        arrays = [a for s in states for h in s.tensors.values() for a in (h.levels, h.significant)]
        arrays += [*server.master.values(), *server.broadcast.values()]
        return sum(a.nbytes for a in arrays) + sum(len(s) for s in server.streams.values()) * 0

    sizes = [held_bytes(federation(options, rounds=r).server) for r in (4, 12)]
    assert sizes[0] == sizes[1]
    assert len(federation(options, rounds=12).server.streams) == 3


def test_options_that_cannot_act_raise():
    with pytest.raises(ValueError, match="unknown update codec"):
        FLOptions(codec="zip").codec_for(True)
    with pytest.raises(ValueError, match="compress_differences"):
        FLOptions(tca=True, compress_differences=False).codec_for(True)


def test_the_first_model_is_coded_at_initial_qp_whatever_the_update_qp():
    model = initial_model()
    sizes = {}
    for initial_qp in (-40, -20):
        server = ServerLink(model, FLOptions(qp=-18, initial_qp=initial_qp))
        first = server.streams[1]
        client = ClientLink(1, PullTask().template(), FLOptions(qp=-18, initial_qp=initial_qp))
        received = client.receive(server.downstream(1))
        step = 2.0 ** (initial_qp / 4)      # dependent quantization: within two steps
        assert max(np.abs(received[k] - model[k]).max() for k in ("conv.weight", "fc.weight")) <= 2 * step
        sizes[initial_qp] = len(first)
    assert sizes[-40] > 1.5 * sizes[-20]
