"""A small fully-convolutional segmentation network for 28x28 images (Fashion-MNIST masks).

``fmnist_segnet`` is a U-Net-like encoder-decoder (Ronneberger et al., "U-Net", MICCAI
2015) shrunk to about 50,000 parameters, so that it trains on a CPU in minutes and is
the offline stand-in for DeepLabV3 in the segmentation demo (``notebooks/icml_demo.ipynb``)::

    28x28  conv 16, conv 16  ----------------------------- + --> conv 16 --> 1x1 conv -> classes
             | max pool                                   ^ bilinear x2, 1x1 conv 32->16
    14x14  conv 32, conv 32  --------------- + --> conv 32
             | max pool                     ^ bilinear x2, 1x1 conv 64->32
     7x7   conv 64  + image pooling (global average, 1x1 conv, broadcast)

Every conv is conv - BatchNorm - ReLU, 3x3 unless marked 1x1 (the image-pooling conv has
a bias and no BatchNorm). Skips are added, not
concatenated. The image-pooling branch gives every pixel the context of the whole
image, like the image-level feature of DeepLabV3's ASPP (Chen et al., "Rethinking Atrous
Convolution for Semantic Image Segmentation", arXiv:1706.05587, 2017), which a pixel
needs to tell a shirt from a coat. Any input size works; the logits have the input's
height and width. As torchvision's segmentation models, ``forward`` returns
``{"out": logits}``, so the same code evaluates and compresses both.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["SegNet", "fmnist_segnet"]


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """Encoder-decoder with two downsamplings and additive skips (see the module docstring)."""

    def __init__(self, in_chans: int = 1, num_classes: int = 11, widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = nn.Sequential(conv_bn_relu(in_chans, w1), conv_bn_relu(w1, w1))
        self.enc2 = nn.Sequential(conv_bn_relu(w1, w2), conv_bn_relu(w2, w2))
        self.enc3 = conv_bn_relu(w2, w3)
        # no BatchNorm on the pooled 1x1 map: it would fail for a training batch of one
        self.image_pool = nn.Sequential(nn.Conv2d(w3, w3, 1), nn.ReLU(inplace=True))
        self.lat3 = conv_bn_relu(w3, w2, kernel_size=1)
        self.dec2 = conv_bn_relu(w2, w2)
        self.lat2 = conv_bn_relu(w2, w1, kernel_size=1)
        self.dec1 = conv_bn_relu(w1, w1)
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> dict:
        f1 = self.enc1(x)
        f2 = self.enc2(F.max_pool2d(f1, 2))
        f3 = self.enc3(F.max_pool2d(f2, 2))
        f3 = f3 + self.image_pool(f3.mean((-2, -1), keepdim=True))
        d2 = self.dec2(f2 + self._up(self.lat3(f3), f2))
        d1 = self.dec1(f1 + self._up(self.lat2(d2), f1))
        return {"out": self.classifier(d1)}


@register_model
def fmnist_segnet(pretrained=False, in_chans: int = 1, num_classes: int = 11, **kwargs) -> SegNet:
    """The SegNet above (about 50k parameters for 1 input channel and 11 classes).

    Pretrained weights for Fashion-MNIST masks (``fashion_mnist_seg``) ship in
    ``example/weights/fmnist_segnet.pt`` (test mIoU 83.8 %, pixel accuracy 94.7 %); load
    them with ``models.load_checkpoint``. They were trained with::

        python main.py --pre_train_model --model fmnist_segnet --dataset fashion_mnist_seg \
            --epochs 4 --lr 0.1 --batch_size 128 --max_batches 250 \
            --model_path example/weights/fmnist_segnet.pt
    """
    if pretrained:
        raise ValueError("fmnist_segnet has no downloadable weights; load example/weights/"
                         "fmnist_segnet.pt with models.load_checkpoint, or pass --model_path")
    return SegNet(in_chans=in_chans, num_classes=num_classes, **kwargs)
