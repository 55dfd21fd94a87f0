"""Activation maps: what every filter of a layer computes on a real photo.

One forward pass of the photo gives the (C, h, w) activations of each chosen layer; each filter's
map is drawn with a colour map (scaled per map, or on one scale for the whole layer) as a labelled
grid, with the photo beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dgnam.checks import one_of, positive_int
from dgnam.config import build_target_from_cfg
from dgnam.core.models import Target, pick_device
from dgnam.core.units import select_units
from dgnam.errors import DgnamValueError
from dgnam.io import labelled_grid, safe_name, save_png, save_torch, source_image, write_results
from dgnam.views.common import layer_list, spatial_layers, text_strip

log = logging.getLogger(__name__)

SCALES = ("per_map", "layer")


@torch.no_grad()
def activation_maps(target: Target, image: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Activations of ``layers`` for one image (3, H, W) in [0, 1] -> {layer: (C, h, w)} on the CPU."""
    acts = target(image[None].to(target.mean.device), layers)
    return {layer: acts[layer][0].float().cpu() for layer in layers}


def colorize(maps: Tensor, scale: str = "per_map", cmap: str = "viridis", tile: int = 56) -> Tensor:
    """Maps (N, h, w) -> colour images (N, 3, tile, tile) in [0, 1] (nearest-neighbour upscaling, so
    each activation stays one visible block; area averaging when the maps are larger than ``tile``).

    ``scale``: ``per_map`` stretches each map to the full colour range (the pattern of every filter;
    a constant map is drawn at the bottom colour), ``layer`` uses one range for the whole layer (which
    filters respond most)."""
    import matplotlib

    flat = maps.flatten(1)
    if scale == "per_map":
        lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    else:
        lo, hi = flat.min(), flat.max()
    norm = ((maps - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    rgb = torch.from_numpy(matplotlib.colormaps[cmap](norm.numpy())[..., :3]).float()  # (N, h, w, 3)
    rgb = rgb.permute(0, 3, 1, 2)
    mode = "area" if max(maps.shape[-2:]) > tile else "nearest"
    return F.interpolate(rgb, size=(tile, tile), mode=mode)


def beside(left: Tensor, right: Tensor, gap: int = 8) -> Tensor:
    """Two uint8 images (3, H, W) side by side on white, tops aligned."""
    h = max(left.shape[1], right.shape[1])
    canvas = torch.full((3, h, left.shape[2] + gap + right.shape[2]), 255, dtype=torch.uint8)
    canvas[:, : left.shape[1], : left.shape[2]] = left
    canvas[:, : right.shape[1], left.shape[2] + gap :] = right
    return canvas


def run_activation_maps(cfg: DictConfig, out_dir: str | Path, target: Target | None = None) -> dict:
    """``mode=activation_maps``: the maps of the chosen filters (default all) of each layer for a photo.

    Writes ``actmaps_<layer>.png`` (the photo beside a labelled grid of maps), ``input.png``,
    ``maps_<layer>.pt`` (the raw (C, h, w) activations) and ``results.json/.csv`` (a row per filter:
    mean, max, fraction of positive values)."""
    out = Path(out_dir)
    device = pick_device(cfg.get("device", "auto"))
    size = positive_int(cfg, "image_size")
    tile = positive_int(cfg, "maps.tile", default=56)
    cols = positive_int(cfg, "maps.cols", default=16)
    scale = one_of(OmegaConf.select(cfg, "maps.scale", default="per_map"), "maps.scale", SCALES)
    cmap = str(OmegaConf.select(cfg, "maps.cmap", default="viridis"))
    import matplotlib

    if cmap not in matplotlib.colormaps:
        raise DgnamValueError(f"unknown maps.cmap {cmap!r}; valid: matplotlib colour maps such as viridis, "
                         f"magma, inferno, gray, RdBu_r")
    image = source_image(cfg.get("image"), size)
    target = target.to(device) if target is not None else build_target_from_cfg(cfg, device)
    layers = layer_list(target, cfg.get("layers"))
    spec = cfg.get("units", "all")
    spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    if isinstance(cfg.get("layers"), str) and cfg.layers == "all":
        layers = [la for la in layers if len(target.layer_shape(la, size)) == 3]
    spatial_layers(target, layers, size, "activation maps")
    chosen = {la: select_units(target, la, spec, "channel", None, size) for la in layers}
    maps = activation_maps(target, image, layers)
    photo = labelled_grid(image[None], [f"{target.name} input {size}x{size}"], cols=1)
    save_png(image, out / "input.png")
    rows: list[dict[str, Any]] = []
    for layer in layers:
        units = chosen[layer]
        idx = [u.index for u in units]
        m = maps[layer][idx]  # (N, h, w)
        tiles = colorize(m, scale, cmap, tile)
        labels = [str(i) for i in idx]
        grid = labelled_grid(tiles, labels, cols=min(cols, len(idx)))
        title = text_strip(f"{target.name} {layer}: {len(idx)} of {maps[layer].shape[0]} maps, "
                           f"{m.shape[1]}x{m.shape[2]} each, colour scale {scale}", grid.shape[-1])
        fig = beside(photo, torch.cat([title, grid], dim=1))
        save_png(fig.float() / 255, out / f"actmaps_{safe_name(layer)}.png")
        save_torch({"layer": layer, "filters": idx, "maps": m.clone()}, out / f"maps_{safe_name(layer)}.pt")
        flat = m.flatten(1)
        for i, f in zip(idx, flat):
            rows.append({"layer": layer, "filter": i, "height": m.shape[1], "width": m.shape[2],
                         "mean": float(f.mean()), "max": float(f.max()), "min": float(f.min()),
                         "positive_fraction": float((f > 0).float().mean())})
    write_results(rows, out)
    return {"out_dir": str(out), "results": rows, "maps": maps}
