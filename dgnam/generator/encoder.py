"""The encoder E (image -> code) and the comparator C (image -> features for the feature loss).

Both wrap a frozen :class:`dgnam.core.models.Target` (eval mode, its own input normalization) and one of
its layers; they may share one target. Images are RGB in [0, 1].
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from dgnam.core.images import resize
from dgnam.core.models import Target
from dgnam.errors import DgnamValueError

POOLINGS = ("none", "avg", "max")


TORCHVISION_BUILDER = "dgnam.core.models.build_target"
TIMM_BUILDER = "dgnam.core.timm_models.build_timm_target"


class _Frozen(nn.Module):
    """Base: holds a target, never leaves eval mode and never trains."""

    def __init__(self, target: Target, layer: str, input_size: int | None) -> None:
        super().__init__()
        target.resolve(layer)  # unknown layer -> DgnamError listing the valid ones
        self.target = target.eval().requires_grad_(False)
        self.layer = layer
        self.input_size = int(input_size) if input_size else None

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class Encoder(_Frozen):
    """E: images (B, 3, H, W) in [0, 1] -> codes (B, D).

    Args:
        target: the frozen network.
        layer: its layer (alias or node name) whose activation is the code, e.g. ``fc6`` or
            ``flatten`` (MobileNetV2's pooled 1280-d features).
        pooling: ``none`` (flatten the activation), ``avg`` or ``max`` (global pooling of a
            (B, C, H, W) activation to (B, C)).
        input_size: images are resized to this square side before E (``None``: as they come).
        weights: a description of the weights (file name or enum), stored with the generator.
        builder: the ``_target_`` that built ``target`` (``dgnam.core.models.build_target`` for
            torchvision, ``dgnam.core.timm_models.build_timm_target``, or the import path of a
            network of one's own), stored with the generator.
    """

    def __init__(self, target: Target, layer: str, pooling: str = "none", input_size: int | None = None,
                 weights: str | None = None, builder: str | None = None) -> None:
        if pooling not in POOLINGS:
            raise DgnamValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        super().__init__(target, layer, input_size)
        self.pooling = pooling
        self.weights = os.path.basename(str(weights)) if weights else None
        self.builder = builder or TORCHVISION_BUILDER
        self._dim: int | None = None

    def forward(self, images: Tensor) -> Tensor:
        a = self.target(resize(images, self.input_size), [self.layer])[self.layer]
        if a.dim() == 4 and self.pooling == "avg":
            a = a.mean(dim=(2, 3))
        elif a.dim() == 4 and self.pooling == "max":
            a = a.amax(dim=(2, 3))
        return a.flatten(1).float()  # (B, D)

    @property
    def code_dim(self) -> int:
        if self._dim is None:
            size = self.input_size or self.target.input_size
            p = next(iter(self.target.buffers()))
            with torch.no_grad():
                self._dim = int(self(torch.zeros(1, 3, size, size, device=p.device)).shape[1])
        return self._dim

    @property
    def code_shape(self) -> tuple[int, ...]:
        """The code's shape before flattening: ``(C, H, W)`` for an unpooled conv layer, ``(D,)``
        otherwise."""
        size = self.input_size or self.target.input_size
        shape = self.target.layer_shape(self.layer, size)
        return tuple(shape) if len(shape) == 3 and self.pooling == "none" else (self.code_dim,)

    def describe(self) -> dict[str, Any]:
        """What a generator trained on this encoder needs to know about it."""
        return {"arch": self.target.name, "builder": self.builder, "weights_file": self.weights, "layer": self.layer,
                "pooling": self.pooling, "input_size": self.input_size,
                "mean": [float(v) for v in self.target.mean.flatten()],
                "std": [float(v) for v in self.target.std.flatten()]}


class Comparator(_Frozen):
    """C: images (B, 3, H, W) in [0, 1] -> features at ``layer`` (the feature loss compares these).

    ``input_size`` resizes the images first (a smaller input makes C cheaper)."""

    def forward(self, images: Tensor) -> Tensor:
        return self.target(resize(images, self.input_size), [self.layer])[self.layer].float()

    def describe(self) -> dict[str, Any]:
        return {"arch": self.target.name, "layer": self.layer, "input_size": self.input_size}


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder descriptions name the same network, weights, layer and pooling."""
    keys = ("arch", "weights_file", "layer", "pooling")
    return all(a.get(k) == b.get(k) for k in keys)


class Perceptual(_Frozen):
    """A perceptual loss on several layers of a frozen network: for each layer l with weight w_l,
    ``w_l * ||C_l(G) - C_l(x)||^2 / ||C_l(x)||^2`` per item (each layer's error relative to the photo's
    feature energy, so that layers of any size weigh alike), summed over layers, averaged over items.

    C_l(x) is computed here from the photos (no cache): a forward pass on the few items the decoded
    term runs on. ``layers``: ``[[layer, weight], ...]`` (aliases or node names of ``target``)."""

    def __init__(self, target: Target, layers: list[list[Any]] | list[tuple[str, float]],
                 input_size: int | None = None) -> None:
        pairs = layer_pairs(target, layers or [])
        if not pairs:
            raise DgnamValueError("loss.weights.perceptual > 0 needs loss.perceptual_layers: [[layer, weight], ...]")
        super().__init__(target, pairs[0][0], input_size)
        self.layers = pairs

    def forward(self, recon: Tensor, photos: Tensor) -> Tensor:
        names = [n for n, _ in self.layers]
        with torch.no_grad():
            fx = self.target(resize(photos, self.input_size), names)
        fg = self.target(resize(recon, self.input_size), names)
        total = recon.new_zeros(())
        for name, w in self.layers:
            a, b = fg[name].float(), fx[name].float()
            rel = (a - b).pow(2).flatten(1).sum(1) / b.pow(2).flatten(1).sum(1).clamp_min(1e-8)
            total = total + w * rel.mean()
        return total


def auto_perceptual_layers(target: Target, code_layer: str, input_size: int, past: bool = False) -> list[tuple[str, float]]:
    """Perceptual layers of any network, picked by depth around the code layer: the deepest layer at
    each spatial side from input/4 down to the side above the code's, then the code layer (the
    recipe's choice for MobileNetV2: ``features.3.add``, ``features.6.add``, ..., the code); with
    ``past``, also the deepest spatial map after the code (side > 1: the map the classifier pools),
    where the recipe's third stage extends the term. Each layer's weight is 1."""
    code = target.resolve(code_layer)
    p = next(iter(target.buffers()))
    with torch.no_grad():
        acts = target(torch.zeros(1, 3, input_size, input_size, device=p.device), target.nodes)
    maps = [(n, a.shape[-1]) for n, a in acts.items() if isinstance(a, Tensor) and a.dim() == 4]
    order = {n: i for i, n in enumerate(target.nodes)}
    if code not in order or code not in dict(maps):
        raise DgnamValueError(f"perceptual_layers=auto needs a spatial code layer (a C x H x W map); "
                              f"{code_layer} is not one: name the layers, [[layer, weight], ...]")
    side = dict(maps)[code]
    before = [(n, s) for n, s in maps if order[n] < order[code] and side < s <= input_size // 4]
    deepest: dict[int, str] = {}
    for n, s in before:
        deepest[s] = n  # maps are in graph order: the last one of each side wins
    picked = [deepest[s] for s in sorted(deepest, reverse=True)] + [code_layer]
    if past:
        after = [n for n, s in maps if order[n] > order[code] and s > 1]
        picked += after[-1:]
    return [(n, 1.0) for n in picked]


def perceptual_layers(target: Target, spec: Any, code_layer: str, input_size: int) -> list[tuple[str, float]] | None:
    """A ``perceptual_layers`` value as ``[(layer, weight), ...]``: a list of pairs as given, ``auto``
    (the layers up to the code, :func:`auto_perceptual_layers`) or ``auto_past`` (and past it);
    None or [] stays None."""
    if spec in (None, [], ()):
        return None
    if isinstance(spec, str):
        if spec not in ("auto", "auto_past"):
            raise DgnamValueError(f"perceptual_layers={spec!r}; valid: [[layer, weight], ...], auto, auto_past")
        return auto_perceptual_layers(target, code_layer, input_size, past=spec == "auto_past")
    return layer_pairs(target, spec)


def layer_pairs(target: Target, items: Any) -> list[tuple[str, float]]:
    """``[[layer, weight], ...]`` as ``[(layer, weight), ...]``, each layer one of ``target``'s (an
    unknown one is a DgnamError listing the valid ones)."""
    pairs = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise DgnamValueError(f"loss.perceptual_layers item {item!r} must be a pair [layer, weight]")
        target.resolve(str(item[0]))
        pairs.append((str(item[0]), float(item[1])))
    return pairs
