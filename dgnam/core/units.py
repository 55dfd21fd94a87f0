"""Unit selection: turn what a user writes (``5``, ``[1, goldfish]``, ``"0-39"``, ``"first:40"``,
``"all"``) into checked unit indices and objectives for one layer of a target."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dgnam.core import objectives as O
from dgnam.core.models import Target
from dgnam.errors import DgnamValueError

KINDS = ("auto", "class", "channel", "neuron", "unit", "cls")


@dataclass(frozen=True)
class Unit:
    """One unit of a layer: ``index`` into the channel (or logit / fc) axis, a ``label`` for files."""

    layer: str
    index: int
    kind: str
    label: str
    x: int | None = None
    y: int | None = None
    token: int | None = None  # a transformer layer (T, C): the token of a cls / neuron unit ...
    start: int | None = None  # ... and its first patch token (after class/register tokens); None: no tokens


def token_grid(tokens: int) -> tuple[int, int]:
    """(prefix tokens, side of the square patch grid) of a transformer layer with ``tokens`` tokens:
    197 = 1 class token + 14 x 14 patches."""
    for prefix in range(9):
        side = math.isqrt(tokens - prefix) if tokens > prefix else 0
        if side and side * side == tokens - prefix:
            return prefix, side
    raise DgnamValueError(f"a layer of {tokens} tokens has no square patch grid (after up to 8 class/register tokens)")


def _parse_units(spec: object, n: int, target: Target, is_class: bool) -> list[tuple[int, str]]:
    """-> [(index, label)] for a unit spec; ``n`` is the size of the unit axis."""
    if spec is None:
        raise DgnamValueError("no units given; e.g. units=[0,1,2], units=0-39, units=first:40, units=all")
    items: Sequence[object]
    if isinstance(spec, str):
        s = spec.strip()
        if s == "all":
            return [(i, str(i)) for i in range(n)]
        m = re.fullmatch(r"first:(\d+)", s)
        if m:
            k = int(m.group(1))
            if k <= 0 or k > n:
                raise DgnamValueError(f"units={s!r}: the layer has {n} units, so first:N needs 1 <= N <= {n}")
            return [(i, str(i)) for i in range(k)]
        m = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", s)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise DgnamValueError(f"units={s!r}: empty range (a range a-b is inclusive and needs a <= b)")
            items = list(range(a, b + 1))
        else:
            items = [s]
    elif isinstance(spec, int):
        items = [spec]
    else:
        items = list(spec)  # type: ignore[arg-type]
    out = []
    for it in items:
        if isinstance(it, bool):
            raise DgnamValueError(f"unit {it!r} is not an index or a class name")
        if isinstance(it, int) or (isinstance(it, str) and it.strip().lstrip("-").isdigit()):
            idx = int(it)
            label = str(idx)
        elif isinstance(it, str):
            if not is_class:
                raise DgnamValueError(f"unit {it!r} is a name, but names only select classes of the logits layer")
            idx = target.class_index(it)
            label = str(idx)
        else:
            raise DgnamValueError(f"unit {it!r} is not an index or a class name")
        if not 0 <= idx < n:
            raise DgnamValueError(f"unit {idx} is out of range: the layer has {n} units (valid: 0 to {n - 1})")
        if is_class and target.categories and label == str(idx):
            label = f"{idx} {target.categories[idx]}"
        seen = next((lab for i, lab in out if i == idx), None)
        if seen is not None:
            raise DgnamValueError(f"units lists unit {idx} twice ({seen!r} and {it!r}); give each unit once")
        out.append((idx, label))
    if not out:
        raise DgnamValueError(f"units={list(items)!r} selects no unit; e.g. units=[0,1,2], units=0-39, units=first:40, "
                         f"units=all")
    return out


def select_units(target: Target, layer: str, spec: object, kind: str = "auto",
                 position: Sequence[int] | None = None, size: int | None = None) -> list[Unit]:
    """Check ``layer`` and ``spec`` against ``target`` and return the selected units.

    ``kind``: ``class`` (a logit), ``channel`` (mean of a conv channel), ``neuron`` (one conv
    position, ``position`` = (x, y), default the centre), ``unit`` (an fc unit), or ``auto``
    (class on the logits layer, channel on conv layers, unit on fc layers; neuron if a position
    is given). ``size`` is the image side used to work out the layer's shape.

    A transformer layer's tokens (T, C): ``channel`` is the mean of a channel over the patch tokens,
    ``cls`` the channel of the class token, ``neuron`` the channel at one patch ``position``
    (x, y) of the patch grid (default the centre).
    """
    if kind not in KINDS:
        raise DgnamValueError(f"unknown unit kind {kind!r}; valid: {', '.join(KINDS)}")
    node = target.resolve(layer)
    shape = target.layer_shape(layer, size)
    is_logits = node == target.aliases["logits"]
    spatial = len(shape) == 3
    if len(shape) == 2 and not is_logits:
        return _token_units(target, layer, spec, kind, position, shape)
    if kind == "cls":
        raise DgnamValueError(f"unit kind 'cls' needs a transformer layer (tokens x channels), but {layer} has shape "
                         f"{tuple(shape)}")
    if kind == "auto":
        kind = "class" if is_logits else ("neuron" if spatial and position is not None
                                          else "channel" if spatial else "unit")
    if kind in ("channel", "neuron") and not spatial:
        raise DgnamValueError(f"unit kind {kind!r} needs a conv layer, but {layer} has shape {tuple(shape)}; use unit")
    if kind == "class" and not is_logits:
        raise DgnamValueError(f"unit kind 'class' needs the logits layer, not {layer!r}")
    x = y = None
    if kind == "neuron" and position is not None:
        if len(position) != 2:
            raise DgnamValueError(f"position={list(position)} must be [x, y]")
        x, y = int(position[0]), int(position[1])
        h, w = shape[-2:]
        if not (0 <= x < w and 0 <= y < h):
            raise DgnamValueError(f"position (x={x}, y={y}) is outside {layer}, which is {w} wide and {h} high")
    picked = _parse_units(spec, shape[0], target, kind == "class")
    return [Unit(layer, i, kind, label, x, y) for i, label in picked]


def _token_units(target: Target, layer: str, spec: object, kind: str, position: Sequence[int] | None,
                 shape: tuple[int, ...]) -> list[Unit]:
    """Units of a transformer layer (T, C); see :func:`select_units`."""
    tokens, channels = shape
    start, side = token_grid(tokens)
    if kind == "auto":
        kind = "neuron" if position is not None else "channel"
    if kind not in ("channel", "cls", "neuron"):
        raise DgnamValueError(f"unit kind {kind!r} does not fit {layer}, a transformer layer of {tokens} tokens x "
                         f"{channels} channels; valid: channel (mean over patches), cls, neuron (a patch position)")
    if kind == "cls" and start == 0:
        raise DgnamValueError(f"{layer} has no class token ({tokens} tokens = {side} x {side} patches); use channel or neuron")
    token = 0 if kind == "cls" else None
    x = y = None
    if kind == "neuron":
        x, y = (int(position[0]), int(position[1])) if position is not None else (side // 2, side // 2)
        if (position is not None and len(position) != 2) or not (0 <= x < side and 0 <= y < side):
            raise DgnamValueError(f"position={list(position or [])} must be [x, y] inside the {side} x {side} patch grid "
                             f"of {layer}")
        token = start + y * side + x
    picked = _parse_units(spec, channels, target, False)
    return [Unit(layer, i, kind, label, x, y, token, start) for i, label in picked]


def shard_units(units: Sequence[Unit], index: int = 0, count: int = 1) -> list[Unit]:
    """Shard ``index`` of ``count`` of ``units``: a contiguous block (blocks differ in size by at
    most one unit; together, in index order, they are ``units``). The jobs of a sweep over
    ``shard.index=range(0,count)`` run the units of one large job between them."""
    index, count = int(index), int(count)
    if not 0 <= index < count:
        raise DgnamValueError(f"shard.index={index} must be in 0 .. shard.count - 1 = {count - 1}")
    n = len(units)
    if count > n:
        raise DgnamValueError(f"shard.count={count} is more than the {n} units selected; give at most {n}")
    return list(units[index * n // count : (index + 1) * n // count])


CLASS_SCORES = ("logit", "log_softmax")


def objective_for(units: Sequence[Unit], class_score: str = "logit") -> O.Objective:
    """One batched objective: item b maximizes ``units[b]`` (all of one layer and kind); a class unit
    its pre-softmax logit or (``class_score="log_softmax"``) its log probability."""
    if class_score not in CLASS_SCORES:  # not dgnam.checks.one_of: the core imports no config code (test_layout)
        raise DgnamValueError(f"unknown class_score {class_score!r}; valid: {', '.join(CLASS_SCORES)}")
    first = units[0]
    idx = [u.index for u in units]
    if first.token is not None:
        return O.token(first.layer, idx, first.token)
    if first.start is not None:
        return O.token_channel(first.layer, idx, first.start)
    if first.kind == "neuron":
        return O.neuron(first.layer, idx, first.x, first.y)
    if first.kind == "class":
        return O.class_log_softmax(first.layer, idx) if class_score == "log_softmax" else O.class_logit(first.layer, idx)
    return O.channel(first.layer, idx)
