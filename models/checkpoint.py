"""Saving and loading model weights in the formats found in the wild.

:func:`load_checkpoint` reads a plain state dict, a dict holding one under
``"state_dict"`` or ``"model"``, or a whole pickled ``nn.Module``, and strips the
``"module."`` prefix of ``DataParallel`` / ``DistributedDataParallel`` (and the
``"_orig_mod."`` prefix of ``torch.compile``). :func:`save_checkpoint` writes
``{"state_dict": ..., "metadata": {...}}``.
"""
import os
import pickle
from typing import Any, Dict, Mapping

import torch
from torch import nn

__all__ = ["load_checkpoint", "save_checkpoint", "load_state_dict"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _strip_prefixes(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    state_dict = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def load_state_dict(path) -> tuple:
    """Read a checkpoint file into ``(state_dict, metadata)`` without a model.

    See :func:`load_checkpoint` for the accepted formats and the metadata.

    Files are read with ``torch.load(weights_only=True)`` first; only a file that
    needs full unpickling (a whole pickled module) is read again with
    ``weights_only=False``, which runs code from the file: load only files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"could not read checkpoint {path!r}: {type(err).__name__}: {err}") from err
    metadata = {}
    if isinstance(obj, nn.Module):
        obj = _unwrap(obj).state_dict()
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj:
                metadata = obj.get("metadata") or {k: v for k, v in obj.items()
                                                  if isinstance(v, (bool, int, float, str))}
                obj = obj[key]
                if isinstance(obj, nn.Module):
                    obj = _unwrap(obj).state_dict()
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} holds neither a state dict, a dict with 'state_dict' or 'model', "
                         f"nor a pickled nn.Module (found {type(obj).__name__})")
    return _strip_prefixes(obj), metadata


def load_checkpoint(model: nn.Module, path, strict: bool = True) -> Dict[str, Any]:
    """Load the weights in ``path`` into ``model`` and return the checkpoint's metadata.

    The metadata is what :func:`save_checkpoint` stored, or else the scalar entries
    next to the weights in a training checkpoint (e.g. ``{"epoch": 200}``), or ``{}``.

    With ``strict=True`` missing or unexpected keys and shape mismatches raise a
    ``RuntimeError`` that lists them; with ``strict=False`` matching tensors are
    loaded and mismatching ones are skipped.
    """
    state_dict, metadata = load_state_dict(path)
    target = _unwrap(model)
    own = target.state_dict()
    wrong_shape = [k for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if strict and (wrong_shape or missing or unexpected):
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in wrong_shape]
        problems = [f"{label}: {show(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("shape mismatches", shapes)) if keys]
        raise RuntimeError(f"checkpoint {os.fspath(path)!r} does not fit {type(target).__name__}; "
                           + "; ".join(problems))
    for k in wrong_shape:
        del state_dict[k]
    target.load_state_dict(state_dict, strict=strict)
    return metadata


def save_checkpoint(model, path, **metadata) -> None:
    """Save ``{"state_dict": ..., "metadata": metadata}`` to ``path`` (parent folders are created).

    ``model`` is an ``nn.Module`` (wrappers such as ``DataParallel`` are unwrapped)
    or a state dict; ``metadata`` should hold plain Python values (numbers, strings,
    lists, dicts) so that the file loads with ``weights_only=True``.
    """
    if isinstance(model, nn.Module):
        state_dict = _unwrap(model).state_dict()
    else:
        state_dict = _strip_prefixes(model)
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    torch.save({"state_dict": state_dict, "metadata": metadata}, path)
