"""The LightningModule that trains a generator G to invert a frozen encoder E (DeePSiM).

It receives its parts already built (G, D, E, C, optimizer and scheduler factories) and trains with
manual optimization: each step one D update, then one G update, each under
``toggled_optimizer``. Batches are dicts with ``image`` (B, 3, R, R) in [0, 1] and, when the data
were encoded once in advance, ``code`` (B, D) = E(image) and ``feat`` = C(image).

A latent prior's head trains in its subclass :class:`dgnam.generator.latent_module.LatentGeneratorModule`;
the learning-rate schedule is :func:`dgnam.generator.schedule.warmup_multistep`, and the validation
sample grids are written by the callback :class:`dgnam.generator.callbacks.SampleGrids`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from dgnam.errors import DgnamValueError
from dgnam.generator.encoder import Comparator, Encoder, same_encoder
from dgnam.generator.losses import (
    Balancer,
    check_finite_loss,
    discriminator_losses,
    feature_loss,
    generator_adversarial_loss,
    image_loss,
    mse,
    psnr,
    weighted_sum,
)

log = logging.getLogger(__name__)

LOSS_TERMS = ("image", "feature", "adversarial")


class GeneratorModule(L.LightningModule):
    """DeePSiM training of ``generator`` against ``encoder`` (the code) and ``comparator``.

    Args:
        generator: G, codes (B, D) -> images (B, 3, R, R).
        encoder: E (frozen), used when a batch carries no precomputed ``code``.
        comparator: C (frozen) for the feature loss; ``None`` disables that term.
        discriminator: D; ``None`` (or adversarial weight 0) trains without the adversarial term.
        optimizer_g, optimizer_d: factories ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: factory ``optimizer -> LR scheduler`` stepped every iteration, or ``None``.
        weights: loss weights ``{"image", "feature", "adversarial"}``.
        balance: the :class:`Balancer` (its ``enabled`` flag is the switch).
        channels_last: NHWC layout for G and D on GPU.
        code_noise: std of Gaussian noise added to training codes (0: none).
        grid_images: number of fixed validation images kept for :meth:`fixed_grid` (the sample grid).
    """

    loss_names = LOSS_TERMS
    frozen_prefixes: tuple[str, ...] = ("encoder.", "comparator.")  # frozen, rebuilt from the config; not in checkpoints

    def __init__(self, generator: nn.Module, encoder: Encoder | None = None, comparator: Comparator | None = None,
                 discriminator: nn.Module | None = None,
                 optimizer_g: Callable[..., Optimizer] | None = None,
                 optimizer_d: Callable[..., Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None,
                 weights: dict[str, float] | None = None, balance: Balancer | None = None,
                 channels_last: bool = True, code_noise: float = 0.0, grid_images: int = 16,
                 encoder_info: dict[str, Any] | None = None, grad_clip_g: float | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.comparator = comparator
        self.optimizer_g = optimizer_g or (lambda p: torch.optim.Adam(p, lr=2e-4))
        self.optimizer_d = optimizer_d or (lambda p: torch.optim.Adam(p, lr=2e-4))
        self.scheduler_factory = scheduler
        self.weights = {k: float(v) for k, v in (weights or {"image": 1.0}).items()}
        unknown = set(self.weights) - set(self.loss_names)
        if unknown:
            raise DgnamValueError(f"unknown loss term(s) {', '.join(sorted(unknown))}; valid: {', '.join(self.loss_names)}")
        self.balance = balance or Balancer(enabled=False)
        if grad_clip_g is not None and not float(grad_clip_g) > 0:
            raise DgnamValueError(f"grad_clip_g={grad_clip_g} must be positive (or null: no clipping)")
        self.grad_clip_g = float(grad_clip_g) if grad_clip_g is not None else None
        self.channels_last = channels_last
        self.code_noise = float(code_noise)
        self.grid_images = grid_images
        self.encoder_info = encoder_info or (encoder.describe() if encoder is not None else {})
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._fixed: dict[str, Tensor] | None = None
        self.skipped_images = 0

    # ----------------------------------------------------------------------------------- helpers
    def _freeze(self) -> None:
        """Keep E and C (and every module inside them) in eval mode, whatever the trainer did."""
        for m in (self.encoder, self.comparator):
            if m is not None:
                m.eval()

    def on_fit_start(self) -> None:
        if self.channels_last and self.device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
            if self.discriminator is not None:
                self.discriminator.to(memory_format=torch.channels_last)

    stages: Any = None  # a dgnam.generator.stages.StageSchedule: the recipe's stages within one run

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        self._freeze()
        if self.stages is not None:  # this iteration's stage: loss weights, perceptual layers, G's lr (-1: all done)
            return self.stages.apply(self)
        return None

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._freeze()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._freeze()

    @property
    def adversarial(self) -> bool:
        return self.discriminator is not None and self.weights.get("adversarial", 0.0) > 0

    def _layout(self, x: Tensor) -> Tensor:
        if self.channels_last and x.is_cuda:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def codes_and_feats(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """The batch's codes E(x) (B, D) and comparator features C(x), precomputed or computed now."""
        x = batch["image"]
        h = batch.get("code")
        if h is None:
            if self.encoder is None:
                raise DgnamValueError("batch has no precomputed codes and no encoder was given")
            h = self.encoder(x)
        f = batch.get("feat")
        if f is None and self.comparator is not None and self.weights.get("feature", 0) > 0:
            f = self.comparator(x)
        return h.float(), (f.float() if f is not None else None)

    def loss_terms(self, batch: dict[str, Tensor], recon: Tensor, feats: Tensor | None,
                   fake_logits: Tensor | None) -> dict[str, Tensor]:
        """The G loss terms that have a nonzero weight (``recon``: what :meth:`fake` gave)."""
        x = self._layout(batch["image"])
        terms: dict[str, Tensor] = {}
        if self.weights.get("image", 0) > 0:
            terms["image"] = image_loss(recon, x)
        if self.weights.get("feature", 0) > 0 and self.comparator is not None and feats is not None:
            terms["feature"] = feature_loss(self.comparator(recon), feats)
        if fake_logits is not None:
            terms["adversarial"] = generator_adversarial_loss(fake_logits)
        return terms

    # ---------------------------------------------------------------------------------- training
    def real(self, batch: dict[str, Tensor]) -> Tensor:
        """What D sees as real: the photos."""
        return self._layout(batch["image"])

    def fake(self, h: Tensor) -> Tensor:
        """What D sees as fake, and what the losses compare: G's images (B, 3, R, R)."""
        return self.generator(h)

    def step_metrics(self, batch: dict[str, Tensor], fake: Tensor) -> dict[str, Tensor]:
        """Cheap per-step numbers for the log."""
        return {"train/mse": mse(fake.detach(), batch["image"])}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        x = self._layout(batch["image"])
        h, f = self.codes_and_feats(batch)
        if self.code_noise > 0:
            h = h + self.code_noise * torch.randn_like(h)
        self.skipped_images += int(batch.get("skipped", torch.zeros(())).sum())
        logs: dict[str, Tensor | float] = {}

        recon = self.fake(h)  # (B, 3, R, R) images, or latents for a latent prior
        train_g = True
        d_real = d_fake = None
        if self.adversarial and opt_d is not None:
            # ---- D step
            with self.toggled_optimizer(opt_d):
                real_logits = self.discriminator(self.real(batch), h)
                fake_logits = self.discriminator(recon.detach(), h)
                d_real, d_fake = discriminator_losses(real_logits, fake_logits)
                if self.balance.train_d:
                    self.manual_backward(d_real + d_fake)
                    opt_d.step()
                opt_d.zero_grad(set_to_none=True)
            logs.update({"train/d_real": d_real.detach(), "train/d_fake": d_fake.detach(),
                         "train/d_active": float(self.balance.train_d)})
        # ---- G step
        with self.toggled_optimizer(opt_g):
            fake_logits = self.discriminator(recon, h) if self.adversarial else None
            terms = self.loss_terms(batch, recon, f, fake_logits)
            total = weighted_sum(terms, self.weights)
            check_finite_loss(terms, total, self.iteration)
            if d_real is not None:  # the losses averaged over the ranks: every rank takes the same decision
                d_loss, g_adv = self.rank_mean(torch.stack([(d_real + d_fake).detach(), terms["adversarial"].detach()]))
                _, train_g = self.balance.update(float(d_loss), float(g_adv))
            if train_g:
                self.manual_backward(total)
                if self.grad_clip_g is not None:  # G's gradient norm, clipped to grad_clip_g (logged before)
                    logs["train/g_grad_norm"] = torch.nn.utils.clip_grad_norm_(
                        self.generator.parameters(), self.grad_clip_g).detach()
                opt_g.step()
            opt_g.zero_grad(set_to_none=True)
        logs["train/g_active"] = float(train_g)
        for sch in self._schedulers():
            sch.step()
        self.iteration += 1
        logs.update({f"train/{k}": v.detach() for k, v in terms.items()})
        logs["train/total"] = total.detach()
        logs.update(self.step_metrics(batch, recon))
        logs["lr"] = opt_g.param_groups[0]["lr"]
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("loss", total.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])

    def rank_mean(self, x: Tensor) -> Tensor:
        """``x`` averaged over the ranks of a distributed run (itself in one process)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return x
        return trainer.strategy.reduce(x.float(), reduce_op="mean")

    def _schedulers(self) -> list[Any]:
        s = self.lr_schedulers()
        if s is None:
            return []
        return s if isinstance(s, list) else [s]

    # -------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = self._layout(batch["image"])
        h, f = self.codes_and_feats(batch)
        recon = self.generator(h)
        out = recon.clamp(0, 1)
        n = x.shape[0]
        self.log("val/mse", mse(out, x), on_epoch=True, batch_size=n, prog_bar=True)
        self.log("val/psnr", psnr(out, x), on_epoch=True, batch_size=n)
        if self.comparator is not None and f is not None:
            self.log("val/feature_mse", mse(self.comparator(out), f), on_epoch=True, batch_size=n)
        if self.encoder is not None:  # how often E's own network gives G(E(x)) the photo's top-1 class
            self.log("val/top1_agree", self.top1_agreement(out, x), on_epoch=True, batch_size=n)
        for k, v in self.validation_metrics(batch, h).items():
            self.log(k, v, on_epoch=True, batch_size=n)
        if batch_idx == 0 and self._fixed is None:
            k = min(self.grid_images, n)
            self._fixed = {"image": batch["image"][:k].detach().cpu(), "code": h[:k].detach().cpu()}

    @torch.no_grad()
    def top1_agreement(self, recon: Tensor, photos: Tensor) -> Tensor:
        """The fraction of items whose reconstruction the encoder's network classifies as it classifies
        the photo (both resized to the network's input size)."""
        from dgnam.core.images import resize

        t = self.encoder.target
        both = t(resize(torch.cat([recon, photos]).float(), t.input_size), ["logits"])["logits"].argmax(1)
        n = recon.shape[0]
        return (both[:n] == both[n:]).float().mean()

    def validation_metrics(self, batch: dict[str, Tensor], h: Tensor) -> dict[str, Tensor]:
        """Numbers a subclass adds to the validation log, from the batch and its codes ``h``."""
        return {}

    @torch.no_grad()
    def fixed_grid(self) -> Tensor | None:
        """Originals beside reconstructions of the fixed validation batch, as one grid (3, H, W)."""
        if self._fixed is None:
            return None
        from torchvision.utils import make_grid

        x = self._fixed["image"]
        was = self.generator.training
        self.generator.eval()
        recon = self.generator(self._fixed["code"].to(self.device)).float().clamp(0, 1).cpu()
        self.generator.train(was)
        pairs = torch.stack([x.float(), recon], 1).flatten(0, 1)  # (2k, 3, R, R): original, recon, ...
        return make_grid(pairs, nrow=8, padding=2, pad_value=1.0)

    # -------------------------------------------------------------------------------- optimizers
    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_g([p for p in self.generator.parameters() if p.requires_grad])
        opts = [opt_g]
        if self.discriminator is not None:
            opts.append(self.optimizer_d(self.discriminator.parameters()))
        if self.scheduler_factory is None:
            return opts
        return opts, [{"scheduler": self.scheduler_factory(o), "interval": "step"} for o in opts]

    # ------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint["state_dict"]
        for k in [k for k in sd if k.startswith(self.frozen_prefixes)]:
            del sd[k]  # frozen, rebuilt from the config
        checkpoint["dgnam_encoder"] = dict(self.encoder_info)
        checkpoint["dgnam_balancer_train_d"] = self.balance.train_d

    def check_encoder(self, theirs: dict[str, Any] | None) -> None:
        """A checkpoint's encoder description (``dgnam_encoder``) must match this run's encoder."""
        if isinstance(theirs, dict) and self.encoder_info and not same_encoder(theirs, self.encoder_info):
            raise DgnamValueError(
                f"checkpoint was made for encoder {theirs.get('arch')}/{theirs.get('weights_file')} layer "
                f"{theirs.get('layer')!r} (pooling {theirs.get('pooling')}), but this run uses "
                f"{self.encoder_info.get('arch')}/{self.encoder_info.get('weights_file')} layer "
                f"{self.encoder_info.get('layer')!r} (pooling {self.encoder_info.get('pooling')})")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_encoder(checkpoint.get("dgnam_encoder"))
        own = super().state_dict()
        for k, v in own.items():
            if k.startswith(self.frozen_prefixes):
                checkpoint["state_dict"][k] = v
        self.balance.train_d = bool(checkpoint.get("dgnam_balancer_train_d", True))
