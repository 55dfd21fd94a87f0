"""Image statistics of the comparison report: total variation and high-frequency energy.

Both take (B, C, H, W) images in [0, 1] and return one number per image; the report measures them
after resizing every image to :data:`STATS_SIZE` px, so that images of different sizes compare.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgnam.core.images import grid_power_ratio
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


GRID_PERIOD = 8  # px: the TAEF2 decoder draws each latent cell as an 8 x 8 block (16 x 16 latents at 128 px)
FINE_GRID_PERIOD = 4  # px: the finer cross-hatch left where the 8-px grid is gone (the report's grid4)


def grid_ratio(images: Tensor, period: int = GRID_PERIOD) -> Tensor:
    """How strongly a periodic grid of ``period`` px lies over each image: (B, C, H, W) in [0, 1] -> (B,).

    On the luma ``0.299 R + 0.587 G + 0.114 B`` (mean removed, times a 2-d Hann window), the power
    spectrum ``|DFT2|^2`` is read on the lines at multiples of ``N / period`` cycles (every row ``fy``
    and every column ``fx`` of such an index, for side N, DC lines excluded), and their mean power is
    divided by the mean power on the lines one bin beside them (where those cross no line). A grid puts
    energy on the lines and not beside them. Photos score about 1: median 0.96 (10th-90th percentile
    0.84-1.07) over 2,000 128-px photos of the shared validation split; images with a photo's 1/f
    spectrum 0.94-1.0; an 8-px grid of 5 % contrast over such an image 1.1-1.2; DGN-AM through the
    3-stage latent prior (method=dgnam_deep) 1.34 (``benchmarks/grid_ratio.py``). Measure images at the size
    they were made: resizing moves the lines. Sides smaller than ``3 * period`` give NaN.

    At ``period=4`` (``FINE_GRID_PERIOD``, the report's ``grid4``: the lines at multiples of N/4, a
    subset of the 8-px lines) it counts the finer cross-hatch that can remain once the 8-px grid is
    gone: photos median 0.98 (10th-90th percentile 0.86-1.10, the same 2,000 photos); DGN-AM through the
    default prior 1.01; PPGN through it 1.10-1.12; the stage-3 prior 1.24.
    """
    if min(images.shape[-2:]) < 3 * period:
        return torch.full((images.shape[0],), float("nan"))
    return grid_power_ratio(images.double(), period).float()
