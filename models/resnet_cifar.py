"""ResNets for CIFAR-10 from He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016, Sec. 4.2.

A 3x3 convolution with 16 filters is followed by three stages of ``n`` basic
blocks on feature maps of 32x32, 16x16 and 8x8 with 16, 32 and 64 filters, then
global average pooling and a fully connected layer: ``6n + 2`` weighted layers
(ResNet-20/32/44/56/110/1202 for n = 3/5/7/9/18/200). Shortcuts are option A
of the paper: identities, subsampled by 2 and zero-padded in channels where the
stage changes, so they have no parameters (ResNet-20 has 269,722 parameters).

Module names are ``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}, linear``;
the state-dict keys are those of the commonly distributed option-A CIFAR
checkpoints. Average pooling is adaptive, so 28x28 inputs (Fashion-MNIST, with
``in_chans=1``) work as well.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["CifarResNet", "BasicBlock"]


class ShortcutA(nn.Module):
    """Parameter-free shortcut (option A): stride-``s`` subsampling and zero channel padding."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between them and an identity shortcut (paper, Fig. 2)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6n + 2`` for 32x32 inputs (He et al. 2016, Sec. 4.2)."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, widths=(16, 32, 64)):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.linear = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self):
        """He initialisation (He et al. 2015) of convolutions and the classifier, BN to identity."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x)


def _create(depth: int, pretrained: bool, **kwargs) -> CifarResNet:
    if pretrained:
        raise ValueError(f"no pretrained weights ship for resnet{depth} (CIFAR); train one, "
                         "or load a checkpoint with load_checkpoint / --model_path")
    return CifarResNet(depth, **kwargs)


@register_model
def resnet20(pretrained=False, **kwargs):
    """ResNet-20 for CIFAR (He et al. 2016, Sec. 4.2), 0.27M parameters."""
    return _create(20, pretrained, **kwargs)


@register_model
def resnet32(pretrained=False, **kwargs):
    """ResNet-32 for CIFAR (He et al. 2016, Sec. 4.2), 0.46M parameters."""
    return _create(32, pretrained, **kwargs)


@register_model
def resnet44(pretrained=False, **kwargs):
    """ResNet-44 for CIFAR (He et al. 2016, Sec. 4.2), 0.66M parameters."""
    return _create(44, pretrained, **kwargs)


@register_model
def resnet56(pretrained=False, **kwargs):
    """ResNet-56 for CIFAR (He et al. 2016, Sec. 4.2), 0.85M parameters."""
    return _create(56, pretrained, **kwargs)


@register_model
def resnet110(pretrained=False, **kwargs):
    """ResNet-110 for CIFAR (He et al. 2016, Sec. 4.2), 1.7M parameters."""
    return _create(110, pretrained, **kwargs)


@register_model
def resnet1202(pretrained=False, **kwargs):
    """ResNet-1202 for CIFAR (He et al. 2016, Sec. 4.2), 19.4M parameters."""
    return _create(1202, pretrained, **kwargs)
