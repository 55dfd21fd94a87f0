"""Loss terms of DeePSiM generator training, as small pure functions, and the G/D balancing rule.

The L2 terms follow Caffe's ``EuclideanLoss``: half the squared error summed over an item's
elements, averaged over the batch, so the recipe's weights carry over once rescaled for the image
range (see ``conf/generator/``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dgnam.core import images
from dgnam.errors import NonFiniteError


def euclidean(a: Tensor, b: Tensor) -> Tensor:
    """0.5 * sum of squared differences per item, mean over the batch. (B, ...) x2 -> scalar."""
    return 0.5 * (a.float() - b.float()).pow(2).flatten(1).sum(1).mean()


def image_loss(recon: Tensor, images: Tensor) -> Tensor:
    """Pixel L2 between G(E(x)) and x, both (B, 3, R, R)."""
    return euclidean(recon, images)


def feature_loss(recon_feats: Tensor, feats: Tensor) -> Tensor:
    """L2 between comparator features C(G(E(x))) and C(x)."""
    return euclidean(recon_feats, feats)


def grid_loss(recon: Tensor, photos: Tensor | None = None, period: int = 8) -> Tensor:
    """How much more of a ``period``-px grid the decoded images carry than their photos (or than a
    photo's typical 1.0 without photos): the mean over items of ``relu(log r(recon) - log r(photo))``,
    ``r`` the spectral grid ratio (:func:`dgnam.core.images.grid_power_ratio`). An image no more
    gridded than its photo costs nothing, so the term only ever removes a grid."""
    r = images.grid_power_ratio(recon.float(), period).clamp_min(1e-6).log()
    ref = images.grid_power_ratio(photos.float(), period).clamp_min(1e-6).log() if photos is not None else torch.zeros_like(r)
    return torch.relu(r - ref).mean()


def _ce(logits: Tensor, real: bool) -> Tensor:
    target = torch.full((logits.shape[0],), int(real), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def discriminator_losses(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """D's softmax losses on real images (label 1) and on generated ones (label 0); (B, 2) logits."""
    return _ce(real_logits, True), _ce(fake_logits, False)


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """G's adversarial loss: D's softmax loss of calling generated images real."""
    return _ce(fake_logits, True)


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k weights[k] * terms[k] over the terms present (a missing weight counts as 0)."""
    total = None
    for k, v in terms.items():
        w = float(weights.get(k, 0.0))
        if w:
            total = w * v if total is None else total + w * v
    if total is None:
        raise ValueError(f"every loss weight is zero; terms: {', '.join(terms)}")
    return total


def check_finite_loss(terms: dict[str, Tensor], total: Tensor, step: int) -> None:
    """Stop training at the step the generator's loss stops being finite (before the step that would
    write NaN into its weights), naming the terms that did: one line, the last checkpoint kept."""
    if bool(torch.isfinite(total.detach()).all()):
        return
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())] or ["total"]
    raise NonFiniteError(f"the generator's training loss became NaN or infinite at step {step} (terms: "
                         f"{', '.join(bad)}): training diverged; lower optimizer_g.lr or set grad_clip_g. "
                         f"The checkpoints written so far are kept", step, [], "loss")


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error per element (for reports), scalar."""
    return (a.float() - b.float()).pow(2).mean()


def psnr(a: Tensor, b: Tensor, peak: float = 1.0) -> Tensor:
    """PSNR in dB per item, averaged over the batch, for images in [0, peak]. (B, ...) x2 -> scalar."""
    return images.psnr(a, b, peak).mean()


@dataclass
class Balancer:
    """The DeePSiM rule that keeps G and D in step.

    With r = (D loss on real + D loss on fake) / G's adversarial loss: stop training D while
    r < ``d_stop``, resume once r > ``d_resume``; skip G's update while r > ``g_pause``.
    ``enabled=False`` trains both every step.
    """

    enabled: bool = True
    d_stop: float = 0.1
    d_resume: float = 0.5
    g_pause: float = 10.0
    train_d: bool = True

    def update(self, d_loss: float, g_adv: float) -> tuple[bool, bool]:
        """Feed the latest losses; returns (train D next step, train G now)."""
        if not self.enabled:
            self.train_d = True
            return True, True
        r = d_loss / max(g_adv, 1e-8)
        if self.train_d and r < self.d_stop:
            self.train_d = False
        elif not self.train_d and r > self.d_resume:
            self.train_d = True
        return self.train_d, r <= self.g_pause
