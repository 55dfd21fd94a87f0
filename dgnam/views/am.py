"""Activation maximization runs: from a config to images and numbers on disk.

This is the edge around :func:`dgnam.core.loop.optimize`: it checks every input before any work, builds
the pieces (target, parameterization, priors, optimizer), batches the units, and writes the
outputs. Pixel-space AM and DGN-AM differ only in the parameterization and its post-steps.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from dgnam.config import build, build_priors, build_target_from_cfg, make_init, octave_sizes, prepare, probe_param
from dgnam.core import objectives as O
from dgnam.core import poststeps as P
from dgnam.core import transforms as T
from dgnam.core.loop import EarlyStop, optimize
from dgnam.core.models import Target
from dgnam.core.units import Unit, objective_for, select_units, shard_units
from dgnam.errors import DgnamValueError
from dgnam.io import labelled_grid, safe_name, save_animation, save_png, write_results
from dgnam.views.facets import check_facets, facet_starts, load_starts
from dgnam.views.sampling import (
    check_chain,
    check_class_score,
    check_diversity,
    check_pool,
    check_ppgn,
    check_samples,
    code_prior_step,
    pool_features,
    select_pool,
    until_step,
)

log = logging.getLogger(__name__)


@dataclass
class AMRun:
    """What an activation maximization run computed, before anything is written: per layer the
    units, the images (N, 3, H, W) in [0, 1] and the frames of each batch; a row of numbers per unit."""

    plan: dict[str, list[Unit]]
    images: dict[str, Tensor]
    frames: dict[str, list[list[Tensor]]]
    rows: list[dict]
    samples: int = 1  # images per unit (samples=K): K consecutive images and rows per unit


def run_am(cfg: DictConfig, out_dir: str | Path, param_factory: Callable[..., nn.Module] | None = None,
           extra_post_steps: Sequence[P.PostStep] = (), target: Target | None = None) -> dict:
    """Run activation maximization as ``cfg`` says and write PNGs, grids, animations, results.

    Returns ``{"out_dir", "results": [row per unit], "images": {layer: (N, 3, H, W)}}``.
    ``param_factory`` overrides ``cfg.param`` (``(init, noise, generator) -> param``); ``target``
    overrides ``cfg.model``.
    """
    am = compute_am(cfg, param_factory, extra_post_steps, target)
    write_am(am, out_dir, cfg.get("output", {}))
    return {"out_dir": str(out_dir), "results": am.rows, "images": am.images}


def write_am(am: AMRun, out_dir: str | Path, ocfg: Mapping[str, Any]) -> None:
    """The files of a run: per layer a PNG per unit, the grid and the animations; results.json/.csv."""
    out = Path(out_dir)
    if not ocfg.get("grid_cols"):
        ocfg = {**ocfg, "grid_cols": am.samples if am.samples > 1 else 8}  # a unit's samples side by side, one unit per row
    for layer, units in am.plan.items():
        _save_layer(out, layer, units, am.images[layer], am.frames[layer], ocfg)
    write_results(am.rows, out)


def compute_am(cfg: DictConfig, param_factory: Callable[..., nn.Module] | None = None,
               extra_post_steps: Sequence[P.PostStep] = (), target: Target | None = None) -> AMRun:
    """Check every input, then optimize every unit of every layer of ``cfg`` (nothing written)."""
    pre = prepare(cfg)
    device, steps, batch_size, priors, init_cfg = pre.device, pre.steps, pre.batch_size, pre.priors, pre.init
    n_oct = int(OmegaConf.select(cfg, "octaves.n", default=1))
    sizes = octave_sizes(pre.size, n_oct, float(OmegaConf.select(cfg, "octaves.scale", default=1.2)))
    grad_norm = pre.grad_norm
    target = target.to(device) if target is not None else build_target_from_cfg(cfg, device)
    layers = cfg.layers if not isinstance(cfg.layers, str) else [cfg.layers]
    position = list(cfg.position) if cfg.get("position") is not None else None
    plan: dict[str, list[Unit]] = {}
    for layer in layers:  # check every layer and unit before running anything
        plan[str(layer)] = select_units(target, str(layer), OmegaConf.to_container(cfg.units, resolve=True)
                                        if OmegaConf.is_config(cfg.units) else cfg.units,
                                        cfg.get("unit", "auto"), position, sizes[-1])
        plan[str(layer)] = shard_units(plan[str(layer)], OmegaConf.select(cfg, "shard.index", default=0),
                                       OmegaConf.select(cfg, "shard.count", default=1))
    factory = param_factory or build(cfg.param)
    probe = probe_param(factory, init_cfg, sizes[0], pre.seed)
    is_pixel = probe.pixel_space
    keep_k, ppgn, class_score = check_samples(cfg), check_ppgn(cfg, probe), check_class_score(cfg, plan)
    pool = check_pool(cfg, keep_k, target)
    samples = pool[0] if pool is not None else keep_k  # samples run per unit (M of a pool, of which K are kept)
    chain = check_chain(cfg, samples, n_oct)
    diverse = check_diversity(cfg, samples, chain, target)
    passes = [list(range(samples))] if diverse is not None else [[k] for k in range(samples)]
    facets = check_facets(init_cfg, samples, target, diverse[1] if diverse else pool[2] if pool else None,
                          chain) if init_cfg.get("kind") == "facets" else None
    kept: dict[str, list[Unit]] = {}
    if n_oct > 1 and not is_pixel:
        raise DgnamValueError("octaves need param=pixel (the FFT parameterization has a fixed size)")
    opt_factory = build(cfg.optimizer)
    sched_factory = build(cfg.scheduler) if cfg.get("scheduler") else None
    seed = pre.seed
    ocfg = cfg.get("output", {})
    frame_every = int(ocfg.get("frame_every", 10)) if (ocfg.get("gif") or ocfg.get("mp4")) else 0
    per_unit = steps * len(sizes) * samples if chain is None else steps + chain * (samples - 1)
    total = sum(len(u) for u in plan.values()) * per_unit
    bar = tqdm(total=total, desc="optimizing", unit="unit-step", disable=not ocfg.get("progress", True),
               mininterval=1.0)
    resize = T.Resize(int(cfg.input_resize)) if cfg.get("input_resize") else None
    patience = int(OmegaConf.select(cfg, "early_stop.patience", default=0) or 0)
    min_delta = float(OmegaConf.select(cfg, "early_stop.min_delta", default=0.0) or 0.0)
    rows: list[dict] = []
    images_by_layer: dict[str, Tensor] = {}
    frames_by_layer: dict[str, list[list[Tensor]]] = {}
    for layer, units in plan.items():
        imgs, frames_by_batch, kept[layer] = [], [], []
        finfo = facet_starts(target, units, samples, sizes[0], facets, device, resize,
                             ocfg.get("progress", True)) if facets else None
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            b = len(chunk)
            runs, fstarts = [], load_starts(facets, finfo[start:start + b], sizes[0]) if facets else None
            for ks in passes:  # sample k: its own start and noise (seed + k); sample 0 is the plain run
                k0, nk = ks[0], len(ks)  # with diversity all K samples in one pass, unit-major
                kseed = seed + k0
                run_units = [u for u in chunk for _ in ks]
                nb = len(run_units)
                g = torch.Generator().manual_seed(kseed)  # same draws for every batch: batching-invariant
                ksteps = chain if chain is not None and k0 > 0 else steps
                if chain is None or k0 == 0:  # a chain's sample k > 0 goes on from sample k-1's param
                    inits = [fstarts[:, k] if facets else make_init(init_cfg, b, sizes[0], seed + k) for k in ks]
                    param = _start(factory, inits, [seed + k for k in ks], init_cfg.get("kind", "noise") == "noise",
                                   g).to(device)
                tfs, posts, penalty = build_priors(priors, g, pixel=is_pixel)
                posts += param.post_steps()
                posts += code_prior_step(ppgn, kseed, device)
                own = param.penalty()
                penalty = own if penalty is None else (penalty + own if own is not None else penalty)
                if diverse is not None:
                    div, count = until_step(diverse[0] * O.diversity(diverse[1], nk),
                                            round(diverse[2] * ksteps * len(sizes)))
                    posts.append(count)
                    penalty = div if penalty is None else penalty + div
                if resize is not None:
                    tfs.append(resize)
                unit_obj = objective_for(run_units, class_score)
                objective = unit_obj - penalty if penalty is not None else unit_obj
                t0 = time.perf_counter()
                names = [f"{layer} {_sample_unit(u, ks[j % nk], samples).label}" for j, u in enumerate(run_units)]
                res = optimize(param, target, objective, steps=ksteps, optimizer=opt_factory,
                               transforms=tfs, post_steps=[*posts, *extra_post_steps], scheduler=sched_factory,
                               grad_norm=grad_norm, octave_sizes=[(s, s) for s in sizes] if n_oct > 1 else None,
                               track=unit_obj, frame_every=frame_every, callback=lambda _s: bar.update(nb),
                               early_stop=EarlyStop(patience, min_delta) if patience else None, names=names)
                ran = int(res.history.shape[0])
                bar.update(nb * (ksteps * len(sizes) - ran))  # the steps an early stop skipped
                if device.type == "cuda":
                    torch.cuda.synchronize()
                secs = time.perf_counter() - t0
                seen = res.images.to(device)  # score what the target saw (e.g. G's output resized)
                final = evaluate(target, resize(seen) if resize is not None else seen, run_units,
                                 pool[2] if pool is not None else None)
                krows = []
                for i, u in enumerate(run_units):
                    k = ks[i % nk]
                    su = _sample_unit(u, k, samples)
                    row = {"method": cfg.get("method_name", "pixel"), "seed": seed, "layer": layer,
                           "unit": u.index, "label": su.label, "kind": u.kind,
                           "image": str(_png_path(layer, su).as_posix()) if ocfg.get("png", True) else None,
                           "activation": final["activation"][i]}
                    if samples > 1:
                        row.update({"sample": k, "sample_seed": seed + k})
                    if finfo:
                        row.update(finfo[start + i // nk][k])
                    if "probability" in final:
                        row["probability"] = final["probability"][i]
                        row["top1"] = final["top1"][i]
                    row.update({"start_activation": float(res.history[0, i]), "steps": ran,
                                "seconds": secs / nb, "batch_seconds": secs, "batch_size": nb})
                    if u.kind == "neuron":
                        row.update({"x": u.x, "y": u.y})
                    krows.append(row)
                runs.append((krows, target.seen(res.images), [target.seen(f) for f in res.frames], final.get("features")))
            if len(runs) == 1:  # one pass (one sample, or all K side by side): already unit-major
                crows, cimgs, cframes, cfeats = runs[0]
            else:  # unit-major: unit 0's K samples, then unit 1's, ...
                crows = [runs[k][0][i] for i in range(b) for k in range(samples)]
                cimgs = _interleave([r[1] for r in runs])
                n_frames = min(len(r[2]) for r in runs)
                cframes = [_interleave([r[2][t] for r in runs]) for t in range(n_frames)]
                cfeats = _interleave([r[3] for r in runs]) if pool else None
            if pool is not None:  # keep K of each unit's M samples, chosen by the target
                pick = [i * samples + j for i in range(b) for j in select_pool(
                    torch.tensor([r["activation"] for r in crows[i * samples:(i + 1) * samples]]),
                    cfeats[i * samples:(i + 1) * samples], keep_k, pool[1])]
                crows = [{**crows[j], "pool_size": samples, "seconds": crows[j]["seconds"] * samples / keep_k}
                         for j in pick]
                cimgs, cframes = cimgs[pick], [f[pick] for f in cframes]
            per_unit_rows = len(crows) // b  # K kept (or all M) samples of each unit, unit-major
            kept[layer] += [_sample_unit(chunk[i // per_unit_rows], int(r.get("sample", 0)), samples)
                            for i, r in enumerate(crows)]
            rows += crows
            imgs.append(cimgs)
            frames_by_batch.append(cframes)
        images_by_layer[layer] = torch.cat(imgs)
        frames_by_layer[layer] = frames_by_batch
    bar.close()
    return AMRun(kept, images_by_layer, frames_by_layer, rows, keep_k)


def _sample_unit(unit: Unit, k: int, samples: int) -> Unit:
    """The unit as sample k names it (label ``<label>_s<k>``; unchanged for a single sample)."""
    return unit if samples == 1 else dataclasses.replace(unit, label=f"{unit.label}_s{k}")


def _start(factory: Callable[..., nn.Module], inits: Sequence[Tensor], seeds: Sequence[int], noise: bool,
           g: torch.Generator) -> nn.Module:
    """The parameterization of one pass. Several samples side by side (``diversity``) each start as
    they would alone: from their own start image, and from their own noise draw (seed + k)."""
    param = factory(init=_interleave(inits), noise=noise, generator=g)
    if len(inits) == 1 or not noise:
        return param
    alone = [dict(factory(init=i, noise=True, generator=torch.Generator().manual_seed(s)).named_parameters())
             for i, s in zip(inits, seeds)]
    with torch.no_grad():
        for name, p in param.named_parameters():
            if p.requires_grad:
                p.copy_(_interleave([a[name] for a in alone]))
    return param


def _interleave(per_sample: Sequence[Tensor]) -> Tensor:
    """K tensors (B, ...) -> (B * K, ...) ordered item 0's K, item 1's K, ..."""
    return torch.stack(list(per_sample), 1).flatten(0, 1)




@torch.no_grad()
def evaluate(target: Target, images: Tensor, units: Sequence[Unit], feature_layer: str | None = None) -> dict[str, Any]:
    """Clean (untransformed) activation of each item's unit, and for class units the softmax
    probability and the top-1 class; with ``feature_layer``, in the same pass, ``features``: that
    layer's (N, C) features for :func:`dgnam.views.sampling.select_pool`."""
    obj = objective_for(units)
    layers = set(obj.layers)
    is_class = units[0].kind == "class"
    if is_class:
        layers.add("logits")
    if feature_layer is not None:
        layers.add(feature_layer)
    acts = target(images, layers)
    out: dict[str, Any] = {"activation": [float(v) for v in obj(acts)]}
    if feature_layer is not None:
        out["features"] = pool_features(acts[feature_layer])
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
