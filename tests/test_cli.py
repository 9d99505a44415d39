"""Tests of the command line interface (python -m nnc_core encode|decode|info)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnc_core.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((Path(__file__).parent / "data" / "nnc_vectors.json").read_text())
VECTOR_IDS = [v["name"] for v in VECTORS]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def write_vector(tmp_path: Path, vector: dict) -> Path:
    path = tmp_path / f"{vector['name']}.nnc"
    path.write_bytes(bytes.fromhex(vector["bitstream_hex"]))
    return path


def ndu_of(vector: dict) -> dict:
    return next(u for u in vector["units"] if u["nnr_unit_type"] == 5)


# -- info ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_info_text(vector, tmp_path, capsys):
    path = write_vector(tmp_path, vector)
    status, out, err = run_cli(capsys, "info", path)
    assert status == 0 and err == ""
    assert f"{vector['bitstream_len']} bytes, {len(vector['units'])} units" in out
    expected = ndu_of(vector)
    ndu_line = next(line for line in out.splitlines() if " NDU " in line)
    assert f"offset {expected['offset']:>8}  size {expected['size']:>8}" in ndu_line
    assert f"dims {expected['dims']}" in ndu_line and f"dq {expected['dq_flag']}" in ndu_line
    assert ("FLOAT" if expected["payload_type"] == 1 else "INT") in ndu_line
    if expected["qp"] is not None:
        assert f"qp {expected['qp']}" in ndu_line
    else:
        assert " qp " not in ndu_line
    assert f"payload {expected['size'] - expected['header_bytes']} bytes" in out
    assert f"depth {expected['put_node_depth']}" in out
    if "codebook" in expected:
        assert f"codebook: size {len(expected['codebook'])}" in out
    if "entry_points" in expected:
        assert f"{len(expected['entry_points'])} entry points" in out
    for name in ("STR", "MPS", "TPL"):
        assert f" {name} " in out


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_info_json(vector, tmp_path, capsys):
    path = write_vector(tmp_path, vector)
    status, out, _ = run_cli(capsys, "info", path, "--json")
    assert status == 0
    report = json.loads(out)
    assert report["size"] == vector["bitstream_len"]
    units = report["units"]
    assert [(u["type"], u["offset"], u["size"]) for u in units] == [
        (["STR", "MPS", "LPS", "TPL", "QNT", "NDU"][u["nnr_unit_type"]], u["offset"], u["size"])
        for u in vector["units"]]
    assert units[0]["profile"] == 1
    assert (units[1]["qp_density"], units[1]["qp_base"]) == (2, 0)
    ndu, expected = units[-1], ndu_of(vector)
    assert ndu["qp"] == expected["qp"]
    assert ndu["payload_type"] == ["INT", "FLOAT"][expected["payload_type"]]
    assert ndu["dims"] == expected["dims"]
    assert ndu["dq_flag"] == expected["dq_flag"]
    assert ndu["header_size"] == expected["header_bytes"]
    assert ndu["payload_bytes"] == expected["size"] - expected["header_bytes"]
    assert ndu["names"] == [vector["args"].get("tensor_id", "0")]
    assert ndu["put_node_depth"] == expected["put_node_depth"]
    assert ndu["temporal_context_modeling"] == expected.get("temporal_context_modeling_flag", 0)
    assert ndu["cabac_unary_length"] == 11
    assert [[e["bit_offset"], e["value"], e["dq_state"]] for e in ndu["entry_points"]] == \
        expected.get("entry_points", [])
    if "codebook" in expected:
        assert ndu["codebook"] == {"size": len(expected["codebook"]),
                                   "zero_offset": expected["CbZeroOffset"],
                                   "egk": expected["codebook_egk"],
                                   "values": expected["codebook"]}
    else:
        assert ndu["codebook"] is None


# -- errors and help -----------------------------------------------------------------------------
def test_errors_are_one_line(tmp_path, capsys):
    data = bytes.fromhex(VECTORS[0]["bitstream_hex"])
    truncated = tmp_path / "cut.nnc"
    truncated.write_bytes(data[:30])
    cases = [("info", tmp_path / "missing.nnc"), ("info", truncated),
             ("decode", tmp_path / "missing.nnc", "-o", tmp_path / "x.npy"),
             ("encode", tmp_path / "missing.npy", "-o", tmp_path / "x.nnc")]
    for argv in cases:
        status, out, err = run_cli(capsys, *argv)
        assert status == 2, argv
        assert err.startswith("nnc: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    status, _, err = run_cli(capsys, "info", truncated)
    assert "unit 3" in err and "byte 18" in err
    wrong = tmp_path / "x.txt"
    wrong.write_text("1 2 3")
    status, _, err = run_cli(capsys, "encode", wrong, "-o", tmp_path / "x.nnc")
    assert status == 2 and "unsupported input format" in err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "encode" in out and "info" in out
    with pytest.raises(SystemExit) as exc:
        main(["encode", "--help"])
    out = capsys.readouterr().out
    assert "--qp" in out and "--no_dq" in out and "--scan_order" in out


def test_module_entry_point(tmp_path):
    path = write_vector(tmp_path, VECTORS[0])
    result = subprocess.run([sys.executable, "-m", "nnc_core", "info", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "qp -32" in result.stdout


# -- encode / decode (need the tensor codec) -----------------------------------------------------
@pytest.fixture
def codec():
    return pytest.importorskip("nnc_core.tensor")


def test_encode_decode_npy(codec, tmp_path, capsys):
    x = np.random.default_rng(0).normal(0, 0.05, (12, 20)).astype(np.float32)
    source, stream, decoded = tmp_path / "x.npy", tmp_path / "x.nnc", tmp_path / "y.npy"
    np.save(source, x)
    status, out, err = run_cli(capsys, "encode", source, "-o", stream)
    assert status == 0, err
    bitstream = stream.read_bytes()
    assert bitstream == codec.encode(x)
    assert f"{len(bitstream)} bytes" in out and "bits per element" in out
    status, out, err = run_cli(capsys, "decode", stream, "-o", decoded)
    assert status == 0, err
    y = np.load(decoded)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, codec.decode(codec.encode(x)))


def test_encode_decode_pt_with_options(codec, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 0.1, (20, 9)).astype(np.float32))
    source, stream, decoded = tmp_path / "x.pt", tmp_path / "x.nnc", tmp_path / "y.pt"
    torch.save(x, source)
    status, _, err = run_cli(capsys, "encode", source, "-o", stream, "--qp", "-40", "--no_dq",
                             "--scan_order", "1", "--tensor_id", "fc.weight")
    assert status == 0, err
    options = dict(qp=-40, use_dq=False, scan_order=1, tensor_id="fc.weight")
    assert stream.read_bytes() == codec.encode(x.numpy(), **options)
    status, out, _ = run_cli(capsys, "info", stream, "--json")
    ndu = json.loads(out)["units"][-1]
    assert (ndu["qp"], ndu["dq_flag"], ndu["scan_order"], ndu["names"]) == \
        (-40, 0, 1, ["fc.weight"])
    status, _, err = run_cli(capsys, "decode", stream, "-o", decoded)
    assert status == 0, err
    y = torch.load(decoded, weights_only=True)
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (20, 9)
    np.testing.assert_array_equal(y.numpy(), codec.decode(codec.encode(x.numpy(), **options)))


# -- threads -------------------------------------------------------------------------------------
def test_threads_give_the_same_stream(tmp_path, capsys):
    rng = np.random.default_rng(4)
    arrays = {f"layer{i}.weight": (rng.standard_normal((24, 16)) * 0.05).astype(np.float32)
              for i in range(6)}
    arrays.update({f"layer{i}.bias": (rng.standard_normal(24) * 0.05).astype(np.float32)
                   for i in range(6)})
    src = tmp_path / "model.npz"
    np.savez(src, **arrays)
    streams = []
    for threads in ("1", "3"):
        out = tmp_path / f"model_{threads}.nnc"
        status, _, err = run_cli(capsys, "encode", src, "-o", out, "--threads", threads)
        assert status == 0, err
        streams.append(out.read_bytes())
    assert streams[0] == streams[1]
    decoded = tmp_path / "decoded.npz"
    status, _, err = run_cli(capsys, "decode", tmp_path / "model_1.nnc", "-o", decoded,
                             "--threads", "2")
    assert status == 0, err
    with np.load(decoded) as z:
        assert sorted(z.files) == sorted(arrays)


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_thread_counts_are_refused(tmp_path, capsys, bad):
    src = tmp_path / "x.npy"
    np.save(src, np.ones((4, 4), np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(src), "-o", str(tmp_path / "x.nnc"), "--threads", bad])
    assert exit_info.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_info_of_a_thousand_tensors_is_fast(tmp_path):
    """The header layer is cheap: listing a 1,000-NDU stream (new interpreter included)
    takes well under a second."""
    import time
    from nnc_core import nn as nnc_nn
    rng = np.random.default_rng(1)
    bs = nnc_nn.encode({f"t{i}.bias": (rng.standard_normal(32) * 0.05).astype(np.float32)
                        for i in range(1000)})
    path = tmp_path / "many.nnc"
    path.write_bytes(bs)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nnc_core", "info", str(path)],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" NDU ") == 1000
    assert elapsed < 3.0          # about 0.4 s on an idle core; generous for shared machines
