"""Feature inversion (Mahendran & Vedaldi 2015): from noise, find the image whose activations at a
layer match a photo's, for many layers at once, plain and with image priors.

Each reconstruction is one batch item of :func:`dgnam.core.loop.optimize`. Item b maximizes
``-||phi_Lb(x_b) - phi_Lb(x0)||^2 / ||phi_Lb(x0)||^2`` for its own layer L_b; the ``priors`` variant
also subtracts total variation (weight growing with depth) and an alpha-norm, and gets the post-steps
of ``cfg.priors`` (e.g. a Gaussian blur every few steps); the ``plain`` variant has only the
feature term (pixels kept in [0, 1]). Items do not interact, so the plain and prior reconstructions
of a layer, or of several layers, share one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm.auto import tqdm

from dgnam.config import build, build_priors, build_target_from_cfg, make_init, prepare, probe_param
from dgnam.core import objectives as O
from dgnam.core.images import psnr as psnr_db
from dgnam.core.loop import PostStep, optimize
from dgnam.core.models import INPUT, Target
from dgnam.core.poststeps import Clamp, raw
from dgnam.errors import DgnamValueError
from dgnam.io import atomic_write, labelled_grid, safe_name, save_png, source_image, write_results
from dgnam.views.common import depth, layer_list

log = logging.getLogger(__name__)

VARIANTS = ("plain", "priors")
PENALTIES = ("tv", "alpha_norm", "l2")  # the prior terms subtracted from the objective, per item


@dataclass(frozen=True)
class Job:
    """One reconstruction: match ``layer`` of the photo, with or without priors (``variant``)."""

    layer: str
    variant: str
    tv_weight: float = 0.0


def feature_match_items(layers: Sequence[str], refs: Mapping[str, Tensor]) -> O.Objective:
    """Item b: ``-||phi(x_b) - ref||^2 / ||ref||^2`` at ``layers[b]`` (``refs[layer]``: one item's
    activations (1, ...)). Items of the same layer are scored together."""
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(layer, []).append(i)
    terms = {layer: O.feature_match(layer, refs[layer]) for layer in groups}

    def fn(acts: O.Acts) -> Tensor:
        first = next(iter(acts.values()))
        score = torch.zeros(len(layers), device=first.device, dtype=torch.float32)
        for layer, idx in groups.items():
            ix = torch.tensor(idx, device=first.device)
            score = score.index_put((ix,), terms[layer]({layer: acts[layer][ix]}).float())
        return score

    return O.Objective(fn, set(groups), f"feature_match({', '.join(groups)})")


def feature_errors(target: Target, images: Tensor, layers: Sequence[str], refs: Mapping[str, Tensor]) -> list[float]:
    """Normalized feature error ``||phi(x_b) - phi(x0)|| / ||phi(x0)||`` per item, at ``layers[b]``."""
    with torch.no_grad():
        acts = target(images, set(layers))
    out = []
    for i, layer in enumerate(layers):
        ref = refs[layer][0]
        out.append(float((acts[layer][i] - ref).norm() / ref.norm().clamp_min(1e-12)))
    return out


def image_errors(images: Tensor, original: Tensor) -> tuple[list[float], list[float]]:
    """(PSNR in dB, SSIM) of each image (B, 3, H, W) in [0, 1] against ``original`` (3, H, W)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref = original[None].expand_as(images).float().cpu()
    imgs = images.float().cpu().clamp(0, 1)
    ssim = structural_similarity_index_measure(imgs, ref, data_range=1.0, reduction="none")
    return [float(v) for v in psnr_db(imgs, ref, 1.0)], [float(v) for v in ssim.reshape(-1)]


class OnlyItems:
    """Run a post-step on some batch items only (the others are put back as they were)."""

    def __init__(self, post: PostStep, items: Tensor) -> None:
        self.post, self.items = post, items  # (B,) bool

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        before = x.detach().clone()
        self.post(param, step)
        keep = ~self.items.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        x.copy_(torch.where(keep, before, x))


def item_penalty(priors: Mapping[str, Any], jobs: Sequence[Job]) -> O.Objective | None:
    """Per-item prior terms: TV with each job's weight, alpha-norm and L2 with the config's weights,
    all zero for ``plain`` jobs."""
    use = torch.tensor([j.variant == "priors" for j in jobs], dtype=torch.float32)
    tv_w = torch.tensor([j.tv_weight for j in jobs], dtype=torch.float32) * use
    terms: list[tuple[Tensor, O.Objective]] = []
    if float(tv_w.abs().sum()) > 0:
        terms.append((tv_w, O.total_variation(float(priors["tv_beta"]))))
    if float(priors["alpha_norm"]) > 0:
        terms.append((use * float(priors["alpha_norm"]), O.alpha_norm(float(priors["alpha"]))))
    if float(priors["l2"]) > 0:
        terms.append((use * float(priors["l2"]), O.l2(INPUT)))
    if not terms:
        return None

    def fn(acts: O.Acts) -> Tensor:
        total = 0.0
        for w, term in terms:
            v = term(acts)
            total = total + w.to(v.device) * v
        return total

    return O.Objective(fn, {INPUT}, " + ".join(f"w * {t.name}" for _, t in terms))


def plan_jobs(target: Target, layers: Sequence[str], variants: Sequence[str], tv: float,
              tv_growth: float) -> list[Job]:
    """Jobs in depth order; the TV weight of a layer is ``tv * (1 + tv_growth * d)`` with ``d`` its
    relative depth in the whole network (0 at the input, 1 at the logits)."""
    last = max(1, len(target.nodes) - 1)
    jobs = []
    for layer in layers:
        d = max(0, depth(target, layer)) / last
        for v in variants:
            jobs.append(Job(layer, v, tv * (1.0 + tv_growth * d)))
    return jobs


def batches(jobs: Sequence[Job], size: int, split_variants: bool) -> list[list[Job]]:
    """Consecutive jobs in batches of ``size`` (by variant first when their transforms differ)."""
    groups = [[j for j in jobs if j.variant == v] for v in VARIANTS] if split_variants else [list(jobs)]
    return [g[i : i + size] for g in groups for i in range(0, len(g), size)]


def run_inversion(cfg: DictConfig, out_dir: str | Path, target: Target | None = None) -> dict:
    """``mode=inversion``: reconstruct a photo from each layer's activations, plain and with priors.

    Writes ``inversion_grid.png`` (a row per layer: original, then each variant), ``<layer>/<variant>.png``,
    ``results.json/.csv`` and ``results.md`` (per layer and variant: normalized feature error, PSNR,
    SSIM) and ``inversion_errors.png`` (the errors against depth)."""
    out = Path(out_dir)
    pre = prepare(cfg)
    device, steps, size, batch_size, priors = pre.device, pre.steps, pre.size, pre.batch_size, pre.priors
    icfg = cfg.get("inversion") or {}
    variants = icfg.get("variants", list(VARIANTS))
    variants = [variants] if isinstance(variants, str) else list(variants)
    for v in variants:
        if v not in VARIANTS:
            raise DgnamValueError(f"unknown inversion variant {v!r}; valid: {', '.join(VARIANTS)}")
    if not variants:
        raise DgnamValueError(f"inversion.variants is empty; valid: {', '.join(VARIANTS)}")
    tv_growth = float(icfg.get("tv_growth", 0.0))
    if tv_growth < 0:
        raise DgnamValueError(f"inversion.tv_growth={tv_growth} must be >= 0")
    init_cfg, grad_norm = pre.init, pre.grad_norm
    photo = source_image(cfg.get("image"), size)
    factory = build(cfg.param)
    is_pixel = probe_param(factory, init_cfg, size, pre.seed).pixel_space
    target = target.to(device) if target is not None else build_target_from_cfg(cfg, device)
    layers = layer_list(target, cfg.get("layers"))
    opt_factory = build(cfg.optimizer)
    sched_factory = build(cfg.scheduler) if cfg.get("scheduler") else None
    seed = pre.seed
    no_penalty = {**priors, **{k: 0.0 for k in PENALTIES}}
    tfs_probe, _, _ = build_priors(no_penalty, torch.Generator(), pixel=is_pixel)  # checks the priors
    split = len(tfs_probe) > 0
    jobs = plan_jobs(target, layers, variants, float(priors["tv"]), tv_growth)
    with torch.no_grad():
        refs = {k: v[:1].detach() for k, v in target(photo[None].to(device), layers).items()}
    ocfg = cfg.get("output", {})
    bar = tqdm(total=len(jobs) * steps, desc="inverting", unit="item-step",
               disable=not ocfg.get("progress", True), mininterval=1.0)
    rows: list[dict] = []
    images: dict[Job, Tensor] = {}
    for chunk in batches(jobs, batch_size, split):
        b = len(chunk)
        g = torch.Generator().manual_seed(seed)
        init = make_init(init_cfg, b, size, seed).to(device)
        param = factory(init=init, noise=init_cfg.get("kind", "noise") == "noise", generator=g).to(device)
        uses = torch.tensor([j.variant == "priors" for j in chunk])
        tfs, posts, _ = build_priors(no_penalty, g, pixel=is_pixel)
        clamp = [p for p in posts if isinstance(p, Clamp)]  # the [0, 1] range holds for every variant
        others = [OnlyItems(p, uses) for p in posts if not isinstance(p, Clamp)]
        if split and not uses.any():
            tfs = nn.Identity()  # the plain variant sees the image as it is
        match = feature_match_items([j.layer for j in chunk], refs)
        penalty = item_penalty(priors, chunk)
        objective = match - penalty if penalty is not None else match
        t0 = time.perf_counter()
        res = optimize(param, target, objective, steps=steps, optimizer=opt_factory, transforms=tfs,
                       post_steps=[*others, *clamp], scheduler=sched_factory, grad_norm=grad_norm,
                       track=match, callback=lambda _s: bar.update(b))
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        errs = feature_errors(target, res.images.to(device), [j.layer for j in chunk], refs)
        start_errs = feature_errors(target, init, [j.layer for j in chunk], refs)
        psnr, ssim = image_errors(res.images, photo)
        for i, job in enumerate(chunk):
            images[job] = res.images[i]
            rows.append({"layer": job.layer, "node": target.resolve(job.layer), "depth": depth(target, job.layer),
                         "variant": job.variant, "feature_error": errs[i], "start_feature_error": start_errs[i],
                         "psnr": psnr[i], "ssim": ssim[i],
                         "tv_weight": job.tv_weight if job.variant == "priors" else 0.0,
                         "steps": steps, "seconds": secs / b, "batch_size": b})
    bar.close()
    rows.sort(key=lambda r: (r["depth"], VARIANTS.index(r["variant"])))
    _save(out, photo, layers, variants, jobs, images, rows, target.name)
    return {"out_dir": str(out), "results": rows, "images": {f"{j.layer}/{j.variant}": im for j, im in images.items()}}


def _save(out: Path, photo: Tensor, layers: Sequence[str], variants: Sequence[str], jobs: Sequence[Job],
          images: Mapping[Job, Tensor], rows: Sequence[dict], model: str) -> None:
    by = {(r["layer"], r["variant"]): r for r in rows}
    tiles, labels = [], []
    for layer in layers:
        tiles.append(photo)
        labels.append(f"{layer}")
        for job in (j for j in jobs if j.layer == layer):
            r = by[(layer, job.variant)]
            save_png(images[job], out / safe_name(layer) / f"{job.variant}.png")
            tiles.append(images[job])
            labels.append(f"{job.variant} err {r['feature_error']:.2f} ssim {r['ssim']:.2f}")
    save_png(labelled_grid(tiles, labels, cols=1 + len(variants)).float() / 255, out / "inversion_grid.png")
    save_png(photo, out / "original.png")
    write_results(list(rows), out)
    md = [f"Feature inversion of the photo, {model}: normalized feature error "
          "||phi(x) - phi(x0)|| / ||phi(x0)||, PSNR (dB) and SSIM against the photo.", "",
          "| layer | " + " | ".join(f"{v}: feature error | {v}: PSNR | {v}: SSIM" for v in variants) + " |",
          "| --- | " + " | ".join("---: | ---: | ---:" for _ in variants) + " |"]
    for layer in layers:
        cells = []
        for v in variants:
            r = by[(layer, v)]
            cells.append(f"{r['feature_error']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f}")
        md.append(f"| {layer} | " + " | ".join(cells) + " |")
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    plot_errors(rows, layers, variants, out / "inversion_errors.png", model)


def plot_errors(rows: Sequence[dict], layers: Sequence[str], variants: Sequence[str], path: Path,
                model: str = "") -> None:
    """Feature error, PSNR and SSIM against depth (one line per variant) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["layer"], r["variant"]): r for r in rows}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    xs = list(range(len(layers)))
    for ax, key, title in zip(axes, ("feature_error", "psnr", "ssim"),
                              ("feature error ||phi(x)-phi(x0)|| / ||phi(x0)||", "PSNR (dB)", "SSIM")):
        for v, style in zip(variants, ("o-", "s--")):
            ax.plot(xs, [by[(la, v)][key] for la in layers], style, label=v, markersize=4)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Reconstruction from layer activations{f' ({model})' if model else ''}: deeper layer ->",
                 fontsize=10)

    def write(tmp: str) -> None:
        fig.savefig(tmp, dpi=90, format="png")

    atomic_write(path, write)
    plt.close(fig)
