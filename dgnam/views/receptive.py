"""Receptive fields: computed from the architecture, measured by gradient, and explored with
single-neuron activation maximization that may change only the field.

Computed: the target's graph (``torch.fx``) is walked in order and every node gets, per image axis,
the classic receptive-field arithmetic (stride ``j``, first pixel ``start`` and extent ``size`` of
unit 0's field). A convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and
dilation ``d`` maps (j, start, size) to (j * s, start - p * j, size + (d * (k - 1)) * j); nodes that
keep the spatial size (ReLU, BatchNorm, add, concat) take the union of their inputs' fields; any
other change of shape (adaptive or global pooling, flatten, linear) makes the field the whole image.
Modules with children are traced and walked in turn. Nothing depends on the model's name. Each axis
also carries the pixels that reach the layer at all (a stride that does not divide the image drops
its last rows), and a unit's box is clipped to them and to the image.

Measured: the field of unit (x, y) is where d unit / d image is non-zero. On the network itself that
region can be too small by accident (a ReLU that is off, a max-pool that routes the gradient to one
input, positive and negative paths that cancel), so it is measured on a *probe*: a copy with the same
geometry in which every convolution sums its input channels and applies an all-positive averaging
kernel, max-pools become average pools, normalizations and activations become identities. Every
path then carries a positive weight, so the gradient is non-zero exactly where some path exists: the
architectural field (in float64, so long paths do not underflow).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import ImageDraw
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from dgnam.core import objectives as O
from dgnam.cli import atomic_write
from dgnam.config import build, build_priors, build_target_from_cfg, make_init, param_class, positive_int, prepare
from dgnam.core.models import INPUT, Target
from dgnam.io import source_image
from dgnam.views.common import layer_list, spatial_layers
from dgnam.errors import DgnamError, first_line
from dgnam.io import labelled_grid, safe_name, save_png, to_pil, write_results
from dgnam.core.loop import optimize
from dgnam.core.poststeps import raw
from dgnam.core.units import select_units

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
                        type(mod).__name__, first_line(e, 80))
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


# ---------------------------------------------------------------------------------------------------
# The probe: same geometry, every path positive.


class _SumConv(nn.Module):
    """A convolution's geometry with one output channel: mean over input channels, then a positive
    averaging kernel with the same size, stride, padding and dilation."""

    def __init__(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any = 1) -> None:
        super().__init__()
        self.k, self.s, self.d = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.p = padding if isinstance(padding, str) else _pair(padding)

    def forward(self, x: Tensor) -> Tensor:
        x = x.mean(1, keepdim=True)  # (B, 1, H, W)
        w = torch.full((1, 1, *self.k), 1.0 / (self.k[0] * self.k[1]), dtype=x.dtype, device=x.device)
        return F.conv2d(x, w, None, self.s, self.p, self.d)


class _AvgWindow(nn.Module):
    """A max-pool's window as an average pool (every input of the window gets gradient)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.k, self.s = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
        self.p, self.ceil = _pair(pool.padding), bool(pool.ceil_mode)
        self.d = _pair(getattr(pool, "dilation", 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.d == (1, 1):
            return F.avg_pool2d(x, self.k, self.s, self.p, ceil_mode=self.ceil, count_include_pad=True)
        c = x.shape[1]
        w = torch.full((c, 1, *self.k), 1.0 / (self.k[0] * self.k[1]), dtype=x.dtype, device=x.device)
        return F.conv2d(x, w, None, self.s, self.p, self.d, groups=c)


class _MeanLinear(nn.Module):
    """A linear layer as the mean of its inputs, repeated ``out_features`` times."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(-1, keepdim=True).expand(*x.shape[:-1], self.out_features)


_PROBE_LEAVES = [_SumConv, _AvgWindow, _MeanLinear]
_IDENTITY_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                   nn.Dropout, nn.Dropout2d)


def _probe_replacement(m: nn.Module) -> nn.Module | None:
    if isinstance(m, nn.Conv2d):
        return _SumConv(m.kernel_size, m.stride, m.padding, m.dilation)
    if isinstance(m, nn.MaxPool2d):
        return _AvgWindow(m)
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(m.output_size)
    if isinstance(m, nn.Linear):
        return _MeanLinear(m.out_features)
    if isinstance(m, _IDENTITY_TYPES) or type(m).__module__ == nn.modules.activation.__name__:
        return nn.Identity()
    return None


def _rebuild(m: nn.Module) -> nn.Module:
    """A copy of the module tree with probe replacements. The target is never changed: modules and
    tensors that the probe keeps are copied (parameter-free leaves are shared)."""
    rep = _probe_replacement(m)
    if rep is not None:
        return rep
    own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
    if not m._modules:
        return copy.deepcopy(m) if own else m
    new = copy.copy(m)
    new._parameters = {k: (None if v is None else nn.Parameter(v.detach().clone(), requires_grad=False))
                       for k, v in m._parameters.items()}
    new._buffers = {k: (None if v is None else v.detach().clone()) for k, v in m._buffers.items()}
    new._modules = {k: (_rebuild(c) if c is not None else None) for k, c in m._modules.items()}
    return new


def probe_model(target: Target) -> nn.Module:
    """The positive-path probe of ``target.model`` (see the module docstring), on the CPU in float64."""
    return _rebuild(target.model).cpu().double().eval()


def gradient_boxes(target: Target, requests: dict[str, Sequence[tuple[int, int]]], size: int,
                   probe: nn.Module | None = None) -> dict[str, list[tuple[int, int, int, int] | None]]:
    """Measured fields: for each layer, the units at the given positions ((x, y) in the layer) -> the
    bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the pixels where d unit / d image is non-zero,
    on the probe, for a square image of side ``size`` (None where the gradient is zero everywhere).

    One forward pass of the probe for all layers; per layer one backward pass for all its positions
    (the batch holds one copy of the image per position)."""
    b = max(len(p) for p in requests.values())
    img = torch.zeros(b, 3, size, size, dtype=torch.float64, requires_grad=True)
    nodes = {layer: target.resolve(layer) for layer in requests}
    wanted = sorted({n for n in nodes.values() if n != INPUT})
    feats: dict[str, Tensor] = {}
    if wanted:
        probe = probe if probe is not None else probe_model(target)
        ext = create_feature_extractor(probe, return_nodes={n: n for n in wanted},
                                       tracer_kwargs={"leaf_modules": _PROBE_LEAVES})
        feats = ext(img)
    out: dict[str, list] = {}
    for layer, positions in requests.items():
        act = img if nodes[layer] == INPUT else feats[nodes[layer]]
        n = len(positions)
        if act.dim() == 4:
            xs = torch.tensor([p[0] for p in positions])
            ys = torch.tensor([p[1] for p in positions])
            picked = act[torch.arange(n), :, ys, xs].sum(1)  # (n,): item i's unit at (x_i, y_i)
        else:
            picked = act[:n].flatten(1).sum(1)
        (grad,) = torch.autograd.grad(picked.sum(), img, retain_graph=True)
        boxes = []
        for g in grad[:n].abs().sum(1):  # (H, W) per item
            rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
            boxes.append(None if rows.numel() == 0 else
                         (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
        out[layer] = boxes
    return out


# ---------------------------------------------------------------------------------------------------
# Single-neuron activation maximization inside the field.


def neurons(layer: str, channels: Sequence[int], xs: Sequence[int], ys: Sequence[int]) -> O.Objective:
    """Item b: the value of channel ``channels[b]`` at column ``xs[b]``, row ``ys[b]`` of ``layer``."""
    ch, cx, cy = (torch.as_tensor(v, dtype=torch.long) for v in (channels, xs, ys))

    def fn(acts: O.Acts) -> Tensor:
        act = acts[layer]  # (B, C, H, W)
        dev = act.device
        return act[torch.arange(act.shape[0], device=dev), ch.to(dev), cy.to(dev), cx.to(dev)]

    return O.Objective(fn, {layer}, f"neurons({layer}, {len(ch)} units)")


def box_mask(boxes: Sequence[tuple[int, int, int, int]], height: int, width: int) -> Tensor:
    """(B, 1, H, W) bool: True inside item b's box ``(x0, y0, x1, y1)``."""
    mask = torch.zeros(len(boxes), 1, height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, :, y0:y1, x0:x1] = True
    return mask


class KeepOutside:
    """Post-step: pixels outside ``mask`` are put back to their value when this was built, so only the
    field can change (run it last, after clamps and blurs). Needs an image-shaped parameter (pixels)."""

    def __init__(self, param: nn.Module, mask: Tensor) -> None:
        x = raw(param)
        if x.dim() != 4 or x.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"KeepOutside needs pixel parameters shaped like the mask, got {tuple(x.shape)}")
        self.start = x.detach().clone()
        self.mask = mask.to(x.device)

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        x.copy_(torch.where(self.mask, x, self.start))


# ---------------------------------------------------------------------------------------------------
# The receptive_field mode: fields of a few units per layer, checked, and their AM images.


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


def run_receptive_field(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``mode=receptive_field``: for each layer, the computed field (size, stride, offset) checked by
    gradient, and single-neuron AM images of a few units that change only the field.

    Writes ``rf_<layer>.png`` (per unit: the full image with the field outlined, and the field
    cropped and zoomed), ``rf_summary.png``, ``<layer>/<unit>_{full,crop}.png``, ``results.json/.csv``
    (a row per unit) and ``fields.md`` (a table per layer)."""
    out = Path(out_dir)
    pre = prepare(cfg)
    device, steps, size, batch_size, priors = pre.device, pre.steps, pre.size, pre.batch_size, pre.priors
    zoom = positive_int(cfg, "rf.zoom_size", default=size)
    check = bool(OmegaConf.select(cfg, "rf.check", default=True))
    init_cfg, grad_norm = pre.init, pre.grad_norm
    start_photo = source_image(init_cfg.get("path"), size) if init_cfg.get("kind") == "image" else None
    factory = build(cfg.param)
    if not param_class(factory).pixel_space:
        raise DgnamError("mode=receptive_field changes pixels inside the field only; it needs param=pixel")
    target = build_target_from_cfg(cfg, device)
    spec = cfg.get("layers")
    layers = layer_list(target, spec)
    shapes: dict[str, tuple[int, ...]] = {}
    fields = layer_fields(target, layers, size, shapes)
    if isinstance(spec, str) and spec == "all":  # "all" means every spatial layer here
        layers = [la for la in layers if len(shapes.get(la, ())) == 3]
    spatial_layers(target, layers, size, "receptive fields")
    position = list(cfg.position) if cfg.get("position") is not None else None
    units_spec = OmegaConf.to_container(cfg.units, resolve=True) if OmegaConf.is_config(cfg.units) else cfg.units
    plan = {}
    for layer in layers:  # every unit and position is checked before any work
        units = select_units(target, layer, units_spec, "neuron", position, size)
        _, h, w = shapes[layer]
        plan[layer] = [(u, w // 2 if u.x is None else u.x, h // 2 if u.y is None else u.y) for u in units]
    measured = gradient_boxes(target, {la: [(x, y) for _, x, y in plan[la][:1]] for la in layers}, size) \
        if check else {}
    opt_factory = build(cfg.optimizer)
    seed = pre.seed
    rows, summary_tiles, summary_labels = [], [], []
    md = ["| layer | node | units (C x H x W) | field size | stride | offset | unit (x, y) | computed box | "
          "measured box | agree |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for layer in layers:
        f = fields[layer]
        entries = plan[layer]
        x, y = entries[0][1], entries[0][2]
        box = f.box(x, y, size, size)
        meas = measured.get(layer, [None])[0] if check else None
        agree = None if meas is None else meas == box
        md.append(f"| {layer} | {target.resolve(layer)} | {' x '.join(map(str, shapes[layer]))} | "
                  f"{_fmt_pair(f.size)} | {_fmt_pair(f.stride)} | {_fmt_pair(f.start)} | ({x}, {y}) | {box} | "
                  f"{meas if check else '-'} | {'-' if agree is None else ('yes' if agree else 'NO')} |")
        tiles, labels = [], []
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            b = len(chunk)
            g = torch.Generator().manual_seed(seed)
            init = (start_photo[None].expand(b, -1, -1, -1).contiguous() if start_photo is not None
                    else make_init(init_cfg, b, size, seed)).to(device)
            param = factory(init=init, noise=init_cfg.get("kind", "noise") == "noise", generator=g).to(device)
            mask = box_mask([box] * b, size, size).to(device)
            keep = KeepOutside(param, mask)
            tfs, posts, penalty = build_priors(priors, g, pixel=True)
            unit_obj = neurons(layer, [u.index for u, _, _ in chunk], [cx for _, cx, _ in chunk],
                               [cy for _, _, cy in chunk])
            objective = unit_obj - penalty if penalty is not None else unit_obj
            t0 = time.perf_counter()
            res = optimize(param, target, objective, steps=steps, optimizer=opt_factory, transforms=tfs,
                           post_steps=[*posts, keep], grad_norm=grad_norm, track=unit_obj)
            secs = time.perf_counter() - t0
            with torch.no_grad():
                before = unit_obj(target(init, [layer])).cpu()
                after = unit_obj(target(res.images.to(device), [layer])).cpu()
            diff = (res.images - init.cpu()).abs().amax(1, keepdim=True)  # (B, 1, H, W)
            outside = float(diff.masked_fill(mask.cpu(), 0).max())
            for i, (u, ux, uy) in enumerate(chunk):
                img = res.images[i]
                full = outline(img, box)
                crop = zoom_crop(img, box, zoom)
                ldir = out / safe_name(layer)
                save_png(full.float() / 255, ldir / f"{u.index}_full.png")
                save_png(crop, ldir / f"{u.index}_crop.png")
                tiles += [full, crop]
                labels += [f"{layer} #{u.index} ({ux},{uy})", f"field {box[2] - box[0]}x{box[3] - box[1]}"]
                rows.append({
                    "layer": layer, "node": target.resolve(layer), "unit": u.index, "x": ux, "y": uy,
                    "field_size": list(f.size) if f.size else None,
                    "field_stride": list(f.stride) if f.stride else None,
                    "field_start": list(f.start) if f.start else None,
                    "box": list(box), "measured_box": list(meas) if meas else None, "agree": agree,
                    "start_activation": float(before[i]), "activation": float(after[i]),
                    "max_change_outside": outside, "steps": steps, "seconds": secs / b,
                })
        cols = 2 * min(len(entries), int(OmegaConf.select(cfg, "output.grid_cols", default=8)) // 2 or 1)
        save_png(labelled_grid(tiles, labels, cols=cols, tile=max(size, zoom)).float() / 255,
                 out / f"rf_{safe_name(layer)}.png")
        summary_tiles += tiles
        summary_labels += labels
    width = 2 * max(len(v) for v in plan.values())
    save_png(labelled_grid(_pad_rows(summary_tiles, plan, width), _pad_rows(summary_labels, plan, width),
                           cols=width, tile=max(size, zoom)).float() / 255, out / "rf_summary.png")
    write_results(rows, out)
    atomic_write(out / "fields.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    return {"out_dir": str(out), "results": rows, "fields": fields}


def _fmt_pair(v: tuple[int, int] | None) -> str:
    if v is None:
        return "whole image"
    return str(v[0]) if v[0] == v[1] else f"{v[0]} x {v[1]}"


def _pad_rows(items: list, plan: dict, width: int) -> list:
    """Lay out one layer per grid row: pad each layer's tiles (or labels) to ``width`` entries."""
    out, i = [], 0
    blank = torch.full((3, 8, 8), 255, dtype=torch.uint8) if items and isinstance(items[0], Tensor) else ""
    for entries in plan.values():
        n = 2 * len(entries)
        out += items[i : i + n] + [blank] * (width - n)
        i += n
    return out
