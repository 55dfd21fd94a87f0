"""Differentiable image transforms applied between the parameterization and the target
(transformation robustness: Lucid's pad, jitter, random scale, random rotate; DeepDream's roll).

Each module draws its randomness from a ``torch.Generator`` it is given (seedable, CPU-side) and
applies ONE draw to the whole batch, so an item's trajectory is the same whether it runs alone or
in a batch with the same seed. Tensors stay on the input's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from dgnam.core.images import resize


def _gen(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


class Pad(nn.Module):
    """Pad every side by ``pad`` pixels (``reflect``, ``replicate`` or a constant grey 0.5)."""

    def __init__(self, pad: int = 12, mode: str = "constant", value: float = 0.5) -> None:
        super().__init__()
        self.pad, self.mode, self.value = pad, mode, value

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "constant":
            return F.pad(x, [self.pad] * 4, mode="constant", value=self.value)
        return F.pad(x, [self.pad] * 4, mode=self.mode)


class Jitter(nn.Module):
    """Random crop that removes ``d`` pixels in total (a random shift by up to ``d`` pixels)."""

    def __init__(self, d: int = 8, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.d, self.generator = d, _gen(generator)

    def forward(self, x: Tensor) -> Tensor:
        if self.d <= 0:
            return x
        dx, dy = torch.randint(0, self.d + 1, (2,), generator=self.generator).tolist()
        h, w = x.shape[-2:]
        return x[..., dy : h - self.d + dy, dx : w - self.d + dx]


class Roll(nn.Module):
    """Roll the image by a random shift of up to ``d`` pixels along each axis (DeepDream's jitter:
    nothing is cropped, what leaves one side comes back on the other)."""

    def __init__(self, d: int = 32, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.d, self.generator = d, _gen(generator)

    def forward(self, x: Tensor) -> Tensor:
        if self.d <= 0:
            return x
        dy, dx = (torch.randint(-self.d, self.d + 1, (2,), generator=self.generator)).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


class RandomScale(nn.Module):
    """Resize by a factor drawn from ``scales`` (bilinear)."""

    def __init__(self, scales: Sequence[float] = (1, 0.975, 1.025, 0.95, 1.05),
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.scales, self.generator = list(scales), _gen(generator)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scales[int(torch.randint(len(self.scales), (1,), generator=self.generator))]
        if s == 1:
            return x
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                             align_corners=False)


class RandomRotate(nn.Module):
    """Rotate by an angle (degrees) drawn from ``angles`` about the centre (bilinear)."""

    def __init__(self, angles: Sequence[float] = tuple(range(-10, 11)),
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.angles, self.generator = list(angles), _gen(generator)

    def forward(self, x: Tensor) -> Tensor:
        a = float(self.angles[int(torch.randint(len(self.angles), (1,), generator=self.generator))])
        if a == 0:
            return x
        return TF.rotate(x, a, interpolation=TF.InterpolationMode.BILINEAR)


class Resize(nn.Module):
    """Resize to a fixed square ``size`` (e.g. a generator's output to the target's input)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return resize(x, self.size)


class CenterCrop(nn.Module):
    """Centre crop to a square ``size`` (DGN-AM crops G's 256-px output to the target's 227/224)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return TF.center_crop(x, [self.size, self.size])
