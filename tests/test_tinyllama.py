"""The tiny Llama (models/tinyllama.py): sizes, tying, causality, GQA, RoPE, greedy decoding."""
import pytest
import torch

import models
from models.tinyllama import (TLM_SIZES, TLMConfig, TinyLlama, apply_rope, ffn_hidden_dim,
                              rope_tables)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def small(**overrides):
    torch.manual_seed(0)
    fields = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=16)
    return TinyLlama(TLMConfig(**{**fields, **overrides})).eval()


@pytest.mark.parametrize("size, count", [(0, 409_472), (1, 10_027_584), (2, 31_753_216),
                                         (3, 85_135_872)])
def test_parameter_counts(size, count):
    with torch.device("meta"):  # no memory for the large sizes
        model = models.create_model("tinyllama", size=size)
    assert n_params(model) == count
    dim, n_layers, n_heads, n_kv_heads = TLM_SIZES[size]
    assert (model.cfg.dim, model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads,
            model.cfg.vocab_size) == (dim, n_layers, n_heads, n_kv_heads, 237)


def test_ffn_hidden_width_is_llama_rule_with_multiple_of_32():
    assert [ffn_hidden_dim(d) for d in (64, 288, 512, 768)] == [192, 768, 1376, 2048]


def test_forward_shape_structure_and_tied_embedding():
    model = models.create_model("tinyllama", num_classes=237, in_chans=0).eval()
    assert model(torch.randint(0, 237, (2, 11))).shape == (2, 11, 237)
    state = model.state_dict()
    assert state["output.weight"].data_ptr() == state["tok_embeddings.weight"].data_ptr()
    assert model.output.weight is model.tok_embeddings.weight
    assert not any("bias" in k or "rope" in k for k in state)
    assert model.layers[0].attention.wk.weight.shape == (32, 64)  # 4 kv heads of width 8
    assert model.layers[0].feed_forward.w1.weight.shape == (192, 64)


def test_causal_masking():
    model = small()
    tokens = torch.randint(0, 50, (1, 12))
    changed = tokens.clone()
    changed[0, 7] = (tokens[0, 7] + 1) % 50
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_grouped_query_attention_shares_each_kv_head_with_consecutive_query_heads():
    gqa = small(n_kv_heads=2)
    mha = small(n_kv_heads=4)
    state = gqa.state_dict()
    for i in range(2):
        for name in ("wk", "wv"):  # kv head j serves query heads 2j and 2j+1
            w = state[f"layers.{i}.attention.{name}.weight"].view(2, 8, 32)
            state[f"layers.{i}.attention.{name}.weight"] = w.repeat_interleave(2, 0).reshape(32, 32)
    mha.load_state_dict(state)
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        assert torch.allclose(gqa(tokens), mha(tokens), atol=1e-5)
    assert small(n_kv_heads=1)(tokens).shape == (2, 9, 50)


def test_rope_scores_depend_on_relative_position_only():
    cos, sin = rope_tables(8, 32, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def at(x, pos):
        return apply_rope(x.view(1, 1, 1, 8), cos[pos:pos + 1], sin[pos:pos + 1]).flatten()

    def score(m, n):
        return at(q, m) @ at(k, n)

    assert torch.allclose(score(3, 1), score(20, 18), atol=1e-5)
    assert torch.allclose(score(0, 0), q @ k, atol=1e-5)


def test_config_and_factory_errors():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        TLMConfig(dim=64, n_layers=1, n_heads=8, n_kv_heads=3)
    with pytest.raises(ValueError, match="size must be one of"):
        models.create_model("tinyllama", size=4)
    with pytest.raises(ValueError, match="in_chans"):
        models.create_model("tinyllama", in_chans=3)
    with pytest.raises(models.WeightsDownloadError, match="no published pretrained weights"):
        models.create_model("tinyllama", pretrained=True)
    with pytest.raises(ValueError, match="longer than max_seq_len"):
        small()(torch.zeros(1, 17, dtype=torch.long))
    custom = models.create_model("tinyllama", size=0, n_layers=2, vocab_size=100)
    assert (custom.cfg.n_layers, custom.cfg.vocab_size) == (2, 100)


def test_generate_is_greedy_and_deterministic():
    model = small()
    prompt = torch.randint(0, 50, (2, 5))
    out = model.generate(prompt, 6)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    assert torch.equal(out, model.generate(prompt, 6))
    tokens = prompt
    with torch.no_grad():
        for _ in range(6):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, tokens)


def test_generate_stops_and_crops_to_max_seq_len():
    model = small()
    prompt = torch.randint(0, 50, (1, 14))
    out = model.generate(prompt, 10)  # runs past max_seq_len 16: the window slides
    assert out.shape == (1, 24)
    stop = int(out[0, 14])
    stopped = model.generate(prompt, 10, stop_token=stop)
    assert stopped.shape == (1, 15) and int(stopped[0, -1]) == stop
