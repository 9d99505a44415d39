"""Fashion-MNIST (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747, 2017): 60,000 + 10,000 grey 28x28 images of 10 classes.

The four IDX files are looked for, in this order, in ``root`` (or its torchvision
layout ``root/FashionMNIST/raw``), or without ``root`` in
``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``)
and under ``$NNC_DATA_ROOT/fashion_mnist``; if they are missing they are
downloaded with torchvision when ``download=True``. Files may be gzip-compressed
(``*-ubyte.gz``) or raw (``*-ubyte``). They are parsed with numpy into one uint8
tensor, so loading the training set takes a fraction of a second.
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .registry import DATA_ROOT, DatasetInfo, register_dataset

__all__ = ["FashionMNIST", "read_idx", "DEBIAN_ROOT"]

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = (0.2860,), (0.3530,)
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, as in LeCun's MNIST format) into a numpy array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = data[4 + 4 * ndim:]
    if len(payload) != expected:
        raise ValueError(f"{path}: header announces shape {shape} ({expected} bytes), "
                         f"found {len(payload)} bytes")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folders, split):
    """Paths of the image and label files of ``split`` in the first folder holding both, or None."""
    for folder in folders:
        paths = []
        for base in FILES[split]:
            found = [p for p in (os.path.join(folder, base), os.path.join(folder, base + ".gz"))
                     if os.path.isfile(p)]
            paths.append(found[0] if found else None)
        if all(paths):
            return paths
    return None


class FashionMNIST(Dataset):
    """Fashion-MNIST in memory: ``data`` (N, 28, 28) uint8 and ``targets`` (N,) int64.

    An item is ``(image, label)``. The default transform gives a float tensor of
    shape (1, 28, 28) normalised with the training set's mean and std
    (0.2860, 0.3530); a custom ``transform`` receives the uint8 tensor of shape
    (1, 28, 28). ``train_augment=True`` first pads by 2, crops 28x28 at random
    and flips horizontally with probability 1/2.
    """

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, transform=None, train_augment=False):
        self.data, self.targets = data, targets
        self.transform, self.train_augment = transform, train_augment

    @classmethod
    def from_folder(cls, folder: str, split: str, **kwargs) -> "FashionMNIST":
        """Load ``split`` ("train" or "test") from the IDX files in ``folder``."""
        paths = _find([folder], split)
        if paths is None:
            raise FileNotFoundError(
                f"no Fashion-MNIST {split} files {FILES[split]} (or .gz) in {folder}")
        images, labels = (read_idx(p) for p in paths)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
        return cls(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), **kwargs)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = self.data[index].unsqueeze(0)
        if self.train_augment:
            top, left = torch.randint(0, 5, (2,)).tolist()
            image = F.pad(image, (2, 2, 2, 2))[:, top:top + 28, left:left + 28]
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
        if self.transform is not None:
            image = self.transform(image)
        else:
            image = (image.float() / 255 - MEAN[0]) / STD[0]
        return image, int(self.targets[index])


@register_dataset("fashion_mnist", aliases=("fmnist",), info=DatasetInfo(
    num_classes=10, in_chans=1, task="classification", mean=MEAN, std=STD,
    image_size=28, default_root=DEBIAN_ROOT))
def fashion_mnist(root=None, split="train", download=True, transform=None, train_augment=False):
    """Fashion-MNIST ``split`` ("val" and "test" are the 10,000 test images); see the module docstring.

    ``train_augment`` applies to the training split only.
    """
    split = "train" if split == "train" else "test"
    own = os.path.join(DATA_ROOT, "fashion_mnist")
    folders = [root, os.path.join(root, "FashionMNIST", "raw")] if root else \
        [DEBIAN_ROOT, own, os.path.join(own, "FashionMNIST", "raw")]
    paths = _find(folders, split)
    error = None
    if paths is None and download:
        try:
            import torchvision
            torchvision.datasets.FashionMNIST(root or own, train=split == "train", download=True)
        except Exception as err:  # offline: URLError, or torchvision's RuntimeError after all mirrors
            error = err
        paths = _find(folders, split)
    if paths is None:
        where = f"in {root} (or {root}/FashionMNIST/raw)" if root else f"in {DEBIAN_ROOT} or {own}"
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files {FILES[split][0]}[.gz] and {FILES[split][1]}[.gz] "
            f"not found {where}. "
            "Either pass root= a folder holding them, install the Debian package "
            f"(apt-get install dataset-fashion-mnist, files in {DEBIAN_ROOT}), or download them "
            "with download=True and internet access"
            + (f" (the download failed: {type(error).__name__}: {error})" if error else "")) from error
    return FashionMNIST.from_folder(os.path.dirname(paths[0]), split, transform=transform,
                                    train_augment=train_augment and split == "train")
