"""compress/binarization.py: XNOR and DoReFa weights and scale/threshold activations on
hand-computed values and gradients, the config checks, the staged schedule, BatchNorm
adaptation, the integer file, and the ONNX export of the binarized ResNet-20 in
onnxruntime."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress import CompressionConfig, ConfigError, Context, apply_config, load_config
from compress.binarization import (ActivationBinarizer, BinarizationAlgorithm, DoReFaBinarizer,
                                   Schedule, XNORBinarizer, adapt_batchnorm)
from compress.export import export_onnx, onnx_session
from compress.layers import quantized_layers
from compress.nnc_file import integer_state, load_integer_state

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
W = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.5, -0.5, 0.25, 0.0]])


# ----------------------------------------------------------------------------- weights

def test_xnor_scales_each_output_channel_by_its_mean_magnitude():
    b = XNORBinarizer(2)
    # channel 0: (1 + 2 + 0 + 3) / 4 = 1.5; channel 1: (0.5 + 0.5 + 0.25 + 0) / 4 = 0.3125
    expected = torch.tensor([[1.5, -1.5, 1.5, 1.5], [0.3125, -0.3125, 0.3125, 0.3125]])
    assert torch.equal(b(W), expected)
    assert torch.equal(b.scale, torch.tensor([1.5, 0.3125]))
    conv = W.reshape(2, 1, 2, 2)                                 # a conv weight: per output channel
    assert torch.equal(XNORBinarizer(2)(conv), expected.reshape(2, 1, 2, 2))


def test_dorefa_uses_one_scale_for_the_tensor():
    b = DoReFaBinarizer(2)
    # (6 + 1.25) / 8 = 0.90625
    assert torch.equal(b(W), 0.90625 * torch.tensor([[1.0, -1, 1, 1], [1, -1, 1, 1]]))
    assert b.scale.shape == () and float(b.scale) == 0.90625


@pytest.mark.parametrize("kind", [XNORBinarizer, DoReFaBinarizer])
def test_levels_are_plus_minus_one_and_zero_is_plus_one(kind):
    b = kind(2)
    binarized = b(W)                                             # and keeps the scale
    levels = b.integers(W)
    assert levels.dtype == torch.int32
    assert levels.tolist() == [[1, -1, 1, 1], [1, -1, 1, 1]]
    assert torch.equal(b.dequantize(levels), binarized)
    assert b.bits == 1


@pytest.mark.parametrize("kind", [XNORBinarizer, DoReFaBinarizer])
def test_weight_gradient_passes_straight_through(kind):
    w = W.clone().requires_grad_(True)
    upstream = torch.tensor([[0.1, -0.2, 0.3, 4.0], [-5.0, 0.6, 0.0, 7.0]])
    kind(2)(w).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_disabled_weight_binarizer_is_the_identity():
    b = XNORBinarizer(2)
    b.enabled = False
    assert torch.equal(b(W), W)


# ----------------------------------------------------------------------------- activations

def activation_binarizer():
    a = ActivationBinarizer(2)
    with torch.no_grad():
        a.scale.fill_(2.0)
        a.threshold.copy_(torch.tensor([0.5, 1.5]))
    a.initialized.fill_(True)
    return a


def test_activation_binarizer_values_and_gradients():
    a = activation_binarizer()
    x = torch.tensor([[[0.0, 0.75, 3.0], [1.0, 2.0, 3.0]]], requires_grad=True)   # (1, C=2, 3)
    y = a(x)
    assert y.tolist() == [[[0.0, 2.0, 2.0], [0.0, 2.0, 2.0]]]     # 2 * (x > t_c)
    assert a.integers(x.detach()).tolist() == [[[0, 1, 1], [0, 1, 1]]]
    y.sum().backward()
    # the ramp's window |x - t_c| <= s/2 = 1: x - t = (-0.5, 0.25, 2.5) and (-0.5, 0.5, 1.5)
    assert x.grad.tolist() == [[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]]
    assert a.threshold.grad.tolist() == [-2.0, -2.0]             # -1 per value in the window
    assert a.scale.grad.item() == 4.0                            # the number of ones
    assert a.bits == 1


def test_activation_binarizer_waits_for_initialisation_and_initialises_by_lloyd_max():
    a = ActivationBinarizer(3)
    x = torch.tensor([[-1.0, 0.2, 7.0]])
    assert torch.equal(a(x), x)                                  # not initialised: identity
    # from s = 5: mean of {3, 5} (> 2.5) is 4; mean of the values > 2 is 4 again
    a.initialize(torch.tensor([0.0, 0.0, 1.0, 3.0, 5.0]))
    assert a.scale.item() == 4.0 and a.threshold.tolist() == [2.0, 2.0, 2.0]
    a3 = ActivationBinarizer(3, axis=-1)
    a3.initialize(torch.tensor([1.0, 3.0]))                      # s = 3 (only 3 > 1.5), t = 1.5
    assert a3(torch.tensor([[2.0, 1.5, 1.0]])).tolist() == [[3.0, 0.0, 0.0]]
    dead = ActivationBinarizer(1)
    dead.initialize(torch.tensor([-1.0, 0.0]))
    assert dead.scale.item() == 1.0 and dead(torch.tensor([[0.3]])).item() == 0.0


def test_activation_export_ops_compute_the_same():
    a = activation_binarizer()
    x = torch.randn(4, 2, 5, 5)
    expected = a(x)
    a.set_standard_ops(True)
    assert torch.equal(a(x), expected)
    a.set_standard_ops(False)
    assert torch.equal(a(x), expected)


# ----------------------------------------------------------------------------- configs

def section(**keys):
    return {"input_info": {"sample_size": [1, 1, 10, 10]},
            "compression": {"algorithm": "binarization", **keys}}


@pytest.mark.parametrize("raw, message", [
    (section(modes="xnor"), "unknown key 'modes'"),
    (section(mode="bnn"), "mode 'bnn' is unknown"),
    (section(params={"activations_bin_start_epoch": 1}), "params: unknown key 'activations_bin_start_epoch'"),
    (section(params={"batch_multiplier": 2}), "params: unknown key 'batch_multiplier'"),
    (section(params={"weights_quant_start_epoch": -1}), "weights_quant_start_epoch must be an integer >= 0"),
    (section(params={"lr_poly_drop_duration_epochs": 0}), "lr_poly_drop_duration_epochs must be an integer >= 1"),
    (section(params={"activations_quant_start_epoch": None}), "activations_quant_start_epoch must be"),
    (section(initializer={"precision": {}}), "initializer: unknown key 'precision'"),
    (section(initializer={"batchnorm_adaptation": {"num_bn_adaptation_steps": 5}}),
     "batchnorm_adaptation: unknown key 'num_bn_adaptation_steps'"),
    (section(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 1.5}}),
     "num_bn_adaptation_samples must be an integer >= 0"),
    (section(initializer={"range": {"type": "min_max"}}), "range: unknown key 'type'"),
])
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        CompressionConfig(raw)


def test_defaults_and_shipped_configs():
    algorithm = CompressionConfig(section()).algorithms[0]
    assert isinstance(algorithm, BinarizationAlgorithm) and algorithm.mode == "xnor"
    assert algorithm.schedule == Schedule(1, 1, None, 30, None)
    assert algorithm.num_bn_adaptation_samples == 2000 and algorithm.num_init_samples == 256
    for mode in ("xnor", "dorefa"):
        config = load_config(ROOT / "configs" / f"fmnist_resnet20_{mode}.json")
        assert config.names == ["binarization"] and config.algorithms[0].mode == mode
        assert config.sample_size == [1, 1, 28, 28]


# ----------------------------------------------------------------------------- small model

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(self.bn2(self.conv2(x))).mean((2, 3))
        return self.fc(x)


def data(n=32, batch=8):
    x = torch.randn(n, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    return [(x[i:i + batch], torch.zeros(len(x[i:i + batch]), dtype=torch.long)) for i in range(0, n, batch)]


def binarized_net(**keys):
    torch.manual_seed(0)
    net = Net()
    keys.setdefault("ignored_scopes", ["conv"])
    keys.setdefault("initializer", {"batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
                                    "range": {"num_init_samples": 32}})
    config = CompressionConfig(section(**keys))
    algorithm, = apply_config(net, config, Context(data(), CPU, F.cross_entropy, False))
    return net.eval(), algorithm


def test_binarization_wraps_layers_outside_the_ignored_scopes():
    net, algorithm = binarized_net(mode="dorefa")
    layers = quantized_layers(net)
    assert list(layers) == ["conv2", "fc"]
    assert isinstance(layers["conv2"].weight_quantizer, DoReFaBinarizer)
    assert all(bool(l.input_quantizer.initialized) for l in layers.values())
    assert layers["fc"].input_quantizer.axis == -1
    assert algorithm.layer_report(net) == [
        {"layer": "conv2", "params": 216, "weight_bits": 1, "activation_bits": 1},
        {"layer": "fc", "params": 18, "weight_bits": 1, "activation_bits": 1}]
    with pytest.raises(ConfigError, match="'conv3' match no layer"):
        binarized_net(ignored_scopes=["conv3"])
    assert list(quantized_layers(binarized_net(target_scopes=["fc"], ignored_scopes=[])[0])) == ["fc"]


def test_schedule_enables_binarizers_and_drops_lr_and_weight_decay():
    params = {"activations_quant_start_epoch": 1, "weights_quant_start_epoch": 3,
              "lr_poly_drop_start_epoch": 5, "lr_poly_drop_duration_epochs": 10,
              "disable_wd_start_epoch": 5}
    net, algorithm = binarized_net(params=params)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4)
    bits, lrs, wds = [], [], []
    for epoch in range(17):
        algorithm.epoch_start(net, epoch, optimizer)
        row = algorithm.layer_report(net)[0]
        bits.append((row["activation_bits"], row["weight_bits"]))
        lrs.append(optimizer.param_groups[0]["lr"])
        wds.append(optimizer.param_groups[0]["weight_decay"])
    assert bits[:4] == [(32, 32), (1, 32), (1, 32), (1, 1)] and set(bits[3:]) == {(1, 1)}
    # 0.1 * ((15 - epoch) / 10) ** 2.1 from epoch 5 to 15, then 0
    expected = [0.1] * 5 + [0.1 * ((15 - e) / 10) ** 2.1 for e in range(5, 15)] + [0.0, 0.0]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert lrs[6] == pytest.approx(0.1 * 0.9 ** 2.1) and lrs[14] == pytest.approx(0.1 * 0.1 ** 2.1)
    assert wds == [1e-4] * 5 + [0.0] * 12
    # a schedule without lr drop and weight-decay epochs leaves the optimizer alone
    net, algorithm = binarized_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    for epoch in range(40):
        algorithm.epoch_start(net, epoch, optimizer)
    assert optimizer.param_groups[0]["lr"] == 1e-3 and optimizer.param_groups[0]["weight_decay"] == 1e-5


def test_batchnorm_adaptation_averages_the_binarized_batch_statistics():
    net, _ = binarized_net(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 24},
                                        "range": {"num_init_samples": 32}})
    seen = []
    hook = net.bn2.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    before = net.bn2.running_mean.clone()
    assert adapt_batchnorm(net, data(), CPU, 24, verbose=False) == 24
    hook.remove()
    assert len(seen) == 3 and net.bn2.momentum == 0.1 and not net.training
    means = torch.stack([x.mean((0, 2, 3)) for x in seen])
    assert torch.allclose(net.bn2.running_mean, means.mean(0), atol=1e-6)
    assert torch.allclose(before, net.bn2.running_mean, atol=1e-6)  # the same samples in apply
    with pytest.raises(ConfigError, match="no BatchNorm"):
        apply_config(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)),
                     CompressionConfig(section(initializer={"range": {"num_init_samples": 8}})),
                     Context(data(), CPU, F.cross_entropy, False))


def test_integer_state_reloads_exactly():
    net, _ = binarized_net()
    x = torch.randn(4, 1, 10, 10)
    expected = net(x)
    state = integer_state(net)
    assert state["conv2.layer.weight"].dtype == np.int8
    assert set(np.unique(state["conv2.layer.weight"])) == {-1, 1}
    fresh, _ = binarized_net()
    with torch.no_grad():
        for p in fresh.parameters():
            p.normal_()
    load_integer_state(fresh, state)
    assert torch.equal(fresh(x), expected)


# ----------------------------------------------------------------------------- ResNet-20 in ONNX

@pytest.mark.parametrize("mode", ["xnor", "dorefa"])
def test_binarized_resnet20_exports_int8_levels_and_runs_in_onnxruntime(mode, tmp_path):
    import onnx
    from onnx import numpy_helper
    import models
    torch.manual_seed(0)
    model = models.create_model("resnet20", num_classes=10, in_chans=1)
    models.load_checkpoint(model, str(ROOT / "example/weights/fmnist_resnet20.pt"))
    raw = json.loads((ROOT / "configs" / f"fmnist_resnet20_{mode}.json").read_text())
    raw["compression"]["initializer"] = {"batchnorm_adaptation": {"num_bn_adaptation_samples": 32},
                                         "range": {"num_init_samples": 16}}
    images = torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    loader = [(images[i:i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 48, 16)]
    apply_config(model, CompressionConfig(raw), Context(loader, CPU, F.cross_entropy, False))
    layers = quantized_layers(model)
    assert len(layers) == 18 and "conv1" not in layers and "linear" not in layers
    x = images[:8]
    model.eval()
    with torch.no_grad():
        expected = model(x)
    path = export_onnx(model, x, tmp_path / "resnet20.onnx")
    graph = onnx.load(str(path)).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    levels = [a for a in arrays if a.dtype == np.int8 and a.ndim == 4]
    assert len(levels) == 18 and all(set(np.unique(a)) == {-1, 1} for a in levels)
    assert sum(a.size for a in levels) == sum(l.layer.weight.numel() for l in layers.values())
    assert {"Greater", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    name = graph.input[0].name
    out = torch.from_numpy(onnx_session(path).run(None, {name: x.numpy()})[0])
    assert torch.equal(out.argmax(1), expected.argmax(1))
    assert torch.allclose(out, expected, atol=1e-4 * expected.abs().max().item())
