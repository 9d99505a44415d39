"""main.py --model hf:<folder> --dataset text: a causal language model of Hugging Face
transformers, read from a local folder, is evaluated (perplexity, the same number as the
model's own loss) before and after NNC coding and next to the rounding baselines."""
import json
import math
import random

import numpy as np
import pytest
import torch

import transformers  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

import datasets  # noqa: E402
import main  # noqa: E402
from datasets.text import TextWindows  # noqa: E402
from models.hf import load_causal_lm, load_hf  # noqa: E402

WORDS = "the a cell tower sends data to car and ping is low high snr good bad".split()
WINDOW = 24


def tiny_llama_folder(folder) -> None:
    """A two-layer Llama with tied embeddings and a word-level tokenizer that adds BOS."""
    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                                     unk_token="<unk>")
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    tiny_llama_folder(root / "tiny")
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(30))
    (root / "test.txt").write_text(text)
    return root


def reference_perplexity(folder, text: str) -> float:
    """exp of the mean next-token loss that transformers itself computes per window."""
    model, encode = load_causal_lm(load_hf(f"hf:{folder}"))
    ids = torch.tensor(encode(text))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ids.numel() - 1, WINDOW - 1):
            window = ids[start:start + WINDOW][None]
            targets = window.numel() - 1
            total += model(window, labels=window).loss.item() * targets
            count += targets
    return math.exp(total / count)


def test_text_windows_predict_every_token_once(llm):
    data = TextWindows(str(llm / "test.txt"), lambda text: list(range(len(text.split()))), 5)
    tokens = len((llm / "test.txt").read_text().split())
    targets = torch.cat([y for _, y in data])
    real = targets[targets != datasets.IGNORED_TARGET]
    assert real.tolist() == list(range(1, tokens))     # each token after the first, once
    x, y = data[1]
    assert x.tolist() == [4, 5, 6, 7] and y.tolist() == [5, 6, 7, 8]


def test_text_data_set_errors(llm, tmp_path):
    encode = str.split
    with pytest.raises(ValueError, match="test split"):
        datasets.create_dataset("text", root=str(llm / "test.txt"), split="train", tokenizer=encode)
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        datasets.create_dataset("text", root=str(tmp_path), split="test", tokenizer=encode)
    with pytest.raises(ValueError, match="model's tokenizer"):
        datasets.create_dataset("text", root=str(llm / "test.txt"), split="test")
    (tmp_path / "wiki.valid.raw").write_text("a b c")
    found = datasets.create_dataset("text", root=str(tmp_path), split="val",
                                    tokenizer=lambda t: [1, 2, 3])
    assert found.path.endswith("wiki.valid.raw") and len(found) == 1


def test_causal_lm_perplexity_before_and_after_coding(llm, tmp_path):
    results = main.main(["--model", f"hf:{llm / 'tiny'}", "--dataset", "text", "--dataset_path",
                         str(llm / "test.txt"), "--max_seq_len", str(WINDOW), "--qp_sweep", "-38",
                         "-20", "--use_dq", "--baselines", "--results", str(tmp_path),
                         "--no-verbose"])
    assert results == 0
    report = json.loads((tmp_path / "hf_tiny_results.json").read_text())
    fine, coarse = report["runs"]
    original = fine["original_metrics"]
    expected = reference_perplexity(llm / "tiny", (llm / "test.txt").read_text())
    assert original["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert 1 < original["perplexity"] < len(WORDS) * 2     # an untrained model: near uniform
    assert coarse["bits_per_param"] < fine["bits_per_param"] < 16
    # tied embeddings are coded once: 19,168 distinct parameters, 19,744 counting lm_head
    assert fine["params"] == 19168
    assert abs(fine["perplexity"] - original["perplexity"]) < 0.01 * original["perplexity"]
    methods = {b["method"]: b for b in report["baselines"]}
    assert methods["float16"]["bits_per_param"] == 16
    assert methods["int4 RTN"]["bits_per_param"] < methods["int8 RTN"]["bits_per_param"]
    assert all(np.isfinite(b["perplexity"]) for b in methods.values())
    assert (tmp_path / fine["bitstream"]).stat().st_size == fine["compressed_bytes"]


def test_text_needs_a_model_with_a_tokenizer(llm, tmp_path):
    with pytest.raises(SystemExit, match="model's tokenizer"):
        main.main(["--model", "resnet20", "--dataset", "text", "--dataset_path",
                   str(llm / "test.txt"), "--results", str(tmp_path), "--model_rand_int"])
    bare = next((llm / "tiny").glob("*.safetensors"))
    with pytest.raises(SystemExit, match="no architecture"):
        main.main(["--model", f"hf:{bare}", "--dataset", "text", "--dataset_path",
                   str(llm / "test.txt"), "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="--model_path loads weights"):
        main.main(["--model", f"hf:{llm / 'tiny'}", "--dataset", "text", "--model_path", "x.pt",
                   "--results", str(tmp_path)])
