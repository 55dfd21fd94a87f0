"""From a config to built parts: the checks and builders every mode of ``visualize.py`` shares.

Everything here runs before any optimization, so a bad value fails in one line (a
:class:`~dgnam.errors.DgnamError`) with nothing written. The image priors are one structured config,
:class:`Priors`: its fields are the valid names, its defaults the ``priors`` node of
``conf/visualize.yaml`` (registered with Hydra's ConfigStore as ``priors/default``), and
:func:`check_priors` is the one place their ranges are checked. Importing this module also registers
the resolvers the configs use (``${dgnam_priors:}``, ``${dgnam_shared:}``, ``${dgnam_sub:a,b}``), and
the recipe's architectures that ``conf/train_generator.yaml`` composes (``generator/spec/fc6``,
``generator/spec/latent``, ``discriminator/spec/deepsim``: the specs of :mod:`dgnam.generator.arch`
and :mod:`dgnam.generator.latent`, which live there only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dgnam.checks import check_optimizer, grad_norm_of, positive_int
from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core import transforms as T
from dgnam.core.models import INPUT, Target, pick_device
from dgnam.core.params import ImageParam
from dgnam.errors import DgnamError, DgnamValueError, first_line
from dgnam.generator.arch import DEEPSIM_DISCRIMINATOR, FC6_GENERATOR
from dgnam.generator.latent import LATENT_HEAD
from dgnam.io import source_image
from dgnam.paths import PRIORS_DIR, shared_dir
from dgnam.ranges import VISUALIZE, check_ranges


@dataclass
class Priors:
    """The image priors, each a switch with the literature's values in comments; 0 / empty = off."""

    decay: float = 0.0            # L2 decay of the zero-centred pixels per step (Yosinski: 0.0001-0.3)
    blur_every: int = 0           # Gaussian blur every k steps (Yosinski: 4-8) ...
    blur_sigma: float = 1.0       # ... with this sigma (0.3-1)
    pad: int = 0                  # constant-grey padding before the random transforms (Lucid: 12)
    jitter: int = 0               # random shift by up to k pixels (Lucid: 8, then 4)
    jitter2: int = 0              # a second, final jitter (Lucid: 4)
    scale: list[float] = field(default_factory=list)  # random scale factors (Lucid: [1, 0.975, 1.025, 0.95, 1.05])
    rotate: int = 0               # random rotation in [-k, k] degrees (Lucid: 5 or 10)
    tv: float = 0.0               # weight of total variation, subtracted from the objective
    tv_beta: float = 2.0          # TV exponent (Mahendran & Vedaldi: 2)
    l2: float = 0.0               # weight of the mean squared zero-centred pixel value
    alpha_norm: float = 0.0       # weight of the alpha-norm of the zero-centred image
    alpha: float = 6.0            # its exponent (Mahendran & Vedaldi: 6)
    clip_norm_pct: float = 0.0    # zero pixels below this percentile of colour norm (Yosinski)
    clip_contrib_pct: float = 0.0  # zero pixels below this percentile of |x * grad| (Yosinski)
    clamp: bool = True            # keep pixels in [0, 1] after each step (pixel parameterization)


PRIOR_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Priors))
PRIOR_DEFAULTS: dict[str, Any] = dataclasses.asdict(Priors())
PIXEL_ONLY_PRIORS = ("decay", "blur_every", "clip_norm_pct", "clip_contrib_pct")
PRIOR_RANGES = tuple(r for r in VISUALIZE if r.key.startswith("priors."))

ConfigStore.instance().store(group="priors", name="default", node=Priors)
ConfigStore.instance().store(group="generator/spec", name="fc6", node=FC6_GENERATOR)
ConfigStore.instance().store(group="generator/spec", name="latent", node=LATENT_HEAD)
ConfigStore.instance().store(group="discriminator/spec", name="deepsim", node=DEEPSIM_DISCRIMINATOR)

# Resolvers the configs use: ${dgnam_priors:} (the priors shipped with the package), ${dgnam_shared:}
# (the shared assets: trained models, photos) and ${dgnam_sub:a,b} = a - b (e.g. a schedule that
# reaches its end value on the last of `steps` steps).
OmegaConf.register_new_resolver("dgnam_priors", lambda: str(PRIORS_DIR), replace=True)
OmegaConf.register_new_resolver("dgnam_shared", shared_dir, replace=True)
OmegaConf.register_new_resolver("dgnam_sub", lambda a, b: a - b, replace=True)


def unknown_prior(name: str) -> str:
    """The one-line message for a prior name that does not exist."""
    return f"unknown prior {name!r}; valid priors: {', '.join(PRIOR_NAMES)}"


def check_priors(priors: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """Merge with the defaults and check every range (the ``priors.*`` rows of
    :data:`dgnam.ranges.VISUALIZE`); an unknown name lists the valid ones."""
    if OmegaConf.is_config(priors):
        priors = OmegaConf.to_container(priors, resolve=True)
    priors = dict(priors or {})
    unknown = [k for k in priors if k not in PRIOR_DEFAULTS]
    if unknown:
        raise DgnamValueError(unknown_prior(unknown[0]))
    merged = {**PRIOR_DEFAULTS, **priors}
    check_ranges({"priors": merged}, PRIOR_RANGES)
    return merged


def build_priors(priors: Mapping[str, Any], generator: torch.Generator, pixel: bool = True,
                 ) -> tuple[nn.Module, list[P.PostStep], O.Objective | None]:
    """Priors -> (transforms before the target, post-steps, penalty objective to subtract).

    ``pixel`` says whether the parameterization is plain pixels (pixel-space post-steps apply)."""
    p = check_priors(priors)
    tfs: list[nn.Module] = []
    if p["pad"]:
        tfs.append(T.Pad(int(p["pad"])))
    if p["jitter"]:
        tfs.append(T.Jitter(int(p["jitter"]), generator))
    if p["scale"]:
        tfs.append(T.RandomScale([float(s) for s in p["scale"]], generator))
    if p["rotate"]:
        k = int(p["rotate"])
        tfs.append(T.RandomRotate(list(range(-k, k + 1)), generator))
    if p["jitter2"]:
        tfs.append(T.Jitter(int(p["jitter2"]), generator))
    posts: list[P.PostStep] = []
    pixel_only = [k for k in PIXEL_ONLY_PRIORS if p[k]]
    if pixel_only and not pixel:
        raise DgnamValueError(f"prior {pixel_only[0]} acts on pixels; it needs param=pixel")
    if p["decay"]:
        posts.append(P.Decay(float(p["decay"])))
    if p["blur_every"]:
        posts.append(P.BlurEvery(int(p["blur_every"]), float(p["blur_sigma"])))
    if p["clip_norm_pct"]:
        posts.append(P.ClipSmallNorm(float(p["clip_norm_pct"])))
    if p["clip_contrib_pct"]:
        posts.append(P.ClipSmallContribution(float(p["clip_contrib_pct"])))
    if p["clamp"] and pixel:
        posts.append(P.Clamp(-0.5, 0.5))
    penalty: O.Objective | None = None
    for weight, term in ((p["tv"], lambda: O.total_variation(float(p["tv_beta"]))),
                         (p["l2"], lambda: O.l2(INPUT)),
                         (p["alpha_norm"], lambda: O.alpha_norm(float(p["alpha"])))):
        if weight:
            t = float(weight) * term()
            penalty = t if penalty is None else penalty + t
    return nn.Sequential(*tfs), posts, penalty


def octave_sizes(size: int, n: int, scale: float) -> list[int]:
    """Image sides for ``n`` octaves ending at ``size``, each ``scale`` times the previous."""
    if n < 1:
        raise DgnamValueError(f"octaves.n={n} must be >= 1")
    if n > 1 and scale <= 1:
        raise DgnamValueError(f"octaves.scale={scale} must be > 1")
    return [max(8, round(size / scale ** (n - 1 - i))) for i in range(n)]


_PHOTOS: dict[str, Any] = {}  # the datasets init.kind=photos / facets have opened, by source


def photo_source(path: str | None) -> Any:
    """The dataset of ``init.path`` (null: the shared ImageNet-50 training photos), opened once per run."""
    from dgnam.generator.data import open_source

    src = path or str(Path(shared_dir()) / "data" / "imagenet50-128" / "train-*.parquet")
    if src not in _PHOTOS:
        _PHOTOS[src] = open_source(src)
    return _PHOTOS[src]


def start_photo(path: str | None, size: int, seed: int) -> Tensor:
    """The photo ``init.kind=photos`` starts seed ``seed`` from: one of the dataset's photos (Parquet
    or a folder; the shared ImageNet-50 training photos by default) drawn with the seed, centre
    square at ``size`` px; another seed, another photo."""
    from dgnam.generator.data import square_photo

    ds = photo_source(path)
    g = torch.Generator().manual_seed(seed)
    for _ in range(16):  # an unreadable photo: draw again
        data, _ = ds[int(torch.randint(len(ds), (1,), generator=g))]  # (bytes or file, label)
        if (photo := square_photo(data, size)) is not None:
            return photo
    raise DgnamValueError(f"init.path={path}: 16 photos drawn in a row could not be read")


def make_init(init: Mapping[str, Any], batch: int, size: int, seed: int, probe: bool = False) -> Tensor:
    """(B, 3, size, size) start images, the same for every item: noise, grey, an image file, or a dataset
    photo drawn with the seed (``photos``: each sample another); ``facets`` is mode=am's (``probe``: a photo)."""
    kind = init.get("kind", "noise")
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        low, high = float(init.get("low", 0.4)), float(init.get("high", 0.6))
        one = torch.rand(1, 3, size, size, generator=g) * (high - low) + low
    elif kind == "grey":
        one = torch.full((1, 3, size, size), 0.5)
    elif kind == "image":
        if not init.get("path"):
            raise DgnamValueError("init.kind=image needs init.path=<image file> (or init.path=astronaut)")
        one = source_image(init["path"], size)[None]
    elif kind == "photos" or kind == "facets" and probe:
        one = start_photo(init.get("path"), size, seed)[None]
    elif kind == "facets":
        raise DgnamValueError("init.kind=facets: only mode=am takes it; valid here: noise, grey, image, photos")
    else:
        raise DgnamValueError(f"unknown init kind {kind!r}; valid: noise, grey, image, photos, facets")
    return one.expand(batch, -1, -1, -1).contiguous()


def init_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.init`` as a plain dict (``{"kind": "noise"}`` when absent), checked by building one."""
    init = OmegaConf.to_container(cfg.init, resolve=True) if cfg.get("init") else {"kind": "noise"}
    if init.get("kind", "noise") == "noise":
        low, high = init.get("low", 0.4), init.get("high", 0.6)
        if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in (low, high)) or low > high:
            raise DgnamValueError(f"init.low={low!r} and init.high={high!r} must be numbers with 0 <= low <= high <= 1")
    make_init(init, 1, 8, 0, probe=True)  # an unreadable image or unknown kind fails here, before any work
    return init


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising a :class:`DgnamError` raised inside the target as it
    is (Hydra wraps it in an ``InstantiationException``), so the user sees its one line."""
    try:
        return instantiate(node, **kwargs)
    except DgnamError:
        raise
    except Exception as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, DgnamError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, DgnamError):
            raise cause from None
        raise


# Keys of a ``model=custom`` node that dgnam reads itself; the others go to the user's callable.
WRAP_KEYS = ("weights_file", "mean", "std", "input_size", "class_names", "channels_last", "precision")


def build_target_from_cfg(cfg: DictConfig, device: torch.device) -> Target:
    """Instantiate ``cfg.model`` on ``device`` (see :func:`build_model_node`)."""
    return build_model_node(cfg.model, device, "model")


def build_model_node(node: Any, device: torch.device, key: str = "model") -> Target:
    """A :class:`Target` from a model node (``cfg.model``, or ``cfg.encoder.target`` of
    ``train_generator.py``): one of dgnam's builders (``_target_`` under ``dgnam.``: torchvision,
    timm), or any callable that returns an ``nn.Module`` (``model=custom``, ``encoder=custom``),
    wrapped by :func:`dgnam.core.models.wrap_model` with the node's :data:`WRAP_KEYS`. ``key``
    names the node in messages."""
    target = OmegaConf.select(node, "_target_", throw_on_missing=False, default=None)
    if OmegaConf.is_missing(node, "_target_") or not target:
        raise DgnamValueError(f"{key.split('.')[0]}=custom needs {key}._target_=<import path of a function or class that "
                         f"returns a torch.nn.Module>, e.g. {key}._target_=torchvision.models.resnet18")
    if str(target).startswith("dgnam."):
        try:
            return build(node, device=device)
        except DgnamError as e:  # the builders name model.* keys: here they are the node's own
            if key == "model" or "model.weights" not in str(e):
                raise
            raise type(e)(str(e).replace("model.weights", f"{key}.weights")) from None
    from dgnam.core.wrap import wrap_model

    own = OmegaConf.to_container(node, resolve=True)
    wrap = {k: own.pop(k) for k in WRAP_KEYS if k in own}
    try:
        model = build(own)
    except DgnamError:
        raise
    except Exception as e:
        causes = [e]
        while causes[-1].__cause__ is not None and len(causes) < 5:
            causes.append(causes[-1].__cause__)
        what = "cannot be imported" if "Error locating target" in str(e) else "failed"
        raise DgnamValueError(f"{key}._target_={target!r} {what} ({first_line(causes[-1])}); give the import path "
                         f"of a callable that returns a torch.nn.Module (its own arguments as +{key}.<name>=...)"
                         ) from None
    if not isinstance(model, nn.Module):
        raise DgnamValueError(f"{key}._target_={target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return wrap_model(model, mean=wrap.get("mean"), std=wrap.get("std"), input_size=wrap.get("input_size"),
                      categories=wrap.get("class_names"), name=str(target).rsplit(".", 1)[-1],
                      weights_file=wrap.get("weights_file"), channels_last=wrap.get("channels_last", True),
                      device=device, precision=wrap.get("precision", "fp32"))


def probe_param(factory: Callable[..., nn.Module], init: Mapping[str, Any], size: int, seed: int) -> ImageParam:
    """Build the parameterization once for a one-item batch, as the run will, so that its
    arguments and files (a prior, statistics, an encoder for an image start) fail before any work;
    it draws from its own generator (the run's random numbers are untouched)."""
    one = make_init(init, 1, size, seed, probe=True)
    param = factory(init=one, noise=init.get("kind", "noise") == "noise", generator=torch.Generator().manual_seed(seed))
    if not isinstance(param, ImageParam):
        raise DgnamValueError(f"param._target_ must build a dgnam.core.params.ImageParam, not {type(param).__name__}")
    return param


@dataclass
class Prepared:
    """What every optimizing mode reads from its config first, all checked (see :func:`prepare`)."""

    device: torch.device
    steps: int
    batch_size: int
    size: int
    priors: dict[str, Any]
    init: dict[str, Any]
    grad_norm: str | None
    seed: int


def prepare(cfg: DictConfig, batch_key: str = "batch_size") -> Prepared:
    """The shared preamble of the optimizing modes: device, steps, batch size, image size, priors,
    start images and gradient normalization, each checked before any work (the target is built by
    the caller, after its own checks). Every number's range (:mod:`dgnam.ranges`) and finiteness is
    checked by ``visualize.run`` before it calls any mode."""
    check_optimizer(cfg.get("optimizer"))  # betas a pair: what the table of ranges cannot say
    return Prepared(
        device=pick_device(cfg.get("device", "auto")),
        steps=positive_int(cfg, "steps"),
        batch_size=positive_int(cfg, batch_key),
        size=positive_int(cfg, "image_size"),
        priors=check_priors(cfg.get("priors")),
        init=init_config(cfg),
        grad_norm=grad_norm_of(cfg),
        seed=int(cfg.get("seed", 0)),
    )
