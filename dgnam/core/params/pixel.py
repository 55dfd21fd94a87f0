"""Plain pixels: the image itself is the trainable tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgnam.core.images import resize
from dgnam.core.params.base import ImageParam


class PixelParam(ImageParam):
    """Plain pixels, stored zero-centred (``x = image - 0.5``) so decay pulls towards grey.
    Pixel-space priors and octaves apply (``pixel_space``).

    Args:
        init: (B, 3, H, W) starting images in [0, 1] (noise, grey or a photo).
        noise: ignored (pixels start from ``init`` whatever it is).
    """

    pixel_space = True

    def __init__(self, init: Tensor, noise: bool = False, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.x = nn.Parameter(init.detach().clone().float() - 0.5)
        self.source: Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.x.shape[-2:])

    def forward(self) -> Tensor:
        return self.x + 0.5

    def carry_detail(self, source: Tensor) -> None:
        """Octaves over a photo (DeepDream): from now on :meth:`resize` rebuilds the image as the photo
        ``source`` (B, 3, H, W) in [0, 1] at full resolution, resized to the new size, plus the detail
        added so far (the image minus the photo at the old size) upscaled."""
        self.source = source.detach().float().to(self.x.device)

    @torch.no_grad()
    def resize(self, size: tuple[int, int]) -> None:
        x = self.x.data
        if self.source is None:
            new = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        else:
            detail = x + 0.5 - resize(self.source, tuple(x.shape[-2:]), antialias=True)
            new = resize(self.source, size, antialias=True) - 0.5 + F.interpolate(
                detail, size=size, mode="bicubic", align_corners=False)
        self.x = nn.Parameter(new.contiguous())


def noise_init(batch: int, size: tuple[int, int], low: float = 0.4, high: float = 0.6,
               seed: int = 0) -> Tensor:
    """Uniform noise in [low, high], the SAME for every batch item (so results do not depend on
    batching: each unit starts from what it would start from alone with this seed)."""
    g = torch.Generator().manual_seed(seed)
    one = torch.rand(1, 3, *size, generator=g) * (high - low) + low
    return one.expand(batch, -1, -1, -1).contiguous()
