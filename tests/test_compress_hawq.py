"""HAWQ mixed precision (compress.hawq): Hutchinson's trace estimate against Hessians known in
closed form, the exact bit choice against brute force, config checks, and the quantization
algorithm with a hawq precision on the shipped ResNet-20."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from compress import ConfigError, Context, load_config
from compress.fake_quant import QuantSpec
from compress.hawq import check_precision, choose_bits, hawq_bits, hessian_traces, quantization_error
from compress.layers import quantized_layers
from compress.quantization import QuantizationAlgorithm

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(not FMNIST.exists(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


class TwoHeads(nn.Module):
    """Two linear layers on the same input, concatenated: with an MSE loss the Hessian is
    block diagonal, ``2 / (N m) * sum_n x_n x_n^T`` (times ``scale^2`` for the second head)
    repeated for each output row, ``m`` the number of outputs of both heads."""

    def __init__(self, inputs: int, outputs: int, scale: float):
        super().__init__()
        self.a, self.b, self.scale = nn.Linear(inputs, outputs), nn.Linear(inputs, outputs), scale

    def forward(self, x):
        return torch.cat([self.a(x), self.b(self.scale * x)], 1)


def _exact_average_traces(x: torch.Tensor, outputs: int, scale: float) -> dict[str, float]:
    # Tr(H_a) = rows * 2 / (N m) * sum_n ||x_n||^2, m = 2 * rows outputs per sample
    n, inputs = x.shape
    trace = outputs * 2 / (n * 2 * outputs) * float(x.pow(2).sum())
    return {"a": trace / (outputs * inputs), "b": scale ** 2 * trace / (outputs * inputs)}


def _traces(model, x, targets, batch_size, **kwargs):
    loader = DataLoader(TensorDataset(x, targets), batch_size=batch_size)
    return hessian_traces(model, ["a", "b"], loader, F.mse_loss, torch.device("cpu"), **kwargs)


def test_diagonal_hessian_is_estimated_exactly_from_a_prefix_of_the_loader():
    # one nonzero input per sample: the columns of X are orthogonal, H is diagonal and
    # v^T H v = Tr(H) for every Rademacher v; 40 of the 48 samples, in batches of 16, 16, 8
    torch.manual_seed(0)
    x = torch.zeros(48, 6)
    x[torch.arange(48), torch.arange(48) % 6] = torch.rand(48) + 0.5
    model = TwoHeads(6, 3, scale=2.0)
    traces = _traces(model, x, torch.randn(48, 6), 16, num_data_points=40, iter_number=5, tolerance=1e-9)
    exact = _exact_average_traces(x[:40], 3, 2.0)
    assert traces == pytest.approx(exact, rel=1e-6)


def test_hutchinson_estimate_converges_to_the_trace():
    torch.manual_seed(0)
    x = torch.randn(64, 8) + 0.3
    model = TwoHeads(8, 4, scale=0.5)
    traces = _traces(model, x, torch.randn(64, 8), 32, num_data_points=64, iter_number=300, tolerance=1e-9)
    assert traces == pytest.approx(_exact_average_traces(x, 4, 0.5), rel=0.03)
    # seeded: the same estimate again
    assert _traces(model, x, torch.randn(64, 8), 32, num_data_points=64, iter_number=300,
                   tolerance=1e-9) == traces


def test_traces_restore_the_model_state():
    model = TwoHeads(4, 2, scale=1.0).train()
    model.a.weight.requires_grad_(False)
    _traces(model, torch.randn(8, 4), torch.randn(8, 4), 8, num_data_points=8, iter_number=2)
    assert model.training and not model.a.weight.requires_grad and model.b.weight.requires_grad


def test_unused_layer_has_zero_trace():
    class AuxiliaryHead(TwoHeads):          # "b" unused, as an auxiliary head in eval mode
        def forward(self, x):
            return self.a(x)

    model = AuxiliaryHead(4, 1, scale=1.0)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)
    traces = hessian_traces(model, ["a", "b"], loader, F.mse_loss, torch.device("cpu"),
                            num_data_points=8, iter_number=3)
    assert traces["b"] == 0 and traces["a"] > 0


def _brute_force(traces, errors, sizes, ratio):
    names = list(traces)
    budget = max(next(iter(errors.values()))) * sum(sizes.values()) / ratio
    best = None
    for choice in itertools.product(sorted(next(iter(errors.values()))), repeat=len(names)):
        if sum(b * sizes[n] for b, n in zip(choice, names)) <= budget:
            cost = sum(max(traces[n], 0) * errors[n][b] for b, n in zip(choice, names))
            best = cost if best is None else min(best, cost)
    return best


def _sensitivity(bits, traces, errors):
    return sum(max(traces[n], 0) * errors[n][b] for n, b in bits.items())


def test_most_sensitive_layer_keeps_eight_bits():
    traces = {"x": 1.0, "y": 50.0, "z": 2.0}
    errors = {n: {4: 1.0, 8: 0.01} for n in traces}
    sizes = dict.fromkeys(traces, 100)
    # budget 8 * 300 / 1.5 = 1600 bits: one layer at 8 bits, two at 4
    assert choose_bits(traces, errors, sizes, 1.5) == {"x": 4, "y": 8, "z": 4}
    assert choose_bits(traces, errors, sizes, 1) == dict.fromkeys(traces, 8)
    assert choose_bits(traces, errors, sizes, 2) == dict.fromkeys(traces, 4)


def test_choice_is_exact_where_greedy_per_saved_bit_is_not():
    # "big" saves the most sensitivity per extra bit (12 / 40) but leaves no room for "s1"
    # and "s2" (7 / 24 each), which together save more within the budget
    traces = {"big": 1.0, "s1": 1.0, "s2": 1.0}
    errors = {"big": {4: 12.0, 8: 0.0}, "s1": {4: 7.0, 8: 0.0}, "s2": {4: 7.0, 8: 0.0}}
    sizes = {"big": 10, "s1": 6, "s2": 6}
    bits = choose_bits(traces, errors, sizes, 8 * 22 / (4 * 22 + 4 * 12))    # 12 extra weights at 8
    assert bits == {"big": 4, "s1": 8, "s2": 8}


@pytest.mark.parametrize("seed", range(8))
def test_choice_matches_brute_force_and_meets_the_budget(seed):
    g = torch.Generator().manual_seed(seed)
    names = [f"l{i}" for i in range(6)]
    traces = {n: float(torch.randn(1, generator=g)) for n in names}    # some negative
    sizes = {n: int(torch.randint(1, 50, (1,), generator=g)) * 9 for n in names}
    errors = {}
    for n in names:
        e = sorted(torch.rand(3, generator=g).tolist(), reverse=True)
        errors[n] = dict(zip([2, 4, 8], e))
    ratio = 1 + 3 * float(torch.rand(1, generator=g))                   # up to 4 = 8 / 2
    bits = choose_bits(traces, errors, sizes, ratio)
    assert set(bits) == set(names) and set(bits.values()) <= {2, 4, 8}
    assert sum(bits[n] * sizes[n] for n in names) <= 8 * sum(sizes.values()) / ratio
    assert _sensitivity(bits, traces, errors) == pytest.approx(_brute_force(traces, errors, sizes, ratio))


def test_unreachable_budget_names_the_numbers():
    errors = {"a": {4: 1.0, 8: 0.1}}
    with pytest.raises(ConfigError, match=r"where: compression_ratio 2.5 allows 320 weight bits, "
                                          r"but all 100 weights at 4 bits take 400 .* is 2"):
        choose_bits({"a": 1.0}, errors, {"a": 100}, 2.5, "where")


def test_quantization_error_follows_the_spec():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.1, 0.2, -0.05]])
    per_tensor = QuantSpec(bits=8, per_channel=False, signed=True, narrow_range=True)
    # 2 bits narrow: levels {-s, 0, s}, s = 1 (per tensor), 0.2 and 0.1 (per channel)
    assert quantization_error(w, per_tensor, 2) == pytest.approx(0.25 + 0.0625 + 0.01 + 0.04 + 0.0025)
    per_channel = QuantSpec(bits=8, per_channel=True, signed=True, narrow_range=True)
    assert quantization_error(w, per_channel, 2) == pytest.approx(0.25 + 0.0625 + 0.01 + 0.0 + 0.0025)
    assert quantization_error(w, per_channel, 8) < quantization_error(w, per_channel, 4)


@pytest.mark.parametrize("key, value, message", [
    ("bits", [], "bits must be a non-empty list"), ("bits", [1, 8], "bits must be"),
    ("bits", [4, 9], "bits must be"), ("bits", 8, "bits must be"), ("bits", [4.0, 8], "bits must be"),
    ("bits", [True, 8], "bits must be"), ("compression_ratio", 0.5, "compression_ratio must be"),
    ("compression_ratio", "2", "compression_ratio must be"),
    ("compression_ratio", float("nan"), "compression_ratio must be"),
    ("num_data_points", 0, "num_data_points must be a positive integer"),
    ("num_data_points", 1.5, "num_data_points must be"), ("iter_number", -1, "iter_number must be"),
    ("tolerance", 0, "tolerance must be a number > 0"), ("tolerance", "1e-3", "tolerance must be")])
def test_invalid_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=f"^cfg: precision: {message}"):
        hawq_bits({"type": "hawq", key: value}, ["conv"], "cfg: precision", model=None, context=None,
                  weights=QuantSpec())


def test_defaults_are_nncf_s():
    assert check_precision({"type": "hawq", "bits": [8, 4, 8]}, "p") == {
        "bits": [4, 8], "compression_ratio": 1.5, "num_data_points": 100, "iter_number": 200,
        "tolerance": 1e-4}


def test_unknown_precision_key_is_refused():
    section = {"algorithm": "quantization",
               "initializer": {"precision": {"type": "hawq", "iterations": 3}}}
    with pytest.raises(ConfigError, match="unknown key 'iterations'"):
        QuantizationAlgorithm(section, "cfg")


def test_shipped_mixed_config_loads():
    config = load_config(ROOT / "configs" / "fmnist_resnet20_mixed.json")
    precision = config.algorithms[0].precision
    assert precision["type"] == "hawq" and check_precision(precision, "cfg")["bits"] == [4, 8]


@needs_data
def test_quantization_with_hawq_on_resnet20_meets_the_budget():
    import datasets
    import models
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    models.load_checkpoint(model, ROOT / "example" / "weights" / "fmnist_resnet20.pt")
    train = Subset(datasets.create_dataset("fashion_mnist", split="train", download=False), range(32))
    section = {"algorithm": "quantization",
               "initializer": {"range": {"num_init_samples": 32},
                               "precision": {"type": "hawq", "bits": [4, 8], "compression_ratio": 1.5,
                                             "num_data_points": 32, "iter_number": 3}},
               "weights": {"mode": "symmetric", "bits": 8, "per_channel": True}}
    algorithm = QuantizationAlgorithm(section, "cfg")
    context = Context(DataLoader(train, batch_size=16), torch.device("cpu"), F.cross_entropy, False)
    algorithm.apply(model, context)
    layers = quantized_layers(model)
    assert set(algorithm.bits) == set(layers) and set(algorithm.bits.values()) == {4, 8}
    sizes = {n: layer.layer.weight.numel() for n, layer in layers.items()}
    assert sum(algorithm.bits[n] * sizes[n] for n in sizes) <= 8 * sum(sizes.values()) / 1.5
    assert {r["layer"]: r["weight_bits"] for r in algorithm.layer_report(model)} == algorithm.bits
