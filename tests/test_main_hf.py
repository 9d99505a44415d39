"""main.py --model hf:<path>: a local Hugging Face checkpoint is coded and reported per
tensor, without evaluation; a missing path is a clear offline error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnc_core import nn as nnc_nn
from nnc_core.checkpoints import INDEX, read_checkpoint, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def small_llm(folder: Path) -> dict:
    """A two-shard bfloat16 checkpoint with config.json, as Hugging Face writes one."""
    r = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": r.normal(0, 0.02, (64, 32)),
               "model.layers.0.self_attn.q_proj.weight": r.normal(0, 0.02, (32, 32)),
               "model.layers.0.input_layernorm.weight": np.ones(32),
               "model.norm.weight": np.ones(32)}
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": list(tensors)[:2],
              "model-00002-of-00002.safetensors": list(tensors)[2:]}
    for shard, names in shards.items():
        write_checkpoint(folder / shard, {n: tensors[n] for n in names},
                         {n: "bfloat16" for n in names})
    (folder / INDEX).write_text(json.dumps(
        {"weight_map": {n: s for s, names in shards.items() for n in names}}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return tensors


def test_hf_folder_is_coded_and_reported_without_evaluation(tmp_path):
    small_llm(tmp_path / "tiny-llm")
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "main.py", "--model", f"hf:{tmp_path / 'tiny-llm'}",
                             "--qp_sweep", "-38", "-30", "--results", str(tmp_path / "out")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No evaluation" in result.stdout and "rel. error" in result.stdout
    report = json.loads((tmp_path / "out" / "hf_tiny-llm_results.json").read_text())
    assert report["evaluated"] is False and report["architecture"] == "LlamaForCausalLM"
    fine, coarse = report["runs"]
    assert coarse["compressed_bytes"] < fine["compressed_bytes"]
    assert fine["relative_error"] < coarse["relative_error"] < 0.2
    rows = {r["name"]: r for r in fine["tensors"]}
    assert set(rows) == set(read_checkpoint(tmp_path / "tiny-llm"))
    assert rows["model.embed_tokens.weight"]["dtype"] == "bfloat16"
    assert 0 < rows["model.embed_tokens.weight"]["bits_per_param"] < 16
    bitstream = (tmp_path / "out" / fine["bitstream"]).read_bytes()
    assert len(bitstream) == fine["compressed_bytes"]
    decoded, dtypes = nnc_nn.decode_with_dtypes(bitstream)
    assert set(dtypes.values()) == {"bfloat16"} and set(decoded) == set(rows)


def test_missing_hf_path_is_an_offline_error(tmp_path):
    import main
    with pytest.raises(SystemExit) as error:
        main.main(["--model", f"hf:{tmp_path / 'meta-llama/Llama-3-8B'}", "--results",
                   str(tmp_path / "out")])
    message = str(error.value)
    assert "does not exist" in message and "nothing is downloaded" in message
    assert "config.json and *.safetensors" in message
