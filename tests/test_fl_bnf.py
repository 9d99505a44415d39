"""FedBNF (``bnf`` in federated learning): the folded view computes what the model computes,
BatchNorm statistics stay on the clients, and a federation with it trains."""
import copy

import numpy as np
import pytest
import torch

from nnc_core.fl import FLOptions, ServerLink
from nnc_core.fl.engines import run_inprocess
from nnc_core.fl.flower import NNCFedAvg, client_app
from nnc_core.fl.protocol import float32_bytes
from nnc_core.fl.views import FedBNF, PlainView, exchange_view
from nnc_core.nn import batchnorm_blocks


def bn_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, bias=True), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 3))
    with torch.no_grad():               # statistics and affine parameters far from neutral
        for m in model:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def state_of(model):
    return {k: v.detach().numpy().astype(np.float32).copy()
            for k, v in model.state_dict().items() if v.is_floating_point()}


def output_with(model, tensors, x):
    clone = copy.deepcopy(model)
    clone.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    with torch.no_grad():
        return clone.eval()(x).numpy()


X = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_folded_view_travels_no_statistics_and_computes_the_same():
    model = bn_model()
    view = FedBNF(batchnorm_blocks(model))
    state = state_of(model)
    exchanged = view.exchanged(state)
    assert not any("running" in k for k in exchanged)
    assert {"0.bnf_scale", "0.bnf_bias", "3.bnf_scale", "3.bnf_bias"} <= exchanged.keys()
    assert "3.bias" not in exchanged
    assert float32_bytes(exchanged) < float32_bytes(state)
    expected = output_with(model, state, X)
    # the server: neutral statistics; a client: its own statistics (momentum 1)
    assert np.allclose(output_with(model, view.model(exchanged, None), X), expected, atol=1e-5)
    full = FedBNF(batchnorm_blocks(model), momentum=1.0)
    rebuilt = full.model(exchanged, full.kept(state))
    assert np.allclose(output_with(model, rebuilt, X), expected, atol=1e-5)
    for k in ("1.running_mean", "1.running_var", "4.running_var", "3.bias"):
        assert np.array_equal(rebuilt[k], state[k])


def test_folded_tensors_survive_nnc_coding():
    view = FedBNF(batchnorm_blocks(bn_model()))
    exchanged = view.exchanged(state_of(bn_model()))
    codec = FLOptions(qp=-38).codec_for(True)
    zeros = {k: np.zeros_like(v) for k, v in exchanged.items()}
    payload, reconstruction = codec.encode(exchanged, zeros, codec.new_state(0), full=True)
    decoded = codec.decode(payload, zeros, codec.new_state(None))
    for k, v in exchanged.items():
        assert np.array_equal(decoded[k], reconstruction[k]), k
        assert np.abs(decoded[k] - v).max() <= 0.02 * np.abs(v).max() + 1e-6, k


def test_momentum_blends_the_global_layer_with_the_local_one():
    model, other = bn_model(0), bn_model(1)
    local = state_of(other)
    half = FedBNF(batchnorm_blocks(model), momentum=0.5)
    exact = FedBNF(batchnorm_blocks(model), momentum=1.0)
    received = half.exchanged(state_of(model))
    blended = half.model(received, half.kept(local))
    taken = exact.model(received, exact.kept(local))
    for k in ("1.weight", "1.bias", "4.weight", "4.bias"):
        assert np.allclose(blended[k], 0.5 * local[k] + 0.5 * taken[k], atol=1e-6)


def test_the_upload_is_the_training_step_on_the_received_model():
    model = bn_model()
    view = FedBNF(batchnorm_blocks(model))
    received = view.exchanged(state_of(model))
    start = view.model(received, view.kept(state_of(bn_model(2))))
    assert all(np.array_equal(v, received[k]) for k, v in view.upload(received, start, start).items())
    trained = {k: v + 0.01 for k, v in start.items()}
    step = view.upload(received, start, trained)
    assert np.allclose(step["0.weight"], received["0.weight"] + 0.01, atol=1e-6)
    assert PlainView().upload(received, start, trained) is trained


def test_bad_bnf_settings_raise():
    with pytest.raises(ValueError, match="bnf_momentum"):
        FLOptions(bnf=True, bnf_momentum=0.0)
    with pytest.raises(ValueError, match="no BatchNorm"):
        FedBNF(batchnorm_blocks(torch.nn.Linear(3, 2)))

    class NoBlocks:
        pass
    with pytest.raises(ValueError, match="does not name its BatchNorm"):
        exchange_view(FLOptions(bnf=True), NoBlocks())


class BNTask:
    """Clients fit the model to their own random linear teacher for a few SGD steps."""

    def __init__(self):
        self.model = bn_model()

    def template(self):
        return state_of(self.model)

    def batchnorm_blocks(self):
        return batchnorm_blocks(self.model)

    def train(self, weights, partition, server_round):
        torch.manual_seed(10 * server_round + partition)
        model = copy.deepcopy(self.model).train()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        x = torch.randn(16, 1, 8, 8) + partition
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), torch.ones(16, 3)).backward()
            optimizer.step()
        return state_of(model), 16, {}


@pytest.mark.parametrize("bnf", [False, True])
def test_federation_with_folded_batchnorm(bnf):
    options = FLOptions(bnf=bnf, qp=-38, err_accumulation=True)
    task = BNTask()
    view = exchange_view(options, task)
    holder = {}

    def make_strategy(context):
        holder["s"] = NNCFedAvg(ServerLink(view.exchanged(task.template()), options,
                                           model_bytes=float32_bytes(task.template())),
                                min_available_nodes=2, min_train_nodes=2)
        return holder["s"]

    run_inprocess(make_strategy, client_app(lambda context: task, options), 2, 3)
    server = holder["s"].server
    assert [h.traffic.uploads for h in holder["s"].history] == [2, 2, 2]
    assert all(h.traffic.failures == 0 for h in holder["s"].history)
    assert server.model_bytes == float32_bytes(task.template())
    assert any("running" in k for k in server.master) != bnf
    # the global model moved towards the clients' fit
    x = torch.randn(16, 1, 8, 8)
    loss = [np.mean((output_with(task.model, view.model(m, None), x) - 1) ** 2)
            for m in (view.exchanged(task.template()), server.broadcast)]
    assert loss[1] < loss[0]
