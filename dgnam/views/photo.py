"""What the modes that optimize one image from a photo share (DeepDream, style transfer): the
photos named in the config, a ``{layer: weight}`` dict, the run through the shared loop
(:func:`dgnam.core.loop.optimize`) with the named terms recorded at every step, and the outputs
(the image, the original, a before/after grid, GIF/MP4 of the optimization, ``results.json``: a row
per term, ``steps.json``: the terms at every step).

Everything is checked before the loop runs, and nothing is written before it ends.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from dgnam.config import Prepared, build, build_priors, make_init
from dgnam.core import objectives as O
from dgnam.core.images import resize, to_uint8
from dgnam.core.loop import Result, optimize
from dgnam.core.models import Target
from dgnam.core.params import ImageParam
from dgnam.errors import DgnamError, DgnamValueError
from dgnam.io import labelled_grid, safe_name, save_animation, save_png, source_image, write_results


def named_image(cfg: DictConfig, key: str, size: int) -> Tensor:
    """The photo of config key ``key`` (a file, ``skimage:<name>``, or null: the astronaut) at
    ``size``; a missing or unreadable file is one line naming the key."""
    path = OmegaConf.select(cfg, key, default=None)
    try:
        return source_image(path, size)
    except DgnamError as e:
        raise DgnamValueError(f"{key}: {e}") from None


def layer_weights(target: Target, cfg: DictConfig, key: str) -> dict[str, float]:
    """``{layer: weight}`` from config key ``key``, or (when it is null) weight 1 for each of the
    top-level ``layers``: every layer known to the target, every weight a number >= 0, one > 0."""
    node = OmegaConf.select(cfg, key, default=None)
    if node is None:
        spec = cfg.get("layers")
        spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
        names = [spec] if isinstance(spec, (str, int)) else list(spec or [])
        node, key = {str(n): 1.0 for n in names}, "layers"
    elif OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping) or not node:
        raise DgnamValueError(f"{key} must be a non-empty {{layer: weight}} dict, e.g. {key}={{features.10.add:1.0}}, "
                         f"or null to weigh each of `layers` by 1")
    out: dict[str, float] = {}
    for layer, w in node.items():
        target.resolve(str(layer))  # an unknown layer names the valid ones
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise DgnamValueError(f"{key}: the weight of {layer} is {w!r}; it must be a number >= 0")
        out[str(layer)] = float(w)
    if not any(out.values()):
        raise DgnamValueError(f"{key}: every weight is 0; give one layer a weight > 0")
    return out


@dataclass
class PhotoRun:
    """What :func:`optimize_photo` returns: the loop's result and the run's numbers."""

    result: Result
    seconds: float
    sizes: list[int]
    param: ImageParam


def optimize_photo(cfg: DictConfig, pre: Prepared, target: Target, start: Tensor | None, objective: O.Objective,
                   terms: Mapping[str, O.Objective], sizes: Sequence[int], transforms: Sequence[nn.Module] = (),
                   photo: Tensor | None = None, desc: str = "optimizing") -> PhotoRun:
    """Optimize one image through the shared loop.

    ``start``: the image (3, S, S) to start from at the last octave's size (None: ``cfg.init``'s
    noise); ``sizes``: the octave sides (pixel parameterization only when more than one); ``photo``:
    carry the detail over octaves on top of this photo (DeepDream). The priors of ``cfg.priors`` add
    their transforms after ``transforms`` and subtract their penalty (recorded as the ``penalty`` term).
    """
    device, seed = pre.device, pre.seed
    factory = build(cfg.param)
    noise = start is None
    init = make_init(pre.init, 1, sizes[0], seed) if noise else resize(start[None], sizes[0], antialias=True)
    g = torch.Generator().manual_seed(seed)
    param = factory(init=init.to(device), noise=noise, generator=g)
    if not isinstance(param, ImageParam):
        raise DgnamValueError(f"param._target_ must build a dgnam.core.params.ImageParam, not {type(param).__name__}")
    param = param.to(device)
    if len(sizes) > 1 and not param.pixel_space:
        raise DgnamValueError("octaves need param=pixel (the Fourier parameterizations have a fixed size); "
                         "set octaves.n=1")
    tfs, posts, penalty = build_priors(pre.priors, g, pixel=param.pixel_space)
    own = param.penalty()
    penalty = own if penalty is None else (penalty + own if own is not None else penalty)
    terms = dict(terms)
    total = objective
    if penalty is not None:
        total = objective - penalty
        terms["penalty"] = penalty
    if photo is not None and len(sizes) > 1 and hasattr(param, "carry_detail"):
        param.carry_detail(photo[None].to(device))
    ocfg = cfg.get("output", {})
    frame_every = int(ocfg.get("frame_every", 10)) if (ocfg.get("gif") or ocfg.get("mp4")) else 0
    bar = tqdm(total=pre.steps * len(sizes), desc=desc, unit="step", disable=not ocfg.get("progress", True),
               mininterval=1.0)
    sched = build(cfg.scheduler) if cfg.get("scheduler") else None
    t0 = time.perf_counter()
    res = optimize(param, target, total, steps=pre.steps, optimizer=build(cfg.optimizer),
                   transforms=nn.Sequential(*transforms, *tfs), post_steps=[*posts, *param.post_steps()],
                   scheduler=sched, grad_norm=pre.grad_norm,
                   octave_sizes=[(s, s) for s in sizes] if len(sizes) > 1 else None,
                   frame_every=frame_every, callback=lambda _s: bar.update(1), terms=terms)
    if device.type == "cuda":
        torch.cuda.synchronize()
    bar.close()
    return PhotoRun(res, time.perf_counter() - t0, list(sizes), param)


def term_rows(run: PhotoRun, weights: Mapping[str, float], info: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(a row per term: its weight, first, last, lowest and highest value; a row per step: the octave,
    its size and every term's value)."""
    rows = []
    for name, hist in run.result.terms.items():
        h = hist[:, 0]
        rows.append({**info, "term": name, "weight": weights.get(name), "start": float(h[0]), "end": float(h[-1]),
                     "min": float(h.min()), "max": float(h.max()), "steps": len(h), "seconds": run.seconds})
    per = len(run.result.history) // len(run.sizes)
    steps = [{"step": i, "octave": i // per, "size": run.sizes[i // per],
              **{name: float(h[i, 0]) for name, h in run.result.terms.items()}}
             for i in range(len(run.result.history))]
    return rows, steps


def save_photo_run(out: Path, name: str, original: Tensor, run: PhotoRun, rows: list[dict], steps: list[dict],
                   ocfg: Mapping[str, Any], extra: Mapping[str, Tensor] | None = None) -> None:
    """``<name>.png``, ``original.png`` (and ``extra`` images by name), ``before_after.png`` (the
    originals, then the result), ``optimization.gif/.mp4`` and ``results.json/.csv``,
    ``steps.json/.csv``."""
    image = run.result.images[0]
    extra = dict(extra or {})
    save_png(image, out / f"{safe_name(name)}.png")
    save_png(original, out / "original.png")
    for label, img in extra.items():
        save_png(img, out / f"{safe_name(label)}.png")
    side = image.shape[-1]
    tiles = [original, *extra.values(), image]
    grid = labelled_grid([resize(t[None], side, antialias=True)[0] for t in tiles],
                         ["original", *extra, name], cols=len(tiles))
    save_png(grid.float() / 255, out / "before_after.png")
    if run.result.frames:
        frames = [to_uint8(resize(f[:1].float() / 255, side, antialias=True))[0] for f in run.result.frames]
        for fmt in ("gif", "mp4"):
            if ocfg.get(fmt):
                save_animation(frames, out / f"optimization.{fmt}", fps=int(ocfg.get("fps", 10)))
    write_results(rows, out)
    write_results(steps, out, "steps")
