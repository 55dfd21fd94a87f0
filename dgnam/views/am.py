"""Activation maximization runs: from a config to images and numbers on disk.

This is the edge around :func:`dgnam.core.loop.optimize`: it checks every input before any work, builds
the pieces (target, parameterization, priors, optimizer), batches the units, and writes the
outputs. Pixel-space AM and DGN-AM differ only in the parameterization and its post-steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core import transforms as T
from dgnam.errors import DgnamError
from dgnam.io import labelled_grid, load_image, safe_name, save_animation, save_png, write_results
from dgnam.core.loop import optimize
from dgnam.core.models import INPUT, Target, pick_device
from dgnam.core.params import PixelParam
from dgnam.core.units import Unit, objective_for, select_units
from dgnam.views.common import positive_int

log = logging.getLogger(__name__)

# Every prior is a switch with the literature's defaults; 0 / empty means off.
PRIOR_DEFAULTS: dict[str, Any] = {
    "decay": 0.0,            # L2 decay of the zero-centred pixels per step (Yosinski: 0.0001-0.3)
    "blur_every": 0,         # Gaussian blur every k steps (Yosinski: 4-8) ...
    "blur_sigma": 1.0,       # ... with this sigma (0.3-1)
    "pad": 0,                # constant-grey padding before the random transforms (Lucid: 12)
    "jitter": 0,             # random shift by up to k pixels (Lucid: 8, then 4)
    "jitter2": 0,            # a second, final jitter (Lucid: 4)
    "scale": [],             # random scale factors (Lucid: [1, 0.975, 1.025, 0.95, 1.05])
    "rotate": 0,             # random rotation in [-k, k] degrees (Lucid: 5 or 10)
    "tv": 0.0,               # weight of total variation, subtracted from the objective
    "tv_beta": 2.0,          # TV exponent (Mahendran & Vedaldi: 2)
    "l2": 0.0,               # weight of the mean squared zero-centred pixel value
    "alpha_norm": 0.0,       # weight of the alpha-norm of the zero-centred image
    "alpha": 6.0,            # its exponent (Mahendran & Vedaldi: 6)
    "clip_norm_pct": 0.0,    # zero pixels below this percentile of colour norm (Yosinski)
    "clip_contrib_pct": 0.0, # zero pixels below this percentile of |x * grad| (Yosinski)
    "clamp": True,           # keep pixels in [0, 1] after each step (pixel parameterization)
}


def check_priors(priors: Mapping[str, Any]) -> dict[str, Any]:
    """Merge with the defaults; an unknown prior name is an error that lists the valid ones."""
    unknown = [k for k in priors if k not in PRIOR_DEFAULTS]
    if unknown:
        raise DgnamError(f"unknown prior {unknown[0]!r}; valid priors: {', '.join(PRIOR_DEFAULTS)}")
    merged = {**PRIOR_DEFAULTS, **dict(priors)}
    for k in ("decay", "tv", "l2", "alpha_norm", "blur_sigma", "clip_norm_pct", "clip_contrib_pct"):
        if float(merged[k]) < 0:
            raise DgnamError(f"prior {k}={merged[k]} must be >= 0")
    for k in ("blur_every", "pad", "jitter", "jitter2", "rotate"):
        if int(merged[k]) < 0:
            raise DgnamError(f"prior {k}={merged[k]} must be >= 0")
    if not 0 <= float(merged["decay"]) < 1:
        raise DgnamError(f"prior decay={merged['decay']} must be in [0, 1)")
    for k in ("clip_norm_pct", "clip_contrib_pct"):
        if float(merged[k]) >= 100:
            raise DgnamError(f"prior {k}={merged[k]} must be below 100 (a percentile)")
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
    pixel_only = [k for k in ("decay", "blur_every", "clip_norm_pct", "clip_contrib_pct") if p[k]]
    if pixel_only and not pixel:
        raise DgnamError(f"prior {pixel_only[0]} acts on pixels; it needs param=pixel")
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
        raise DgnamError(f"octaves.n={n} must be >= 1")
    if n > 1 and scale <= 1:
        raise DgnamError(f"octaves.scale={scale} must be > 1")
    return [max(8, round(size / scale ** (n - 1 - i))) for i in range(n)]


def make_init(init: Mapping[str, Any], batch: int, size: int, seed: int) -> Tensor:
    """(B, 3, size, size) start images, the same for every item: noise, grey or an image file."""
    kind = init.get("kind", "noise")
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        low, high = float(init.get("low", 0.4)), float(init.get("high", 0.6))
        one = torch.rand(1, 3, size, size, generator=g) * (high - low) + low
    elif kind == "grey":
        one = torch.full((1, 3, size, size), 0.5)
    elif kind == "image":
        if not init.get("path"):
            raise DgnamError("init.kind=image needs init.path=<image file>")
        one = load_image(init["path"], size)[None]
    else:
        raise DgnamError(f"unknown init kind {kind!r}; valid: noise, grey, image")
    return one.expand(batch, -1, -1, -1).contiguous()


def build_target_from_cfg(cfg: DictConfig, device: torch.device) -> Target:
    """Instantiate ``cfg.model`` (a ``dgnam.core.models.build_target`` leaf) on ``device``."""
    try:
        return instantiate(cfg.model, device=device)
    except DgnamError:
        raise
    except Exception as e:  # Hydra wraps errors raised inside the target
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DgnamError):
            raise cause from None
        raise


def run_am(cfg: DictConfig, out_dir: str | Path, param_factory: Callable[..., nn.Module] | None = None,
           extra_post_steps: Sequence[P.PostStep] = ()) -> dict:
    """Run activation maximization as ``cfg`` says and write PNGs, grids, animations, results.

    Returns ``{"out_dir", "results": [row per unit], "images": {layer: (N, 3, H, W)}}``.
    ``param_factory`` overrides ``cfg.param`` (``(init, noise, generator) -> param``).
    """
    out = Path(out_dir)
    device = pick_device(cfg.get("device", "auto"))
    steps = positive_int(cfg, "steps")
    batch_size = positive_int(cfg, "batch_size")
    size = positive_int(cfg, "image_size")
    n_oct = int(OmegaConf.select(cfg, "octaves.n", default=1))
    sizes = octave_sizes(size, n_oct, float(OmegaConf.select(cfg, "octaves.scale", default=1.2)))
    priors = check_priors(OmegaConf.to_container(cfg.get("priors") or {}, resolve=True))
    init_cfg = OmegaConf.to_container(cfg.init, resolve=True) if cfg.get("init") else {"kind": "noise"}
    make_init(init_cfg, 1, 8, 0)  # check the init (e.g. an unreadable image) before any work
    grad_norm = cfg.get("grad_norm") or None
    if grad_norm not in (None, "none", "l1", "l2"):
        raise DgnamError(f"unknown grad_norm {grad_norm!r}; valid: none, l1, l2")
    target = build_target_from_cfg(cfg, device)
    layers = cfg.layers if not isinstance(cfg.layers, str) else [cfg.layers]
    position = list(cfg.position) if cfg.get("position") is not None else None
    plan: dict[str, list[Unit]] = {}
    for layer in layers:  # check every layer and unit before running anything
        plan[str(layer)] = select_units(target, str(layer), OmegaConf.to_container(cfg.units, resolve=True)
                                        if OmegaConf.is_config(cfg.units) else cfg.units,
                                        cfg.get("unit", "auto"), position, sizes[-1])
    factory = param_factory or instantiate(cfg.param)
    is_pixel = getattr(factory, "func", factory) is PixelParam
    if n_oct > 1 and not is_pixel:
        raise DgnamError("octaves need param=pixel (the FFT parameterization has a fixed size)")
    opt_factory = instantiate(cfg.optimizer)
    sched_factory = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    seed = int(cfg.get("seed", 0))
    ocfg = cfg.get("output", {})
    frame_every = int(ocfg.get("frame_every", 10)) if (ocfg.get("gif") or ocfg.get("mp4")) else 0
    total = sum(len(u) for u in plan.values()) * steps * len(sizes)
    bar = tqdm(total=total, desc="optimizing", unit="unit-step", disable=not ocfg.get("progress", True),
               mininterval=1.0)
    resize = T.Resize(int(cfg.input_resize)) if cfg.get("input_resize") else None
    rows: list[dict] = []
    images_by_layer: dict[str, Tensor] = {}
    for layer, units in plan.items():
        imgs, frames_by_batch = [], []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            b = len(chunk)
            g = torch.Generator().manual_seed(seed)  # same draws for every batch: batching-invariant
            init = make_init(init_cfg, b, sizes[0], seed).to(device)
            param = factory(init=init, noise=init_cfg.get("kind", "noise") == "noise", generator=g).to(device)
            tfs, posts, penalty = build_priors(priors, g, pixel=is_pixel)
            posts += param.post_steps() if hasattr(param, "post_steps") else []
            own = param.penalty() if hasattr(param, "penalty") else None
            penalty = own if penalty is None else (penalty + own if own is not None else penalty)
            if resize is not None:
                tfs.append(resize)
            unit_obj = objective_for(chunk)
            objective = unit_obj - penalty if penalty is not None else unit_obj
            t0 = time.perf_counter()
            res = optimize(param, target, objective, steps=steps, optimizer=opt_factory,
                           transforms=tfs, post_steps=[*posts, *extra_post_steps], scheduler=sched_factory,
                           grad_norm=grad_norm, octave_sizes=[(s, s) for s in sizes] if n_oct > 1 else None,
                           track=unit_obj, frame_every=frame_every, callback=lambda _s: bar.update(b))
            if device.type == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            seen = res.images.to(device)  # score what the target saw (e.g. G's output resized)
            final = evaluate(target, resize(seen) if resize is not None else seen, chunk)
            for i, u in enumerate(chunk):
                row = {"method": cfg.get("method_name", "pixel"), "seed": seed, "layer": layer,
                       "unit": u.index, "label": u.label, "kind": u.kind,
                       "image": str(_png_path(layer, u).as_posix()) if ocfg.get("png", True) else None,
                       "activation": final["activation"][i]}
                if "probability" in final:
                    row["probability"] = final["probability"][i]
                    row["top1"] = final["top1"][i]
                row.update({"start_activation": float(res.history[0, i]), "steps": steps * len(sizes),
                            "seconds": secs / b, "batch_seconds": secs, "batch_size": b})
                if u.kind == "neuron":
                    row.update({"x": u.x, "y": u.y})
                rows.append(row)
            imgs.append(res.images)
            frames_by_batch.append(res.frames)
        images_by_layer[layer] = torch.cat(imgs)
        _save_layer(out, layer, units, images_by_layer[layer], frames_by_batch, ocfg)
    bar.close()
    write_results(rows, out)
    return {"out_dir": str(out), "results": rows, "images": images_by_layer}


@torch.no_grad()
def evaluate(target: Target, images: Tensor, units: Sequence[Unit]) -> dict[str, list]:
    """Clean (untransformed) activation of each item's unit, and for class units the softmax
    probability and the top-1 class."""
    obj = objective_for(units)
    layers = set(obj.layers)
    is_class = units[0].kind == "class"
    if is_class:
        layers.add("logits")
    acts = target(images, layers)
    out: dict[str, list] = {"activation": [float(v) for v in obj(acts)]}
    if is_class:
        probs = acts["logits"].float().softmax(-1)
        idx = torch.tensor([u.index for u in units], device=probs.device)
        out["probability"] = [float(v) for v in probs[torch.arange(len(units)), idx]]
        out["top1"] = [int(v) for v in probs.argmax(-1)]
    return out


def _png_path(layer: str, unit: Unit) -> Path:
    """Where a unit's PNG goes, relative to the run directory."""
    return Path(safe_name(layer)) / f"{safe_name(unit.label) or unit.index}.png"


def _save_layer(out: Path, layer: str, units: Sequence[Unit], images: Tensor,
                frames_by_batch: list[list[Tensor]], ocfg: Mapping[str, Any]) -> None:
    """PNG per unit, a labelled grid per layer, and optionally a GIF/MP4 of the whole grid."""
    if ocfg.get("png", True):
        for u, img in zip(units, images):
            save_png(img, out / _png_path(layer, u))
    cols = int(ocfg.get("grid_cols", 8)) or 8
    labels = [u.label for u in units]
    if ocfg.get("grid", True):
        grid = labelled_grid(images, labels, cols=cols)
        save_png(grid.float() / 255, out / f"grid_{safe_name(layer)}.png")
    if (ocfg.get("gif") or ocfg.get("mp4")) and frames_by_batch and frames_by_batch[0]:
        n_frames = min(len(f) for f in frames_by_batch)
        side = images.shape[-1]
        grids = []
        for t in range(n_frames):
            frame = torch.cat([fb[t] for fb in frames_by_batch])
            grids.append(labelled_grid(frame, labels, cols=cols, tile=side))
        for fmt in ("gif", "mp4"):
            if ocfg.get(fmt):
                save_animation(grids, out / f"optimization_{safe_name(layer)}.{fmt}", fps=int(ocfg.get("fps", 10)))
