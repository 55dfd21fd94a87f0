"""Post-step projections: small callables run under ``no_grad`` after every optimizer step.

Each takes ``(param, step)`` and edits the parameterization's trainable tensor (``param.raw``) in
place. Yosinski et al. (2015)'s regularizers are of this kind (decay, blur every k steps, clipping
of pixels with small norm or small contribution), and so are DGN-AM's code decay and clamp.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn


def raw(param: nn.Module) -> Tensor:
    """The tensor a post-step edits: the first trainable parameter of the parameterization."""
    return next(p for p in param.parameters() if p.requires_grad)


class Decay:
    """Multiply by ``1 - rate`` each step (L2 decay; for zero-centred pixels it pulls towards grey)."""

    def __init__(self, rate: float = 0.01) -> None:
        self.rate = rate

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        raw(param).mul_(1.0 - self.rate)


class BlurEvery:
    """Gaussian blur of the pixels every ``every`` steps (Yosinski et al.: sigma 0.5-1, every 4-8)."""

    def __init__(self, every: int = 4, sigma: float = 1.0) -> None:
        self.every, self.sigma = every, sigma

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        if self.every > 0 and (step + 1) % self.every == 0 and self.sigma > 0:
            x = raw(param)
            k = 2 * max(1, round(3 * self.sigma)) + 1
            x.copy_(TF.gaussian_blur(x, [k, k], [self.sigma, self.sigma]))


def _percentile_mask(score: Tensor, pct: float) -> Tensor:
    """(B, H, W) scores -> mask keeping values >= the per-item ``pct`` percentile."""
    flat = score.flatten(1)
    thr = torch.quantile(flat, pct / 100.0, dim=1, keepdim=True)
    return (flat >= thr).view_as(score)


class ClipSmallNorm:
    """Set pixels whose colour-vector norm is below the ``pct`` percentile to zero (= grey)."""

    def __init__(self, pct: float = 10.0) -> None:
        self.pct = pct

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        x.mul_(_percentile_mask(x.norm(dim=1), self.pct).unsqueeze(1))


class ClipSmallContribution:
    """Set pixels whose contribution ``|sum_c x * dscore/dx|`` is below the ``pct`` percentile to zero."""

    def __init__(self, pct: float = 10.0) -> None:
        self.pct = pct

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        if x.grad is None:
            return
        contrib = (x * -x.grad).sum(1).abs()  # grad holds d(-score)/dx
        x.mul_(_percentile_mask(contrib, self.pct).unsqueeze(1))


class Clamp:
    """Clamp the trainable tensor into [low, high] (per element, or per unit with tensors)."""

    def __init__(self, low: float | Tensor = -0.5, high: float | Tensor = 0.5) -> None:
        self.low, self.high = low, high

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        low = self.low.to(x.device) if isinstance(self.low, Tensor) else self.low
        high = self.high.to(x.device) if isinstance(self.high, Tensor) else self.high
        x.copy_(torch.maximum(torch.minimum(x, torch.as_tensor(high, device=x.device)),
                              torch.as_tensor(low, device=x.device)))


class CodePrior:
    """The prior and noise terms of the PPGN-h sampler (Nguyen et al. 2017) on a code h (B, D):
    ``h += e1 * (R(h) - h) + e3 * std * N(0, 1)`` after each gradient step, with R a denoising
    autoencoder of real codes (:class:`dgnam.generator.dae.CodeDAE`) and ``std`` (D,) the code units'
    std over real photos (so ``e3`` is in standardized units). The gradient step is the third term
    (``e2``: the optimizer's step size). With ``e1 = e3 = 0`` this does nothing: DGN-AM's path.
    ``generator`` makes the noise reproducible; each item draws its own noise."""

    def __init__(self, denoiser: nn.Module, e1: float, e3: float, std: Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.denoiser, self.e1, self.e3, self.std, self.generator = denoiser, float(e1), float(e3), std, generator

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        h = raw(param)
        if self.e1:
            h.add_(self.denoiser(h.float()).to(h.dtype) - h, alpha=self.e1)
        if self.e3:
            noise = torch.randn(h.shape, generator=self.generator).to(h.device, h.dtype)
            if self.std is not None:
                noise.mul_(self.std.to(h.device, h.dtype))
            h.add_(noise, alpha=self.e3)
