"""Model registry: build any registered network by name.

Factories register themselves with the :func:`register_model` decorator and are
built with :func:`create_model`, in the style of timm::

    @register_model
    def resnet20(pretrained=False, **kwargs):
        ...

    model = create_model("resnet20", num_classes=10)

Names of the form ``"<namespace>/<name>"`` (for example ``"timm/resnet18"``) are
handed to a namespace registered with :func:`register_namespace`; they are
created on demand and are not part of the default :func:`list_models` output.
"""
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from torch import nn

__all__ = ["register_model", "register_namespace", "create_model", "list_models", "is_model",
           "WeightsDownloadError"]


class WeightsDownloadError(RuntimeError):
    """Pretrained weights were asked for but could not be fetched (no network, no cached copy).

    The message says where the weights come from, where they are cached and how to do
    without them (``--model_path``, ``--model_rand_int``).
    """


_MODELS: Dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class Namespace:
    """Models built by an external library under the prefix ``"<prefix>/"``."""

    create: Callable[..., nn.Module]          # create(name, pretrained=..., **kwargs)
    list_names: Callable[[Optional[str]], List[str]]  # list_names(pattern) -> names without prefix
    has: Callable[[str], bool]                # has(name) -> bool


_NAMESPACES: Dict[str, Namespace] = {}


def register_model(fn_or_name=None):
    """Register a model factory under its function name or under a given name.

    Use as ``@register_model``, ``@register_model()`` or ``@register_model("name")``.
    The factory is called as ``factory(pretrained=..., **kwargs)``; ``num_classes``
    and ``in_chans`` are passed only when the caller sets them, so the factory's own
    defaults apply otherwise. Registering a name twice raises ``ValueError``.
    """
    def decorator(fn, name=None):
        name = name or fn.__name__
        if "/" in name:
            raise ValueError(f"model name {name!r} must not contain '/' (reserved for namespaces)")
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    if callable(fn_or_name):
        return decorator(fn_or_name)
    return lambda fn: decorator(fn, fn_or_name)


def register_namespace(prefix: str, create, list_names, has) -> None:
    """Route names ``"<prefix>/<name>"`` to an external model library (see :class:`Namespace`)."""
    _NAMESPACES[prefix] = Namespace(create, list_names, has)


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern``.

    Namespaced models (``"timm/..."``) are listed only when the pattern starts with
    their prefix, e.g. ``list_models("timm/resnet*")``, and only when the library
    behind the namespace is installed.
    """
    if pattern and "/" in pattern:
        prefix, sub = pattern.split("/", 1)
        space = _NAMESPACES.get(prefix)
        return [f"{prefix}/{n}" for n in space.list_names(sub or None)] if space else []
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def is_model(name: str) -> bool:
    """Whether ``create_model(name)`` knows the name."""
    if name in _MODELS:
        return True
    prefix, _, sub = name.partition("/")
    space = _NAMESPACES.get(prefix)
    return bool(sub) and space is not None and space.has(sub)


def create_model(name: str, num_classes: Optional[int] = None, pretrained: bool = False,
                 in_chans: Optional[int] = None, **kwargs) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`, or ``"<namespace>/<name>"``.
        num_classes: number of outputs; ``None`` keeps the model's default.
        pretrained: load the model's default pretrained weights.
        in_chans: number of input channels; ``None`` keeps the model's default.
        **kwargs: passed to the model factory.

    Raises:
        ValueError: the name is unknown (the message lists close matches).
        WeightsDownloadError: ``pretrained`` weights could not be downloaded.
    """
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if name in _MODELS:
        return _MODELS[name](pretrained=pretrained, **kwargs)
    prefix, _, sub = name.partition("/")
    if sub and prefix in _NAMESPACES:
        return _NAMESPACES[prefix].create(sub, pretrained=pretrained, **kwargs)
    close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} "
                     f"(list_models() gives the {len(_MODELS)} known names)")
