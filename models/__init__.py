"""Model registry: ``create_model(name, num_classes=..., pretrained=..., in_chans=...)``.

Registered on import: the CIFAR ResNets of He et al. 2016 (``resnet20`` ... ``resnet1202``),
the small Fashion-MNIST segmentation network ``fmnist_segnet``, the tiny Llama causal
language model ``tinyllama`` (sizes 0-3, no pretrained weights),
every torchvision classification and segmentation model under its torchvision name
(``resnet50``, ``vit_b_16``, ``deeplabv3_resnet50``, ...), and timm models as
``"timm/<name>"`` (any name of ``timm.list_models()``). Pretrained weights that cannot be
downloaded raise :class:`WeightsDownloadError`.
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .registry import WeightsDownloadError, create_model, is_model, list_models, register_model
from . import (resnet_cifar, segnet, timm_models, tinyllama,  # noqa: F401  (registration)
               torchvision_models)

__all__ = ["register_model", "create_model", "list_models", "is_model", "WeightsDownloadError",
           "load_checkpoint", "save_checkpoint"]
