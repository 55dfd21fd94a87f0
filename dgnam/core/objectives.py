"""Objectives: activations -> one score per batch item, to be MAXIMIZED.

An :class:`Objective` knows the layers it reads (so the target computes only those) and composes
with ``+``, ``-``, unary ``-`` and scalar ``*``. Unit arguments take one index for the whole batch
or one per batch item (a sequence of length B): that is how many units run in one pass.
The pseudo-layer ``"input"`` is the transformed image in [0, 1], so image priors (total variation,
alpha-norm) are objectives too and are subtracted like any other term.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from dgnam.core import images
from dgnam.core.models import INPUT

Acts = Mapping[str, Tensor]
UnitIndex = int | Sequence[int] | Tensor


class Objective:
    """A score function ``acts -> (B,)`` with a name and the set of layers it needs."""

    def __init__(self, fn: Callable[[Acts], Tensor], layers: frozenset[str] | set[str], name: str) -> None:
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name

    def __call__(self, acts: Acts) -> Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: Objective | float) -> Objective:
        if not isinstance(other, Objective):
            return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other}")
        return Objective(lambda a: self(a) + other(a), self.layers | other.layers, f"{self.name} + {other.name}")

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), self.layers, f"-({self.name})")

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __mul__(self, k: float) -> Objective:
        if isinstance(k, Objective):
            raise TypeError("objectives multiply by scalars only")
        return Objective(lambda a: k * self(a), self.layers, f"{k:g} * {self.name}")

    __rmul__ = __mul__


def _index(units: UnitIndex, batch: int, device: torch.device) -> Tensor:
    idx = torch.as_tensor(units, device=device, dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        return idx.expand(batch)
    if idx.numel() != batch:
        raise ValueError(f"{idx.numel()} unit indices for a batch of {batch}")
    return idx


def _pick_channel(act: Tensor, units: UnitIndex) -> Tensor:
    """(B, C, ...) -> (B, ...): item b's channel units[b]."""
    idx = _index(units, act.shape[0], act.device)
    return act[torch.arange(act.shape[0], device=act.device), idx]


def channel(layer: str, units: UnitIndex) -> Objective:
    """Mean over space of a conv channel (B, C, H, W), or the value of an fc unit / logit (B, C)."""

    def fn(acts: Acts) -> Tensor:
        picked = _pick_channel(acts[layer], units)
        return picked.flatten(1).mean(1) if picked.dim() > 1 else picked

    return Objective(fn, {layer}, f"channel({layer}, {_fmt(units)})")


def neuron(layer: str, units: UnitIndex, x: int | None = None, y: int | None = None) -> Objective:
    """One conv neuron: channel ``units`` at column ``x``, row ``y`` (default: the centre)."""

    def fn(acts: Acts) -> Tensor:
        act = acts[layer]
        h, w = act.shape[-2:]
        col = w // 2 if x is None else x
        row = h // 2 if y is None else y
        return _pick_channel(act, units)[:, row, col]

    return Objective(fn, {layer}, f"neuron({layer}, {_fmt(units)}, x={x}, y={y})")


def token_channel(layer: str, units: UnitIndex, start: int = 0) -> Objective:
    """Mean of one channel over the tokens ``start:`` of a transformer layer (B, T, C): over the
    patch tokens when ``start`` skips the class (and register) tokens."""

    def fn(acts: Acts) -> Tensor:
        act = acts[layer][:, start:]  # (B, T', C)
        return _pick_channel(act.transpose(1, 2), units).mean(1)

    return Objective(fn, {layer}, f"token_channel({layer}, {_fmt(units)}, start={start})")


def token(layer: str, units: UnitIndex, index: int) -> Objective:
    """One channel of one token of a transformer layer (B, T, C): the class token (``index`` 0) or
    one patch position, a transformer's "neuron"."""

    def fn(acts: Acts) -> Tensor:
        return _pick_channel(acts[layer][:, index], units)

    return Objective(fn, {layer}, f"token({layer}, {_fmt(units)}, index={index})")


def class_logit(layer: str, units: UnitIndex) -> Objective:
    """A pre-softmax class logit (B, num_classes)."""
    obj = channel(layer, units)
    obj.name = f"class_logit({layer}, {_fmt(units)})"
    return obj


def class_log_softmax(layer: str, units: UnitIndex) -> Objective:
    """A class's log softmax probability ``log p(y | x)`` over a logit layer (B, num_classes): the
    condition of the PPGN sampler (Nguyen et al. 2017). Its gradient is the logit's times ``1 - p``
    minus the other classes' logits' times theirs, so it fades as the class grows certain and other
    terms of the objective (a diversity term) take over the step."""

    def fn(acts: Acts) -> Tensor:
        return _pick_channel(acts[layer].float().log_softmax(-1), units)

    return Objective(fn, {layer}, f"class_log_softmax({layer}, {_fmt(units)})")


def feature_match(layer: str, reference: Tensor) -> Objective:
    """Feature inversion: ``-||phi(x) - phi0||^2 / ||phi0||^2`` per item (Mahendran & Vedaldi).

    ``reference`` is phi0, shaped like one batch of the layer's activations (or one item, broadcast).
    """
    ref = reference.detach()
    denom = ref.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def fn(acts: Acts) -> Tensor:
        diff = (acts[layer] - ref).flatten(1).pow(2).sum(1)
        return -diff / denom

    return Objective(fn, {layer}, f"feature_match({layer})")


DREAM_REDUCE = ("l2", "mean")


def dream(layer: str, reduce: str = "l2") -> Objective:
    """DeepDream: the mean square (``l2``: the squared L2 norm per element) or the mean (``mean``) of
    a layer's activations, per item: amplify whatever the layer already sees."""
    if reduce not in DREAM_REDUCE:
        raise ValueError(f"unknown dream reduction {reduce!r}; valid: {', '.join(DREAM_REDUCE)}")

    def fn(acts: Acts) -> Tensor:
        a = acts[layer].flatten(1)
        return a.pow(2).mean(1) if reduce == "l2" else a.mean(1)

    return Objective(fn, {layer}, f"dream_{reduce}({layer})")


def guided_dream(layer: str, guide: Tensor) -> Objective:
    """Guided DeepDream: at every position of a conv layer (B, C, H, W), the largest dot product of
    its feature vector with the guide image's feature vectors (``guide``: the guide's activations at
    that layer, (1, C, ...)), averaged over positions. Its gradient pulls each position towards the
    guide feature it already resembles most."""
    g = guide.detach().reshape(guide.shape[1], -1)  # (C, M)

    def fn(acts: Acts) -> Tensor:
        a = acts[layer]
        x = a.reshape(a.shape[0], a.shape[1], -1)  # (B, C, N)
        dots = torch.einsum("bcn,cm->bnm", x, g.to(x.dtype))
        return dots.amax(-1).mean(-1)

    return Objective(fn, {layer}, f"guided_dream({layer})")


def gram(acts: Tensor) -> Tensor:
    """Gram matrices of conv activations (B, C, H, W) -> (B, C, C): ``F F^T / (H W)`` with ``F`` the
    (C, H W) feature map of each item (Gatys et al.'s style representation, averaged over positions)."""
    f = acts.reshape(acts.shape[0], acts.shape[1], -1)
    return f @ f.transpose(1, 2) / f.shape[-1]


def style_match(layer: str, reference: Tensor) -> Objective:
    """Style transfer's term: ``||G(phi(x)) - G(phi(s))||^2 / ||G(phi(s))||^2`` per item, G the Gram
    matrix (:func:`gram`) and ``reference`` the style image's activations (1, C, H, W); SUBTRACT it.
    The normalization makes every layer's term 1 for an all-zero image, so weights compare."""
    ref = gram(reference.detach().float())
    denom = ref.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def fn(acts: Acts) -> Tensor:
        return (gram(acts[layer].float()) - ref).flatten(1).pow(2).sum(1) / denom

    return Objective(fn, {layer}, f"style({layer})")


def diversity(layer: str, group: int) -> Objective:
    """The diversity term of feature visualization (Olah et al., Distill 2017): for each item, the mean
    cosine similarity of its Gram matrix (:func:`gram`; a 2-D layer's vectors themselves) at ``layer``
    with those of the other items of its group, ``group`` consecutive items (a unit's K samples
    side by side in one batch); SUBTRACT it, so that the samples of a unit draw different things."""
    if group < 2:
        raise ValueError(f"diversity needs groups of at least 2 items, got {group}")

    def fn(acts: Acts) -> Tensor:
        a = acts[layer].float()
        if a.shape[0] % group:
            raise ValueError(f"diversity: a batch of {a.shape[0]} does not split into groups of {group}")
        f = gram(a) if a.dim() == 4 else a
        f = torch.nn.functional.normalize(f.flatten(1), dim=1).reshape(-1, group, f[0].numel())
        sim = f @ f.transpose(1, 2)  # (groups, K, K)
        others = sim.sum(-1) - sim.diagonal(dim1=1, dim2=2)
        return (others / (group - 1)).reshape(-1)

    return Objective(fn, {layer}, f"diversity({layer})")


def total_variation(beta: float = 2.0) -> Objective:
    """Total variation of the image, ``sum((dx^2 + dy^2)^(beta/2))`` averaged per pixel; SUBTRACT it."""

    def fn(acts: Acts) -> Tensor:
        return images.total_variation(acts[INPUT], beta, eps=1e-8)

    return Objective(fn, {INPUT}, f"tv(beta={beta:g})")


def alpha_norm(alpha: float = 6.0) -> Objective:
    """Mean of ``|x - 0.5|^alpha`` of the image (zero-centred); SUBTRACT it to keep pixels bounded."""

    def fn(acts: Acts) -> Tensor:
        return (acts[INPUT] - 0.5).abs().pow(alpha).flatten(1).mean(1)

    return Objective(fn, {INPUT}, f"alpha_norm({alpha:g})")


def l2(layer: str = INPUT, center: float = 0.5) -> Objective:
    """Mean squared value of a layer (the image by default, zero-centred); SUBTRACT it."""

    def fn(acts: Acts) -> Tensor:
        return (acts[layer] - (center if layer == INPUT else 0.0)).pow(2).flatten(1).mean(1)

    return Objective(fn, {layer}, f"l2({layer})")


def _fmt(units: UnitIndex) -> str:
    if isinstance(units, Tensor):
        units = units.tolist()
    if isinstance(units, (list, tuple)) and len(units) > 4:
        return f"[{units[0]}, {units[1]}, ..., {units[-1]}]"
    return str(units)
