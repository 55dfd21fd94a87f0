"""The receptive_field mode: single-neuron activation maximization that may change only the field
(objective, keep-outside post-step, drawing helpers) and :func:`run_receptive_field`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dgnam.checks import positive_int
from dgnam.config import (
    build,
    build_priors,
    build_target_from_cfg,
    make_init,
    prepare,
    probe_param,
)
from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.poststeps import raw
from dgnam.core.units import select_units
from dgnam.errors import DgnamValueError
from dgnam.io import (
    atomic_write,
    labelled_grid,
    safe_name,
    save_png,
    source_image,
    write_results,
)
from dgnam.views.common import layer_list, outline, spatial_layers, zoom_crop
from dgnam.views.receptive.fields import layer_fields
from dgnam.views.receptive.probe import gradient_boxes

# ---------------------------------------------------------------------------------------------------
# Single-neuron activation maximization inside the field.


def neurons(layer: str, channels: Sequence[int], xs: Sequence[int], ys: Sequence[int]) -> O.Objective:
    """Item b: the value of channel ``channels[b]`` at column ``xs[b]``, row ``ys[b]`` of ``layer``."""
    ch, cx, cy = (torch.as_tensor(v, dtype=torch.long) for v in (channels, xs, ys))

    def fn(acts: O.Acts) -> Tensor:
        act = acts[layer]  # (B, C, H, W)
        dev = act.device
        return act[torch.arange(act.shape[0], device=dev), ch.to(dev), cy.to(dev), cx.to(dev)]

    return O.Objective(fn, {layer}, f"neurons({layer}, {len(ch)} units)")


def box_mask(boxes: Sequence[tuple[int, int, int, int]], height: int, width: int) -> Tensor:
    """(B, 1, H, W) bool: True inside item b's box ``(x0, y0, x1, y1)``."""
    mask = torch.zeros(len(boxes), 1, height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, :, y0:y1, x0:x1] = True
    return mask


class KeepOutside:
    """Post-step: pixels outside ``mask`` are put back to their value when this was built, so only the
    field can change (run it last, after clamps and blurs). Needs an image-shaped parameter (pixels)."""

    def __init__(self, param: nn.Module, mask: Tensor) -> None:
        x = raw(param)
        if x.dim() != 4 or x.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"KeepOutside needs pixel parameters shaped like the mask, got {tuple(x.shape)}")
        self.start = x.detach().clone()
        self.mask = mask.to(x.device)

    @torch.no_grad()
    def __call__(self, param: nn.Module, step: int) -> None:
        x = raw(param)
        x.copy_(torch.where(self.mask, x, self.start))


# ---------------------------------------------------------------------------------------------------
# The receptive_field mode: fields of a few units per layer, checked, and their AM images.


def run_receptive_field(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``mode=receptive_field``: for each layer, the computed field (size, stride, offset) checked by
    gradient, and single-neuron AM images of a few units that change only the field.

    Writes ``rf_<layer>.png`` (per unit: the full image with the field outlined, and the field
    cropped and zoomed), ``rf_summary.png``, ``<layer>/<unit>_{full,crop}.png``, ``results.json/.csv``
    (a row per unit) and ``fields.md`` (a table per layer)."""
    out = Path(out_dir)
    pre = prepare(cfg)
    device, steps, size, batch_size, priors = pre.device, pre.steps, pre.size, pre.batch_size, pre.priors
    zoom = positive_int(cfg, "rf.zoom_size", default=size)
    check = bool(OmegaConf.select(cfg, "rf.check", default=True))
    init_cfg, grad_norm = pre.init, pre.grad_norm
    start_photo = source_image(init_cfg.get("path"), size) if init_cfg.get("kind") == "image" else None
    factory = build(cfg.param)
    if not probe_param(factory, init_cfg, size, pre.seed).pixel_space:
        raise DgnamValueError("mode=receptive_field changes pixels inside the field only; it needs param=pixel")
    target = build_target_from_cfg(cfg, device)
    spec = cfg.get("layers")
    layers = layer_list(target, spec)
    shapes: dict[str, tuple[int, ...]] = {}
    fields = layer_fields(target, layers, size, shapes)
    if isinstance(spec, str) and spec == "all":  # "all" means every spatial layer here
        layers = [la for la in layers if len(shapes.get(la, ())) == 3]
    spatial_layers(target, layers, size, "receptive fields")
    position = list(cfg.position) if cfg.get("position") is not None else None
    units_spec = OmegaConf.to_container(cfg.units, resolve=True) if OmegaConf.is_config(cfg.units) else cfg.units
    plan = {}
    for layer in layers:  # every unit and position is checked before any work
        units = select_units(target, layer, units_spec, "neuron", position, size)
        _, h, w = shapes[layer]
        plan[layer] = [(u, w // 2 if u.x is None else u.x, h // 2 if u.y is None else u.y) for u in units]
    measured = gradient_boxes(target, {la: [(x, y) for _, x, y in plan[la][:1]] for la in layers}, size) \
        if check else {}
    opt_factory = build(cfg.optimizer)
    seed = pre.seed
    rows, summary_tiles, summary_labels = [], [], []
    md = ["| layer | node | units (C x H x W) | field size | stride | offset | unit (x, y) | computed box | "
          "measured box | agree |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for layer in layers:
        f = fields[layer]
        entries = plan[layer]
        x, y = entries[0][1], entries[0][2]
        box = f.box(x, y, size, size)
        meas = measured.get(layer, [None])[0] if check else None
        agree = None if meas is None else meas == box
        md.append(f"| {layer} | {target.resolve(layer)} | {' x '.join(map(str, shapes[layer]))} | "
                  f"{_fmt_pair(f.size)} | {_fmt_pair(f.stride)} | {_fmt_pair(f.start)} | ({x}, {y}) | {box} | "
                  f"{meas if check else '-'} | {'-' if agree is None else ('yes' if agree else 'NO')} |")
        tiles, labels = [], []
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            b = len(chunk)
            g = torch.Generator().manual_seed(seed)
            init = (start_photo[None].expand(b, -1, -1, -1).contiguous() if start_photo is not None
                    else make_init(init_cfg, b, size, seed)).to(device)
            param = factory(init=init, noise=init_cfg.get("kind", "noise") == "noise", generator=g).to(device)
            mask = box_mask([box] * b, size, size).to(device)
            keep = KeepOutside(param, mask)
            tfs, posts, penalty = build_priors(priors, g, pixel=True)
            unit_obj = neurons(layer, [u.index for u, _, _ in chunk], [cx for _, cx, _ in chunk],
                               [cy for _, _, cy in chunk])
            objective = unit_obj - penalty if penalty is not None else unit_obj
            t0 = time.perf_counter()
            res = optimize(param, target, objective, steps=steps, optimizer=opt_factory, transforms=tfs,
                           post_steps=[*posts, keep], grad_norm=grad_norm, track=unit_obj)
            secs = time.perf_counter() - t0
            with torch.no_grad():
                before = unit_obj(target(init, [layer])).cpu()
                after = unit_obj(target(res.images.to(device), [layer])).cpu()
            diff = (res.images - init.cpu()).abs().amax(1, keepdim=True)  # (B, 1, H, W)
            outside = float(diff.masked_fill(mask.cpu(), 0).max())
            for i, (u, ux, uy) in enumerate(chunk):
                img = res.images[i]
                full = outline(img, box)
                crop = zoom_crop(img, box, zoom)
                ldir = out / safe_name(layer)
                save_png(full.float() / 255, ldir / f"{u.index}_full.png")
                save_png(crop, ldir / f"{u.index}_crop.png")
                tiles += [full, crop]
                labels += [f"{layer} #{u.index} ({ux},{uy})", f"field {box[2] - box[0]}x{box[3] - box[1]}"]
                rows.append({
                    "layer": layer, "node": target.resolve(layer), "unit": u.index, "x": ux, "y": uy,
                    "field_size": list(f.size) if f.size else None,
                    "field_stride": list(f.stride) if f.stride else None,
                    "field_start": list(f.start) if f.start else None,
                    "box": list(box), "measured_box": list(meas) if meas else None, "agree": agree,
                    "start_activation": float(before[i]), "activation": float(after[i]),
                    "max_change_outside": outside, "steps": steps, "seconds": secs / b,
                })
        cols = 2 * min(len(entries), int(OmegaConf.select(cfg, "output.grid_cols", default=8) or 8) // 2 or 1)
        save_png(labelled_grid(tiles, labels, cols=cols, tile=max(size, zoom)).float() / 255,
                 out / f"rf_{safe_name(layer)}.png")
        summary_tiles += tiles
        summary_labels += labels
    width = 2 * max(len(v) for v in plan.values())
    save_png(labelled_grid(_pad_rows(summary_tiles, plan, width), _pad_rows(summary_labels, plan, width),
                           cols=width, tile=max(size, zoom)).float() / 255, out / "rf_summary.png")
    write_results(rows, out)
    atomic_write(out / "fields.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    return {"out_dir": str(out), "results": rows, "fields": fields}


def _fmt_pair(v: tuple[int, int] | None) -> str:
    if v is None:
        return "whole image"
    return str(v[0]) if v[0] == v[1] else f"{v[0]} x {v[1]}"


def _pad_rows(items: list, plan: dict, width: int) -> list:
    """Lay out one layer per grid row: pad each layer's tiles (or labels) to ``width`` entries."""
    out, i = [], 0
    blank = torch.full((3, 8, 8), 255, dtype=torch.uint8) if items and isinstance(items[0], Tensor) else ""
    for entries in plan.values():
        n = 2 * len(entries)
        out += items[i : i + n] + [blank] * (width - n)
        i += n
    return out
