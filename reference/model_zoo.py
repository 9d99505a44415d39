"""Small PyTorch models for model-level conformance tests.

Imported both by the project's tests (``from reference import model_zoo``) and by
``reference/driver.py`` inside the reference environment, so it uses nothing but torch.
Every model is built deterministically from a seed, in eval mode, with BatchNorm statistics
that are not the trivial 0/1.
"""
import torch
from torch import nn


class ConvBnFc(nn.Module):
    """conv (with bias) -> BatchNorm -> ReLU -> linear."""

    def __init__(self, conv_bias=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class SmallResNet(nn.Module):
    """Two bias-free conv+BN stages with a residual connection, an int32 buffer, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.register_buffer("steps", torch.arange(5, dtype=torch.int32))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(y)))
        return self.head(x.mean((2, 3)))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and a feed-forward layer, each with a residual connection."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class TinyTransformer(nn.Module):
    """Token embedding, two transformer blocks, a final LayerNorm and a vocabulary head."""

    def __init__(self, vocab=40, dim=16, heads=2, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


ZOO = {
    "conv_bn_fc": ConvBnFc,
    "conv_nobias_bn_fc": lambda: ConvBnFc(conv_bias=False),
    "small_resnet": SmallResNet,
    "tiny_transformer": TinyTransformer,
}
INPUT_SHAPES = {"conv_bn_fc": (2, 3, 6, 6), "conv_nobias_bn_fc": (2, 3, 6, 6),
                "small_resnet": (2, 1, 8, 8)}


def build(name, seed=0):
    """The model ``name`` with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ZOO[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):          # not the trivial 1/0 either
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model.eval()
