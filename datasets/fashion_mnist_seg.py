"""Fashion-MNIST as a small semantic-segmentation task: every pixel of an item gets the
item's class, every dark pixel is background.

The images are those of Fashion-MNIST (Xiao, Rasul and Vollgraf, arXiv:1708.07747, 2017),
loaded by :mod:`datasets.fashion_mnist` (same files, same search order, same
normalisation). The mask of an image is derived from the image itself::

    mask[y, x] = 0                 if image[y, x] < threshold * max(image)   (background)
    mask[y, x] = label + 1         otherwise                                 (1 .. 10)

so there are 11 classes: background and the ten clothing classes. The default
``threshold=0.1`` keeps the faint texture of an item in its foreground. The data set
ships offline (Debian package ``dataset-fashion-mnist``), which makes it the offline
stand-in for Pascal VOC in the segmentation demo (``notebooks/icml_demo.ipynb``).

An item is ``(image, mask)``: a float tensor (1, 28, 28) normalised with the
Fashion-MNIST mean and std, and an int64 tensor (28, 28) of class indices. A custom
``transform`` is called as ``transform(image, mask)`` on the uint8 image (1, 28, 28)
and the mask, and its result is returned as the item.
"""
import torch
from torch.utils.data import Dataset

from .fashion_mnist import DEBIAN_ROOT, MEAN, STD, FashionMNIST, fashion_mnist
from .registry import DatasetInfo, register_dataset

__all__ = ["FashionMNISTSegmentation", "foreground_mask", "SEG_CLASSES"]

SEG_CLASSES = ("background",) + FashionMNIST.classes


def foreground_mask(images: torch.Tensor, labels, threshold: float = 0.1) -> torch.Tensor:
    """Class masks of uint8 images (..., H, W) with item labels (broadcast over H, W).

    Pixels darker than ``threshold`` times their image's brightest pixel, and black
    pixels, are 0 (background); the others are ``label + 1``.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    peak = images.flatten(-2).amax(-1).float()[..., None, None]
    foreground = (images.float() >= threshold * peak) & (images > 0)
    return torch.where(foreground, labels[..., None, None] + 1, torch.zeros((), dtype=torch.int64))


class FashionMNISTSegmentation(Dataset):
    """Fashion-MNIST images with foreground masks (see the module docstring)."""

    classes = SEG_CLASSES

    def __init__(self, base: FashionMNIST, threshold: float = 0.1, transform=None):
        foreground_mask(torch.zeros(1, 1, dtype=torch.uint8), 0, threshold)  # validates threshold
        self.base, self.threshold, self.transform = base, threshold, transform

    @property
    def data(self) -> torch.Tensor:
        """The uint8 images (N, 28, 28)."""
        return self.base.data

    @property
    def targets(self) -> torch.Tensor:
        """The item labels (N,), 0 .. 9 (the mask classes are these plus one)."""
        return self.base.targets

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image = self.base.data[index]
        mask = foreground_mask(image, self.base.targets[index], self.threshold)
        image = image.unsqueeze(0)
        if self.transform is not None:
            return self.transform(image, mask)
        return (image.float() / 255 - MEAN[0]) / STD[0], mask


@register_dataset("fashion_mnist_seg", aliases=("fmnist_seg",), info=DatasetInfo(
    num_classes=11, in_chans=1, task="segmentation", mean=MEAN, std=STD,
    image_size=28, default_root=DEBIAN_ROOT))
def fashion_mnist_seg(root=None, split="train", download=True, transform=None, threshold=0.1,
                      **kwargs):
    """Fashion-MNIST foreground segmentation ``split`` ("val" and "test" are the 10,000 test
    images); files are found as for ``fashion_mnist``. ``threshold`` sets the background."""
    kwargs.pop("train_augment", None)  # the masks follow the image pixels; no augmentation
    if kwargs:
        raise TypeError(f"unexpected options for fashion_mnist_seg: {', '.join(sorted(kwargs))}")
    base = fashion_mnist(root=root, split=split, download=download)
    return FashionMNISTSegmentation(base, threshold=threshold, transform=transform)
