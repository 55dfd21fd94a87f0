"""Receptive-field arithmetic: the field each layer's units see, computed from the architecture.

The target's graph (``torch.fx``) is walked in order and every node gets, per image axis, the
classic receptive-field arithmetic (stride ``j``, first pixel ``start`` and extent ``size`` of
unit 0's field). A convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and
dilation ``d`` maps (j, start, size) to (j * s, start - p * j, size + (d * (k - 1)) * j); nodes that
keep the spatial size (ReLU, BatchNorm, add, concat) take the union of their inputs' fields; any
other change of shape (adaptive or global pooling, flatten, linear) makes the field the whole image.
Modules with children are traced and walked in turn. Nothing depends on the model's name. Each axis
also carries the pixels that reach the layer at all (a stride that does not divide the image drops
its last rows), and a unit's box is clipped to them and to the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from dgnam.core.models import INPUT, Target
from dgnam.errors import first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Axis:
    """The field of unit 0 along one image axis: ``stride`` pixels between neighbouring units, the
    first pixel ``start`` (negative where the field reaches into the padding) and ``size`` pixels;
    ``lo``/``hi`` bound the pixels that reach the layer at all (a strided layer may drop the last
    rows of an image whose size it does not divide), for the input size the field was computed at."""

    stride: int
    start: int
    size: int
    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True)
class Field:
    """Receptive field of a layer: per axis (rows ``h``, columns ``w``); ``whole`` when every unit sees
    the whole image (after global pooling or a fully connected layer; ``h``/``w`` then only carry
    the reachable pixels)."""

    h: Axis | None = None
    w: Axis | None = None
    whole: bool = False

    def box(self, x: int, y: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Field of unit (x, y) inside an image of ``height`` x ``width``: ``(x0, y0, x1, y1)``, x1 and y1
        exclusive, clipped to the image and to the pixels that reach the layer."""
        if self.h is None or self.w is None:
            return (0, 0, width, height)
        lo_x, hi_x = max(0, self.w.lo or 0), min(width, width if self.w.hi is None else self.w.hi)
        lo_y, hi_y = max(0, self.h.lo or 0), min(height, height if self.h.hi is None else self.h.hi)
        if self.whole:
            return (lo_x, lo_y, hi_x, hi_y)
        x0, y0 = self.w.start + x * self.w.stride, self.h.start + y * self.h.stride
        return (max(lo_x, x0), max(lo_y, y0), min(hi_x, x0 + self.w.size), min(hi_y, y0 + self.h.size))

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of the unclipped field; None for the whole image."""
        return None if self.whole or self.h is None else (self.h.size, self.w.size)

    @property
    def stride(self) -> tuple[int, int] | None:
        return None if self.whole or self.h is None else (self.h.stride, self.w.stride)

    @property
    def start(self) -> tuple[int, int] | None:
        """(row, column) of the first pixel of unit (0, 0)'s field (negative: in the padding)."""
        return None if self.whole or self.h is None else (self.h.start, self.w.start)


PIXEL = Field(Axis(1, 0, 1), Axis(1, 0, 1))
WHOLE = Field(whole=True)


def pixel_field(height: int, width: int) -> Field:
    """The image itself: every pixel sees itself, all pixels reachable."""
    return Field(Axis(1, 0, 1, 0, height), Axis(1, 0, 1, 0, width))
NONE = None  # a value that does not depend on the image (constants, sizes)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _kernel_step(f: Field, kernel: Any, stride: Any, padding: Any, dilation: Any = 1,
                 out_hw: tuple[int, int] | None = None) -> Field:
    """The field after a sliding window (convolution or pooling) applied to a layer with field ``f``;
    ``out_hw``, the output's spatial size, bounds the reachable pixels."""
    if f.whole:
        return f
    k, s, d = _pair(kernel), _pair(stride if stride not in (None, ()) else kernel), _pair(dilation)
    if isinstance(padding, str):  # Conv2d's "valid" / "same" (PyTorch puts the odd pixel on the right)
        p = (0, 0) if padding == "valid" else tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
    else:
        p = _pair(padding)
    axes = []
    for i, a in enumerate((f.h, f.w)):
        ext = d[i] * (k[i] - 1)
        stride_i, start, size = a.stride * s[i], a.start - p[i] * a.stride, a.size + ext * a.stride
        lo, hi = a.lo, a.hi
        if out_hw is not None and lo is not None and hi is not None:
            lo, hi = max(lo, start), min(hi, start + (out_hw[i] - 1) * stride_i + size)
        axes.append(Axis(stride_i, start, size, lo, hi))
    return Field(axes[0], axes[1])


def _reach(fields: Sequence[Field]) -> tuple[Axis | None, Axis | None]:
    """Axes carrying only the union of the reachable pixels of ``fields`` (for whole-image fields)."""
    out = []
    for pick in (lambda f: f.h, lambda f: f.w):
        ax = [pick(f) for f in fields if pick(f) is not None]
        if not ax or any(a.lo is None or a.hi is None for a in ax):
            out.append(None)
        else:
            lo, hi = min(a.lo for a in ax), max(a.hi for a in ax)
            out.append(Axis(1, lo, hi - lo, lo, hi))
    return out[0], out[1]


def _whole(fields: Sequence[Field | None]) -> Field:
    h, w = _reach([f for f in fields if f is not None])
    return Field(h, w, whole=True)


def _union(fields: Sequence[Field | None]) -> Field | None:
    """Field of a value computed from several inputs of the same spatial size (add, concat, mul)."""
    fields = [f for f in fields if f is not None]
    if not fields:
        return NONE
    if any(f.whole or f.h is None for f in fields):
        return _whole(fields)
    axes = []
    for pick in (lambda f: f.h, lambda f: f.w):
        ax = [pick(f) for f in fields]
        start = min(a.start for a in ax)
        end = max(a.start + a.size for a in ax)
        known = all(a.lo is not None and a.hi is not None for a in ax)
        lo = min(a.lo for a in ax) if known else None
        hi = max(a.hi for a in ax) if known else None
        axes.append(Axis(min(a.stride for a in ax), start, end - start, lo, hi))
    return Field(axes[0], axes[1])


def _hw(v: Any) -> tuple[int, int] | None:
    return tuple(v.shape[-2:]) if isinstance(v, Tensor) and v.dim() == 4 else None


_WINDOW_FUNCS = {F.max_pool2d: "max", F.avg_pool2d: "avg", torch.max_pool2d: "max"}


class _FieldWalker(fx.Interpreter):
    """Run a graph on a real input and record every node's :class:`Field` as it goes."""

    def __init__(self, gm: fx.GraphModule, input_fields: Sequence[Field | None] | None = None) -> None:
        super().__init__(gm)
        self.fields: dict[fx.Node, Field | None] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        self._inputs = list(input_fields) if input_fields is not None else None
        self._placeholder = 0

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        out = super().run_node(n)
        self.fields[n] = self._field(n, args, kwargs, out)
        if isinstance(out, Tensor):
            self.shapes[n] = tuple(out.shape[1:])
        return out

    def _field(self, n: fx.Node, args: tuple, kwargs: dict, out: Any) -> Field | None:
        if n.op == "placeholder":
            i, self._placeholder = self._placeholder, self._placeholder + 1
            if self._inputs is None:
                hw = _hw(out)
                return (pixel_field(*hw) if hw else PIXEL) if i == 0 else NONE
            return self._inputs[i] if i < len(self._inputs) else NONE
        if n.op in ("get_attr", "output"):
            return NONE
        ins = [self.fields.get(a) for a in n.all_input_nodes]
        f_in = _union(ins)
        if f_in is None:
            return NONE
        in_hw = [_hw(self.env[a]) for a in n.all_input_nodes if isinstance(self.env.get(a), Tensor)]
        if n.op == "call_module":
            return module_field(self.module.get_submodule(n.target), f_in, args, out)
        if n.op == "call_function" and n.target in _WINDOW_FUNCS:
            rest = list(args[1:])
            names = ["kernel_size", "stride", "padding", "dilation"]
            geo = dict(zip(names, rest))
            geo.update({k: v for k, v in kwargs.items() if k in names})
            if _WINDOW_FUNCS[n.target] == "avg":
                geo.pop("dilation", None)
            return _kernel_step(f_in, geo["kernel_size"], geo.get("stride"), geo.get("padding", 0),
                                geo.get("dilation", 1), _hw(out))
        return _shape_rule(f_in, in_hw, out)


def _shape_rule(f_in: Field, in_hw: Sequence[tuple[int, int] | None], out: Any) -> Field | None:
    """Operations whose geometry is unknown: keeping the spatial size keeps the field; anything else
    (global pooling, flatten, linear, resizing) spreads it over the whole image."""
    if not isinstance(out, Tensor):
        return NONE
    out_hw = _hw(out)
    spatial_in = [hw for hw in in_hw if hw is not None]
    if out_hw is not None and spatial_in and all(hw == out_hw for hw in spatial_in):
        return f_in
    if out_hw is not None and not spatial_in:  # e.g. a broadcast constant
        return f_in
    return _whole([f_in])


_CONV = (nn.Conv2d,)
_POOL = (nn.MaxPool2d, nn.AvgPool2d)


def module_field(mod: nn.Module, f_in: Field, args: tuple, out: Any) -> Field | None:
    """Field of a module's output given its input's field (traces into modules with children)."""
    if isinstance(mod, _CONV):
        return _kernel_step(f_in, mod.kernel_size, mod.stride, mod.padding, mod.dilation, _hw(out))
    if isinstance(mod, _POOL):
        return _kernel_step(f_in, mod.kernel_size, mod.stride, mod.padding, getattr(mod, "dilation", 1), _hw(out))
    if len(list(mod.children())):
        try:
            gm = fx.symbolic_trace(mod)
        except Exception as e:  # not traceable: fall back to the shape rule
            log.warning("cannot trace %s (%s); its receptive field is estimated from shapes",
                        type(mod).__name__, first_line(e))
        else:
            fields = [f_in if isinstance(a, Tensor) else NONE for a in args]
            walker = _FieldWalker(gm, fields)
            walker.run(*args)
            out_node = next(n for n in gm.graph.nodes if n.op == "output")
            return _union([walker.fields.get(a) for a in out_node.all_input_nodes])
    in_hw = [_hw(a) for a in args if isinstance(a, Tensor)]
    return _shape_rule(f_in, in_hw, out)


def layer_fields(target: Target, layers: Sequence[str], size: int,
                 shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Field]:
    """Computed receptive field of each layer of ``target`` (aliases or node names) for a square
    input of side ``size`` (the size matters only where shapes decide, e.g. adaptive pooling).

    One pass through the graph; ``shapes``, if given, receives each layer's activation shape (one
    item, e.g. (C, H, W)) on the way."""
    nodes = {layer: target.resolve(layer) for layer in layers}
    wanted = sorted({n for n in nodes.values() if n != INPUT})
    out: dict[str, Field] = {layer: pixel_field(size, size) for layer, n in nodes.items() if n == INPUT}
    if shapes is not None:
        shapes.update({layer: (3, size, size) for layer in out})
    if not wanted:
        return out
    gm = create_feature_extractor(target.model, return_nodes={n: n for n in wanted})
    walker = _FieldWalker(gm)
    device = target.mean.device
    with torch.no_grad():
        walker.run(torch.zeros(1, 3, size, size, device=device))
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    by_name = out_node.args[0]
    for layer, node in nodes.items():
        if node != INPUT:
            f = walker.fields.get(by_name[node])
            out[layer] = f if f is not None else WHOLE
        if shapes is not None:
            shape = walker.shapes.get(by_name[node]) if node != INPUT else (3, size, size)
            if shape is not None:
                shapes[layer] = shape
    return out
