"""The LightningModule that trains a latent prior's head (:class:`dgnam.generator.latent.LatentGenerator`):
DeePSiM's losses where they are cheap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dgnam.errors import DgnamValueError
from dgnam.generator.losses import euclidean, feature_loss, generator_adversarial_loss, grid_loss, image_loss, mse
from dgnam.generator.module import GeneratorModule

LATENT_LOSS_TERMS = ("latent", "image", "feature", "perceptual", "adversarial", "grid")


class LatentGeneratorModule(GeneratorModule):
    """DeePSiM training of a :class:`dgnam.generator.latent.LatentGenerator`'s head (the decoder stays frozen).

    - ``latent``: L2 between H(E(x)) and the photo's latent Enc(x) (``batch["latent"]``, cached, or
      computed by ``latent_encoder``);
    - ``adversarial``: D judges latents (the photo's against H's), and sees the code;
    - ``feature``: C(Dec(H(h))) against C(x), ``image``: Dec(H(h)) against x in pixels, and
      ``perceptual``: several layers of the encoder's network on Dec(H(h)) against the photo's
      (``perceptual``, a :class:`dgnam.generator.encoder.Perceptual`). They need a decode and its
      backward pass, the expensive part: they run every ``feature_every`` steps on the first
      ``feature_items`` items of the batch (``None``: all);
    - ``grid``: how much more of the decoder's 8-px grid (and of each period of ``grid_periods``,
      weighted alike) Dec(H(h)) carries than the photo (:func:`dgnam.generator.losses.grid_loss`), on the same decoded items, and on ``grid_codes``
      more codes away from the photos' (each a photo's code plus Gaussian noise of ``grid_noise``
      times the batch's per-unit std, negative values set to 0: where activation maximization goes),
      which have no photo and are held to a photo's typical grid ratio of 1.

    Other arguments as :class:`GeneratorModule`.
    """

    loss_names = LATENT_LOSS_TERMS
    frozen_prefixes = (*GeneratorModule.frozen_prefixes, "latent_encoder.", "perceptual.")

    def __init__(self, generator: nn.Module, *args: Any, latent_encoder: nn.Module | None = None,
                 feature_every: int = 1, feature_items: int | None = None, perceptual: nn.Module | None = None,
                 grid_codes: int = 0, grid_noise: float = 1.0, grid_periods: Sequence[int] = (8,), **kwargs: Any) -> None:
        super().__init__(generator, *args, **kwargs)
        if int(feature_every) < 1:
            raise DgnamValueError(f"loss.feature_every={feature_every} must be a positive number of steps")
        if feature_items is not None and int(feature_items) < 1:
            raise DgnamValueError(f"loss.feature_items={feature_items} must be positive (or null: every item)")
        self.latent_encoder = latent_encoder.eval().requires_grad_(False) if latent_encoder is not None else None
        self.feature_every = int(feature_every)
        self.feature_items = int(feature_items) if feature_items is not None else None
        self.perceptual = perceptual
        if int(grid_codes) < 0 or float(grid_noise) < 0:
            raise DgnamValueError(f"loss.grid_codes={grid_codes} and loss.grid_noise={grid_noise} must be >= 0")
        self.grid_codes, self.grid_noise = int(grid_codes), float(grid_noise)
        self.grid_periods = [int(p) for p in grid_periods]
        if not self.grid_periods:
            raise DgnamValueError("loss.grid_periods=[] names no period: give at least one, e.g. [8] or [8, 4]")
        if self.weights.get("perceptual", 0) > 0 and perceptual is None:
            raise DgnamValueError("loss.weights.perceptual > 0 needs loss.perceptual_layers: [[layer, weight], ...]")

    def _freeze(self) -> None:
        super()._freeze()
        if self.latent_encoder is not None:
            self.latent_encoder.eval()
        self.generator.decoder.eval()
        if self.perceptual is not None:
            self.perceptual.eval()

    @torch.no_grad()
    def real_latents(self, batch: dict[str, Tensor]) -> Tensor:
        z = batch.get("latent")
        if z is None:
            if self.latent_encoder is None:
                raise DgnamValueError("batch has no cached latents and no latent encoder was given")
            z = self.latent_encoder(batch["image"])
            batch["latent"] = z
        return z.float()

    def real(self, batch: dict[str, Tensor]) -> Tensor:
        return self.real_latents(batch)

    codes: Tensor | None = None  # the step's codes, for the grid term's codes away from the photos'

    def fake(self, h: Tensor) -> Tensor:
        self.codes = h.detach()
        return self.generator.latent(h)  # (B, 32, r, r)

    def decode_due(self) -> bool:
        """Whether this step runs the decoder for the feature and image terms."""
        return int(self.iteration) % self.feature_every == 0

    def loss_terms(self, batch: dict[str, Tensor], recon: Tensor, feats: Tensor | None,
                   fake_logits: Tensor | None) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.weights.get("latent", 0) > 0:
            terms["latent"] = euclidean(recon, self.real_latents(batch))
        want_f = self.weights.get("feature", 0) > 0 and self.comparator is not None and feats is not None
        want_i = self.weights.get("image", 0) > 0
        want_p = self.weights.get("perceptual", 0) > 0
        want_g = self.weights.get("grid", 0) > 0
        if (want_f or want_i or want_p or want_g) and self.decode_due():
            k = self.feature_items or recon.shape[0]
            img = self.generator.decoder(recon[:k])  # (k, 3, R, R), raw (training sees the raw output)
            if want_f:
                terms["feature"] = feature_loss(self.comparator(img), feats[:k])
            if want_i:
                terms["image"] = image_loss(img, batch["image"][:k])
            if want_p:
                terms["perceptual"] = self.perceptual(img, batch["image"][:k])
            if want_g:
                terms["grid"] = self._grid(img, batch["image"][:k])
                if self.grid_codes and self.codes is not None:
                    h = self.codes[: self.grid_codes]
                    h = torch.relu(h + self.grid_noise * h.std(0, keepdim=True) * torch.randn_like(h))
                    far = self.generator.decoder(self.generator.latent(h))
                    terms["grid"] = (k * terms["grid"] + len(h) * self._grid(far)) / (k + len(h))
        if fake_logits is not None:
            terms["adversarial"] = generator_adversarial_loss(fake_logits)
        return terms

    def _grid(self, img: Tensor, photos: Tensor | None = None) -> Tensor:
        """The grid term over ``grid_periods``, each period weighted alike."""
        return sum(grid_loss(img, photos, p) for p in self.grid_periods) / len(self.grid_periods)

    def step_metrics(self, batch: dict[str, Tensor], fake: Tensor) -> dict[str, Tensor]:
        return {"train/latent_mse": mse(fake.detach(), self.real_latents(batch))}

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, Tensor], h: Tensor) -> dict[str, Tensor]:
        return {"val/latent_mse": mse(self.generator.latent(h), self.real_latents(batch))}
