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


def grid_lines(n: int, period: int) -> tuple[list[int], list[int]]:
    """Spectral indices of side ``n`` on the lines of a ``period``-px grid (multiples of ``n / period``
    cycles, DC excluded) and one bin beside them (where that is no line)."""
    step = n / period
    on = sorted({round(k * step) for k in range(1, period)} - {0, n})
    beside = sorted({i + d for i in on for d in (-1, 1)} - set(on) - {0})
    return on, [i % n for i in beside]


def grid_power_ratio(images: Tensor, period: int = 8) -> Tensor:
    """Mean power on the spectral lines of a ``period``-px grid over the mean power beside them, per
    image: (B, C, H, W) -> (B,), differentiable, in the images' dtype. On the luma (mean removed,
    2-d Hann window), every row ``fy`` and column ``fx`` of a line index counts; "beside" is the
    lines one bin away, where they cross no line. ``dgnam.eval.stats.grid_ratio`` documents the
    numbers photos and DGN-AM images give."""
    h, w = images.shape[-2:]
    x = images
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]) if x.shape[1] == 3 else x.mean(1)
    luma = luma - luma.mean(dim=(-2, -1), keepdim=True)
    win = torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device).view(h, 1) * \
        torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device).view(1, w)
    power = torch.fft.fft2(luma * win).abs().pow(2)  # (B, H, W)
    (on_y, off_y), (on_x, off_x) = grid_lines(h, period), grid_lines(w, period)

    def mask(rows: list[int], cols: list[int]) -> Tensor:
        m = torch.zeros(h, w, dtype=torch.bool, device=x.device)
        m[rows, :] = True
        m[:, cols] = True
        return m

    on = mask(on_y, on_x)
    off = mask(off_y, off_x) & ~on
    return power[:, on].mean(1) / power[:, off].mean(1).clamp_min(1e-30)
