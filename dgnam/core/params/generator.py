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
from torch import Tensor, nn

from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core import precision as PR
from dgnam.core.params.base import ImageParam
from dgnam.errors import DgnamFileNotFoundError, DgnamValueError

CODE = "code"  # pseudo-layer: the code h, for penalties on it


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> tuple[nn.Module, dict]:
    from dgnam.generator.prior import load_prior

    gen, info = load_prior(path, device)
    for key in ("code_dim", "code_mean", "code_std"):
        if key not in info:
            raise DgnamValueError(f"generator prior {path} has no {key!r}: its code statistics are missing")
    return gen.eval().requires_grad_(False), info


def _check_args(decay: float, clamp_k: float | None, l2: float, init_sd: float) -> None:
    if not 0 <= float(decay) < 1:
        raise DgnamValueError(f"param.decay={decay} must be in [0, 1) (h *= 1 - decay after every step)")
    if clamp_k is not None and float(clamp_k) < 0:
        raise DgnamValueError(f"param.clamp_k={clamp_k} must be >= 0 (upper = mean + clamp_k * std), or null: no clamp")
    if float(l2) < 0 or float(init_sd) < 0:
        raise DgnamValueError(f"param.l2={l2} and param.init_sd={init_sd} must be >= 0")


class GeneratorParam(ImageParam):
    """Images ``G(h)`` with a trainable code ``h`` (B, D) and a frozen generator.

    Built from a prior file with :meth:`from_prior` (what ``param=generator`` does); the constructor
    takes the parts already built.

    Args:
        init: start images (B, 3, H, W); only the batch size counts when ``noise`` is true.
        noise: start from ``h ~ N(0, init_sd^2)`` (one draw from ``generator``, shared by all items,
            so a unit's result does not depend on batching); otherwise ``h = encoder(init)``.
        gen: the frozen generator, codes (B, D) -> images (B, 3, R, R) in [0, 1].
        code_mean, code_std: (D,) statistics of real codes (for the clamp; D is read from them).
        decay: multiplicative code decay per step (recipe: 0.01, i.e. ``h *= 0.99``).
        clamp_k: upper bound ``mean + k * std`` per code unit (recipe: 3); None: no clamp.
        l2: weight of the explicit penalty ``l2 * ||h||^2`` subtracted from the objective.
        encoder: ``images -> codes``, needed for ``noise=False``.
        info: the prior's description (:func:`dgnam.generator.prior.load_prior`), kept as ``info``.
        compile: run G through ``torch.compile`` in :meth:`forward` (compiled on the first call).
        precision: G's forward pass in ``fp32``, ``bf16`` (autocast; the image is returned as
            float32) or ``auto`` (bf16 where the device computes it natively, :mod:`dgnam.core.precision`).
    """

    def __init__(
        self,
        init: Tensor,
        noise: bool = True,
        generator: torch.Generator | None = None,
        gen: nn.Module | None = None,
        code_mean: Tensor | None = None,
        code_std: Tensor | None = None,
        decay: float = 0.01,
        clamp_k: float | None = 3.0,
        l2: float = 0.0,
        init_sd: float = 1.0,
        encoder: nn.Module | None = None,
        info: dict | None = None,
        compile: bool = False,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        _check_args(decay, clamp_k, l2, init_sd)
        self.precision = PR.check_precision(precision, "param.precision")
        if gen is None:
            raise DgnamValueError("GeneratorParam needs a generator: param.prior=<file>")
        self.gen = gen
        # the compiled wrapper shares gen's weights; kept out of the module tree (no second state_dict entry)
        self.__dict__["_run"] = torch.compile(gen) if compile else None
        self.info = info
        batch = init.shape[0]
        dim = int(code_mean.numel()) if code_mean is not None else _code_dim(gen)
        if noise:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            one = torch.randn(1, dim, generator=g) * init_sd
            code = one.expand(batch, -1).contiguous()
        else:
            if encoder is None:
                raise DgnamValueError("starting DGN-AM from an image needs the prior's encoder")
            with torch.no_grad():
                code = encoder(init.float()).reshape(batch, -1).float().cpu()
            if code.shape[1] != dim:
                raise DgnamValueError(f"the encoder gives {code.shape[1]}-d codes but the generator takes {dim}-d codes")
        self.code = nn.Parameter(code)
        self.decay, self.l2 = float(decay), float(l2)
        upper = None
        if clamp_k is not None:
            if code_mean is None or code_std is None:
                raise DgnamValueError("clamping the code needs its statistics (code_mean, code_std)")
            upper = (code_mean.float() + float(clamp_k) * code_std.float()).reshape(-1)
        self.register_buffer("upper", upper, persistent=False)

    @classmethod
    def from_prior(
        cls,
        init: Tensor,
        noise: bool = True,
        generator: torch.Generator | None = None,
        prior: str | None = None,
        decay: float = 0.01,
        clamp_k: float | None = 3.0,
        l2: float = 0.0,
        init_sd: float = 1.0,
        encoder: nn.Module | None = None,
        encoder_weights: str | None = None,
        compile: bool = False,
        precision: str = "fp32",
        prior_sha256: str | None = None,
    ) -> GeneratorParam:
        """Build from a generator prior (written by ``train_generator.py``): a file, the name of a
        shipped prior (``dgnam.priors.list()``) or a URL with its ``prior_sha256``.

        For ``noise=False`` without ``encoder``, E is rebuilt from the prior's description
        (:func:`dgnam.generator.prior.prior_encoder`) with ``encoder_weights``, or the weights file of
        that name beside the prior or in the shared models folder."""
        _check_args(decay, clamp_k, l2, init_sd)
        PR.check_precision(precision, "param.precision")
        if prior is None:
            raise DgnamValueError("DGN-AM needs a generator prior: param.prior=<file>")
        from dgnam.generator.prior import resolve_prior

        prior = resolve_prior(prior, prior_sha256)  # a name or URL: its verified file
        if not Path(prior).is_file():
            raise DgnamFileNotFoundError(f"generator prior not found: {prior} (train one with train_generator.py, or set "
                             f"param.prior=<file> or a shipped name: python -c \"import dgnam; print(dgnam.priors.list())\")")
        gen, info = _load(str(prior), "cpu")
        if not noise and encoder is None:
            from dgnam.generator.prior import prior_encoder

            encoder = prior_encoder(info, encoder_weights, prior, device=init.device)
        return cls(init, noise, generator, gen=gen, code_mean=info["code_mean"], code_std=info["code_std"],
                   decay=decay, clamp_k=clamp_k, l2=l2, init_sd=init_sd, encoder=encoder, info=info,
                   compile=compile, precision=precision)

    @property
    def size(self) -> tuple[int, int]:
        with torch.no_grad():
            return tuple(self.gen(self.code[:1]).shape[-2:])

    def forward(self) -> Tensor:
        with PR.autocast(self.precision, self.code.device):
            image = (self._run if self._run is not None else self.gen)(self.code)
        return image.float()  # (B, 3, R, R); a no-op in fp32

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
        raise DgnamValueError("cannot tell the generator's code size; give code_mean/code_std")
    return int(dim)
