"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009).

Read with torchvision from ``root/cifar-10-batches-py`` (``cifar-100-python``),
downloaded there when missing and ``download=True``. The default transform
normalises with the training set's per-channel mean and std; ``train_augment=True``
adds the augmentation of He et al. 2016 (random 32x32 crop after zero padding
by 4, horizontal flip) to the training split.
"""
import os

from torchvision import datasets as tvd
from torchvision import transforms as T

from .registry import DATA_ROOT, DatasetInfo, register_dataset

__all__ = ["cifar_transform"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def cifar_transform(mean, std, augment: bool = False):
    """ToTensor + Normalize, preceded by random crop (padding 4) and flip when ``augment``."""
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def _create(cls, folder, label, mean, std, root, split, download, transform, train_augment):
    root = root or os.path.join(DATA_ROOT, "cifar")
    train = split == "train"
    if transform is None:
        transform = cifar_transform(mean, std, train_augment and train)
    if not download and not os.path.isdir(os.path.join(root, folder)):
        raise FileNotFoundError(f"{label} not found: expected {os.path.join(root, folder)} "
                                "(pass root=, or download=True with internet access)")
    try:
        return cls(root, train=train, transform=transform, download=download)
    except OSError as err:
        raise RuntimeError(f"{label} could not be downloaded into {root} "
                           f"({type(err).__name__}: {err}); place the extracted '{folder}' folder "
                           "there and pass root=") from err
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"{label} in {os.path.join(root, folder)} is missing files "
                                f"or corrupted: {err}") from err


@register_dataset("cifar10", info=DatasetInfo(
    num_classes=10, in_chans=3, task="classification", mean=CIFAR10_MEAN, std=CIFAR10_STD,
    image_size=32, default_root=os.path.join(DATA_ROOT, "cifar")))
def cifar10(root=None, split="train", download=True, transform=None, train_augment=False):
    """CIFAR-10: 50,000 training and 10,000 test ("val" / "test") 32x32 images of 10 classes."""
    return _create(tvd.CIFAR10, "cifar-10-batches-py", "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD,
                   root, split, download, transform, train_augment)


@register_dataset("cifar100", info=DatasetInfo(
    num_classes=100, in_chans=3, task="classification", mean=CIFAR100_MEAN, std=CIFAR100_STD,
    image_size=32, default_root=os.path.join(DATA_ROOT, "cifar")))
def cifar100(root=None, split="train", download=True, transform=None, train_augment=False):
    """CIFAR-100: 50,000 training and 10,000 test ("val" / "test") 32x32 images of 100 classes."""
    return _create(tvd.CIFAR100, "cifar-100-python", "CIFAR-100", CIFAR100_MEAN, CIFAR100_STD,
                   root, split, download, transform, train_augment)
