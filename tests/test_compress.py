"""compress/: fake quantizers on hand-computed values, range initialisers, NNCF-style config
checks, BatchNorm folding, ONNX export run in onnxruntime, and the NNC-coded integer file."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress import CompressionConfig, ConfigError, Context, apply_config
from compress.export import OnnxModel, export_onnx, onnx_session
from compress.fake_quant import FakeQuantizer, QuantSpec, integer_range, round_ste
from compress.fold import fold_batchnorm
from compress.layers import QuantizedLayer, quantized_layers
from compress.nnc_file import (decode_integer_state, encode_integer_state, integer_state,
                               load_integer_state)
from compress.ranges import create_observer

CPU = torch.device("cpu")


def quantizer(low, high, **spec):
    q = FakeQuantizer(QuantSpec(**spec))
    q.set_range(torch.tensor(low), torch.tensor(high))
    return q


# ----------------------------------------------------------------------------- arithmetic

def test_integer_ranges():
    assert integer_range(8, signed=True) == (-128, 127)
    assert integer_range(8, signed=True, narrow=True) == (-127, 127)
    assert integer_range(8, signed=False) == (0, 255)
    assert integer_range(4, signed=True) == (-8, 7)
    assert integer_range(2, signed=False) == (0, 3)


def test_symmetric_signed_rounding_and_clamping():
    q = quantizer(-1.0, 2.54, bits=8, signed=True)          # step 2.54 / 127 = 0.02
    assert float(q.scale.detach()) == pytest.approx(0.02) and float(q.zero_point) == 0
    x = torch.tensor([0.0, 0.01, 0.03, 0.05, -0.07, 2.54, 3.0, -2.6, -9.0])
    # 0.01 / 0.02 = 0.5 rounds to even (0), 0.03 -> 1.5 -> 2, 0.05 -> 2.5 -> 2, -0.07 -> -3.5 -> -4;
    # 3.0 clamps to 127 and -2.6, -9 to -128
    assert q.integers(x).tolist() == [0, 0, 2, 2, -4, 127, 127, -128, -128]
    assert torch.allclose(q(x), torch.tensor([0, 0, 0.04, 0.04, -0.08, 2.54, 2.54, -2.56, -2.56]))


def test_asymmetric_zero_point_and_unsigned_symmetric():
    q = quantizer(-0.5, 1.0, bits=8, mode="asymmetric", signed=False)
    step = 1.5 / 255
    assert float(q.scale.detach()) == pytest.approx(step)
    assert float(q.zero_point) == round(0.5 / step) == 85       # zero is representable
    assert q(torch.tensor([0.0])).item() == 0.0
    assert q.integers(torch.tensor([-0.5, 1.0, 2.0])).tolist() == [0, 255, 255]
    relu = quantizer(0.0, 5.1, bits=8)                           # signed decided from data
    assert not bool(relu.signed) and relu.range == (0, 255)
    assert float(relu.scale.detach()) == pytest.approx(0.02)
    assert relu.integers(torch.tensor([-1.0, 0.02, 6.0])).tolist() == [0, 1, 255]


def test_per_channel_narrow_weights():
    q = FakeQuantizer(QuantSpec(bits=4, per_channel=True, signed=True, narrow_range=True), channels=2)
    q.set_range(torch.tensor([-0.7, -1.0]), torch.tensor([0.35, 2.1]))
    assert torch.allclose(q.scale.detach(), torch.tensor([0.1, 0.3]))       # max |x| / 7
    w = torch.tensor([[0.7, -0.74, 0.04], [2.1, -2.5, 0.46]])
    assert q.integers(w).tolist() == [[7, -7, 0], [7, -7, 2]]
    assert torch.equal(q.dequantize(q.integers(w)), q(w))


def test_straight_through_gradients():
    assert round_ste(torch.tensor(0.4, requires_grad=True)).item() == 0.0
    q = quantizer(-1.27, 1.27, bits=8, signed=True)             # step 0.01, range [-1.28, 1.27]
    x = torch.tensor([0.123, 0.5, 2.0, -3.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]               # passes inside, stops outside
    # d x_hat / d s = q - x / s inside the range (LSQ), the clamped level outside
    expected = [round(0.123 / 0.01) - 0.123 / 0.01, 50 - 50.0, 127.0, -128.0]
    x2 = torch.tensor([0.123, 0.5, 2.0, -3.0])
    q.log_scale.grad = None
    q(x2).sum().backward()
    # the step is learnt as log s: d/d(log s) = s * d/ds
    assert q.log_scale.grad.item() == pytest.approx(0.01 * sum(expected), rel=1e-4)


def test_spec_validation():
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        QuantSpec(bits=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        QuantSpec(mode="affine")
    with pytest.raises(ValueError, match="needs the number of channels"):
        FakeQuantizer(QuantSpec(per_channel=True))


# ----------------------------------------------------------------------------- ranges

def test_range_initialisers():
    batches = [torch.tensor([[0.0, 1.0, 2.0, 10.0]]), torch.tensor([[-2.0, 0.0, 1.0, 4.0]])]

    def observed(kind, **params):
        observer = create_observer(kind, **params)
        for b in batches:
            observer.update(b)
        return tuple(float(v) for v in observer.range())

    assert observed("min_max") == (-2.0, 10.0)
    assert observed("mean_min_max") == (-1.0, 7.0)
    low, high = observed("percentile", min_percentile=0.0, max_percentile=50.0)
    assert (low, high) == (-2.0, 1.0)                 # the median of the 8 values seen
    per_channel = create_observer("min_max", per_channel=True, axis=1)
    per_channel.update(torch.tensor([[[1.0, -1.0]], [[3.0, 0.5]]]).transpose(1, 2))  # N, C=2, 1
    low, high = per_channel.range()
    assert low.tolist() == [1.0, -1.0] and high.tolist() == [3.0, 0.5]
    with pytest.raises(ValueError, match="unknown range initializer 'minmax'"):
        create_observer("minmax")
    with pytest.raises(RuntimeError, match="seen no data"):
        create_observer("min_max").range()


# ----------------------------------------------------------------------------- configs

def config(**section):
    return {"input_info": {"sample_size": [1, 1, 28, 28]},
            "compression": {"algorithm": "quantization", **section}}


@pytest.mark.parametrize("raw, message", [
    ({"compression": {"algorithm": "quantization"}, "epochs": 3}, "unknown key 'epochs'"),
    (config(weights={"bits": 8, "per_chanel": True}), "weights: unknown key 'per_chanel'"),
    (config(initializer={"range": {"type": "minmax"}}), "range.type 'minmax' is unknown"),
    (config(initializer={"range": {"num_samples": 5}}), "unknown key 'num_samples'"),
    (config(weights={"bits": 12}), "bits must be an integer from 2 to 8"),
    (config(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 64}}),
     "BatchNorm is folded"),
    (config(initializer={"precision": {"type": "hawk"}}), "precision.type 'hawk' is unknown"),
    (config(initializer={"precision": {"type": "hawq", "compression_ratio": 0.5}}),
     "compression_ratio must be a number >= 1"),
    (config(initializer={"precision": {"type": "manual", "bitwidth_per_scope": [[3]]}}),
     "entries are \\[bits from 2 to 8, scope\\]"),
    ({"compression": [{"algorithm": "pruning"}]}, "unknown algorithm 'pruning'"),
    ({"input_info": {"sample_size": [1, -1]}, "compression": {"algorithm": "quantization"}},
     "sample_size must be a list of positive integers"),
])
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        CompressionConfig(raw)


def test_shipped_configs_are_valid():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json")):
        assert CompressionConfig(json.loads(path.read_text()), str(path)).algorithms


# ----------------------------------------------------------------------------- models

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(self.conv2(x)).mean((2, 3))
        return self.fc(x)


def trained_net():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def calibration_data(n=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 10, 10, generator=g)
    return [(x[i:i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, n, 16)]


def test_batchnorm_folding_keeps_the_function():
    net = trained_net()
    x = torch.randn(5, 1, 10, 10)
    expected = net(x)
    assert fold_batchnorm(net) == [("conv", "bn")]
    assert isinstance(net.bn, nn.Identity) and net.conv.bias is not None
    assert torch.allclose(net(x), expected, atol=1e-5)


def quantized_net(section=None):
    net = trained_net()
    raw = config(**(section or {"initializer": {"range": {"num_init_samples": 64, "type": "min_max"}}}))
    apply_config(net, CompressionConfig(raw), Context(calibration_data(), CPU, F.cross_entropy, False))
    return net.eval()


def test_quantization_wraps_every_layer_and_calibrates():
    net = quantized_net()
    layers = quantized_layers(net)
    assert list(layers) == ["conv", "conv2", "fc"]
    assert all(isinstance(m, QuantizedLayer) for m in layers.values())
    assert all(bool(l.weight_quantizer.initialized) and bool(l.input_quantizer.initialized)
               for l in layers.values())
    assert bool(layers["conv"].input_quantizer.signed)          # the raw input has negatives
    assert not bool(layers["conv2"].input_quantizer.signed)     # after a ReLU
    w = layers["conv2"].quantized_weight()
    steps = layers["conv2"].weight_quantizer.scale.detach().reshape(-1, 1, 1, 1)
    assert torch.allclose(w / steps, torch.round(w / steps), atol=1e-4)    # on the grid


def test_ignored_scopes_and_unknown_scope():
    net = quantized_net({"ignored_scopes": ["fc"], "activations": {"ignored_scopes": ["{re}conv.*"]}})
    layers = quantized_layers(net)
    assert list(layers) == ["conv", "conv2"]
    assert isinstance(layers["conv"].input_quantizer, nn.Identity)
    with pytest.raises(ConfigError, match="'fc2' match no layer"):
        quantized_net({"ignored_scopes": ["fc2"]})


def test_manual_mixed_precision():
    net = quantized_net({"initializer": {"range": {"num_init_samples": 32},
                                         "precision": {"type": "manual",
                                                       "bitwidth_per_scope": [[4, "{re}conv.*"]]}},
                         "weights": {"ignored_scopes": ["fc"]}})
    layers = quantized_layers(net)
    assert [layers[n].weight_quantizer.bits for n in ("conv", "conv2")] == [4, 4]
    assert isinstance(layers["fc"].weight_quantizer, nn.Identity)
    assert layers["conv2"].weight_quantizer.integers(layers["conv2"].layer.weight).abs().max() <= 7
    with pytest.raises(ConfigError, match="matches no quantized layer"):
        quantized_net({"initializer": {"precision": {"type": "manual",
                                                     "bitwidth_per_scope": [[4, "fc"]]}},
                       "weights": {"ignored_scopes": ["fc"]}})


def test_onnx_export_runs_in_onnxruntime_with_integer_weights(tmp_path):
    import onnx
    from onnx import numpy_helper
    net = quantized_net()
    x = torch.randn(8, 1, 10, 10)
    path = export_onnx(net, x, tmp_path / "net.onnx")
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    integers = [numpy_helper.to_array(t) for t in graph.initializer
                if numpy_helper.to_array(t).dtype == np.int8 and t.dims]
    assert sum(a.size for a in integers) == sum(p.layer.weight.numel() for p in quantized_layers(net).values())
    session = OnnxModel(onnx_session(path))
    expected = net(x)
    out = session(x)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=0.05 * expected.abs().max().item())
    assert session(x[:3]).shape[0] == 3                          # dynamic batch


def test_integer_file_is_lossless_and_reloads_exactly():
    net = quantized_net()
    state = integer_state(net)
    assert state["conv2.layer.weight"].dtype == np.int8
    bitstream = encode_integer_state(state)
    decoded = decode_integer_state(bitstream)
    assert set(decoded) == set(state)
    for key, value in state.items():
        assert decoded[key].dtype == value.dtype and np.array_equal(decoded[key], value), key
    fresh = quantized_net()
    with torch.no_grad():
        for p in fresh.parameters():
            p.normal_()
    load_integer_state(fresh, decoded)
    x = torch.randn(4, 1, 10, 10)
    assert torch.equal(fresh(x), net(x))


def test_quantization_changes_outputs_only_a_little():
    net, float_net = quantized_net(), trained_net()
    x = torch.randn(16, 1, 10, 10)
    error = (net(x) - float_net(x)).abs().max().item()
    assert 0 < error < 0.05 * float_net(x).abs().max().item() + 1e-3
    assert not math.isnan(error)
