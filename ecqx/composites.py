"""Registries of the LRP composites and canonizers ECQx offers (zennit).

Every zennit composite below lets relevance pass through BatchNorm unchanged ("bn_pass");
the variants without it apply the composite's convolution rule to BatchNorm as well.
``resnetcifar`` is a canonizer for the option-A CIFAR ResNets of :mod:`models.resnet_cifar`:
the residual ``+`` becomes zennit's ``Sum`` layer (relevance split in proportion to the two
branches' contributions) and global pooling a module, so that LRP rules apply to both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _composites():
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonPlusFlat
    from zennit.rules import AlphaBeta, ZPlus
    from zennit.types import BatchNorm
    return {
        "epsilon_plus_flat_bn_pass": lambda c: EpsilonPlusFlat(canonizers=c),
        "epsilon_plus_flat": lambda c: EpsilonPlusFlat(layer_map=[(BatchNorm, ZPlus())], canonizers=c),
        "alpha2_beta1_flat_bn_pass": lambda c: EpsilonAlpha2Beta1Flat(canonizers=c),
        "alpha2_beta1_flat": lambda c: EpsilonAlpha2Beta1Flat(layer_map=[(BatchNorm, AlphaBeta(2, 1))],
                                                              canonizers=c),
    }


COMPOSITES = ("epsilon_plus_flat_bn_pass", "epsilon_plus_flat", "alpha2_beta1_flat_bn_pass",
              "alpha2_beta1_flat")
CANONIZERS = ("none", "vgg", "resnet", "resnetcifar")


def _block_forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(self.lrp_sum(torch.stack([self.shortcut(x), out], dim=-1)))


def _cifar_resnet_forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for i in range(self.num_stages):
        x = getattr(self, f"layer{i + 1}")(x)
    return self.linear(torch.flatten(self.lrp_pool(x), 1))


def _resnetcifar():
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    from models.resnet_cifar import BasicBlock, CifarResNet

    def attributes(name, module):
        if isinstance(module, BasicBlock):
            return {"forward": _block_forward.__get__(module), "lrp_sum": Sum()}
        if isinstance(module, CifarResNet):
            return {"forward": _cifar_resnet_forward.__get__(module),
                    "lrp_pool": torch.nn.AdaptiveAvgPool2d(1)}
        return None
    return AttributeCanonizer(attributes)


def make_composite(name: str = "epsilon_plus_flat_bn_pass", canonizer: str = "none"):
    """The zennit composite ``name`` with the canonizer ``canonizer``."""
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; choose from {', '.join(COMPOSITES)}")
    if canonizer not in CANONIZERS:
        raise ValueError(f"unknown canonizer {canonizer!r}; choose from {', '.join(CANONIZERS)}")
    canonizers = []
    if canonizer == "vgg":
        from zennit.torchvision import VGGCanonizer
        canonizers = [VGGCanonizer()]
    elif canonizer == "resnet":
        from zennit.torchvision import ResNetCanonizer
        canonizers = [ResNetCanonizer()]
    elif canonizer == "resnetcifar":
        canonizers = [_resnetcifar()]
    return _composites()[name](canonizers)
