"""Checkpoint files and their coding: nnc_core.checkpoints (safetensors, sharded folders, .pt,
.npz), dtypes and tied names through nnc_core.nn, the CLI end to end, and bounded memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnc_core import checkpoints, dtypes as dt, nn as nnc_nn
from nnc_core.__main__ import main as cli
from nnc_core.bitstream import UnitType, parse_stream
from nnc_core.checkpoints import read_checkpoint, write_checkpoint
from nnc_core.quant.step import step_size

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "example" / "weights" / "fmnist_resnet20.pt"


def bf16(values) -> np.ndarray:
    """float32 values rounded to bfloat16, as torch rounds them."""
    return torch.from_numpy(np.asarray(values, np.float32)).to(torch.bfloat16).float().numpy()


def mixed(seed: int = 0) -> tuple[dict, dict]:
    """Tensors of every dtype a checkpoint holds, and the dtypes to store them with."""
    r = np.random.default_rng(seed)
    tensors = {
        "embed.weight": bf16(r.normal(0, 0.02, (40, 16))),
        "layer.weight": r.normal(0, 0.05, (24, 16)).astype(np.float16),
        "layer.bias": r.normal(0, 0.05, 24).astype(np.float32),
        "head.weight": r.normal(0, 0.05, (8, 16)).astype(np.float64),
        "q.weight": r.integers(-128, 128, (12, 16)).astype(np.int8),
        "q.scale": (r.random(12) * 0.01).astype(np.float16),
        "q.zero": r.integers(0, 256, 12).astype(np.uint8),
        "ids": r.integers(-2**40, 2**40, 5).astype(np.int64) >> 10,
        "i16": r.integers(-30000, 30000, (3, 4)).astype(np.int16),
        "i32": r.integers(-2**31, 2**31 - 1, 6).astype(np.int32),
        "mask": r.random(9) > 0.5,
        "steps": np.int64(1234),
    }
    return tensors, {"embed.weight": "bfloat16"}


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# -- files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
def test_file_round_trip_names_shapes_dtypes(tmp_path, suffix):
    tensors, kinds = mixed()
    path = tmp_path / f"model{suffix}"
    written = write_checkpoint(path, tensors, kinds)
    ckpt = read_checkpoint(path)
    assert list(ckpt) == list(tensors)
    expected = dict({n: dt.dtype_name(v) for n, v in tensors.items()}, **kinds)
    if suffix == ".npz":                         # .npz has no bfloat16
        expected["embed.weight"] = "float32"
    assert written == expected and ckpt.dtypes == expected
    assert ckpt.shapes == {n: np.shape(v) for n, v in tensors.items()}
    for name, value in tensors.items():
        assert same(ckpt[name], np.asarray(value, np.float32 if name == "embed.weight" else None))


def test_safetensors_and_npz_need_no_torch(tmp_path):
    from test_imports import run_without_torch
    tensors, kinds = mixed()
    write_checkpoint(tmp_path / "m.safetensors", tensors, kinds)
    result = run_without_torch(
        "import sys\n"
        "from nnc_core.checkpoints import read_checkpoint, write_checkpoint\n"
        "from nnc_core.__main__ import main\n"
        "assert main(['encode', sys.argv[1], '-o', sys.argv[2]]) == 0\n"
        "assert main(['decode', sys.argv[2], '-o', sys.argv[3]]) == 0\n"
        "assert read_checkpoint(sys.argv[3]).dtypes == read_checkpoint(sys.argv[1]).dtypes\n"
        "assert 'torch' not in sys.modules\n",
        str(tmp_path / "m.safetensors"), str(tmp_path / "m.nnc"), str(tmp_path / "d.safetensors"))
    assert result.returncode == 0, result.stderr


def test_safetensors_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    tensors, kinds = mixed()
    ours = tmp_path / "ours.safetensors"
    write_checkpoint(ours, tensors, kinds)
    loaded = st.load_file(str(ours))
    assert list(loaded) == list(tensors)
    assert loaded["embed.weight"].dtype == torch.bfloat16
    for name, value in tensors.items():
        assert np.array_equal(loaded[name].float().numpy(), np.asarray(value, np.float32))
    theirs = tmp_path / "theirs.safetensors"
    st.save_file({n: torch.from_numpy(np.array(v)) for n, v in tensors.items()} |
                 {"embed.weight": torch.from_numpy(tensors["embed.weight"]).to(torch.bfloat16)},
                 str(theirs), metadata={"format": "pt"})
    ckpt = read_checkpoint(theirs)
    assert ckpt.dtypes["embed.weight"] == "bfloat16" and ckpt.metadata == {"format": "pt"}
    for name, value in tensors.items():
        assert np.array_equal(ckpt[name], np.asarray(value, np.float32 if name == "embed.weight"
                                                     else None))


def test_bfloat16_conversion_rounds_to_nearest_even_like_torch():
    r = np.random.default_rng(3)
    values = np.concatenate([r.normal(0, 1, 5000), r.normal(0, 1e-30, 100), [0.0, -0.0, 1e38,
                             3.4e38, np.inf, -np.inf, 1 + 2**-8, 1 + 3 * 2**-8]]).astype(np.float32)
    bits = dt.to_bfloat16_bits(values)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bits, expected)
    assert np.isnan(dt.from_bfloat16_bits(dt.to_bfloat16_bits(np.float32([np.nan])))).all()


def test_sharded_folder_is_one_checkpoint(tmp_path):
    tensors, kinds = mixed()
    names = list(tensors)
    folder = tmp_path / "llm"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": names[:5], "model-00002-of-00002.safetensors": names[5:]}
    for shard, members in shards.items():
        write_checkpoint(folder / shard, {n: tensors[n] for n in members}, kinds)
    order = sorted(names)                         # as Hugging Face writes the weight map
    weight_map = {n: s for n in order for s, members in shards.items() if n in members}
    (folder / checkpoints.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ckpt = read_checkpoint(folder)
    assert list(ckpt) == order and ckpt.dtypes["embed.weight"] == "bfloat16"
    assert all(same(ckpt[n], np.asarray(tensors[n], np.float32 if n == "embed.weight" else None))
               for n in names)
    (folder / checkpoints.INDEX).unlink()         # no index: every *.safetensors, by file name
    assert list(read_checkpoint(folder)) == names
    write_checkpoint(folder / "extra.safetensors", {names[0]: tensors[names[0]]}, kinds)
    with pytest.raises(ValueError, match="in both"):
        read_checkpoint(folder)
    (folder / "extra.safetensors").unlink()
    (folder / checkpoints.INDEX).write_text(json.dumps({"weight_map": dict(weight_map, x="gone.safetensors")}))
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        read_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match="no .* and no \\*.safetensors"):
        read_checkpoint(tmp_path)


def test_pt_state_dicts_training_checkpoints_and_ties(tmp_path):
    emb = torch.randn(10, 4)
    sd = {"emb.weight": emb, "out.weight": emb, "bias": torch.zeros(3, dtype=torch.bfloat16)}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "train.pt")
    ckpt = read_checkpoint(tmp_path / "train.pt")
    assert list(ckpt) == list(sd) and ckpt.ties == {"out.weight": "emb.weight"}
    assert ckpt.dtypes["bias"] == "bfloat16" and ckpt["bias"].dtype == np.float32
    torch.save(emb, tmp_path / "one.pt")
    with pytest.raises(ValueError, match="one tensor"):
        read_checkpoint(tmp_path / "one.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="more than tensors"):
        read_checkpoint(tmp_path / "module.pt")


def test_unknown_and_broken_files_raise_typed_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a checkpoint"):
        read_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"unknown checkpoint format '.onnx' \(expected .safetensors"):
        read_checkpoint(tmp_path / "model.onnx")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0not json at all!")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_checkpoint(tmp_path / "bad.safetensors")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "short.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(ValueError, match="does not hold F32"):
        read_checkpoint(tmp_path / "short.safetensors")
    with pytest.raises(ValueError, match="unknown checkpoint format '.h5'"):
        write_checkpoint(tmp_path / "x.h5", {"w": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="do not fit int8"):
        write_checkpoint(tmp_path / "x.safetensors", {"w": np.int32([300])}, {"w": "int8"})


# -- coding ----------------------------------------------------------------------------------
def test_integer_tensors_are_lossless_and_every_dtype_comes_back(tmp_path):
    tensors, kinds = mixed()
    write_checkpoint(tmp_path / "m.safetensors", tensors, kinds)
    ckpt = read_checkpoint(tmp_path / "m.safetensors")
    bitstream = nnc_nn.encode(ckpt, keep_dtypes=True, qp=-40)
    decoded, decoded_dtypes = nnc_nn.decode_with_dtypes(bitstream)
    assert list(decoded) == list(ckpt) and decoded_dtypes == ckpt.dtypes
    for name, value in tensors.items():
        out = decoded[name]
        assert out.shape == np.shape(value)
        if not dt.is_float(ckpt.dtypes[name]):
            assert same(out, value), name            # integers and bool: bit-exact
    # the standard's data-format field where it has the dtype, the topology note elsewhere
    units = parse_stream(bitstream)
    formats = {u.content.names[0]: u.content.decompressed_data_format
               for u in units if u.type == UnitType.NDU}
    assert formats["layer.weight"] == 8 and formats["q.weight"] == 5 and formats["ids"] == 7
    assert formats["layer.bias"] is None and formats["i32"] is None
    note = json.loads(next(u.content.data for u in units if u.type == UnitType.TPL))
    assert note["nnc_checkpoint"]["dtypes"] == {"embed.weight": "bfloat16", "q.zero": "uint8",
                                                "mask": "bool"}
    assert note["nnc_checkpoint"]["scalars"] == ["steps"]


def test_without_keep_dtypes_the_stream_is_the_plain_one():
    tensors, _ = mixed()
    plain = {k: v for k, v in tensors.items() if k != "steps"}
    bitstream = nnc_nn.encode(plain)
    units = parse_stream(bitstream)
    assert next(u.content.data for u in units if u.type == UnitType.TPL) == ""
    assert all(u.content.decompressed_data_format is None for u in units if u.type == UnitType.NDU)
    assert nnc_nn.decode(bitstream)["q.weight"].dtype == np.int32


def test_floats_within_the_step_and_exact_where_the_setting_is_lossless():
    r = np.random.default_rng(5)
    w = r.normal(0, 0.05, (64, 48)).astype(np.float32)
    for dq, bound in ((False, 0.5), (True, 2.0)):   # DQ: each quantizer has steps of 2 delta
        out = nnc_nn.decode(nnc_nn.encode({"w": w}, qp=-40, use_dq=dq))["w"]
        assert np.abs(out - w).max() <= bound * step_size(-40, 2) * (1 + 1e-6)
    # float16 values are multiples of 2^-24: qp -96 (step 2^-24) without DQ codes them exactly
    half = {"w": r.normal(0, 0.5, (32, 40)).astype(np.float16), "b": r.normal(0, 2, 40).astype(np.float16)}
    out = nnc_nn.decode(nnc_nn.encode(half, keep_dtypes=True, qp=-96, nonweight_qp=-96, use_dq=False))
    assert all(same(out[n], half[n]) for n in half)
    # bfloat16 values on the grid of qp -32 (step 2^-8) likewise
    grid = {"w": bf16(r.integers(-255, 256, (16, 24)) / 256)}
    out, kinds = nnc_nn.decode_with_dtypes(nnc_nn.encode(
        {"w": torch.from_numpy(grid["w"]).to(torch.bfloat16)}, keep_dtypes=True, qp=-32, use_dq=False))
    assert kinds == {"w": "bfloat16"} and same(out["w"], grid["w"])


def test_streaming_gives_the_bytes_and_values_of_the_whole_model(tmp_path):
    tensors, kinds = mixed(1)
    write_checkpoint(tmp_path / "m.safetensors", tensors, kinds)
    ckpt = read_checkpoint(tmp_path / "m.safetensors")
    parts = list(nnc_nn.encode_iter(ckpt, keep_dtypes=True, qp=-36))
    bitstream = b"".join(p.data for p in parts)
    assert bitstream == nnc_nn.encode(ckpt, keep_dtypes=True, qp=-36)
    coded = nnc_nn.encode_model(ckpt, keep_dtypes=True, qp=-36)
    assert coded.bitstream == bitstream
    decoded = nnc_nn.decode(bitstream)
    streamed = {n: v for p in parts for n, v in p.tensors.items()}
    for name in decoded:
        assert same(streamed[name], decoded[name]) and same(coded.reconstruction[name], decoded[name])
    # a plain dict codes to the bytes it always did, whichever path it takes
    floats = {"a": tensors["layer.bias"], "b": tensors["head.weight"].astype(np.float32)}
    assert b"".join(p.data for p in nnc_nn.encode_iter(floats)) == \
        nnc_nn.encode_model(floats).bitstream


def test_model_options_for_checkpoints_act_or_raise():
    w = {"w": np.random.default_rng(6).normal(0, 0.05, (40, 70)).astype(np.float32)}
    bitstream = nnc_nn.encode(w, scan_order=1)
    (ndu,) = [u.content for u in parse_stream(bitstream) if u.type == UnitType.NDU]
    assert ndu.scan_order == 1 and ndu.entry_points
    assert np.abs(nnc_nn.decode(bitstream)["w"] - w["w"]).max() < 2 * step_size(-32, 2)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="scan_order"):
        nnc_nn.encode(model, bnf=True, scan_order=1)
    with pytest.raises(ValueError, match="keep_dtypes"):
        nnc_nn.encode(w, keep_dtypes=True, state=nnc_nn.CodingState())
    with pytest.raises(ValueError, match="need the torch.nn.Module"):
        nnc_nn.encode_iter(w, lsa=True)


class TiedLM(torch.nn.Module):
    """An embedding reused as the output layer (``output.weight is tok_embeddings.weight``)."""

    def __init__(self, vocab=96, dim=32):
        super().__init__()
        self.tok_embeddings = torch.nn.Embedding(vocab, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.output = torch.nn.Linear(dim, vocab, bias=False)
        self.output.weight = self.tok_embeddings.weight

    def forward(self, tokens):
        return self.output(self.norm(self.tok_embeddings(tokens)))


def test_tied_weights_are_coded_once_and_restored():
    torch.manual_seed(0)
    model = TiedLM().eval()
    bitstream = nnc_nn.encode(model, qp=-36)
    ndus = [u.content.names for u in parse_stream(bitstream) if u.type == UnitType.NDU]
    assert ndus == [["tok_embeddings.weight"], ["norm.weight"], ["norm.bias"]]
    untied = {k: v.clone() for k, v in model.state_dict().items()}
    assert len(nnc_nn.encode(untied, qp=-36)) - len(bitstream) > 0.8 * len(
        nnc_nn.encode({"w": untied["output.weight"]}, qp=-36))
    decoded = nnc_nn.decode(bitstream)
    assert set(decoded) == set(model.state_dict())
    assert decoded["output.weight"] is decoded["tok_embeddings.weight"]
    restored = nnc_nn.load_decoded(TiedLM().eval(), decoded)           # strict
    assert restored.output.weight is restored.tok_embeddings.weight
    assert torch.equal(restored.output.weight, torch.from_numpy(decoded["tok_embeddings.weight"]))
    # a checkpoint that stores the tied tensor once (as Hugging Face does) loads strictly too
    nnc_nn.load_decoded(TiedLM().eval(), {k: v for k, v in decoded.items() if k != "output.weight"})
    coded = nnc_nn.encode_model(model, qp=-36)
    assert coded.tied == {"output.weight": "tok_embeddings.weight"}
    assert coded.params == sum(p.numel() for p in model.parameters())


# -- command line ----------------------------------------------------------------------------
def run_module(*argv) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nnc_core", *map(str, argv)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_cli_codes_a_safetensors_checkpoint_end_to_end(tmp_path, capsys):
    tensors, kinds = mixed(2)
    source = tmp_path / "model.safetensors"
    write_checkpoint(source, tensors, kinds)
    out = run_module("encode", source, "-o", tmp_path / "model.nnc", "--qp", "-38").stdout
    assert "12 tensors" in out and "bits per element" in out
    run_module("decode", tmp_path / "model.nnc", "-o", tmp_path / "decoded.safetensors")
    original, decoded = read_checkpoint(source), read_checkpoint(tmp_path / "decoded.safetensors")
    assert list(decoded) == list(original) and decoded.dtypes == original.dtypes
    assert decoded.shapes == original.shapes
    for name in original:
        a, b = original[name], decoded[name]
        if dt.is_float(original.dtypes[name]):
            assert np.abs(a.astype(np.float64) - b).max() <= 0.05, name
        else:
            assert same(a, b), name
    for suffix in (".pt", ".npz"):
        assert cli(["decode", str(tmp_path / "model.nnc"), "-o", str(tmp_path / f"d{suffix}")]) == 0
        again = read_checkpoint(tmp_path / f"d{suffix}")
        assert set(again) == set(original)
        assert again.dtypes["embed.weight"] == ("bfloat16" if suffix == ".pt" else "float32")
        assert same(again["q.weight"], tensors["q.weight"]) and again["steps"].shape == ()
    assert "bfloat16 tensors written as float32" in capsys.readouterr().out


def test_cli_codes_a_state_dict_and_keeps_ties(tmp_path, capsys):
    assert cli(["encode", str(SHIPPED), "-o", str(tmp_path / "r.nnc"), "--use_dq"]) == 0
    assert cli(["decode", str(tmp_path / "r.nnc"), "-o", str(tmp_path / "r.pt")]) == 0
    original = torch.load(SHIPPED, weights_only=True)["state_dict"]
    decoded = torch.load(tmp_path / "r.pt", weights_only=True)
    assert list(decoded) == list(original)
    assert all(decoded[k].dtype == v.dtype and decoded[k].shape == v.shape for k, v in original.items())
    model = TiedLM()
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    assert cli(["encode", str(tmp_path / "tied.pt"), "-o", str(tmp_path / "t.nnc")]) == 0
    assert "1 tied names coded once" in capsys.readouterr().out
    assert cli(["decode", str(tmp_path / "t.nnc"), "-o", str(tmp_path / "t.pt")]) == 0
    tied = torch.load(tmp_path / "t.pt", weights_only=True)
    assert tied["output.weight"].data_ptr() == tied["tok_embeddings.weight"].data_ptr()


def test_cli_errors_for_checkpoints(tmp_path, capsys):
    source = tmp_path / "m.safetensors"
    write_checkpoint(source, {"w": np.ones((4, 4), np.float32)})
    for extra, message in ((["--bnf"], "need the torch.nn.Module"),
                           (["--tensor_id", "x"], "keep their names")):
        assert cli(["encode", str(source), "-o", str(tmp_path / "m.nnc"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    np.save(tmp_path / "w.npy", np.ones((4, 4), np.float32))
    assert cli(["encode", str(tmp_path / "w.npy"), "-o", str(tmp_path / "w.nnc"), "--opt_qp"]) == 2
    assert "model options" in capsys.readouterr().err
    (tmp_path / "m.onnx").write_bytes(b"")
    assert cli(["encode", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnc")]) == 2
    assert "unsupported input format .onnx" in capsys.readouterr().err
    assert cli(["encode", str(source), "-o", str(tmp_path / "m.nnc")]) == 0
    assert cli(["decode", str(tmp_path / "m.nnc"), "-o", str(tmp_path / "m.h5")]) == 2
    assert "unsupported output format" in capsys.readouterr().err


# -- memory ----------------------------------------------------------------------------------
PEAK = """
import sys
import numpy as np
from nnc_core import nn
from nnc_core.__main__ import main

def status(field):           # kB; VmHWM is the peak RSS since the last reset
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

nn.encode({"w": np.ones((8, 8), np.float32)})          # code paths loaded before measuring
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                                       # reset the peak to the current RSS
before = status("VmRSS")
assert main(["encode", sys.argv[1], "-o", sys.argv[1] + ".nnc", "--no_dq",
             "--threads", sys.argv[2]]) == 0
print((status("VmHWM") - before) / 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_checkpoint_coding_holds_one_tensor_at_a_time(tmp_path):
    """Peak memory (the RSS high-water mark of a fresh process, above its RSS before coding)
    for a checkpoint of four large tensors stays at that of one of them on one thread:
    tensors are read, coded and written one at a time; on two threads, at that of two."""
    r = np.random.default_rng(0)
    tensor = lambda: r.normal(0, 0.02, (1024, 1024)).astype(np.float32)   # 4 MiB each
    write_checkpoint(tmp_path / "one.safetensors", {"w0": tensor()})
    write_checkpoint(tmp_path / "four.safetensors", {f"w{i}": tensor() for i in range(4)})
    peak = {}
    # one malloc arena: a second thread's own arena keeps memory the codec has freed (up to
    # another tensor's worth, varying from run to run), which is the allocator's, not ours
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    for name, threads in (("one", 1), ("four", 1), ("four", 2)):
        result = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"{name}.safetensors"),
                                 str(threads)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                env=env)
        assert result.returncode == 0, result.stderr
        peak[name, threads] = float(result.stdout.split()[-1])
    assert peak["one", 1] > 4, peak               # the measurement sees the tensor
    assert peak["four", 1] < 1.25 * peak["one", 1] + 4, peak
    assert peak["four", 2] < 2.25 * peak["one", 1] + 4, peak
