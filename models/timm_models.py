"""timm models under the namespace ``"timm/"``: ``create_model("timm/resnet18")``.

timm (PyTorch Image Models, pinned in requirements.txt) is imported only when a
``"timm/..."`` model is requested; without it, :func:`create_model` raises an
``ImportError`` that says how to install it. timm's many hundreds of names are
not part of the default ``list_models()``; ``list_models("timm/*")`` (or a
narrower pattern such as ``"timm/resnet*"``) lists them when timm is installed.

The name after ``"timm/"`` is any name of ``timm.list_models()``, optionally with a
pretrained tag (``"timm/resnet18.a1_in1k"``). ``num_classes`` and ``in_chans`` go to
``timm.create_model``, which replaces the classifier and adapts the first convolution
of pretrained weights (summed for one channel, tiled and rescaled for more) itself;
``img_size`` sets the input size of fixed-size models (ViT, Swin, ...).
Pretrained weights come from the Hugging Face hub and are cached under
``$HF_HOME/hub`` (default ``~/.cache/huggingface/hub``); when they cannot be fetched
(no network, ``HF_HUB_OFFLINE=1``) :class:`~models.registry.WeightsDownloadError` says
so. ``pretrained=False`` needs no network.
"""
import difflib
import importlib
import os

from .registry import WeightsDownloadError, register_namespace

__all__ = ["create_timm_model"]


def _timm(required: bool = True):
    try:
        return importlib.import_module("timm")
    except ImportError as err:
        if required:
            raise ImportError("timm models ('timm/<name>') need the timm package: "
                              "pip install timm (it is pinned in requirements.txt)") from err
        return None


def _download_failures() -> tuple:
    """Exception types that mean "the weights could not be fetched"."""
    kinds = [OSError]  # URLError, socket errors, huggingface_hub's LocalEntryNotFoundError
    for module, names in (("huggingface_hub.errors", ("HfHubHTTPError", "EntryNotFoundError")),
                          ("httpx2", ("HTTPError",)), ("httpx", ("HTTPError",))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        kinds += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(kinds)


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except ImportError:
        return os.path.expanduser("~/.cache/huggingface/hub")


def _download_error(timm, name: str, err: Exception) -> WeightsDownloadError:
    try:
        source = timm.models.get_pretrained_cfg(name).hf_hub_id or "the Hugging Face hub"
        source = f"https://huggingface.co/{source}" if "/" in source else source
    except Exception:  # an odd tag or config: the message still helps without it
        source = "the Hugging Face hub"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    return WeightsDownloadError(
        f"the pretrained weights of timm model {name!r} could not be downloaded "
        f"({type(err).__name__}: {reason})"
        + (" because HF_HUB_OFFLINE is set" if offline else "") +
        f". They come from {source} and are cached in {_hub_cache()}: without internet "
        "access, copy that cache from a machine that has it, or pass your own checkpoint with "
        "--model_path (models.load_checkpoint), or start from a random initialisation with "
        "--model_rand_int.")


def _fixed_input_size(timm, name: str):
    """The input side a fixed-size model (ViT, Swin, ...) is configured for, else None."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        return None
    return cfg.input_size[-1] if cfg is not None and cfg.fixed_input_size else None


def create_timm_model(name: str, pretrained: bool = False, img_size=None, **kwargs):
    """Build timm model ``name`` with ``timm.create_model`` (``num_classes``, ``in_chans`` and
    other keyword arguments go through).

    ``img_size`` (the side of the square input) is passed on to models with a fixed input
    size, such as ViT and Swin, when it differs from their default (pretrained position
    embeddings are resampled by timm); the other models take any size and ignore it.

    Raises:
        ImportError: timm is not installed.
        ValueError: timm does not know ``name``, or has no pretrained weights for it.
        WeightsDownloadError: the pretrained weights could not be downloaded.
    """
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr('timm/' + c) for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint} (list_models('timm/*') lists them)")
    if pretrained and not timm.is_model_pretrained(name):
        raise ValueError(f"timm has no pretrained weights for {name!r}: pass a checkpoint with "
                         "--model_path, or start from a random initialisation (--model_rand_int)")
    fixed = _fixed_input_size(timm, name) if img_size is not None else None
    if fixed is not None and fixed != img_size:
        kwargs["img_size"] = img_size
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except _download_failures() as err:
        if not pretrained:
            raise
        raise _download_error(timm, name, err) from err


def _list(pattern=None):
    timm = _timm(required=False)
    return timm.list_models(pattern or "*") if timm else []


def _has(name: str) -> bool:
    timm = _timm(required=False)
    return bool(timm and timm.is_model(name))


register_namespace("timm", create_timm_model, _list, _has)
