"""Image statistics of the comparison report: total variation and high-frequency energy.

Both take (B, C, H, W) images in [0, 1] and return one number per image; the report measures them
after resizing every image to :data:`STATS_SIZE` px, so that images of different sizes compare.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgnam.core.images import total_variation as image_tv

HF_RADIUS = 0.25  # cycles per pixel: half the Nyquist frequency
STATS_SIZE = 224  # images are resized to this side before TV and HF energy, so that sizes compare


def total_variation(images: Tensor) -> Tensor:
    """Mean gradient magnitude: (B, C, H, W) in [0, 1] -> (B,).

    ``TV = mean over c, i < H-1, j < W-1 of sqrt((x[c,i,j+1] - x[c,i,j])^2 + (x[c,i+1,j] - x[c,i,j])^2)``
    (isotropic, per pixel and channel, in [0, sqrt 2]); the same as
    ``dgnam.core.objectives.total_variation(beta=1)`` without its smoothing epsilon. A constant image has 0.
    """
    return image_tv(images.float(), beta=1.0)


def high_frequency_energy(images: Tensor, radius: float = HF_RADIUS) -> Tensor:
    """Fraction of spectral energy above ``radius`` cycles/pixel: (B, C, H, W) -> (B,) in [0, 1].

    Per channel, the mean is removed and the power spectrum ``|DFT2(x)|^2`` taken; with radial
    frequency ``f = sqrt(fx^2 + fy^2)`` (``fx, fy`` in [-0.5, 0.5) cycles per pixel),
    ``HF = sum over channels and f > radius of power / sum over channels of power``. With the
    default ``radius = 0.25`` (half the Nyquist frequency), photos at 224 px score 0.01-0.03 and a
    one-pixel checkerboard 1. A constant image has no energy and scores 0. The number depends on
    the resolution: compare images of the same size.
    """
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2)  # (B, C, H, W)
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, w)
    high = (fx.pow(2) + fy.pow(2)).sqrt() > radius  # (H, W)
    total = power.flatten(1).sum(1)
    hf = (power * high).flatten(1).sum(1)
    return torch.where(total > 1e-12 * h * w, hf / total.clamp_min(1e-300), torch.zeros_like(total)).float()
