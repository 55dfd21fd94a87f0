"""Style transfer (Gatys et al. 2016): an image with the Gram matrices of a style image at several
layers and the activations of a content image at one layer.

The objective (maximized) is ``-sum_l w_l * style_l(x) - content_weight * content(x)`` minus the
priors' penalty (``priors.tv``), where ``style_l = ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2`` (G the
Gram matrix, :func:`dgnam.core.objectives.style_match`) and ``content = ||phi(x) - phi(c)||^2 /
||phi(c)||^2`` at ``style.content_layer``. It starts from the content image (``style.start=content``)
or from ``init``'s noise, in any parameterization (``param=pixel`` or ``param=fft``), through the
shared loop.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from dgnam.checks import one_of
from dgnam.config import build_target_from_cfg, prepare
from dgnam.core import objectives as O
from dgnam.core.models import Target
from dgnam.errors import DgnamValueError
from dgnam.views.photo import layer_weights, named_image, optimize_photo, save_photo_run, term_rows

STARTS = ("content", "noise")
CONTENT = "content"


def style_objective(target: Target, style: torch.Tensor, content: torch.Tensor, weights: dict[str, float],
                    content_layer: str, content_weight: float) -> tuple[O.Objective, dict[str, O.Objective]]:
    """(the objective to maximize, its unweighted terms: ``style:<layer>`` and ``content``, each a
    normalized error) for a style and a content image (3, H, W) in [0, 1]."""
    for la in (*weights, content_layer):
        shape = target.layer_shape(la, content.shape[-1])
        if len(shape) != 3:
            raise DgnamValueError(f"style transfer needs conv layers (C x H x W), but {la} has shape {shape}; "
                             f"choose a spatial layer")
    with torch.no_grad():
        s_acts = target(style[None], [la for la in weights if weights[la] > 0])
        c_acts = target(content[None], [content_layer])
    terms: dict[str, O.Objective] = {f"style:{la}": O.style_match(la, s_acts[la]) for la in weights if weights[la] > 0}
    terms[CONTENT] = -O.feature_match(content_layer, c_acts[content_layer])
    loss = None
    for name, term in terms.items():
        w = content_weight if name == CONTENT else weights[name.split(":", 1)[1]]
        if w:
            loss = w * term if loss is None else loss + w * term
    return -loss, terms


def run_style(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``mode=style``: ``image`` (null: the astronaut) in the style of ``style.image``.

    Writes ``styled.png``, ``original.png``, ``style.png``, ``before_after.png`` (content, style,
    result), optionally ``optimization.gif/.mp4``, ``results.json/.csv`` (a row per term: weight,
    start, end, min, max) and ``steps.json/.csv``."""
    out = Path(out_dir)
    pre = prepare(cfg)
    scfg = cfg.get("style") or {}
    start = one_of(scfg.get("start", "content"), "style.start", STARTS)
    content_weight = float(scfg.get("content_weight", 1.0))
    if not scfg.get("image"):
        raise DgnamValueError("style.image is not set; give an image file or a scikit-image sample, "
                         "e.g. style.image=skimage:hubble_deep_field")
    content = named_image(cfg, "image", pre.size)
    style = named_image(cfg, "style.image", int(scfg.get("image_size") or pre.size))
    target = build_target_from_cfg(cfg, pre.device)
    weights = layer_weights(target, cfg, "style.layers")
    content_layer = str(scfg.get("content_layer") or "")
    if not content_layer:
        raise DgnamValueError("style.content_layer is not set; e.g. style.content_layer=features.6.add")
    target.resolve(content_layer)
    objective, terms = style_objective(target, style.to(pre.device), content.to(pre.device), weights,
                                       content_layer, content_weight)
    run = optimize_photo(cfg, pre, target, content if start == "content" else None, objective, terms,
                         [pre.size], desc="styling")
    info = {"mode": "style", "model": target.name, "image": str(cfg.get("image") or "astronaut"),
            "style_image": str(scfg.get("image")), "content_layer": content_layer, "start": start,
            "seed": pre.seed}
    term_weights = {**{f"style:{la}": w for la, w in weights.items()}, CONTENT: content_weight}
    rows, steps = term_rows(run, term_weights, info)
    save_photo_run(out, "styled", content, run, rows, steps, cfg.get("output", {}), {"style": style})
    return {"out_dir": str(out), "results": rows, "steps": steps, "image": run.result.images[0],
            "terms": run.result.terms}
