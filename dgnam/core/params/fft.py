"""Lucid's parameterization: a 1/f-scaled Fourier spectrum with decorrelated colour."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgnam.core.params.base import ImageParam

# Lucid's colour decorrelation: square root of the ImageNet colour covariance (via SVD),
# columns normalized so the largest has unit norm.
_COLOR_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SVD_SQRT / _COLOR_SVD_SQRT.norm(dim=0).max()


def _rfft2d_freqs(h: int, w: int) -> Tensor:
    """(h, w//2+1) spatial frequency magnitudes of a real 2-D FFT."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FFTParam(ImageParam):
    """Lucid-style image: a Fourier spectrum scaled by 1/f (decorrelated space), decorrelated colour,
    and a sigmoid into [0, 1].

    Args:
        init: (B, 3, H, W) starting images in [0, 1]; the spectrum that reproduces them is used,
            unless ``noise`` is true: then only its batch size and image size count, and the start is
            Lucid's random spectrum (normal, ``sd``, one draw from ``generator`` shared by all items).
        decay_power: the 1/f^p scaling (Lucid: 1).
    """

    def __init__(
        self,
        init: Tensor,
        noise: bool = False,
        generator: torch.Generator | None = None,
        decay_power: float = 1.0,
        sd: float = 0.01,
    ) -> None:
        super().__init__()
        batch, size = init.shape[0], tuple(init.shape[-2:])
        h, w = size
        freqs = _rfft2d_freqs(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale * math.sqrt(h * w), persistent=False)
        self.register_buffer("color", COLOR_CORRELATION.clone(), persistent=False)
        self._size = (h, w)
        if noise:
            one = torch.randn(1, 3, h, w // 2 + 1, 2, generator=generator) * sd
            spec = one.expand(batch, -1, -1, -1, -1).contiguous()
        else:
            spec = self._spectrum_of(init.detach().float().cpu())
        self.spectrum = nn.Parameter(spec)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def _spectrum_of(self, image: Tensor) -> Tensor:
        """Inverse of forward: the spectrum whose image is ``image`` (clipped away from 0 and 1)."""
        logits = torch.logit(image.clamp(0.01, 0.99))
        flat = logits.permute(0, 2, 3, 1) @ torch.linalg.inv(self.color.T)  # undo colour mixing
        spatial = flat.permute(0, 3, 1, 2) * 4.0
        spec = torch.fft.rfft2(spatial) / self.scale
        return torch.view_as_real(spec).contiguous()

    def forward(self) -> Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=self._size) / 4.0  # (B, 3, H, W)
        img = (img.permute(0, 2, 3, 1) @ self.color.T).permute(0, 3, 1, 2)  # decorrelated -> RGB
        return torch.sigmoid(img)
