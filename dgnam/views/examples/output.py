"""What a finished dataset-examples pass writes: a PNG strip and a JPEG per example of each unit,
``examples.parquet`` (a row per unit and rank) and, last, ``examples.json`` (docs/examples.md has
its schema), so a folder without ``examples.json`` never reads as a finished result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from dgnam.core.images import resize
from dgnam.core.models import Target
from dgnam.errors import first_line
from dgnam.io import atomic_write, labelled_grid, safe_name, save_png, to_pil, write_json
from dgnam.views.common import outline, text_strip, zoom_crop
from dgnam.views.examples.engine import LayerPlan, PassState
from dgnam.views.examples.source import ExampleSource
from dgnam.views.examples.topk import EMPTY
from dgnam.views.receptive.fields import Field, layer_fields

log = logging.getLogger(__name__)

CHUNK = 256  # units whose example images are held in memory at once


def fields_of(target: Target, plans: Sequence[LayerPlan], size: int) -> dict[str, Field | None]:
    """The receptive field of each conv layer (None for flat layers, and where it cannot be computed)."""
    conv = [p.layer for p in plans if p.kind == "conv"]
    out: dict[str, Field | None] = {p.layer: None for p in plans}
    if not conv:
        return out
    try:
        out.update(layer_fields(target, conv, size))
    except Exception as e:  # a model torch.fx cannot trace: crops are whole images
        log.warning("the receptive fields of %s cannot be computed (%s); crops show whole images",
                    target.name, first_line(e))
    return out


def box_of(field: Field | None, y: int, x: int, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), x1 and y1 exclusive: the field of the unit at (y, x) clipped to the image."""
    return (0, 0, size, size) if field is None else field.box(x, y, size, size)


def load_images(source: ExampleSource, indices: Sequence[int]) -> dict[int, tuple[Tensor, int]]:
    """index -> (uint8 image (3, S, S), label), read in index order (sequential in Parquet shards)."""
    out = {}
    for i in sorted(set(indices)):
        img, label = source.item(i)
        if img is not None:
            out[i] = ((img * 255).round().to(torch.uint8), label)
    return out


def class_name(names: list[str] | None, label: int) -> str:
    if label is None or label < 0:
        return ""
    return names[label] if names and label < len(names) else str(label)


def draw_strip(images: list[Tensor], boxes: list[tuple[int, int, int, int]] | None, captions: list[str],
               under: list[str], title: str, tile: int) -> Tensor:
    """The examples side by side: for a conv unit the field zoomed (first row) over the whole image with
    the field outlined (second row); for a flat unit the whole images. -> uint8 (3, H, W)."""
    floats = [im.float() / 255 for im in images]
    full = [resize(im[None], tile)[0] for im in floats]
    if boxes is None:
        grid = labelled_grid(full, captions, cols=len(full), tile=tile)
    else:
        s = tile / images[0].shape[-1]
        drawn = [outline(f, tuple(round(v * s) for v in b)) for f, b in zip(full, boxes)]
        crops = [zoom_crop(im, b, tile) for im, b in zip(floats, boxes)]
        grid = labelled_grid([*crops, *drawn], [*captions, *under], cols=len(crops), tile=tile)
    return torch.cat([text_strip(title, grid.shape[-1]), grid], 1)


def save_crop(image: Tensor, box: tuple[int, int, int, int], side: int, path: Path) -> None:
    """The box of a uint8 image as a JPEG whose longer side is ``side``."""
    x0, y0, x1, y1 = box
    pil = to_pil(image[:, y0:y1, x0:x1])
    w, h = pil.size
    s = side / max(w, h)
    pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    atomic_write(path, lambda tmp: pil.save(tmp, format="JPEG", quality=90))


def unit_rows(state: PassState, plan: LayerPlan, field: Field | None, size: int) -> list[dict[str, Any]]:
    """Per unit: its examples (values, indices, positions (y, x), boxes [top, left, bottom, right]) and its
    histogram, as the lists of ``examples.json``."""
    topk, hist = state.layers[plan.layer]
    edges, counts = hist.export()
    rows = []
    for r, unit in enumerate(plan.units):
        keep = topk.indices[r] != EMPTY
        pos = topk.positions[r][keep].tolist() if topk.positions is not None else None
        boxes = [box_of(field, y, x, size) for y, x in pos] if pos is not None else None
        rows.append({"unit": unit, "name": plan.labels[r], "values": topk.values[r][keep].tolist(),
                     "indices": topk.indices[r][keep].tolist(), "positions": pos,
                     "boxes": [[y0, x0, y1, x1] for x0, y0, x1, y1 in boxes] if boxes is not None else None,
                     "hist": {"edges": edges[r].tolist(), "counts": counts[r].tolist(),
                              "of": "the maximum over positions, per image" if plan.kind == "conv" else
                              "the value per image"}})
    return rows


def tied_units(state: PassState, plan: LayerPlan) -> list[int]:
    """The units whose k examples all have one value (a clipped activation, ReLU6's 6, reached by more
    than k photos): their examples are merely the first photos that reach it."""
    topk = state.layers[plan.layer][0]
    if topk.k < 2:
        return []
    tied = (topk.values[:, 0] == topk.values[:, -1]) & (topk.indices[:, -1] != EMPTY)
    units = [u for u, t in zip(plan.units, tied.tolist()) if t]
    if units:
        log.warning("%s: %d of %d units have %d examples of one value (%g for unit %d: a clipped activation such as "
                    "ReLU6?); they are the first photos that reach it: the layer before the clipping ranks them",
                    plan.layer, len(units), len(plan.units), topk.k, float(topk.values[plan.units.index(units[0]), 0]),
                    units[0])
    return units


def write_unit_files(rows: list[dict[str, Any]], plan: LayerPlan, source: ExampleSource, out: Path, *,
                     model: str, seen: int, tile: int, crop_size: int, strips: bool) -> None:
    """Labels, strips and crops of one layer's units (adds ``labels``, ``strip``, ``crops`` to each row)."""
    folder = safe_name(plan.layer)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        images = load_images(source, [i for row in chunk for i in row["indices"]])
        for row in chunk:
            got = [images.get(i) for i in row["indices"]]
            labels = [g[1] if g is not None else -1 for g in got]
            row["labels"] = [lb if lb >= 0 else None for lb in labels]
            size = got[0][0].shape[-1] if got and got[0] is not None else 0
            boxes = [(b[1], b[0], b[3], b[2]) for b in row["boxes"]] if row["boxes"] is not None else None
            whole = [(0, 0, size, size)] * len(got)
            row["strip"], row["crops"] = None, []
            if not strips or not got or any(g is None for g in got):
                continue
            u = row["unit"]
            for rank, (g, b) in enumerate(zip(got, boxes or whole)):
                save_crop(g[0], b, crop_size, out / folder / f"{u}_{rank}.jpg")
                row["crops"].append(f"{folder}/{u}_{rank}.jpg")
            caps = [f"{v:.3g} {class_name(source.label_names, lb)}".strip() for v, lb in zip(row["values"], labels)]
            under = [f"#{i} ({y},{x})" for i, (y, x) in zip(row["indices"], row["positions"] or [])]
            title = f"{model} {plan.layer} unit {row['name']}: top {len(got)} of {seen} images"
            strip = draw_strip([g[0] for g in got], boxes, caps, under, title, tile)
            save_png(strip.float() / 255, out / folder / f"{u}.png")
            row["strip"] = f"{folder}/{u}.png"


def write_parquet(path: Path, layers: dict[str, dict[str, Any]]) -> None:
    """``examples.parquet``: a row per layer, unit and rank (rank 0 the highest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {c: [] for c in ("layer", "unit", "rank", "value", "index", "label", "y", "x",
                                                  "top", "left", "bottom", "right")}
    for layer, node in layers.items():
        for unit, row in node["units"].items():
            for rank, (v, i) in enumerate(zip(row["values"], row["indices"])):
                pos = row["positions"][rank] if row["positions"] is not None else [None, None]
                box = row["boxes"][rank] if row["boxes"] is not None else [None] * 4
                vals = [layer, int(unit), rank, v, i, row["labels"][rank], *pos, *box]
                for c, x in zip(cols, vals):
                    cols[c].append(x)
    types = {"layer": pa.string(), "value": pa.float32()}
    table = pa.table({c: pa.array(v, type=types.get(c, pa.int64())) for c, v in cols.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_outputs(out: Path, target: Target, source: ExampleSource, plans: Sequence[LayerPlan], state: PassState,
                  *, k: int, size: int, tile: int, crop_size: int, strips: bool = True,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Strips, crops, ``examples.parquet`` and then ``examples.json``; returns the JSON's contents."""
    fields = fields_of(target, plans, size)
    layers: dict[str, dict[str, Any]] = {}
    for plan in plans:
        f = fields[plan.layer]
        rows = unit_rows(state, plan, f, size)
        write_unit_files(rows, plan, source, out, model=target.name, seen=state.seen, tile=tile,
                         crop_size=crop_size, strips=strips)
        keep_field = f is not None and plan.kind == "conv" and f.size is not None
        layers[plan.layer] = {
            "shape": list(plan.shape), "kind": plan.kind, "node": target.resolve(plan.layer),
            "tied_units": tied_units(state, plan),
            "field": {"size": list(f.size), "stride": list(f.stride), "start": list(f.start)} if keep_field else None,
            "units": {str(row.pop("unit")): row for row in rows}}
    rate = state.streamed / state.seconds if state.streamed and state.seconds > 0 else None
    doc = {"version": 1,
           "model": {"name": target.name, "input_size": target.input_size,
                     "mean": target.mean.flatten().tolist(), "std": target.std.flatten().tolist()},
           "dataset": {"source": source.description, "count": len(source), "seen": state.seen,
                       "skipped": state.skipped, "skipped_first": state.skipped_first,
                       "label_names": source.label_names},
           "k": k, "image_size": size, "layers": layers, **(extra or {}),
           "pass": {"images": state.streamed, "seconds": state.seconds, "images_per_second": rate}}
    write_parquet(out / "examples.parquet", layers)
    write_json(out / "examples.json", doc)
    return doc
