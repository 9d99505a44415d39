"""Registries of the LRP composites and canonizers ECQx offers (zennit).

Every zennit composite below lets relevance pass through BatchNorm unchanged ("bn_pass");
the variants without it apply the composite's convolution rule to BatchNorm as well.
Canonizers rewrite a network so that LRP rules see every operation as a module:
``vgg`` and ``resnet`` are zennit's own (torchvision VGG, ResNet and the ResNet backbones of
DeepLabV3 / FCN); ``resnetcifar`` (the option-A CIFAR ResNets of :mod:`models.resnet_cifar`)
and ``mobilenet`` (torchvision MobileNetV2/V3) are written here from zennit's public classes:
each residual ``+`` becomes zennit's ``Sum`` layer, which splits relevance in proportion to
the two branches' contributions, and functional global pooling becomes a module.
``auto`` picks the canonizer from the blocks the network is built of.
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


def _residual_sum(module, shortcut, branch):
    """The residual ``shortcut + branch`` through the block's zennit ``Sum`` layer."""
    return module.lrp_sum(torch.stack([shortcut, branch], dim=-1))


def _cifar_block_forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(_residual_sum(self, self.shortcut(x), out))


def _cifar_resnet_forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    for i in range(self.num_stages):
        x = getattr(self, f"layer{i + 1}")(x)
    return self.linear(torch.flatten(self.lrp_pool(x), 1))


def _inverted_residual_forward(self, x):
    branch = self.conv(x) if hasattr(self, "conv") else self.block(x)
    return _residual_sum(self, x, branch) if self.use_res_connect else branch


def _mobilenet_v2_forward(self, x):
    return self.classifier(torch.flatten(self.lrp_pool(self.features(x)), 1))


def _resnetcifar():
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    from models.resnet_cifar import BasicBlock, CifarResNet

    def attributes(name, module):
        if isinstance(module, BasicBlock):
            return {"forward": _cifar_block_forward.__get__(module), "lrp_sum": Sum()}
        if isinstance(module, CifarResNet):
            return {"forward": _cifar_resnet_forward.__get__(module),
                    "lrp_pool": torch.nn.AdaptiveAvgPool2d(1)}
        return None
    return [AttributeCanonizer(attributes)]


def _mobilenet():
    from torchvision.models import mobilenetv2, mobilenetv3
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attributes(name, module):
        if isinstance(module, (mobilenetv2.InvertedResidual, mobilenetv3.InvertedResidual)):
            return {"forward": _inverted_residual_forward.__get__(module), "lrp_sum": Sum()}
        if isinstance(module, mobilenetv2.MobileNetV2):
            return {"forward": _mobilenet_v2_forward.__get__(module),
                    "lrp_pool": torch.nn.AdaptiveAvgPool2d(1)}
        return None
    return [AttributeCanonizer(attributes)]


def _vgg():
    from zennit.torchvision import VGGCanonizer
    return [VGGCanonizer()]


def _resnet():
    from zennit.torchvision import ResNetCanonizer
    return [ResNetCanonizer()]


CANONIZERS = {"none": list, "vgg": _vgg, "resnet": _resnet, "resnetcifar": _resnetcifar,
              "mobilenet": _mobilenet}


def auto_canonizer(model: torch.nn.Module) -> str:
    """The canonizer for the blocks ``model`` is built of ("none" if it has no residuals)."""
    from torchvision.models import mobilenetv2, mobilenetv3, resnet, vgg

    from models.resnet_cifar import CifarResNet
    kinds = [(CifarResNet, "resnetcifar"), ((resnet.BasicBlock, resnet.Bottleneck), "resnet"),
             ((mobilenetv2.InvertedResidual, mobilenetv3.InvertedResidual), "mobilenet"),
             (vgg.VGG, "vgg")]
    for module in model.modules():
        for types, name in kinds:
            if isinstance(module, types):
                return name
    return "none"


def make_composite(name: str = "epsilon_plus_flat_bn_pass", canonizer: str = "none"):
    """The zennit composite ``name`` with the canonizer ``canonizer``."""
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; choose from {', '.join(COMPOSITES)}")
    if canonizer not in CANONIZERS:
        raise ValueError(f"unknown canonizer {canonizer!r}; choose from {', '.join(CANONIZERS)}")
    return _composites()[name](CANONIZERS[canonizer]())
