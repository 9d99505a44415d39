"""Every torchvision classification and semantic-segmentation model, by its torchvision name.

The factories are registered lazily: importing this module instantiates nothing.
``pretrained=True`` loads the model's ``DEFAULT`` weights (downloaded once into
the torch hub cache). With pretrained weights, a ``num_classes`` different from
the weights' categories replaces the classification head(s) by freshly
initialised layers, and an ``in_chans`` other than 3 replaces the first
convolution, whose pretrained kernel is summed (1 channel) or tiled and rescaled
over the new input channels. Segmentation models default to the 21 classes of
Pascal VOC and, without pretrained weights, do not download a backbone either.
"""
import functools
import inspect

import torch
from torch import nn
from torchvision import models as tvm

from .registry import WeightsDownloadError, register_model

__all__ = ["CLASSIFICATION_MODELS", "SEGMENTATION_MODELS"]

CLASSIFICATION_MODELS = tuple(tvm.list_models(module=tvm))
SEGMENTATION_MODELS = tuple(tvm.list_models(module=tvm.segmentation))


def _replace(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, child = qualname.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _reset_heads(model: nn.Module, old_classes: int, num_classes: int) -> None:
    """Replace every Linear / Conv2d with ``old_classes`` outputs (main and auxiliary heads)."""
    heads = [(n, m) for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == old_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == old_classes)]
    if not heads:
        raise ValueError(f"found no classification head with {old_classes} outputs to replace")
    for qualname, m in heads:
        if isinstance(m, nn.Linear):
            new = nn.Linear(m.in_features, num_classes, bias=m.bias is not None)
        else:
            new = nn.Conv2d(m.in_channels, num_classes, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, bias=m.bias is not None)
        _replace(model, qualname, new)


def _adapt_input_conv(model: nn.Module, in_chans: int, keep_weights: bool) -> None:
    """Replace the first 3-channel convolution by one with ``in_chans`` input channels,
    initialised from the old kernel if ``keep_weights`` (else freshly)."""
    qualname, conv = next(((n, m) for n, m in model.named_modules()
                           if isinstance(m, nn.Conv2d) and m.in_channels == 3), (None, None))
    if conv is None:
        raise ValueError("found no 3-channel input convolution to adapt to in_chans")
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode)
    if keep_weights:
        with torch.no_grad():
            w = conv.weight
            if in_chans == 1:
                new.weight.copy_(w.sum(1, keepdim=True))
            else:
                reps = -(-in_chans // 3)
                new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (3 / in_chans))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    _replace(model, qualname, new)
    if getattr(model, "transform_input", False):  # GoogLeNet / Inception rescale 3 RGB channels
        model.transform_input = False


def _download_error(name: str, weights, err: Exception) -> WeightsDownloadError:
    return WeightsDownloadError(
        f"the pretrained weights of {name!r} could not be downloaded ({type(err).__name__}: {err}). "
        f"They come from {weights.url} ({weights}) and are cached in "
        f"{torch.hub.get_dir()}/checkpoints/: without internet access, copy that file there, "
        "or pass your own checkpoint with --model_path (models.load_checkpoint), "
        "or start from a random initialisation with --model_rand_int.")


def create_torchvision_model(name: str, pretrained: bool = False, num_classes=None,
                             in_chans=None, **kwargs) -> nn.Module:
    """Build torchvision model ``name``; see the module docstring for ``pretrained``,
    ``num_classes`` and ``in_chans``. Other keyword arguments go to the torchvision builder.

    Raises:
        WeightsDownloadError: the pretrained weights could not be downloaded.
    """
    builder = tvm.get_model_builder(name)
    if name in SEGMENTATION_MODELS and num_classes is None:
        num_classes = 21
    if not pretrained:
        if "weights_backbone" in inspect.signature(builder).parameters:
            kwargs.setdefault("weights_backbone", None)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = builder(weights=None, **kwargs)
    else:
        weights = tvm.get_model_weights(name).DEFAULT
        try:
            model = builder(weights=weights, **kwargs)
        except OSError as err:  # urllib's URLError / HTTPError, socket errors
            raise _download_error(name, weights, err) from err
        old_classes = len(weights.meta["categories"])
        if num_classes is not None and num_classes != old_classes:
            _reset_heads(model, old_classes, num_classes)
    if in_chans is not None and in_chans != 3:
        _adapt_input_conv(model, in_chans, keep_weights=pretrained)
    return model


for _name in CLASSIFICATION_MODELS + SEGMENTATION_MODELS:
    _factory = functools.partial(create_torchvision_model, _name)
    _factory.__doc__ = f"torchvision's {_name} (see torchvision.models.get_model_weights('{_name}'))."
    register_model(_name)(_factory)
