"""Tiny Llama (TLM): a small decoder-only causal language model in the Llama architecture.

The architecture is that of Touvron et al., "LLaMA: Open and Efficient Foundation Language
Models", 2023: pre-normalisation with RMSNorm (Zhang and Sennrich 2019, eps 1e-5), rotary
position embeddings (Su et al., "RoFormer: Enhanced Transformer with Rotary Position
Embedding", 2021) applied to queries and keys, grouped-query attention (Ainslie et al., "GQA:
Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", 2023:
``n_kv_heads`` key/value heads, each shared by ``n_heads / n_kv_heads`` consecutive query
heads), a SwiGLU feed-forward network (Shazeer, "GLU Variants Improve Transformer", 2020) and
no biases. The FFN hidden width is Llama's rule ``int(2 * 4 * dim / 3)`` rounded up to a
multiple of 32, i.e. ``32 * ceil(int(8 * dim / 3) / 32)``. Input and output embeddings are
tied: ``output.weight`` is the ``tok_embeddings.weight`` parameter, so the state dict holds
both names on one storage and :meth:`~torch.nn.Module.parameters` yields it once.

The sizes of :data:`TLM_SIZES` are those of the federated V2X use case (vocabulary 237, a
SentencePiece model of the telemetry text); their parameter counts, tied embedding counted
once, are 409,472 (size 0), 10,027,584 (1), 31,753,216 (2) and 85,135,872 (3).

Module names follow Meta's Llama code: ``tok_embeddings``, ``layers.{i}.attention_norm``,
``layers.{i}.attention.{wq,wk,wv,wo}``, ``layers.{i}.ffn_norm``,
``layers.{i}.feed_forward.{w1,w2,w3}``, ``norm``, ``output``. The rotary tables are
non-persistent buffers, so the state dict holds only trained tensors.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import WeightsDownloadError, register_model

__all__ = ["TLMConfig", "TLM_SIZES", "TinyLlama", "ffn_hidden_dim", "tinyllama"]

# size -> (dim, n_layers, n_heads, n_kv_heads)
TLM_SIZES = {0: (64, 8, 8, 4), 1: (288, 10, 6, 6), 2: (512, 10, 8, 8), 3: (768, 12, 12, 12)}


@dataclass
class TLMConfig:
    """Hyper-parameters of a :class:`TinyLlama`."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int = 237
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even width")
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads "
                             f"{self.n_kv_heads}")


def ffn_hidden_dim(dim: int, multiple_of: int = 32) -> int:
    """SwiGLU hidden width: two thirds of 4 * dim (same compute as a 4 * dim GELU FFN),
    rounded up to ``multiple_of``."""
    return multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def rope_tables(head_dim: int, max_seq_len: int, theta: float):
    """cos and sin of the rotation angles ``pos * theta^(-2i/head_dim)``, shape [T, head_dim/2]."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate the pairs (x[2i], x[2i+1]) of ``x`` [B, H, T, D] by the angles of each position."""
    even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary embeddings on queries and keys."""

    def __init__(self, cfg: TLMConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # query head h attends with key/value head h // (n_heads / n_kv_heads)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = ffn_hidden_dim(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then + ffn(norm(.))."""

    def __init__(self, cfg: TLMConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class TinyLlama(nn.Module):
    """Llama-style causal language model: ``forward(tokens [B, T]) -> logits [B, T, vocab]``."""

    def __init__(self, cfg: TLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        """N(0, 0.02) weights; the projections into the residual stream (``wo``, ``w2``) scaled
        by 1 / sqrt(2 * n_layers) so that the stream's variance does not grow with depth."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=residual_std if name.endswith(("wo.weight", "w2.weight"))
                                else 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_seq_len "
                             f"{self.cfg.max_seq_len}")
        x = self.tok_embeddings(tokens)
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.output(self.norm(x))

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int,
                 stop_token: int | None = None) -> torch.Tensor:
        """Greedy continuation of ``tokens`` [B, T]: returns [B, T + n] with n <= max_new_tokens.

        Each step runs the last ``max_seq_len`` tokens through the model and appends the most
        likely next token. A row that has produced ``stop_token`` repeats it from then on;
        generation ends early once every row has produced it.
        """
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.cfg.max_seq_len:])[:, -1]
            nxt = logits.argmax(-1)
            if stop_token is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
                done |= nxt == stop_token
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if done.all():
                break
        return tokens


@register_model
def tinyllama(pretrained: bool = False, size: int = 0, vocab_size: int = 237,
              max_seq_len: int = 256, num_classes: int | None = None,
              in_chans: int | None = None, **kwargs) -> TinyLlama:
    """Tiny Llama of size 0-3 (:data:`TLM_SIZES`); ``kwargs`` override :class:`TLMConfig` fields.

    ``num_classes`` (the registry's name for the number of outputs) sets the vocabulary when
    given; ``in_chans`` must be 0 or None, the model reads token ids.
    """
    if pretrained:
        raise WeightsDownloadError(
            "tinyllama has no published pretrained weights; train it (e.g. on the v2x data set) "
            "and load the checkpoint with --model_path, or start from --model_rand_int")
    if in_chans:
        raise ValueError(f"tinyllama reads token ids, in_chans must be 0, got {in_chans}")
    if size not in TLM_SIZES:
        raise ValueError(f"tinyllama size must be one of {sorted(TLM_SIZES)}, got {size!r}")
    dim, n_layers, n_heads, n_kv_heads = TLM_SIZES[size]
    fields = dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  vocab_size=num_classes or vocab_size, max_seq_len=max_seq_len)
    return TinyLlama(TLMConfig(**{**fields, **kwargs}))
