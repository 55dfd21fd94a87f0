"""Pieces shared by the image views (activation maps, receptive fields, feature inversion):
the source photo, layer lists in depth order, and config checks.

Everything here runs before any optimization, so a bad value fails in one line with nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dgnam.errors import DgnamError
from dgnam.core.images import resize_crop
from dgnam.io import load_image
from dgnam.core.models import INPUT, Target

ASTRONAUT = "astronaut"  # scikit-image's sample photo (Eileen Collins), the articles' example


def source_image(path: str | None, size: int) -> Tensor:
    """The photo a view is computed for -> (3, size, size) in [0, 1].

    ``path``: an image file (grayscale and RGBA are converted to RGB; alpha on white), or ``None`` /
    ``"astronaut"`` for scikit-image's ``data.astronaut()``. Shorter side resized to ``size``, then
    centre-cropped.
    """
    if path is None or str(path) in ("", ASTRONAUT):
        from skimage import data

        x = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255.0  # (3, 512, 512)
        return resize_crop(x, size)
    return load_image(str(path), size)


def layer_list(target: Target, spec: Any) -> list[str]:
    """A layer spec (one name, a list of names, or ``"all"``) -> checked layer names in depth order.

    ``"all"``: the target's friendly aliases if it has them (conv1_1 ... pool5, fc6 ... fc8), else its
    top-level blocks (graph nodes one level below the model, e.g. ``features.0`` ... ``features.18``,
    ``classifier.1``), leaving out dropout and identity layers.
    """
    if spec is None:
        raise DgnamError("no layers given; e.g. layers=conv3_1, layers=[features.3,features.7] or layers=all")
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, str) and spec.strip() == "all":
        return main_layers(target)
    names = [spec] if isinstance(spec, (str, int)) else list(spec)
    if not names:
        raise DgnamError("layers=[] is empty; give one or more layer names, or layers=all")
    out: list[str] = []
    for name in names:
        if str(name) == "all":
            out += [n for n in main_layers(target) if n not in out]
            continue
        target.resolve(str(name))  # an unknown name raises with the valid ones
        if str(name) not in out:
            out.append(str(name))
    return sorted(out, key=lambda n: depth(target, n))


def main_layers(target: Target) -> list[str]:
    """The layers ``layers=all`` stands for (see :func:`layer_list`), in depth order: the aliases, or
    else the output of each top-level block (the last graph node under ``<child>.<index>``, such as
    ``features.3.add`` for MobileNetV2's fourth block), skipping dropout and identity layers."""
    aliases = [a for a in target.aliases if a != "logits"]
    if aliases:
        return sorted(aliases, key=lambda n: depth(target, n))
    modules = dict(target.model.named_modules())
    last: dict[str, str] = {}
    for node in target.nodes:  # topological order: the last node of a block is its output
        parts = node.split(".")
        if len(parts) >= 2:
            last[".".join(parts[:2])] = node
        elif node in modules:
            last[node] = node
    keep = []
    for node in last.values():
        mod = modules.get(node)
        if isinstance(mod, (nn.Dropout, nn.Identity)):
            continue
        keep.append(node)
    return sorted(keep, key=lambda n: depth(target, n))


def depth(target: Target, layer: str) -> int:
    """Position of a layer's graph node in the target's topological order (``input``: -1)."""
    node = target.resolve(layer)
    return -1 if node == INPUT else target.nodes.index(node)


def spatial_layers(target: Target, layers: Sequence[str], size: int, why: str) -> None:
    """Check that every layer has a (C, H, W) activation at image side ``size``."""
    for layer in layers:
        shape = target.layer_shape(layer, size)
        if len(shape) != 3:
            raise DgnamError(f"{why} need a conv or pool layer, but {layer} has shape {tuple(shape)} "
                             f"(not C x H x W); choose a spatial layer")


def positive_int(cfg: DictConfig, key: str, default: int | None = None) -> int:
    """``cfg.<key>`` as a positive integer, or a one-line error naming the key."""
    val = OmegaConf.select(cfg, key, default=default)
    try:
        ival = int(val)
    except (TypeError, ValueError):
        raise DgnamError(f"{key}={val!r} must be a positive integer") from None
    if ival <= 0 or ival != float(val):
        raise DgnamError(f"{key}={val!r} must be a positive integer")
    return ival


def one_of(value: Any, key: str, valid: Sequence[str]) -> str:
    """Check a string option against its valid values."""
    if value not in valid:
        raise DgnamError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    return str(value)
