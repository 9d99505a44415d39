"""Data set registry: ``create_dataset(name, root=..., split=...)`` and ``dataset_info(name)``.

Data sets register with the :func:`register_dataset` decorator, which also records
a :class:`DatasetInfo` (classes, channels, normalisation, input size, where the data
is looked for). Names are case-insensitive and ``-`` equals ``_``; aliases are
allowed (``"fmnist"`` for ``"fashion_mnist"``).

Downloads and data without a given ``root`` go under ``$NNC_DATA_ROOT``
(default ``~/.cache/nnc/datasets``).
"""
import difflib
import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

__all__ = ["DatasetInfo", "register_dataset", "create_dataset", "list_datasets", "dataset_info",
           "DATA_ROOT", "SPLITS", "IGNORED_TARGET"]

# target id of a token that is padding: the default ``ignore_index`` of torch's cross_entropy
IGNORED_TARGET = -100
DATA_ROOT = os.path.expanduser(os.environ.get("NNC_DATA_ROOT", "~/.cache/nnc/datasets"))
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a data pipeline need to know about a data set."""

    num_classes: int
    in_chans: int
    task: str                     # "classification", "segmentation" or "language_modeling"
    mean: Tuple[float, ...]       # per-channel normalisation of inputs in [0, 1]
    std: Tuple[float, ...]
    image_size: int               # side of the default (square) model input
    default_root: str             # where the data is looked for without ``root``
    name: str = ""
    aliases: Tuple[str, ...] = ()
    needs_tokenizer: bool = False  # raw text: the factory takes the model's ``tokenizer``


_DATASETS: Dict[str, Tuple[Callable[..., Dataset], DatasetInfo]] = {}
_ALIASES: Dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_dataset(name: str, info: DatasetInfo, aliases=()):
    """Decorator registering ``factory(root, split, download, transform, **kwargs)`` as ``name``."""
    def decorator(factory):
        key = _key(name)
        if key in _ALIASES:
            raise ValueError(f"data set {name!r} is already registered")
        _DATASETS[key] = (factory, replace(info, name=key, aliases=tuple(aliases)))
        for alias in (key, *aliases):
            _ALIASES[_key(alias)] = key
        return factory
    return decorator


def _resolve(name: str) -> str:
    key = _ALIASES.get(_key(name))
    if key is None:
        close = difflib.get_close_matches(_key(name), list(_ALIASES), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown data set {name!r}{hint} (known: {', '.join(list_datasets())})")
    return key


def list_datasets() -> List[str]:
    """Sorted canonical names of the registered data sets (aliases: ``dataset_info(name).aliases``)."""
    return sorted(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a data set (name or alias); unknown names raise ``ValueError``."""
    return _DATASETS[_resolve(name)][1]


def create_dataset(name: str, root: Optional[str] = None, split: str = "train", download: bool = True,
                   transform=None, **kwargs) -> Dataset:
    """Build a data set by name.

    Args:
        name: a name from :func:`list_datasets` or an alias.
        root: folder holding the data; ``None`` uses the data set's default location(s).
        split: ``"train"``, ``"val"`` or ``"test"``. Data sets with one held-out
            split (Fashion-MNIST, CIFAR, ImageNet, VOC) serve it for both ``"val"`` and ``"test"``.
        download: download missing data where the data set allows it.
        transform: replaces the default input transform (see each data set).
        **kwargs: data-set options such as ``train_augment=True``.
    """
    factory, _ = _DATASETS[_resolve(name)]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return factory(root=root, split=split, download=download, transform=transform, **kwargs)
