"""Model and data set registries (models/, datasets/): offline, on small synthetic data."""
import gzip
import importlib.util
import os
import struct
import sys
import types
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import datasets
import models
from datasets.fashion_mnist import DEBIAN_ROOT, read_idx
from datasets.voc import voc_colormap
from models.resnet_cifar import ShortcutA


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- CIFAR ResNets

@pytest.mark.parametrize("name, count", [("resnet20", 269_722), ("resnet32", 464_154),
                                         ("resnet44", 658_586), ("resnet56", 853_018),
                                         ("resnet110", 1_727_962)])
def test_cifar_resnet_parameter_counts(name, count):
    assert n_params(models.create_model(name)) == count


def test_cifar_resnet_forward_shapes():
    torch.manual_seed(0)
    model = models.create_model("resnet20").eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    fmnist = models.create_model("resnet20", num_classes=10, in_chans=1).eval()
    assert fmnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert fmnist.conv1.weight.shape == (16, 1, 3, 3)
    assert models.create_model("resnet32", num_classes=100).linear.out_features == 100


def test_cifar_resnet_structure():
    model = models.create_model("resnet20")
    keys = model.state_dict().keys()
    assert {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.2.bn2.running_mean",
            "linear.weight", "linear.bias"} <= set(keys)
    assert not any("shortcut" in k for k in keys)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.bias is None for c in convs)
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) == 19
    assert [m.stride[0] for m in convs[1::2]] == [1, 1, 1, 2, 1, 1, 2, 1, 1]


def test_option_a_shortcut_is_parameter_free_subsampled_zero_padded_identity():
    shortcut = ShortcutA(16, 32, stride=2)
    assert list(shortcut.parameters()) == []
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()
    for block in models.create_model("resnet56").modules():
        if isinstance(block, ShortcutA):
            assert list(block.parameters()) == []


def test_cifar_resnet_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="model_path"):
        models.create_model("resnet20", pretrained=True)


# ----------------------------------------------------------------------------- registry

def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20"):
        models.create_model("resnet21")
    assert not models.is_model("resnet21")


def test_register_model_decorator(monkeypatch):
    from models import registry
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @models.register_model
    def tiny_mlp(pretrained=False, num_classes=4, in_chans=8):
        """A test model."""
        return nn.Linear(in_chans, num_classes)

    @models.register_model("tiny_named")
    def _factory(pretrained=False, **kwargs):
        return nn.Identity()

    assert models.is_model("tiny_mlp") and "tiny_named" in models.list_models("tiny_*")
    assert models.create_model("tiny_mlp").out_features == 4
    assert models.create_model("tiny_mlp", num_classes=3, in_chans=2).weight.shape == (3, 2)
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("tiny_mlp")(_factory)


def test_torchvision_models_are_listed():
    names = models.list_models()
    for name in ("resnet18", "resnet50", "efficientnet_b0", "vit_b_16", "deeplabv3_resnet50",
                 "fcn_resnet50", "lraspp_mobilenet_v3_large", "resnet20", "resnet56"):
        assert name in names and models.is_model(name)
    assert names == sorted(names)
    assert models.list_models("deeplabv3_*") == ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101",
                                                 "deeplabv3_resnet50"]


@pytest.fixture
def offline(monkeypatch):
    """Make every torchvision weight download fail as it does without internet."""
    def fail(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    from torchvision.models import _api
    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", fail)
    monkeypatch.setattr(_api, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)


def test_torchvision_model_without_weights(offline):
    torch.manual_seed(0)
    model = models.create_model("resnet18", num_classes=10).eval()
    assert model.fc.out_features == 10
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    grey = models.create_model("resnet18", num_classes=10, in_chans=1).eval()
    assert grey.conv1.weight.shape == (64, 1, 7, 7) and grey(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    seg = models.create_model("lraspp_mobilenet_v3_large").eval()   # no backbone download either
    assert seg(torch.randn(1, 3, 64, 64))["out"].shape == (1, 21, 64, 64)


def test_pretrained_download_failure_is_explained(offline):
    with pytest.raises(RuntimeError) as info:
        models.create_model("resnet18", pretrained=True)
    message = str(info.value)
    assert "could not be downloaded" in message and "--model_path" in message
    assert "https://download.pytorch.org/models/resnet18" in message and "--model_rand_int" in message
    assert isinstance(info.value, models.WeightsDownloadError)
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_pretrained_head_and_input_adaptation(monkeypatch):
    torch.manual_seed(0)
    from torchvision.models import _api, resnet18
    fake = resnet18().state_dict()
    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", lambda self, *a, **k: fake)
    model = models.create_model("resnet18", pretrained=True)
    assert all(torch.equal(v, fake[k]) for k, v in model.state_dict().items())
    model = models.create_model("resnet18", pretrained=True, num_classes=10, in_chans=1)
    assert model.fc.out_features == 10
    assert torch.equal(model.layer4[1].conv2.weight, fake["layer4.1.conv2.weight"])
    assert torch.allclose(model.conv1.weight, fake["conv1.weight"].sum(1, keepdim=True))
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_timm_namespace(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)      # not installed
    with pytest.raises(ImportError, match="pip install timm"):
        models.create_model("timm/resnet18")
    assert not models.is_model("timm/resnet18") and models.list_models("timm/*") == []
    assert not any(n.startswith("timm/") for n in models.list_models())

    calls = []
    fake = types.ModuleType("timm")
    fake.create_model = lambda name, **kw: (calls.append((name, kw))
                                            or nn.Linear(kw["in_chans"], kw["num_classes"]))
    fake.list_models = lambda pattern="*": ["resnet18", "resnet50"] if "resnet" in pattern else []
    fake.is_model = lambda name: name in ("resnet18", "resnet50")
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = models.create_model("timm/resnet18", num_classes=3, in_chans=2)
    assert model.weight.shape == (3, 2)
    assert calls == [("resnet18", {"pretrained": False, "num_classes": 3, "in_chans": 2})]
    assert models.list_models("timm/resnet*") == ["timm/resnet18", "timm/resnet50"]
    assert models.is_model("timm/resnet50") and not models.is_model("timm/nope")


needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm not installed (pip install -r requirements.txt)")


@pytest.fixture
def hub_offline(monkeypatch):
    """Make every timm weight download fail as it does without internet."""
    pytest.importorskip("timm")
    from huggingface_hub.errors import LocalEntryNotFoundError
    from timm.models import _builder, _hub
    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the "
                                      "Hub and we cannot find the requested files in the local cache.")

    monkeypatch.setattr(_hub, "hf_hub_download", fail)
    monkeypatch.setattr(_builder, "load_state_dict_from_url", fail)
    return calls


@needs_timm
@pytest.mark.parametrize("name, dataset", [("timm/mobilenetv3_small_050", "fashion_mnist"),
                                           ("timm/resnet18", "cifar10"),
                                           ("timm/test_vit", "cifar100")])   # fixed input size
def test_timm_model_random_init_forward(name, dataset, hub_offline):
    from experiments.builders import build_model
    torch.manual_seed(0)
    info = datasets.dataset_info(dataset)
    model, source = build_model(name, dataset, info, random_init=True)
    assert source == "random init"
    x = torch.randn(2, info.in_chans, info.image_size, info.image_size)
    assert model.eval()(x).shape == (2, info.num_classes)
    assert not hub_offline, "a random init must not download anything"
    assert models.is_model(name) and name in models.list_models(name.split(".")[0])


@needs_timm
def test_timm_model_adapts_classes_channels_and_input_size(hub_offline):
    model = models.create_model("timm/resnet18", num_classes=10, in_chans=1)
    assert model.conv1.weight.shape == (64, 1, 7, 7) and model.fc.out_features == 10
    vit = models.create_model("timm/test_vit", num_classes=10, in_chans=1, img_size=32)
    assert vit.patch_embed.img_size == (32, 32)
    assert vit.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    cnn = models.create_model("timm/test_efficientnet", img_size=32)   # takes any size: ignored
    assert cnn.eval()(torch.randn(1, 3, 40, 40)).shape == (1, 1000)


@needs_timm
def test_timm_unknown_name_and_model_without_weights():
    with pytest.raises(ValueError, match="unknown timm model 'resnet18x'.*'timm/resnet18'"):
        models.create_model("timm/resnet18x")
    assert not models.is_model("timm/resnet18x")
    with pytest.raises(ValueError, match="no pretrained weights.*--model_rand_int"):
        models.create_model("timm/coatnet_0_224", pretrained=True)


@needs_timm
def test_timm_pretrained_download_failure_is_explained(hub_offline):
    from huggingface_hub.errors import LocalEntryNotFoundError
    with pytest.raises(models.WeightsDownloadError) as info:
        models.create_model("timm/mobilenetv3_small_050", pretrained=True, num_classes=10)
    message = str(info.value)
    assert hub_offline, "the weights were not asked for"
    assert "timm model 'mobilenetv3_small_050' could not be downloaded" in message
    assert "https://huggingface.co/timm/mobilenetv3_small_050" in message
    for hint in ("--model_path", "--model_rand_int", "huggingface"):
        assert hint in message, hint
    assert "\n" not in message and isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)


# ----------------------------------------------------------------------------- checkpoints

def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.create_model("resnet20")
    path = tmp_path / "run" / "resnet20.pt"
    models.save_checkpoint(nn.DataParallel(model), path, epoch=3, dataset="cifar10")
    assert set(torch.load(path, weights_only=True)) == {"state_dict", "metadata"}
    other = models.create_model("resnet20")
    assert not _same_weights(model, other)
    assert models.load_checkpoint(other, path) == {"epoch": 3, "dataset": "cifar10"}
    assert _same_weights(model, other)


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module"])
def test_checkpoint_formats_and_dataparallel_prefix(tmp_path, layout):
    torch.manual_seed(1)
    model = models.create_model("resnet20")
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    obj = {"plain": wrapped, "state_dict": {"state_dict": wrapped, "epoch": 200, "best_prec1": 91.7},
           "model": {"model": wrapped}, "module": nn.DataParallel(model)}[layout]
    torch.save(obj, tmp_path / "ckpt.pt")
    other = models.create_model("resnet20")
    metadata = models.load_checkpoint(other, tmp_path / "ckpt.pt")
    assert _same_weights(model, other)
    if layout == "state_dict":
        assert metadata == {"epoch": 200, "best_prec1": 91.7}


def test_checkpoint_errors(tmp_path):
    model = models.create_model("resnet20")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_checkpoint(model, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        models.load_checkpoint(model, tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="neither a state dict"):
        models.load_checkpoint(model, tmp_path / "list.pt")
    models.save_checkpoint(models.create_model("resnet20", num_classes=100), tmp_path / "c100.pt")
    with pytest.raises(RuntimeError, match=r"shape mismatches: linear.weight: checkpoint \(100, 64\)"):
        models.load_checkpoint(model, tmp_path / "c100.pt")
    models.save_checkpoint(models.create_model("resnet32"), tmp_path / "r32.pt")
    with pytest.raises(RuntimeError, match="unexpected keys: layer1.3"):
        models.load_checkpoint(model, tmp_path / "r32.pt")
    before = model.linear.weight.clone()
    models.load_checkpoint(model, tmp_path / "c100.pt", strict=False)   # all but the classifier
    assert torch.equal(model.linear.weight, before)


# ----------------------------------------------------------------------------- Fashion-MNIST

FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
HAVE_DEBIAN_FMNIST = all(os.path.isfile(os.path.join(DEBIAN_ROOT, f)) for f in FMNIST_FILES)


@pytest.mark.skipif(not HAVE_DEBIAN_FMNIST,
                    reason=f"Fashion-MNIST is not installed in {DEBIAN_ROOT} "
                           "(apt-get install dataset-fashion-mnist)")
@pytest.mark.parametrize("split, size", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_from_debian_package(split, size):
    ds = datasets.create_dataset("fashion_mnist", split=split, download=False)
    assert len(ds) == size and ds.data.dtype == torch.uint8 and ds.data.shape == (size, 28, 28)
    assert ds.targets.min() == 0 and ds.targets.max() == 9
    assert torch.bincount(ds.targets).tolist() == [size // 10] * 10
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= y <= 9
    if split == "train":   # the normalisation constants are the training set's statistics
        pixels = ds.data.float() / 255
        assert abs(pixels.mean().item() - 0.2860) < 1e-4 and abs(pixels.std().item() - 0.3530) < 1e-4


def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compressed", [True, False])
def test_fashion_mnist_from_synthetic_idx_files(tmp_path, compressed):
    rng = np.random.default_rng(0)
    ext = ".gz" if compressed else ""
    arrays = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", images, 0x08)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", labels, 0x08)
        arrays[prefix] = images, labels
    for split, prefix in (("train", "train"), ("test", "t10k"), ("val", "t10k")):
        ds = datasets.create_dataset("fmnist", root=str(tmp_path), split=split, download=False)
        images, labels = arrays[prefix]
        assert len(ds) == len(labels)
        assert np.array_equal(ds.data.numpy(), images) and np.array_equal(ds.targets.numpy(), labels)
        x, y = ds[1]
        expected = (torch.from_numpy(images[1]).float() / 255 - 0.2860) / 0.3530
        assert torch.allclose(x[0], expected) and y == labels[1]
    raw = datasets.create_dataset("fmnist", root=str(tmp_path), download=False, transform=lambda t: t)
    assert raw[0][0].dtype == torch.uint8
    assert torch.equal(raw[0][0][0], torch.from_numpy(arrays["train"][0][0]))
    torch.manual_seed(0)
    aug = datasets.create_dataset("fmnist", root=str(tmp_path), download=False, train_augment=True)
    assert aug.train_augment and aug[0][0].shape == (1, 28, 28)
    assert not datasets.create_dataset("fmnist", root=str(tmp_path), split="test", download=False,
                                       train_augment=True).train_augment


def test_read_idx_types_and_errors(tmp_path):
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    _write_idx(tmp_path / "ints-idx2-int", values, 0x0C)
    out = read_idx(str(tmp_path / "ints-idx2-int"))
    assert out.dtype == np.int32 and np.array_equal(out, values)
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\1\2")
    with pytest.raises(ValueError, match="announces shape"):
        read_idx(str(tmp_path / "short"))
    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(tmp_path / "bad"))


def test_fashion_mnist_missing_files_names_all_options(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.create_dataset("fashion_mnist", root=str(tmp_path), download=False)
    message = str(info.value)
    assert "root=" in message and "dataset-fashion-mnist" in message and "download=True" in message


# ----------------------------------------------------------------------------- Pascal VOC

def _write_voc(base, masks, listed=None):
    """VOCdevkit/VOC2012 with one JPEG and one palette PNG per mask under ``base``."""
    voc = base / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_colormap().flatten().tolist()
    rng = np.random.default_rng(0)
    for image_id, mask in masks.items():
        h, w = mask.shape
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg")
        png = Image.new("P", (w, h))
        png.putpalette(palette)
        png.putdata(mask.flatten().tolist())
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    if listed is not None:
        (voc / "ImageSets/Segmentation/train.txt").write_text("".join(i + "\n" for i in listed))
    return voc


def _voc_masks():
    a = np.zeros((12, 16), dtype=np.uint8)
    a[2:8, 3:10] = 15          # person
    a[2:8, 10] = 255           # object boundary: ignore
    b = np.full((10, 8), 12, dtype=np.uint8)   # dog
    b[0, :] = 255
    b[5:, :4] = 20             # tvmonitor
    return {"2007_000032": a, "2007_000039": b}


def test_voc2012_synthetic_devkit(tmp_path):
    masks = _voc_masks()
    voc = _write_voc(tmp_path, masks, listed=list(masks))
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        ds = datasets.create_dataset("voc2012", root=str(root), split="train", download=False,
                                     base_size=None)
        assert len(ds) == 2 and ds.ids == list(masks)
        for i, mask in enumerate(masks.values()):
            image, target = ds[i]
            assert image.shape == (3, *mask.shape) and image.dtype == torch.float32
            assert target.dtype == torch.int64 and np.array_equal(target.numpy(), mask)
    ds = datasets.create_dataset("voc", root=str(tmp_path), download=False, size=(8, 8))
    assert ds[0][0].shape == (3, 8, 8) and set(ds[0][1].unique().tolist()) <= {0, 15, 255}
    ds = datasets.create_dataset("voc", root=str(tmp_path), download=False)      # shorter side 520
    assert ds[0][0].shape == (3, 520, 693) and ds[1][1].shape == (650, 520)
    images, targets = datasets.segmentation_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 650, 693) and targets.shape == (2, 650, 693)
    assert torch.equal(targets[1, :, :520], ds[1][1]) and (targets[1, :, 520:] == 255).all()
    assert torch.equal(images[0, :, :520], ds[0][0]) and not images[0, :, 520:].any()


def test_voc2012_subsets_and_augmentation(tmp_path):
    masks = _voc_masks()
    voc = _write_voc(tmp_path, masks, listed=["2007_000032", "2007_000033", "2007_000039"])
    with pytest.warns(UserWarning, match="1 of the 3 ids in .*train.txt"):
        ds = datasets.create_dataset("voc2012", root=str(tmp_path), download=False)
    assert ds.ids == ["2007_000032", "2007_000039"]
    val = datasets.create_dataset("voc2012", root=str(tmp_path), split="val", download=False)
    assert len(val) == 2           # no val.txt: every mask that has an image
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.warns(UserWarning, match="1 of the 2 ids in .*SegmentationClass"):
        test = datasets.create_dataset("voc2012", root=str(tmp_path), split="test", download=False)
    assert test.ids == ["2007_000032"]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="2 of the 3 ids"):
        aug = datasets.create_dataset("voc2012", root=str(tmp_path), split="train", download=False,
                                      base_size=16, crop_size=24, train_augment=True)
    for _ in range(3):
        image, mask = aug[0]
        assert image.shape == (3, 24, 24) and mask.shape == (24, 24)
        assert set(mask.unique().tolist()) <= {0, 15, 255}
    with pytest.warns(UserWarning):
        joint = datasets.create_dataset("voc2012", root=str(tmp_path), download=False,
                                        transform=lambda i, m: (i.size, m.mode))
    assert joint[0] == ((16, 12), "L")


def test_voc2012_rgb_masks_and_missing_folder(tmp_path):
    masks = _voc_masks()
    voc = _write_voc(tmp_path, masks, listed=list(masks))
    colours = voc_colormap()
    mask = masks["2007_000039"]
    rgb = colours[mask]
    rgb[mask == 255] = (224, 224, 192)        # the boundary colour of the VOC palette
    Image.fromarray(rgb).save(voc / "SegmentationClass" / "2007_000039.png")
    ds = datasets.create_dataset("voc2012", root=str(tmp_path), download=False, base_size=None)
    assert np.array_equal(ds[1][1].numpy(), mask)
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012"):
        datasets.create_dataset("voc2012", root=str(tmp_path / "nowhere"), download=False)


# ----------------------------------------------------------------------------- ImageNet, CIFAR, info

def test_imagenet_synthetic_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for k in range(n):
                pixels = rng.integers(0, 256, (40 + 10 * k, 60, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / wnid / f"{wnid}_{k}.JPEG")
    val = datasets.create_dataset("imagenet", root=str(tmp_path), split="val", download=False)
    assert len(val) == 2 and val.classes == ["n01440764", "n01443537"]
    x, y = val[1]
    assert x.shape == (3, 224, 224) and y == 1
    train = datasets.create_dataset("imagenet", root=str(tmp_path), split="train", train_augment=True)
    assert len(train) == 4 and train[3][0].shape == (3, 224, 224)
    small = datasets.create_dataset("imagenet", root=str(tmp_path), split="test",
                                    image_size=32, resize_size=36)
    assert small[0][0].shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match=r"root/val/<wnid>/\*.JPEG"):
        datasets.create_dataset("imagenet", root=str(tmp_path / "nowhere"), split="val")


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        datasets.create_dataset("cifar10", root=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        datasets.create_dataset("cifar100", root=str(tmp_path), split="test", download=False)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown data set 'cifar11'.*cifar10"):
        datasets.create_dataset("cifar11")
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.dataset_info("mnist-fashion-xyz")
    with pytest.raises(ValueError, match="split must be one of"):
        datasets.create_dataset("fashion_mnist", split="training")


def test_dataset_info():
    assert datasets.list_datasets() == ["cifar10", "cifar100", "fashion_mnist", "fashion_mnist_seg",
                                        "imagenet", "text", "v2x", "voc2012"]
    info = datasets.dataset_info("Fashion-MNIST")
    assert info == datasets.dataset_info("fmnist")
    assert (info.name, info.num_classes, info.in_chans, info.task, info.image_size) == \
        ("fashion_mnist", 10, 1, "classification", 28)
    assert info.mean == (0.2860,) and info.std == (0.3530,) and info.default_root == DEBIAN_ROOT
    assert datasets.dataset_info("cifar10").num_classes == 10
    assert datasets.dataset_info("cifar100").num_classes == 100
    assert datasets.dataset_info("cifar10").mean == (0.4914, 0.4822, 0.4465)
    imagenet = datasets.dataset_info("imagenet")
    assert (imagenet.num_classes, imagenet.image_size) == (1000, 224)
    assert imagenet.std == (0.229, 0.224, 0.225)
    voc = datasets.dataset_info("voc2012")
    assert (voc.num_classes, voc.task, voc.in_chans) == (21, "segmentation", 3)
    assert voc.mean == imagenet.mean
    assert isinstance(voc, datasets.DatasetInfo)
