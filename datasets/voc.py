"""Pascal VOC 2012 semantic segmentation (Everingham et al., "The PASCAL Visual Object Classes
Challenge: A Retrospective", IJCV 2015): 21 classes (background + 20 objects), 255 = ignore.

Layout: ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}``;
``root`` may point at the folder holding ``VOCdevkit``, at ``VOCdevkit`` or at
``VOC2012``. Any subset works: the ids of the split file whose image and mask
both exist are used, or, without a split file, every mask that has an image.
Masks are palette PNGs whose indices are the classes (RGB masks are mapped
through the VOC colour map).

An item is ``(image, mask)``: a float (3, H, W) tensor normalised with the
ImageNet mean and std, and an int64 (H, W) tensor of class indices. Without
augmentation the shorter side is resized to ``base_size`` (520, as in
torchvision's segmentation reference; ``None`` keeps the original size), or the
image is resized to exactly ``size`` (int or (h, w)) so that items can be batched.
``train_augment=True`` resizes the shorter side to a random length in
[0.5, 2] x ``base_size``, flips horizontally, and takes a random ``crop_size``
square (``size`` if given), padding the mask with 255. A custom ``transform`` is
called as ``transform(image, mask)`` on the PIL image and mask (mode "L") and
replaces all of this. Items of different sizes batch with
``DataLoader(..., collate_fn=segmentation_collate)``, which pads masks with 255.
"""
import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .registry import DATA_ROOT, DatasetInfo, register_dataset

__all__ = ["VOCSegmentation", "VOC_CLASSES", "voc_colormap", "find_voc2012", "segmentation_collate"]

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IGNORE_INDEX = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC palette (n x 3 uint8): colour of class ``c`` from the bits of ``c`` spread over RGB."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        for k in range(8):
            r |= ((c >> (3 * k)) & 1) << (7 - k)
            g |= ((c >> (3 * k + 1)) & 1) << (7 - k)
            b |= ((c >> (3 * k + 2)) & 1) << (7 - k)
        cmap[c] = (r, g, b)
    return cmap


def read_mask(path: str) -> np.ndarray:
    """Class indices (H, W) uint8 of a VOC mask: palette indices, or RGB colours mapped to classes."""
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        rgb = np.array(img.convert("RGB"), dtype=np.int64)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    cmap = voc_colormap().astype(np.int64)
    lut = {int(r << 16 | g << 8 | b): c for c, (r, g, b) in enumerate(cmap[:len(VOC_CLASSES)])}
    out = np.full(key.shape, IGNORE_INDEX, dtype=np.uint8)
    for k, c in lut.items():
        out[key == k] = c
    return out


def find_voc2012(root: str):
    """The ``VOC2012`` folder: root itself, root/VOC2012 or root/VOCdevkit/VOC2012; None if absent."""
    for folder in (root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(folder, "JPEGImages")):
            return folder
    return None


def segmentation_collate(batch):
    """Batch ``(image, mask)`` pairs of different sizes: pad to the largest (images with 0, masks
    with 255 = ignore) at the bottom and right. Use as ``DataLoader(..., collate_fn=...)``."""
    h = max(image.shape[-2] for image, _ in batch)
    w = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], h, w)
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, (image, mask) in enumerate(batch):
        images[i, :, :image.shape[-2], :image.shape[-1]] = image
        masks[i, :mask.shape[-2], :mask.shape[-1]] = mask
    return images, masks


class VOCSegmentation(Dataset):
    """VOC 2012 segmentation ``split`` ("train" or "val") of a ``VOC2012`` folder (see the module)."""

    classes = VOC_CLASSES

    def __init__(self, voc_dir, split="train", transform=None, base_size=520, size=None,
                 train_augment=False, crop_size=480, mask_dir="SegmentationClass"):
        self.image_dir = os.path.join(voc_dir, "JPEGImages")
        self.mask_dir = os.path.join(voc_dir, mask_dir)
        self.transform, self.base_size, self.train_augment = transform, base_size, train_augment
        self.size = (size, size) if isinstance(size, int) else size
        self.crop_size = self.size or (crop_size, crop_size)
        split_file = os.path.join(voc_dir, "ImageSets", "Segmentation", f"{split}.txt")
        masks = set(os.path.splitext(f)[0] for f in os.listdir(self.mask_dir)) \
            if os.path.isdir(self.mask_dir) else set()
        if os.path.isfile(split_file):
            with open(split_file) as f:
                listed, source = [line.strip() for line in f if line.strip()], split_file
        else:
            listed, source = sorted(masks), self.mask_dir
        self.ids = [i for i in listed if i in masks and os.path.isfile(self._image_path(i))]
        if not self.ids:
            raise FileNotFoundError(f"no VOC {split} image with a mask in {voc_dir} "
                                    f"(JPEGImages/<id>.jpg with {mask_dir}/<id>.png)")
        if len(self.ids) < len(listed):
            warnings.warn(f"VOC {split}: {len(listed) - len(self.ids)} of the {len(listed)} ids in "
                          f"{source} lack an image or a mask and are left out", stacklevel=2)

    def _image_path(self, image_id):
        return os.path.join(self.image_dir, image_id + ".jpg")

    def __len__(self):
        return len(self.ids)

    def _geometry(self, image, mask):
        """Resize, and with ``train_augment`` random scale, flip and crop, image and mask alike."""
        def shorter_side(s):
            w, h = image.size
            return (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)

        if self.train_augment:
            base = self.base_size or min(image.size)
            hw = shorter_side(int(torch.randint(base // 2, 2 * base + 1, ())))
        elif self.size:
            hw = self.size
        elif self.base_size:
            hw = shorter_side(self.base_size)
        else:
            hw = None
        if hw is not None:
            image = image.resize(hw[::-1], Image.BILINEAR)
            mask = mask.resize(hw[::-1], Image.NEAREST)
        if self.train_augment:
            if torch.rand(()) < 0.5:
                image, mask = TF.hflip(image), TF.hflip(mask)
            ch, cw = self.crop_size
            pad_h, pad_w = max(ch - image.height, 0), max(cw - image.width, 0)
            if pad_h or pad_w:
                image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
                mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
            top = int(torch.randint(0, image.height - ch + 1, ()))
            left = int(torch.randint(0, image.width - cw + 1, ()))
            image, mask = TF.crop(image, top, left, ch, cw), TF.crop(mask, top, left, ch, cw)
        return image, mask

    def __getitem__(self, index):
        image_id = self.ids[index]
        with Image.open(self._image_path(image_id)) as img:
            image = img.convert("RGB")
        mask = Image.fromarray(read_mask(os.path.join(self.mask_dir, image_id + ".png")))
        if self.transform is not None:
            return self.transform(image, mask)
        image, mask = self._geometry(image, mask)
        x = TF.normalize(TF.pil_to_tensor(image).float().div_(255), IMAGENET_MEAN, IMAGENET_STD)
        return x, torch.from_numpy(np.array(mask, dtype=np.int64))


@register_dataset("voc2012", aliases=("voc",), info=DatasetInfo(
    num_classes=21, in_chans=3, task="segmentation", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    image_size=520, default_root=os.path.join(DATA_ROOT, "voc")))
def voc2012(root=None, split="train", download=True, transform=None, **kwargs):
    """Pascal VOC 2012 segmentation ``split`` ("test" is "val"); options of :class:`VOCSegmentation`.

    When no VOC2012 folder is found and ``download=True``, the VOC 2012 trainval
    archive (2 GB) is downloaded with torchvision into ``root``. ``train_augment``
    applies to the training split only.
    """
    root = root or os.path.join(DATA_ROOT, "voc")
    voc_dir = find_voc2012(root)
    error = None
    if voc_dir is None and download:
        try:
            from torchvision.datasets import VOCSegmentation as TVVOC
            TVVOC(root, year="2012", image_set="train", download=True)
        except Exception as err:
            error = err
        voc_dir = find_voc2012(root)
    if voc_dir is None:
        raise FileNotFoundError(
            f"Pascal VOC 2012 not found in {root}: expected root/VOCdevkit/VOC2012/JPEGImages, "
            "SegmentationClass and ImageSets/Segmentation (root may also be VOCdevkit or VOC2012)"
            + (f"; the download failed: {type(error).__name__}: {error}" if error else
               "; download=True fetches it with internet access")) from error
    kwargs["train_augment"] = kwargs.get("train_augment", False) and split == "train"
    split = "train" if split == "train" else "val"
    return VOCSegmentation(voc_dir, split, transform=transform, **kwargs)
