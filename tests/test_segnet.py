"""Fashion-MNIST foreground segmentation (datasets/fashion_mnist_seg.py), the small
segmentation network fmnist_segnet (models/segnet.py) and its shipped checkpoint."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

import datasets
import models
from datasets.fashion_mnist import DEBIAN_ROOT, MEAN, STD
from datasets.fashion_mnist_seg import foreground_mask
from nnc_core import nn as nnc_nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECKPOINT = os.path.join(REPO, "example", "weights", "fmnist_segnet.pt")
HAVE_DEBIAN_FMNIST = all(os.path.isfile(os.path.join(DEBIAN_ROOT, f"{p}-{k}-idx{n}-ubyte.gz"))
                         for p in ("train", "t10k") for k, n in (("images", 3), ("labels", 1)))
needs_fmnist = pytest.mark.skipif(not HAVE_DEBIAN_FMNIST, reason=f"Fashion-MNIST is not installed in "
                                  f"{DEBIAN_ROOT} (apt-get install dataset-fashion-mnist)")


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def synthetic_fmnist(tmp_path):
    """Four images: a bright square, a faint one, an empty image, and a gradient."""
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[0, 5:15, 8:20] = 200
    images[0, 5:15, 20] = 10                 # 10 < 0.1 * 200: background
    images[1, 10:12, 10:12] = 30             # a dim item: the threshold follows its maximum
    images[1, 3, 3] = 2                      # 2 < 0.1 * 30
    images[3] = np.arange(28, dtype=np.uint8)[None, :] * 9   # 0 .. 243
    labels = np.array([9, 0, 4, 7], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def test_dataset_is_registered():
    info = datasets.dataset_info("fashion_mnist_seg")
    assert info.task == "segmentation" and info.num_classes == 11 and info.in_chans == 1
    assert info.mean == MEAN and info.std == STD and info.image_size == 28
    assert datasets.dataset_info("fmnist_seg") == info
    assert "fashion_mnist_seg" in datasets.list_datasets()


def test_masks_of_synthetic_images(synthetic_fmnist):
    root, images, labels = synthetic_fmnist
    for split in ("train", "test", "val"):
        ds = datasets.create_dataset("fashion_mnist_seg", root=str(root), split=split, download=False)
        assert len(ds) == 4
    image, mask = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert mask.shape == (28, 28) and mask.dtype == torch.int64
    assert torch.allclose(image, (torch.from_numpy(images[0]).float()[None] / 255 - MEAN[0]) / STD[0])
    expected = np.where(images[0] == 200, 10, 0)
    assert np.array_equal(mask.numpy(), expected)            # label 9 -> class 10
    _, mask = ds[1]
    assert np.array_equal(mask.numpy(), np.where(images[1] == 30, 1, 0))   # label 0 -> class 1
    _, mask = ds[2]
    assert not mask.any()                                    # a black image is all background
    _, mask = ds[3]
    bright = images[3] >= 0.1 * 243
    assert np.array_equal(mask.numpy(), np.where(bright, 8, 0))
    strict = datasets.create_dataset("fashion_mnist_seg", root=str(root), download=False, threshold=0.5)
    assert strict[3][1].sum() < ds[3][1].sum()
    raw = datasets.create_dataset("fashion_mnist_seg", root=str(root), download=False,
                                  transform=lambda image, mask: (image, mask))
    assert raw[0][0].dtype == torch.uint8 and raw[0][0].shape == (1, 28, 28)
    with pytest.raises(ValueError, match="threshold"):
        datasets.create_dataset("fashion_mnist_seg", root=str(root), download=False, threshold=1.5)
    with pytest.raises(TypeError, match="bogus"):
        datasets.create_dataset("fashion_mnist_seg", root=str(root), download=False, bogus=1)


def test_foreground_mask_batches():
    images = torch.tensor([[[0, 100], [9, 10]], [[5, 0], [0, 0]]], dtype=torch.uint8)
    masks = foreground_mask(images, torch.tensor([2, 5]))
    assert masks.tolist() == [[[0, 3], [0, 3]], [[6, 0], [0, 0]]]


@needs_fmnist
def test_masks_of_the_real_data():
    ds = datasets.create_dataset("fashion_mnist_seg", split="test", download=False)
    assert len(ds) == 10_000
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(512)), batch_size=512)
    images, masks = next(iter(loader))
    assert images.shape == (512, 1, 28, 28) and masks.shape == (512, 28, 28)
    assert masks.min() >= 0 and masks.max() <= 10
    pixels = ds.data[:512].float()
    dark = pixels < 0.1 * pixels.flatten(1).amax(1)[:, None, None]
    assert (masks[dark] == 0).all()                          # background where dark
    labels = ds.targets[:512]
    assert (masks[~dark] == (labels[:, None, None] + 1).expand_as(masks)[~dark]).all()
    for i in range(512):                                     # one item class per image
        assert set(masks[i].unique().tolist()) <= {0, int(labels[i]) + 1}
    share = (masks > 0).float().mean().item()
    assert 0.3 < share < 0.7


def test_segnet_shapes_and_size():
    torch.manual_seed(0)
    model = models.create_model("fmnist_segnet", num_classes=11, in_chans=1)
    params = sum(p.numel() for p in model.parameters())
    assert 20_000 < params < 100_000
    model.train()
    out = model(torch.randn(1, 1, 28, 28))                  # a batch of one trains too
    assert isinstance(out, dict) and set(out) == {"out"} and out["out"].shape == (1, 11, 28, 28)
    model.eval()
    for h, w in ((28, 28), (32, 32), (37, 51), (7, 9)):
        assert model(torch.randn(2, 1, h, w))["out"].shape == (2, 11, h, w)
    rgb = models.create_model("fmnist_segnet", num_classes=21, in_chans=3).eval()
    assert rgb(torch.randn(1, 3, 40, 30))["out"].shape == (1, 21, 40, 30)
    with pytest.raises(ValueError, match="fmnist_segnet.pt"):
        models.create_model("fmnist_segnet", pretrained=True)


def test_segnet_trains_with_the_shared_loop():
    from experiments.engine import evaluate_segmentation, train_one_epoch
    torch.manual_seed(0)
    images = torch.randn(16, 1, 28, 28)
    masks = (images[:, 0] > 0).long() * 3
    masks[:, 0] = 255                                        # ignored
    loader = [(images[:8], masks[:8]), (images[8:], masks[8:])]
    model = models.create_model("fmnist_segnet", num_classes=11)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = train_one_epoch(model, loader, optimizer, "cpu", task="segmentation", verbose=False)
    for _ in range(10):
        last = train_one_epoch(model, loader, optimizer, "cpu", task="segmentation", verbose=False)
    assert last < first
    scores = evaluate_segmentation(model, loader, "cpu", 11, verbose=False)
    assert scores["samples"] == 16 * 27 * 28 and scores["pixel_acc"] > 80


def test_shipped_checkpoint_codes_and_decodes():
    assert os.path.getsize(CHECKPOINT) < 1_000_000
    model = models.create_model("fmnist_segnet", num_classes=11, in_chans=1)
    meta = models.load_checkpoint(model, CHECKPOINT)
    assert meta["arch"] == "fmnist_segnet" and meta["dataset"] == "fashion_mnist_seg"
    model.eval()
    bitstream = nnc_nn.encode(model, qp=-32, use_dq=True)
    assert len(bitstream) < 0.3 * 4 * sum(p.numel() for p in model.parameters())
    restored = nnc_nn.load_decoded(models.create_model("fmnist_segnet"), nnc_nn.decode(bitstream))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        a, b = model(x)["out"], restored.eval()(x)["out"]
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.95
    from experiments.builders import SHIPPED_CHECKPOINTS
    assert os.path.samefile(SHIPPED_CHECKPOINTS[("fmnist_segnet", "fashion_mnist_seg")], CHECKPOINT)


@needs_fmnist
def test_shipped_checkpoint_segments_the_test_set():
    from experiments.engine import evaluate_segmentation
    model = models.create_model("fmnist_segnet", num_classes=11, in_chans=1)
    models.load_checkpoint(model, CHECKPOINT)
    ds = datasets.create_dataset("fashion_mnist_seg", split="test", download=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(500)), batch_size=250)
    scores = evaluate_segmentation(model, loader, "cpu", 11, verbose=False)
    assert scores["mIoU"] > 60 and scores["pixel_acc"] > 85
