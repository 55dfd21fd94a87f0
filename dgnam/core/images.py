"""Image arithmetic used on both sides of the loop: resizing, total variation, PSNR, uint8.

One implementation of each, so that a penalty in the loop, a statistic in the report and a number in
a training log mean the same thing. Images are (B, C, H, W) floats in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize(images: Tensor, size: int | tuple[int, int] | None, antialias: bool | None = None) -> Tensor:
    """(B, C, H, W) -> (B, C, h, w) for ``size`` = h = w or (h, w): bilinear, antialiased when
    shrinking (``antialias=None``) or as given; unchanged when the size already matches or is None."""
    if size is None:
        return images
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    aa = images.shape[-1] > hw[-1] if antialias is None else antialias
    return F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=aa)


def resize_crop(x: Tensor, size: int) -> Tensor:
    """(3, H, W) or (B, 3, H, W) -> side ``size``: shorter side to ``size`` (antialiased), then a
    centre crop, clamped to [0, 1]."""
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    batch = x if x.dim() == 4 else x[None]
    batch = F.interpolate(batch, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    out = batch[..., top : top + size, left : left + size].clamp(0, 1)
    return out if x.dim() == 4 else out[0]


def total_variation(images: Tensor, beta: float = 1.0, eps: float = 0.0) -> Tensor:
    """Mean over channels and pixels of ``(dx^2 + dy^2 + eps)^(beta / 2)``: (B, C, H, W) -> (B,).

    ``dx``, ``dy`` are forward differences on the (H-1) x (W-1) grid. ``beta=1, eps=0`` is the mean
    gradient magnitude (isotropic TV, in [0, sqrt 2] for images in [0, 1]; a constant image has 0);
    the TV penalty of the loop (:func:`dgnam.core.objectives.total_variation`) uses ``eps=1e-8`` so
    that its gradient exists at flat pixels.
    """
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    d2 = dx.pow(2) + dy.pow(2)
    if eps:
        d2 = d2 + eps
    return d2.pow(beta / 2).flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor, peak: float = 1.0) -> Tensor:
    """PSNR in dB of each item, ``10 log10(peak^2 / MSE)``, for images in [0, peak]: (B, ...) x2 -> (B,).

    Computed per item by torchmetrics' ``peak_signal_noise_ratio`` (one definition for the
    inversion errors, the generator's validation log and its evaluation)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = a.float(), b.float()
    return torch.stack([peak_signal_noise_ratio(a[i : i + 1], b[i : i + 1], data_range=peak) for i in range(len(a))])


def mse_to_psnr(mse: Tensor, peak: float = 1.0) -> Tensor:
    """Per-item mean squared errors (B,) -> PSNR in dB (B,), as :func:`psnr` (MSE floored at 1e-10)."""
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-10))


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] -> uint8 on the CPU, rounded."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
