"""run.py compress: every shipped config on the shipped Fashion-MNIST ResNet-20 (a few test
batches), with ONNX export run in onnxruntime and the NNC file reloaded (the integer levels
of quantized models, exact; sparse or pruned float models quantized by NNC)."""
import json
from pathlib import Path

import pytest

import run

ROOT = Path(__file__).resolve().parents[1]
EVAL_BATCHES = 4                       # 256 test images: one image is 0.39 points
# config -> extra flags of its smoke run (fine-tuning where the method needs it)
SMOKE = {"fmnist_resnet20_int8": [],
         "fmnist_resnet20_int4": ["--epochs", "1", "--max_batches", "3"],
         "fmnist_resnet20_mixed": [],
         # two epochs: the staged schedule binarizes the weights from the second
         "fmnist_resnet20_xnor": ["--epochs", "2", "--max_batches", "2"],
         "fmnist_resnet20_dorefa": ["--epochs", "2", "--max_batches", "2"],
         "fmnist_resnet20_magnitude": ["--epochs", "2", "--max_batches", "2"],
         "fmnist_resnet20_rb": ["--epochs", "1", "--max_batches", "2"],
         # the second epoch raises the pruned share from 10 % towards 40 %
         "fmnist_resnet20_filter_pruning": ["--epochs", "2", "--max_batches", "2"],
         "fmnist_resnet20_magnitude_int8": [],
         "fmnist_resnet20_pruning_int8": []}
QUANTIZED = {"fmnist_resnet20_int8", "fmnist_resnet20_int4", "fmnist_resnet20_mixed",
             "fmnist_resnet20_xnor", "fmnist_resnet20_dorefa", "fmnist_resnet20_magnitude_int8",
             "fmnist_resnet20_pruning_int8"}
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("fmnist_resnet20_*.json"))


def compress(tmp_path, *flags):
    out = tmp_path / "out"
    assert run.main(["compress", "--results", str(out), "--max_eval_batches", str(EVAL_BATCHES),
                     "--latency_runs", "3", "--batch_size", "64", "--no-verbose", *flags]) == 0
    return json.loads(next(out.glob("*.json")).read_text())


def test_every_config_has_a_smoke_run():
    assert set(CONFIGS) <= set(SMOKE), f"add {set(CONFIGS) - set(SMOKE)} to SMOKE"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_end_to_end(name, tmp_path):
    result = compress(tmp_path, "--config", str(ROOT / "configs" / f"{name}.json"), *SMOKE[name])
    for key in ("accuracy_before", "accuracy_after", "accuracy_drop", "onnx_bytes", "nnc_bytes",
                "float32_bytes", "latency_ms", "latency_ms_float32", "layers"):
        assert key in result, key
    assert result["accuracy_before"] > 90
    assert result["accuracy_drop"] == pytest.approx(result["accuracy_before"] - result["accuracy_after"])
    one_image = 100 / (64 * EVAL_BATCHES)
    assert abs(result["accuracy_onnx"] - result["accuracy_after"]) <= 2 * one_image
    out = tmp_path / "out"
    assert (out / result["onnx"]).exists() and (out / result["nnc"]).exists()
    if name in QUANTIZED:
        assert result["nnc_exact"] is True
        assert result["accuracy_nnc"] == result["accuracy_after"]        # the file is the model
        assert result["nnc_bytes"] < result["onnx_bytes"] < result["onnx_float32_bytes"]
        assert result["onnx_bytes"] < result["float32_bytes"] / 2.5      # 8-bit containers at most
        assert all(1 <= row["weight_bits"] <= 32 for row in result["layers"])
        assert Path(result["plot"]).exists()
    else:                                 # a float result, coded by NNC at qp -32
        assert "nnc_exact" not in result and result["nnc_coding"] == "NNC qp -32"
        assert abs(result["accuracy_nnc"] - result["accuracy_after"]) <= 4 * one_image
        assert result["nnc_bytes"] < result["float32_bytes_after"] / 5
    if "pruning" in name:                 # the pruned filters are gone from the saved model
        assert result["float32_bytes_after"] < 0.8 * result["float32_bytes"]
        assert result["onnx_float32_bytes"] > result["onnx_bytes"] or name in QUANTIZED
        assert all(row["kept_filters"] < row["filters"] for row in result["layers"] if "filters" in row)
    if "magnitude" in name:               # RB needs more than a smoke run's steps to prune
        assert result["weight_sparsity"] > 0.2


def test_int8_post_training_keeps_accuracy(tmp_path):
    result = compress(tmp_path)
    assert result["algorithms"] == ["quantization"] and result["epochs"] == 0
    assert result["accuracy_drop"] <= 0.5 + 1e-9
    assert {row["weight_bits"] for row in result["layers"]} == {8}


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"compression": {"algorithm": "quantization", "weight": {}}}))
    with pytest.raises(SystemExit, match="unknown key 'weight'"):
        run.main(["compress", "--config", str(bad), "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="does not exist"):
        run.main(["compress", "--config", str(tmp_path / "none.json"), "--results", str(tmp_path)])
