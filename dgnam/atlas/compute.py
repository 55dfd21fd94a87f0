"""Computing what an atlas lacks: each method's images for the units whose records do not have them
with the same settings (batched over a layer's units, through :func:`dgnam.visualize`), written as
JPEGs beside a record per unit; a record is saved after every batch, so an interrupted run keeps
what it finished."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from dgnam.api import visualize
from dgnam.atlas import records as R
from dgnam.atlas.plan import MethodSpec, Plan, key_of
from dgnam.core.units import Unit
from dgnam.io import atomic_write, safe_name, to_pil

log = logging.getLogger(__name__)


def new_record(plan: Plan, unit: Unit) -> dict[str, Any]:
    """The record of a unit with nothing computed yet."""
    info = plan.layers[unit.layer]
    cats = plan.target.categories
    name = cats[unit.index] if info.logits and cats and unit.index < len(cats) else None
    return {"version": R.VERSION, "layer": unit.layer, "unit": unit.index, "label": unit.label, "kind": unit.kind,
            "name": name, "model": plan.model, "layer_info": info.as_dict(), "methods": {}, "examples": None}


def record_for(root: Path, plan: Plan, unit: Unit) -> dict[str, Any]:
    """The unit's record as found (with this run's layer facts and labels), or a new one; a record of
    another model is replaced."""
    rec = R.load(root, unit.layer, unit.index)
    fresh = new_record(plan, unit)
    if rec is None or rec.get("model", {}).get("fingerprint") != plan.fingerprint:
        return fresh
    rec.update({k: fresh[k] for k in ("label", "kind", "name", "model", "layer_info")})
    return rec


def save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    atomic_write(path, lambda tmp: img.save(tmp, format="JPEG", quality=quality))


def write_images(root: Path, unit: Unit, method: str, image: Tensor, card: int, quality: int) -> dict[str, str]:
    """A method's image of a unit as JPEGs: at its own size, and as a card thumbnail ``card`` px wide
    (the same file when it is no larger)."""
    base = f"img/{R.layer_dir(unit.layer)}/{unit.index}_{safe_name(method)}"
    pil = to_pil(image.detach().cpu())
    save_jpeg(pil, root / f"{base}.jpg", quality)
    if pil.width <= card:
        return {"image": f"{base}.jpg", "card": f"{base}.jpg"}
    save_jpeg(pil.resize((card, round(pil.height * card / pil.width)), Image.LANCZOS), root / f"{base}_card.jpg", quality)
    return {"image": f"{base}.jpg", "card": f"{base}_card.jpg"}


def missing(root: Path, plan: Plan, spec: MethodSpec, layer: str, key: str) -> list[Unit]:
    """The units of ``layer`` whose record lacks ``spec``'s image with this key (or its files)."""
    out = []
    for u in plan.units_of(layer):
        entry = (R.load(root, layer, u.index) or {}).get("methods", {}).get(spec.name)
        if not R.complete(root, entry, key, [entry.get("image", ""), entry.get("card", "")] if entry else []):
            out.append(u)
    return out


def run_methods(root: Path, plan: Plan, card: int, quality: int, precision: str = "auto") -> int:
    """Every method on every unit that lacks it; returns how many images were computed."""
    done = 0
    for spec in plan.methods:
        settings = spec.settings(plan.fingerprint, plan.seed)
        key = key_of(settings)
        for layer in plan.layers:
            if not plan.applies(spec, layer):
                continue
            todo = missing(root, plan, spec, layer, key)
            skipped = len(plan.units_of(layer)) - len(todo)
            if skipped:
                log.info("%s %s: %d units already computed with these settings", spec.name, layer, skipped)
            for start in range(0, len(todo), plan.batch_size):
                chunk = todo[start : start + plan.batch_size]
                t0 = time.perf_counter()
                vis = visualize(plan.target, layer, [u.index for u in chunk], method=spec.name, steps=spec.steps,
                                image_size=spec.image_size, batch_size=len(chunk), seed=plan.seed, unit=chunk[0].kind,
                                overrides=[f"precision={precision}", *spec.overrides], device=plan.device)
                secs = time.perf_counter() - t0
                log.info("%s %s units %s: %.1f s", spec.name, layer, ",".join(str(u.index) for u in chunk), secs)
                for u, img, row in zip(chunk, vis.images, vis.results):
                    rec = record_for(root, plan, u)
                    entry = {"key": key, "settings": settings, **write_images(root, u, spec.name, img, card, quality),
                             "activation": row.get("activation"), "seconds": secs / len(chunk)}
                    for k in ("probability", "top1"):
                        if k in row:
                            entry[k] = row[k]
                    rec["methods"][spec.name] = entry
                    R.save(root, rec)
                done += len(chunk)
    return done
