"""Weights for targets: torchvision's weights enums (downloaded once into torch's hub cache, or one
clear line saying where to put the file) and local ``state_dict`` files (read without running code,
checked key by key against the architecture)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line
from dgnam.safeload import check_finite_tensors, check_state_dict, load_file


def resolve_weights_enum(arch: str, weights: str):
    """A torchvision weights enum by name (``IMAGENET1K_V1``, ``VGG16_Weights.IMAGENET1K_V1``, ``DEFAULT``)."""
    try:
        enum_cls = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as e:
        raise DgnamValueError(f"no torchvision weights known for {arch!r}: {e}") from None
    key = weights.split(".")[-1]
    try:
        return enum_cls.DEFAULT if key == "DEFAULT" else enum_cls[key]
    except KeyError:
        valid = ["DEFAULT"] + [w.name for w in enum_cls]
        raise DgnamValueError(f"unknown weights {weights!r} for {arch}; valid: {', '.join(valid)}") from None


def cached_weights_file(enum) -> Path:
    """Where torch's hub cache keeps a weights enum's file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)


def download(enum, timeout: float) -> None:
    """Fetch a weights enum's file into torch's hub cache, or fail with one clear line."""
    dst = cached_weights_file(enum)
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(enum.url, str(dst), progress=True)
    except Exception as e:  # no network, DNS failure, HTTP error, timeout ...
        reason = first_line(getattr(e, "reason", e))
        raise DgnamValueError(
            f"cannot download {type(enum).__name__}.{enum.name} from {enum.url} ({reason}); "
            f"put that file at {dst}, or give a local state_dict with "
            f"model.weights=null model.weights_file=/path/to/{dst.name}"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def load_safetensors(path: Path) -> dict:
    """A ``.safetensors`` file (tensors only by its format: nothing in it can run)."""
    if not path.is_file():
        raise DgnamFileNotFoundError(f"weights file not found: {path}")
    try:
        from safetensors.torch import load_file as st_load
    except ImportError:
        raise DgnamValueError(f"{path} is a .safetensors file, which needs the safetensors package: pip install "
                         f"safetensors (it comes with the timm extra: pip install -e .[timm])") from None
    try:
        state = st_load(str(path), device="cpu")
    except Exception as e:
        raise DgnamValueError(f"cannot read weights file {path}: {first_line(e)}") from None
    check_finite_tensors(state, f"weights file {path}")
    return state


def load_weights_file(model: nn.Module, weights_file: str | os.PathLike, arch: str) -> None:
    """Load a local ``state_dict`` (or a checkpoint dict with a ``state_dict`` entry; or a
    ``.safetensors`` file) into ``model``."""
    path = Path(os.path.expanduser(str(weights_file)))
    state = load_safetensors(path) if path.suffix == ".safetensors" else load_file(path, "weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DgnamValueError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    check_state_dict(model.state_dict(), state, f"weights file {path} does not fit {arch} (another architecture?)")
    model.load_state_dict(state)


def check_weights(model: nn.Module, name: str) -> None:
    """A model's weights hold values (not on the meta device) and are finite, before any step: NaN
    weights would otherwise run to the end and write black images with NaN activations."""
    state = model.state_dict()
    meta = next((n for n, t in state.items() if t.device.type == "meta"), None)
    if meta is not None:
        raise DgnamValueError(f"{name}: its weights are on the meta device (shapes without values, e.g. {meta!r}); "
                              f"load real weights first (model.to_empty(device='cpu') then load_state_dict)")
    check_finite_tensors(state, f"{name}'s weights")
