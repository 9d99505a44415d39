"""nnc_core.nn: whole models in, one NNC bitstream out, and back into the model."""
import sys

import numpy as np
import pytest
import torch

from nnc_core import DecodeError
from nnc_core import nn as nnc_nn
from nnc_core.bitstream import PayloadType, UnitType, parse_stream
from nnc_core.quant.step import step_size
from nnc_core.tools import fold_batchnorm, optimise_qps
from reference import model_zoo


def ndus(bs):
    return [u.content for u in parse_stream(bs) if u.type == UnitType.NDU]


def test_round_trip_exact_and_typed():
    model = model_zoo.build("small_resnet")
    coded = nnc_nn.encode_model(model, qp=-30, nonweight_qp=-60)
    decoded = nnc_nn.decode(coded.bitstream)
    assert list(decoded) == [k for k in model.state_dict() if "num_batches" not in k]
    for name, value in decoded.items():
        assert np.array_equal(value, coded.reconstruction[name]), name
    # the int32 buffer is lossless; with dependent quantization each state's grid has
    # spacing 2 steps, so floats are within two steps
    assert decoded["steps"].dtype == np.int32 and np.array_equal(decoded["steps"], np.arange(5))
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            qp = -30 if value.dim() > 1 or name.endswith(".weight") else -60
            assert np.max(np.abs(decoded[name] - value.numpy())) <= 2 * step_size(qp, 2), name


def test_parameter_ids_skip_num_batches_tracked_slots():
    model = model_zoo.build("conv_bn_fc")
    headers = ndus(nnc_nn.encode(model))
    ids = {h.names[0]: h.parameter_id for h in headers}
    order = list(model.state_dict())
    assert ids == {n: order.index(n) for n in ids}
    assert ids["fc.weight"] == 7          # index 6 is bn.num_batches_tracked


def test_module_vs_dict_typing():
    model = model_zoo.build("conv_bn_fc")
    qps = {h.names[0]: h for h in ndus(nnc_nn.encode(model))}
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    from_dict = nnc_nn.decode(nnc_nn.encode(sd, qp=-32))
    assert "bn.num_batches_tracked" not in from_dict
    # a module codes the 1-D bn.weight as a weight (qp), a dict by shape (nonweight_qp)
    module_err = np.abs(nnc_nn.decode(nnc_nn.encode(model))["bn.weight"] - sd["bn.weight"]).max()
    dict_err = np.abs(from_dict["bn.weight"] - sd["bn.weight"]).max()
    assert dict_err <= 2 * step_size(-75, 2) < module_err
    assert parse_stream(nnc_nn.encode(model))[2].content.storage_format == 3
    assert parse_stream(nnc_nn.encode(sd))[2].content.storage_format == 0
    assert qps


def test_bnf_blocks_and_folding():
    model = model_zoo.build("conv_nobias_bn_fc")
    coded = nnc_nn.encode_model(model, qp=-32, bnf=True)
    headers = ndus(coded.bitstream)
    assert [h.payload_type for h in headers] == [PayloadType.BLOCK, PayloadType.BLOCK]
    assert headers[0].names == ["conv.weight", "conv.weight_scaling", "conv.weight.bias"]
    assert headers[0].compressed_parameter_types == 2 | 8
    raw = nnc_nn.decode(coded.bitstream, apply_scaling=False)
    bn = model.bn
    g = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    assert np.allclose(raw["conv.weight_scaling"], g, atol=step_size(-75, 2))
    scaled = nnc_nn.decode(coded.bitstream)
    assert "conv.weight_scaling" not in scaled
    assert np.array_equal(scaled["conv.weight"], raw["conv.weight"] * raw["conv.weight_scaling"][:, None, None, None])


def test_fold_batchnorm_formula():
    scale, bias = fold_batchnorm(gamma=[2.0], beta=[1.0], mean=[3.0], var=[3.0], eps=1.0,
                                 bias=[5.0], scale=[0.5])
    assert scale == pytest.approx([0.5 * 2 / 2]) and bias == pytest.approx([(5 - 3) * 1 + 1])


def test_bnf_model_computes_the_same():
    model = model_zoo.build("small_resnet")
    bs = nnc_nn.encode(model, qp=-80, nonweight_qp=-100, bnf=True)
    restored = nnc_nn.load_decoded(model_zoo.build("small_resnet", seed=3), nnc_nn.decode(bs))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(restored(x), model(x), atol=1e-4)


def test_opt_qp_hand_computed():
    # sizes 100 and 300, std 1 and 0.5: w = 0.25 + 0.1 * 0 = 0.25 and 0.75 + 0.05 > 0.5 -> 0.15
    rng = np.random.default_rng(0)
    a = rng.standard_normal(100)
    b = rng.standard_normal(300)
    a, b = a / a.std(), 0.5 * b / b.std()
    qps = optimise_qps({"a": a, "b": b}, {"a": -32, "b": -32, "c": -75})
    assert qps == {"a": round(-32 * 0.75), "b": round(-32 * 0.85), "c": -75}


def test_lsa_trains_and_reduces_loss():
    torch.manual_seed(0)
    model = model_zoo.build("small_resnet")
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g))
            for _ in range(4)]
    with torch.no_grad():       # make the labels learnable: those of the original model
        data = [(x, model(x).argmax(1)) for x, _ in data]
    loss = torch.nn.functional.cross_entropy

    def task_loss(bs):
        m = nnc_nn.load_decoded(model_zoo.build("small_resnet"), nnc_nn.decode(bs))
        with torch.no_grad():
            return sum(loss(m(x), y).item() for x, y in data)

    plain = nnc_nn.encode(model, qp=-12, bnf=True)
    lsa = nnc_nn.encode(model, qp=-12, bnf=True, lsa=True, train_loader=data, epochs=20, lr=0.02)
    assert task_loss(lsa) < task_loss(plain)
    stem = next(h for h in ndus(lsa) if h.names[0] == "stem.weight")
    assert stem.compressed_parameter_types & 2


def test_errors():
    model = model_zoo.build("conv_bn_fc")
    with pytest.raises(TypeError, match="unknown option"):
        nnc_nn.encode(model, qp_typo=1)
    with pytest.raises(ValueError, match="train_loader"):
        nnc_nn.encode(model, lsa=True)
    with pytest.raises(ValueError, match="Module"):
        nnc_nn.encode(model.state_dict(), bnf=True)
    with pytest.raises(TypeError):
        nnc_nn.encode([1, 2, 3])
    with pytest.raises(NotImplementedError):
        nnc_nn.encode(model, ioq=True)
    bs = nnc_nn.encode(model)
    with pytest.raises(DecodeError):
        nnc_nn.decode(bs[:-3])
    with pytest.raises(KeyError, match="missing"):
        nnc_nn.load_decoded(model_zoo.build("small_resnet"), nnc_nn.decode(bs))


def test_reference_args_dict_is_accepted():
    args = {"approx_method": "uniform", "bitdepth": None, "compress_differences": False,
            "nonweight_qp": -75, "opt_qp": False, "qp": -32, "qp_density": 2,
            "quantize_only": False, "results": ".", "row_skipping": True, "sparsity": 0.0,
            "struct_spars_factor": 0.9, "tca": False, "pre_signalling": False, "use_dq": True,
            "param_opt": True, "qp_per_tensor": None, "verbose": True, "bnf": False,
            "lsa": False, "wandb": False, "lr": 1e-3, "epochs": 1, "dataset_path": None,
            "model": "NN", "max_batches": None, "workers": 1, "batch_size": 8}
    model = model_zoo.build("conv_bn_fc")
    assert nnc_nn.encode(model, **args) == nnc_nn.encode(model)


def test_report_accounts_for_every_byte():
    coded = nnc_nn.encode_model(model_zoo.build("small_resnet"), bnf=True)
    leading = sum(u.size for u in parse_stream(coded.bitstream) if u.type != UnitType.NDU)
    assert leading + sum(t.unit_bytes for t in coded.tensors) == len(coded.bitstream)
    assert all(t.payload_bytes < t.unit_bytes for t in coded.tensors)
    assert coded.params == sum(v.numel() for k, v in model_zoo.build("small_resnet").state_dict().items()
                               if "num_batches" not in k)


def test_cli_decodes_a_model_stream(tmp_path):
    import subprocess
    model = model_zoo.build("conv_bn_fc")
    stream = tmp_path / "model.nnc"
    stream.write_bytes(nnc_nn.encode(model, bnf=True))
    expected = nnc_nn.decode(stream.read_bytes())

    def cli(out):
        return subprocess.run([sys.executable, "-m", "nnc_core", "decode", str(stream), "-o", str(out)],
                              capture_output=True, text=True, timeout=120)

    assert cli(tmp_path / "sd.pt").returncode == 0
    state = torch.load(tmp_path / "sd.pt")
    assert list(state) == list(expected) and all(np.array_equal(state[k].numpy(), expected[k]) for k in state)
    assert cli(tmp_path / "sd.npz").returncode == 0
    with np.load(tmp_path / "sd.npz") as z:
        assert all(np.array_equal(z[k], expected[k]) for k in expected)
    bad = cli(tmp_path / "sd.npy")
    assert bad.returncode == 2 and "tensors" in bad.stderr


# ----------------------------------------------------------------------------- threads

def _many_tensor_model():
    torch.manual_seed(3)
    layers = [torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16)]
    layers += [torch.nn.Linear(64, 64) for _ in range(6)] + [torch.nn.LayerNorm(64)]
    model = torch.nn.Sequential(*layers).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("options", [dict(qp=-38), dict(qp=-26, sparsity=0.5, struct_spars_factor=0.0),
                                     dict(qp=-32, use_dq=False, bnf=True),
                                     dict(qp=-30, scan_order=1, opt_qp=True)])
def test_bytes_do_not_depend_on_the_thread_count(options):
    model = _many_tensor_model()
    streams = {t: nnc_nn.encode(model, threads=t, **options) for t in (1, 2, 3, 8)}
    assert len(set(streams.values())) == 1
    bs = streams[1]
    assert nnc_nn.encode_model(model, threads=4, **options).bitstream == bs
    parts = list(nnc_nn.encode_iter(model, threads=3, **options))
    assert b"".join(p.data for p in parts) == bs
    joined, reconstruction = nnc_nn.encode_with_reconstruction(model, threads=2, **options)
    assert joined == bs
    decoded = {t: nnc_nn.decode(bs, threads=t) for t in (1, 2, 5)}
    for out in decoded.values():
        assert list(out) == list(reconstruction)
        for name, value in reconstruction.items():
            assert np.array_equal(out[name], value), name
    streamed = {}
    for part in parts:
        streamed.update(part.tensors)
    assert list(streamed) == list(reconstruction)


def test_thread_count_independence_with_differences():
    from nnc_core.incremental import CodingState
    model = _many_tensor_model()
    outs = []
    for threads in (1, 2):
        sender = CodingState(device_id=1)
        first = nnc_nn.encode(model, state=sender, compress_differences=True, threads=threads)
        with torch.no_grad():
            copy = _many_tensor_model()
            for p in copy.parameters():
                p.add_(0.01)
        second = nnc_nn.encode(copy, state=sender, compress_differences=True, tca=True,
                               threads=threads)
        outs.append((first, second))
    assert outs[0] == outs[1]


def test_threads_are_checked():
    model = _many_tensor_model()
    for bad, error in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)):
        with pytest.raises(error):
            nnc_nn.encode(model, threads=bad)
        with pytest.raises(error):
            nnc_nn.decode(nnc_nn.encode(model), threads=bad)
    assert nnc_nn.encode(model, threads=None) == nnc_nn.encode(model, threads=1)


def test_a_failing_tensor_stops_the_parallel_encode():
    sd = {f"w{i}": np.full((8, 8), 0.1, np.float32) for i in range(10)}
    sd["w7"] = np.full((8, 8), np.nan, np.float32)
    with pytest.raises(ValueError, match="w7"):
        nnc_nn.encode(sd, threads=2)
