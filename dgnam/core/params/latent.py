"""Latent AM: the image is ``Dec(z)`` for the frozen pretrained TAEF2 decoder, and its latent ``z``
is the trainable tensor, clamped per channel to the range of real latents."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core import precision as PR
from dgnam.core.images import resize
from dgnam.core.params.base import ImageParam
from dgnam.errors import DgnamValueError

LATENT = "latent"  # pseudo-layer: the latent z of LatentParam, for penalties on it


class LatentParam(ImageParam):
    """Latent AM: images ``Dec(z)`` of a frozen decoder, with the latent ``z`` (B, C, r, r) itself
    trainable, no head and no training (a second natural-image prior).

    Built from the TAEF2 files with :meth:`from_files` (what ``param=latent`` does); the constructor
    takes the parts already built.

    After every step ``z`` is clamped per channel to the range of real latents (``low``, ``high``
    of the statistics, widened by ``clamp_margin`` standard deviations; ``clamp=False``: off);
    ``pull`` subtracts ``pull * mean(((z - mean) / std)^2)`` per item from the objective, an L2 pull
    towards the mean latent.

    Args:
        init: (B, 3, H, W) start images; only the batch size counts with ``noise``. H sets the
            latent side (``resolution`` wins when given).
        noise: start from ``z = mean + init_sd * std * N(0, 1)`` (one draw shared by all items);
            otherwise ``z = encoder(init)``.
        decoder: the frozen decoder, latents (B, C, r, r) -> images (B, 3, 8r, 8r) in [0, 1].
        stats: per-channel ``mean``, ``std``, ``low``, ``high`` (C,) of real latents.
        encoder: images -> latents, needed for ``noise=False``.
        resolution: image side (a multiple of 8; None: the init's side).
        precision: the decoder's forward pass in ``fp32``, ``bf16`` or ``auto``
            (:mod:`dgnam.core.precision`); the image is returned as float32.
    """

    def __init__(self, init: Tensor, noise: bool = True, generator: torch.Generator | None = None,
                 decoder: nn.Module | None = None, stats: dict[str, Tensor] | None = None,
                 encoder: nn.Module | None = None, resolution: int | None = None, clamp: bool = True,
                 clamp_margin: float = 0.0, pull: float = 0.0, init_sd: float = 1.0,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.precision = PR.check_precision(precision, "param.precision")
        from dgnam.generator.taef2 import latent_side

        _check_args(pull, init_sd, clamp_margin)
        if decoder is None or stats is None:
            raise DgnamValueError("latent AM needs the decoder and the latent statistics: param.stats=<file>")
        st = stats
        self.dec = decoder
        c = st["mean"].numel()
        want = self.dec.layers[1].in_channels
        if c != want:
            raise DgnamValueError(f"latent statistics have {c} channels but the decoder's latent has {want}")
        side = latent_side(int(resolution or init.shape[-1]))
        batch = init.shape[0]
        view = (1, c, 1, 1)
        self.register_buffer("mu", st["mean"].reshape(view), persistent=False)
        self.register_buffer("sd", st["std"].reshape(view), persistent=False)
        if noise:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            one = torch.randn(1, c, side, side, generator=g) * float(init_sd) * self.sd + self.mu
            z = one.expand(batch, -1, -1, -1).contiguous()
        else:
            if encoder is None:
                raise DgnamValueError("starting latent AM from an image needs param.encoder_file=<taef2_encoder.pth>")
            with torch.no_grad():
                z = encoder(resize(init.float().cpu(), 8 * side, antialias=True))
        self.z = nn.Parameter(z.float())
        self.pull = float(pull)
        margin = float(clamp_margin) * st["std"]
        self.bounds = ((st["low"] - margin).reshape(view), (st["high"] + margin).reshape(view)) if clamp else None

    @classmethod
    def from_files(cls, init: Tensor, noise: bool = True, generator: torch.Generator | None = None,
                   decoder_file: str | None = None, encoder_file: str | None = None, stats: str | None = None,
                   resolution: int | None = None, clamp: bool = True, clamp_margin: float = 0.0,
                   pull: float = 0.0, init_sd: float = 1.0, precision: str = "fp32") -> LatentParam:
        """Build from the TAEF2 weights files and a statistics file (written by
        ``python -m dgnam.generator.latent_stats``); the encoder is read only for ``noise=False``."""
        from dgnam.generator.latent_stats import load_latent_stats
        from dgnam.generator.taef2 import TAEF2Encoder, frozen_decoder

        _check_args(pull, init_sd, clamp_margin)
        PR.check_precision(precision, "param.precision")
        if stats is None:
            raise DgnamValueError("latent AM needs the latent statistics: param.stats=<file>")
        st = load_latent_stats(stats)
        decoder = frozen_decoder(str(decoder_file))
        encoder = None
        if not noise:
            if encoder_file is None:
                raise DgnamValueError("starting latent AM from an image needs param.encoder_file=<taef2_encoder.pth>")
            encoder = TAEF2Encoder(encoder_file).eval()
        return cls(init, noise, generator, decoder=decoder, stats=st, encoder=encoder, resolution=resolution,
                   clamp=clamp, clamp_margin=clamp_margin, pull=pull, init_sd=init_sd, precision=precision)

    @property
    def size(self) -> tuple[int, int]:
        return (8 * self.z.shape[-2], 8 * self.z.shape[-1])

    def forward(self) -> Tensor:
        with PR.autocast(self.precision, self.z.device):
            image = self.dec(self.z)
        return image.float()  # (B, 3, 8r, 8r) in [0, 1]

    def extra(self) -> dict[str, Tensor]:
        return {LATENT: self.z}

    def penalty(self) -> O.Objective | None:
        if not self.pull:
            return None
        mu, sd = self.mu, self.sd
        fn = lambda acts: ((acts[LATENT] - mu) / sd).pow(2).flatten(1).mean(1)  # noqa: E731
        return self.pull * O.Objective(fn, {LATENT}, "latent pull")

    def post_steps(self) -> list[P.PostStep]:
        return [P.Clamp(*self.bounds)] if self.bounds is not None else []


def _check_args(pull: float, init_sd: float, clamp_margin: float) -> None:
    if float(pull) < 0 or float(init_sd) < 0 or float(clamp_margin) < 0:
        raise DgnamValueError(f"param.pull={pull}, param.init_sd={init_sd} and param.clamp_margin={clamp_margin} "
                         f"must be >= 0")
