"""Pieces shared by the image views (activation maps, receptive fields, feature inversion, dataset
examples): layer lists in depth order, spatial-layer checks, and drawing helpers (a box outlined, a box
zoomed, a title strip).

Everything here runs before any optimization, so a bad value fails in one line with nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from dgnam.core.models import INPUT, Target
from dgnam.errors import DgnamValueError
from dgnam.io import to_pil


def layer_list(target: Target, spec: Any) -> list[str]:
    """A layer spec (one name, a list of names, or ``"all"``) -> checked layer names in depth order.

    ``"all"``: the target's friendly aliases if it has them (conv1_1 ... pool5, fc6 ... fc8), else its
    top-level blocks (graph nodes one level below the model, e.g. ``features.0`` ... ``features.18``,
    ``classifier.1``), leaving out dropout and identity layers.
    """
    if spec is None:
        raise DgnamValueError("no layers given; e.g. layers=conv3_1, layers=[features.3,features.7] or layers=all")
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, str) and spec.strip() == "all":
        return main_layers(target)
    names = [spec] if isinstance(spec, (str, int)) else list(spec)
    if not names:
        raise DgnamValueError("layers=[] is empty; give one or more layer names, or layers=all")
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
            raise DgnamValueError(f"{why} need a conv or pool layer, but {layer} has shape {tuple(shape)} "
                             f"(not C x H x W); choose a spatial layer")


def text_strip(text: str, width: int, height: int = 18) -> Tensor:
    """A white uint8 strip (3, height, width) with ``text`` on it (a figure title)."""
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, max(0, (height - 11) // 2)), text, fill=(0, 0, 0),
                               font=ImageFont.load_default())
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1)


def outline(image: Tensor, box: tuple[int, int, int, int], color: tuple[int, int, int] = (255, 32, 32),
            width: int = 2) -> Tensor:
    """(3, H, W) in [0, 1] -> uint8 copy with the box ``(x0, y0, x1, y1)`` drawn on it."""
    pil = to_pil(image)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(pil).rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def zoom_crop(image: Tensor, box: tuple[int, int, int, int], side: int) -> Tensor:
    """The box of a (3, H, W) image scaled up (nearest neighbour, aspect kept) onto a white square
    of ``side`` pixels -> (3, side, side) in [0, 1]."""
    x0, y0, x1, y1 = box
    crop = image[:, y0:y1, x0:x1]
    h, w = crop.shape[-2:]
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    up = F.interpolate(crop[None].float(), size=(nh, nw), mode="nearest")[0]
    canvas = torch.ones(3, side, side)
    top, left = (side - nh) // 2, (side - nw) // 2
    canvas[:, top : top + nh, left : left + nw] = up
    return canvas
