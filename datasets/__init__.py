"""Data set registry: ``create_dataset(name, root=..., split=..., download=..., transform=...)``.

Registered on import: ``fashion_mnist`` (alias ``fmnist``), its segmentation variant
``fashion_mnist_seg`` (alias ``fmnist_seg``), ``cifar10``, ``cifar100``,
``imagenet``, ``voc2012`` (alias ``voc``) and the token records ``v2x`` (alias
``berlin_v2x``; without a root, a synthetic stand-in) and plain ``text`` (alias ``wikitext2``;
tokenized by the model's tokenizer). ``dataset_info(name)`` gives the number
of classes, channels, task, normalisation, input size and default location.
"""
from .registry import IGNORED_TARGET, DatasetInfo, create_dataset, dataset_info, list_datasets, register_dataset
from . import (cifar, fashion_mnist, fashion_mnist_seg, imagenet,  # noqa: F401  (registration)
               text, v2x, voc)
from .voc import segmentation_collate

__all__ = ["DatasetInfo", "register_dataset", "create_dataset", "list_datasets", "dataset_info",
           "segmentation_collate", "IGNORED_TARGET"]
