"""ImageNet-1k (ILSVRC 2012; Russakovsky et al., "ImageNet Large Scale Visual Recognition
Challenge", IJCV 2015) from an ImageFolder layout.

Expected layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``
(the validation images sorted into one folder per class). Labels are the indices
of the sorted wnids, the order of torchvision's pretrained models. Evaluation
transform: resize the shorter side to 256, center crop 224; training transform
with ``train_augment=True``: random resized crop 224 and horizontal flip. Both
normalise with the ImageNet mean and std. The data cannot be downloaded.
"""
import os

from torchvision import datasets as tvd
from torchvision import transforms as T

from .registry import DATA_ROOT, DatasetInfo, register_dataset

__all__ = ["imagenet_transform", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_transform(train: bool = False, image_size: int = 224, resize_size: int = 256):
    """The standard ImageNet transform: random resized crop + flip (train) or resize + center crop."""
    if train:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(resize_size), T.CenterCrop(image_size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@register_dataset("imagenet", info=DatasetInfo(
    num_classes=1000, in_chans=3, task="classification", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    image_size=224, default_root=os.path.join(DATA_ROOT, "imagenet")))
def imagenet(root=None, split="train", download=True, transform=None, train_augment=False,
             image_size=224, resize_size=256):
    """ImageNet ``split`` as a torchvision ``ImageFolder`` ("test" means "val").

    See the module docstring for the layout and the transforms.
    """
    root = root or os.path.join(DATA_ROOT, "imagenet")
    folder = os.path.join(root, "train" if split == "train" else "val")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"ImageNet {split} folder {folder} not found: expected root/train/<wnid>/*.JPEG and "
            "root/val/<wnid>/*.JPEG (validation images sorted into class folders); ImageNet cannot "
            "be downloaded automatically (https://image-net.org)")
    if transform is None:
        transform = imagenet_transform(train_augment and split == "train", image_size, resize_size)
    return tvd.ImageFolder(folder, transform=transform)
