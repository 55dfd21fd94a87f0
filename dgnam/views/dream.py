"""DeepDream (Mordvintsev et al. 2015): start from a photo and amplify what some layers see in it.

The objective is ``sum_l w_l * mean(phi_l(x)^2)`` (``deepdream.reduce=l2``) or ``... mean(phi_l(x))``
(``mean``), or with a guide image ``sum_l w_l * mean_positions max_guide <phi_l(x), phi_l(guide)>``;
the steps are normalized (``grad_norm=l1``: the step divided by the mean |gradient|), the image is
rolled by a random shift before every step (``deepdream.roll``), and octaves process the photo at
``octaves.n`` scales, smallest first, carrying the detail added so far up to the next scale
(:meth:`dgnam.core.params.PixelParam.carry_detail`). One image per run, through the shared loop.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dgnam.checks import one_of
from dgnam.config import build_target_from_cfg, octave_sizes, prepare
from dgnam.core import objectives as O
from dgnam.core import transforms as T
from dgnam.views.photo import layer_weights, named_image, optimize_photo, save_photo_run, term_rows


def dream_objective(weights: dict[str, float], reduce: str = "l2",
                    guide: dict[str, torch.Tensor] | None = None) -> tuple[O.Objective, dict[str, O.Objective]]:
    """(the weighted sum to maximize, the unweighted term of each layer) for ``{layer: weight}``;
    ``guide``: the guide image's activations per layer (a guided dream)."""
    terms = {layer: O.guided_dream(layer, guide[layer]) if guide is not None else O.dream(layer, reduce)
             for layer, w in weights.items() if w > 0}
    total = None
    for layer, term in terms.items():
        t = weights[layer] * term
        total = t if total is None else total + t
    return total, terms


def run_deepdream(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``mode=deepdream``: dream on ``image`` (null: the astronaut) through ``deepdream.layers``.

    Writes ``dream.png``, ``original.png``, ``before_after.png``, optionally ``optimization.gif/.mp4``,
    ``results.json/.csv`` (a row per layer term: weight, start, end, min, max) and ``steps.json/.csv``."""
    out = Path(out_dir)
    pre = prepare(cfg)
    dcfg = cfg.get("deepdream") or {}
    reduce = one_of(dcfg.get("reduce", "l2"), "deepdream.reduce", O.DREAM_REDUCE)
    sizes = octave_sizes(pre.size, int(OmegaConf.select(cfg, "octaves.n", default=1)),
                         float(OmegaConf.select(cfg, "octaves.scale", default=1.4)))
    photo = named_image(cfg, "image", pre.size)
    guide_img = named_image(cfg, "deepdream.guide", pre.size) if dcfg.get("guide") else None
    target = build_target_from_cfg(cfg, pre.device)
    key = "deepdream.layers"
    weights = layer_weights(target, cfg, key)
    guide = None
    if guide_img is not None:
        with torch.no_grad():
            guide = {k: v.detach() for k, v in target(guide_img[None].to(pre.device), weights).items()}
    objective, terms = dream_objective(weights, reduce, guide)
    g = torch.Generator().manual_seed(pre.seed + 1)  # the roll's own draws
    roll = [T.Roll(int(dcfg.get("roll", 0)), g)] if int(dcfg.get("roll", 0)) else []
    run = optimize_photo(cfg, pre, target, photo, objective, terms, sizes, roll, photo=photo, desc="dreaming")
    info = {"mode": "deepdream", "model": target.name, "image": str(cfg.get("image") or "astronaut"),
            "guide": str(dcfg.get("guide")) if guide is not None else None, "reduce": reduce,
            "octaves": sizes, "seed": pre.seed}
    rows, steps = term_rows(run, weights, info)
    extra = {"guide": guide_img} if guide_img is not None else None
    save_photo_run(out, "dream", photo, run, rows, steps, cfg.get("output", {}), extra)
    return {"out_dir": str(out), "results": rows, "steps": steps, "image": run.result.images[0],
            "history": run.result.history[:, 0], "sizes": sizes}
