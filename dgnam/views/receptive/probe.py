"""The probe: the target's geometry with every path positive, to measure receptive fields by gradient.

The field of unit (x, y) is where d unit / d image is non-zero. On the network itself that region
can be too small by accident (a ReLU that is off, a max-pool that routes the gradient to one input,
positive and negative paths that cancel), so it is measured on a *probe*: a copy with the same
geometry in which every convolution sums its input channels and applies an all-positive averaging
kernel, max-pools become average pools, normalizations and activations become identities. Every
path then carries a positive weight, so the gradient is non-zero exactly where some path exists: the
architectural field (in float64, so long paths do not underflow).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from dgnam.core.models import INPUT, Target
from dgnam.views.receptive.fields import _pair


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
