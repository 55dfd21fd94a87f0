"""DGN-AM (Nguyen et al. 2016) as one more parameterization of the shared loop.

The image is ``G(h)`` for a frozen generator G that was trained to invert an encoder layer; the
trainable tensor is the code ``h`` (B, D). After every step the code is decayed (``h *= 1 - decay``,
the original "L2" prior) and clamped per unit to ``[0, upper]`` with ``upper = mean + k * std`` of
the code over real images. The recipe's optimizer is a normalized gradient step (``grad_norm=l1``)
with a step size falling linearly from 8 to 1e-10 over 200 steps: see ``conf/method/dgnam.yaml``.

Decay and penalty: one gradient-ascent step of size ``lr`` on ``-lambda * ||h||^2`` moves h to
``(1 - 2 * lr * lambda) * h``, so the multiplicative decay ``1 - decay`` equals an explicit
penalty ``lambda = decay / (2 * lr)`` at that step size. With the recipe's normalized steps and a
step size that decays to 0, the two differ in practice: the decay keeps pulling towards 0 at full
strength while the step size vanishes, the penalty fades with it. Both are available
(``param.decay`` and ``param.l2``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.errors import DgnamError
from dgnam.core.params import ImageParam

CODE = "code"  # pseudo-layer: the code h, for penalties on it


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> tuple[nn.Module, dict]:
    from dgnam.generator import load_prior

    gen, info = load_prior(path, device)
    for key in ("code_dim", "code_mean", "code_std"):
        if key not in info:
            raise DgnamError(f"generator prior {path} has no {key!r}: its code statistics are missing")
    return gen.eval().requires_grad_(False), info


class GeneratorParam(ImageParam):
    """Images ``G(h)`` with a trainable code ``h`` (B, D) and a frozen generator.

    Args:
        init: start images (B, 3, H, W); only the batch size counts when ``noise`` is true.
        noise: start from ``h ~ N(0, init_sd^2)`` (one draw from ``generator``, shared by all items,
            so a unit's result does not depend on batching); otherwise encode ``init`` with E.
        prior: path of a generator prior (see ``dgnam.generator.load_prior``), or None with
            ``gen`` and ``upper`` given directly (tests, custom generators).
        decay: multiplicative code decay per step (recipe: 0.01, i.e. ``h *= 0.99``).
        clamp_k: upper bound ``mean + k * std`` per code unit (recipe: 3); None: no clamp.
        l2: weight of the explicit penalty ``l2 * ||h||^2`` subtracted from the objective.
        encoder: ``images -> codes`` for ``noise=False``; if None it is rebuilt from the prior's
            description (:func:`dgnam.generator.prior_encoder`), with ``encoder_weights`` or the
            weights file of that name beside the prior or in the shared models folder.
        encoder_weights: E's weights file for ``noise=False`` (None: found by name, see above).
    """

    def __init__(
        self,
        init: Tensor,
        noise: bool = True,
        generator: torch.Generator | None = None,
        prior: str | None = None,
        gen: nn.Module | None = None,
        code_mean: Tensor | None = None,
        code_std: Tensor | None = None,
        decay: float = 0.01,
        clamp_k: float | None = 3.0,
        l2: float = 0.0,
        init_sd: float = 1.0,
        encoder: nn.Module | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= float(decay) < 1:
            raise DgnamError(f"param.decay={decay} must be in [0, 1) (h *= 1 - decay after every step)")
        if clamp_k is not None and float(clamp_k) < 0:
            raise DgnamError(f"param.clamp_k={clamp_k} must be >= 0 (upper = mean + clamp_k * std), or null: no clamp")
        if float(l2) < 0 or float(init_sd) < 0:
            raise DgnamError(f"param.l2={l2} and param.init_sd={init_sd} must be >= 0")
        info = None
        if prior is not None:
            if not Path(prior).is_file():
                raise DgnamError(f"generator prior not found: {prior} (train one with train_generator.py, "
                                 f"or set param.prior=<file>)")
            gen, info = _load(str(prior), "cpu")
            code_mean, code_std = info["code_mean"], info["code_std"]
            self.info = info
        if gen is None:
            raise DgnamError("GeneratorParam needs a generator: param.prior=<file>")
        self.gen = gen
        batch = init.shape[0]
        dim = int(code_mean.numel()) if code_mean is not None else _code_dim(gen)
        if noise:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            one = torch.randn(1, dim, generator=g) * init_sd
            code = one.expand(batch, -1).contiguous()
        else:
            if encoder is None:
                if info is None:
                    raise DgnamError("starting DGN-AM from an image needs the prior's encoder")
                from dgnam.generator.prior import prior_encoder

                encoder = prior_encoder(info, encoder_weights, prior, device=init.device)
            with torch.no_grad():
                code = encoder(init.float()).reshape(batch, -1).float().cpu()
            if code.shape[1] != dim:
                raise DgnamError(f"the encoder gives {code.shape[1]}-d codes but the generator takes {dim}-d codes")
        self.code = nn.Parameter(code)
        self.decay, self.l2 = float(decay), float(l2)
        upper = None
        if clamp_k is not None:
            if code_mean is None or code_std is None:
                raise DgnamError("clamping the code needs its statistics (code_mean, code_std)")
            upper = (code_mean.float() + float(clamp_k) * code_std.float()).reshape(-1)
        self.register_buffer("upper", upper, persistent=False)

    @property
    def size(self) -> tuple[int, int]:
        with torch.no_grad():
            return tuple(self.gen(self.code[:1]).shape[-2:])

    def forward(self) -> Tensor:
        return self.gen(self.code)

    def extra(self) -> dict[str, Tensor]:
        """Pseudo-layers for objectives: the code itself."""
        return {CODE: self.code}

    def penalty(self) -> O.Objective | None:
        """``l2 * ||h||^2`` per item, to subtract from the objective (None when off)."""
        if not self.l2:
            return None
        fn = lambda acts: acts[CODE].pow(2).sum(1)  # noqa: E731
        return self.l2 * O.Objective(fn, {CODE}, "||code||^2")

    def post_steps(self) -> list[P.PostStep]:
        """Decay, then clamp to [0, upper] (the recipe's order)."""
        steps: list[P.PostStep] = []
        if self.decay:
            steps.append(P.Decay(self.decay))
        if self.upper is not None:
            steps.append(P.Clamp(torch.zeros_like(self.upper), self.upper))
        return steps


def _code_dim(gen: nn.Module) -> int:
    dim = getattr(gen, "code_dim", None)
    if dim is None:
        raise DgnamError("cannot tell the generator's code size; give code_mean/code_std")
    return int(dim)


LATENT = "latent"  # pseudo-layer: the latent z of LatentParam, for penalties on it
STATS_FORMAT = "dgnam-latent-stats"


def load_latent_stats(path: str | Path) -> dict[str, Tensor]:
    """Per-channel statistics of real TAEF2 latents (``mean``, ``std``, ``low``, ``high``: (C,)),
    written by ``python -m dgnam.generator.latent_stats``; loaded without running code."""
    from dgnam.safeload import load_file

    p = Path(path).expanduser()
    blob = load_file(p, "latent statistics file", " (param.stats=<file>; rebuild it with "
                     "python -m dgnam.generator.latent_stats)")
    if not isinstance(blob, dict) or blob.get("format") != STATS_FORMAT:
        raise DgnamError(f"{p} is not a latent statistics file (no format tag {STATS_FORMAT!r})")
    keys = ("mean", "std", "low", "high")
    bad = [k for k in keys if not isinstance(blob.get(k), Tensor) or blob[k].dim() != 1]
    if bad or len({blob[k].numel() for k in keys}) != 1:
        raise DgnamError(f"latent statistics {p}: {', '.join(bad) or 'mean/std/low/high'} must be 1-d tensors "
                         f"of one length (the latent channels)")
    return {k: blob[k].float() for k in keys}


class LatentParam(ImageParam):
    """Latent AM: images ``Dec(z)`` of the frozen TAEF2 decoder, with the latent ``z`` (B, C, r, r)
    itself trainable, no head and no training (a second natural-image prior).

    After every step ``z`` is clamped per channel to the range of real latents (``low``, ``high``
    of the statistics file, widened by ``clamp_margin`` standard deviations; ``clamp=False``: off);
    ``pull`` subtracts ``pull * mean(((z - mean) / std)^2)`` per item from the objective, an L2 pull
    towards the mean latent.

    Args:
        init: (B, 3, H, W) start images; only the batch size counts with ``noise``. H sets the
            latent side (``resolution`` wins when given).
        noise: start from ``z = mean + init_sd * std * N(0, 1)`` (one draw shared by all items);
            otherwise ``z = Enc(init)`` with the TAEF2 encoder (``encoder_file``).
        decoder_file, encoder_file: the TAEF2 weights.
        stats: the statistics file (see :func:`load_latent_stats`).
        resolution: image side (a multiple of 8; None: the init's side).
    """

    def __init__(self, init: Tensor, noise: bool = True, generator: torch.Generator | None = None,
                 decoder_file: str | None = None, encoder_file: str | None = None, stats: str | None = None,
                 resolution: int | None = None, clamp: bool = True, clamp_margin: float = 0.0,
                 pull: float = 0.0, init_sd: float = 1.0) -> None:
        super().__init__()
        from dgnam.generator.taef2 import TAEF2Encoder, frozen_decoder, latent_side

        if float(pull) < 0 or float(init_sd) < 0 or float(clamp_margin) < 0:
            raise DgnamError(f"param.pull={pull}, param.init_sd={init_sd} and param.clamp_margin={clamp_margin} "
                             f"must be >= 0")
        if stats is None:
            raise DgnamError("latent AM needs the latent statistics: param.stats=<file>")
        st = load_latent_stats(stats)
        self.dec = frozen_decoder(str(decoder_file))
        c = st["mean"].numel()
        want = self.dec.layers[1].in_channels
        if c != want:
            raise DgnamError(f"latent statistics have {c} channels but the decoder's latent has {want}")
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
            if encoder_file is None:
                raise DgnamError("starting latent AM from an image needs param.encoder_file=<taef2_encoder.pth>")
            enc = TAEF2Encoder(encoder_file).eval()
            with torch.no_grad():
                x = F.interpolate(init.float().cpu(), size=(8 * side, 8 * side), mode="bilinear",
                                  align_corners=False, antialias=True)
                z = enc(x)
        self.z = nn.Parameter(z.float())
        self.pull = float(pull)
        margin = float(clamp_margin) * st["std"]
        self.bounds = ((st["low"] - margin).reshape(view), (st["high"] + margin).reshape(view)) if clamp else None

    @property
    def size(self) -> tuple[int, int]:
        return (8 * self.z.shape[-2], 8 * self.z.shape[-1])

    def forward(self) -> Tensor:
        return self.dec(self.z)  # (B, 3, 8r, 8r) in [0, 1]

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
