"""timm models under the namespace ``"timm/"``: ``create_model("timm/resnet18")``.

timm (PyTorch Image Models) is an optional dependency. It is imported only when
a ``"timm/..."`` model is requested; without it, :func:`create_model` raises an
``ImportError`` that says how to install it. timm's many hundreds of names are
not part of the default ``list_models()``; ``list_models("timm/*")`` (or a
narrower pattern such as ``"timm/resnet*"``) lists them when timm is installed.
"""
import importlib

from .registry import register_namespace

__all__ = ["create_timm_model"]


def _timm(required: bool = True):
    try:
        return importlib.import_module("timm")
    except ImportError as err:
        if required:
            raise ImportError("timm models ('timm/<name>') need the timm package: "
                              "pip install timm") from err
        return None


def create_timm_model(name: str, pretrained: bool = False, **kwargs):
    """Build timm model ``name`` with ``timm.create_model`` (``num_classes``, ``in_chans`` go through).

    Raises:
        ImportError: timm is not installed.
        RuntimeError: the pretrained weights could not be downloaded.
    """
    timm = _timm()
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as err:  # Hugging Face hub or URL download failure
        raise RuntimeError(
            f"the pretrained weights of timm model {name!r} could not be downloaded "
            f"({type(err).__name__}: {err}). timm fetches them from the Hugging Face hub "
            "(cached under ~/.cache/huggingface); pass your own checkpoint with --model_path "
            "(models.load_checkpoint) instead.") from err


def _list(pattern=None):
    timm = _timm(required=False)
    return timm.list_models(pattern or "*") if timm else []


def _has(name: str) -> bool:
    timm = _timm(required=False)
    return bool(timm and timm.is_model(name))


register_namespace("timm", create_timm_model, _list, _has)
