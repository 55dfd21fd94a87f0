"""Multifaceted starts (Nguyen, Yosinski & Clune, "Multifaceted Feature Visualization", 2016).

``init.kind=facets``: each of a unit's ``samples=K`` starts from another of the photos that excite
the unit most, chosen to differ from each other, so that the K images show the unit's facets (the
different things it responds to) instead of K variations of one picture. The target alone chooses:

1. every photo of ``init.path`` (the shared ImageNet-50 training split by default; ``init.limit``:
   the first N only) goes once through the target; the activations of the units' layer (every
   channel or logit; for neurons and tokens, the units') and the pooled features of ``init.layer``
   are kept (cached under ``init.cache`` by a hash of everything they depend on);
2. the candidates are those of the unit's ``init.top`` most activating photos whose activation is at
   least ``init.keep`` x the best photo's (the ``samples`` strongest when fewer pass);
3. sample 0 starts from the most activating one, then each next sample from the candidate farthest
   from the nearest chosen one (cosine distance of the features: :func:`select_pool`).

The judge of a report never takes part. Sample k keeps its own noise (seed + k); the starts do not
depend on the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dgnam.core.units import Unit, objective_for
from dgnam.errors import DgnamError, DgnamValueError
from dgnam.safeload import load_file
from dgnam.views.sampling import pool_features, select_pool

log = logging.getLogger(__name__)
DEFAULT_TOP = 50
_BATCH = 64


def check_facets(init: Mapping[str, Any], samples: int, target: Any, fallback_layer: str | None,
                 chain: int | None = None) -> dict[str, Any]:
    """The checked ``init`` of ``kind=facets``: ``top`` (>= samples), ``keep``, ``limit``, ``layer`` (a layer of the
    target; default ``fallback_layer``, the diversity or pool layer), ``path``, ``cache``."""
    if chain is not None:
        raise DgnamValueError(f"init.kind=facets starts every sample from its own photo: it cannot take "
                              f"chain_steps={chain} (one chain); drop one of them")
    top = DEFAULT_TOP if init.get("top") is None else init["top"]
    if isinstance(top, bool) or not isinstance(top, int) or top < max(samples, 1):
        raise DgnamValueError(f"init.top={top!r} must be an integer >= samples={samples} (the candidates per unit)")
    limit = init.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < top):
        raise DgnamValueError(f"init.limit={limit!r} must be null or an integer >= init.top={top} (photos scanned)")
    layer = init.get("layer") or fallback_layer
    if not layer:
        raise DgnamValueError("init.kind=facets needs init.layer=<a layer of the target> (where two starts "
                              "count as different), or diversity.layer / pool.layer")
    target.resolve(str(layer))  # an unknown layer names the valid ones
    keep = 0.7 if init.get("keep") is None else float(init["keep"])  # in [0, 1]: dgnam.ranges
    return {"top": top, "keep": keep, "limit": limit, "layer": str(layer), "path": init.get("path"),
            "cache": str(init.get("cache") or "outputs/facet_cache")}


def _unit_key(u: Unit) -> list[Any]:
    return [u.layer, u.index, u.kind, u.x, u.y, u.token, u.start]


def _fingerprint(target: Any) -> str:
    h = hashlib.sha256()
    for name, p in target.model.state_dict().items():
        h.update(name.encode())
        h.update(repr((tuple(p.shape), round(float(p.double().sum()), 6))).encode())
    h.update(repr((getattr(target, "name", ""), getattr(target, "precision", ""), target.mean.flatten().tolist(),
                   target.std.flatten().tolist())).encode())
    return h.hexdigest()


def _photo(ds: Any, i: int, size: int) -> Tensor | None:
    from dgnam.generator.data import square_photo

    return square_photo(ds[i][0], size)


def _whole_layer(units: Sequence[Unit]) -> bool:
    """Units a channel's mean (or a logit) each: one scan of every channel of the layer serves them all."""
    return all(u.kind in ("channel", "class") and u.token is None and u.start is None for u in units)


@torch.no_grad()
def scan(target: Any, units: Sequence[Unit], size: int, fc: Mapping[str, Any], device: torch.device,
         resize: Any = None, progress: bool = True) -> dict[str, Any]:
    """Every photo of the source through the target once: ``act`` (N, C) the activation of every
    channel (or logit) of the units' layer, or (N, U) one column per unit (neurons, tokens),
    ``feat`` (N, D) the pooled features of ``fc["layer"]``, ``index`` (N,) the photos' indices in the
    source (unreadable ones left out), ``columns`` each unit's column. Cached under ``fc["cache"]``
    (a later run on other channels of the layer reuses it); a cache is loaded without code and
    checked against its key."""
    from dgnam.config import photo_source

    ds = photo_source(fc["path"])
    n = len(ds) if fc["limit"] is None else min(len(ds), int(fc["limit"]))
    whole = _whole_layer(units)
    key = json.dumps({"target": _fingerprint(target), "units": units[0].layer if whole else [_unit_key(u) for u in units],
                      "size": size, "layer": fc["layer"], "source": str(fc["path"] or "shared-train"), "n": n,
                      "resize": repr(resize)}, sort_keys=True)
    columns = [u.index for u in units] if whole else list(range(len(units)))
    path = Path(fc["cache"]) / f"scan-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    if path.exists():
        try:
            got = load_file(path, "facet scan")
        except DgnamError:
            got = None  # unreadable: scanned again and replaced
        if (isinstance(got, dict) and got.get("key") == key and all(isinstance(got.get(k), Tensor) for k in
                ("act", "feat", "index")) and got["act"].shape[0] == got["feat"].shape[0] == len(got["index"])
                and got["act"].shape[1] > max(columns)):
            return {**got, "columns": columns}
    log.info("facets: %d photos of %s through the target once (kept in %s)", n, fc["path"] or "the shared training split",
             path)
    objs = [] if whole else [objective_for([u]) for u in units]
    layers = {fc["layer"], units[0].layer, *(layer for o in objs for layer in o.layers)}
    acts, feats, index = [], [], []
    for s in tqdm(range(0, n, _BATCH), desc="facets: scanning photos", unit="batch", disable=not progress):
        got = [(i, t) for i in range(s, min(n, s + _BATCH)) if (t := _photo(ds, i, size)) is not None]
        if not got:
            continue
        x = torch.stack([t for _, t in got]).to(device)
        a = target(resize(x) if resize is not None else x, layers)
        per = pool_features(a[units[0].layer]) if whole else torch.stack([_per_item(o, a, len(got)) for o in objs], 1)
        acts.append(per.float().cpu().half())
        feats.append(pool_features(a[fc["layer"]]).half())
        index += [i for i, _ in got]
    if not index:
        raise DgnamValueError(f"init.path={fc['path']}: none of its {n} photos could be read")
    out = {"key": key, "act": torch.cat(acts), "feat": torch.cat(feats), "index": torch.tensor(index)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(out, tmp)
    os.replace(tmp, path)  # whole or absent: an interrupted scan leaves no cache
    return {**out, "columns": columns}


def _per_item(obj: Any, acts: Mapping[str, Tensor], n: int) -> Tensor:
    """One unit's objective for each of n photos (the objective of one unit broadcast over the batch)."""
    v = obj(acts)
    return v if v.shape[0] == n else v.expand(n)


def choose(act: Tensor, feat: Tensor, k: int, top: int, keep: float = 0.0) -> list[int]:
    """Rows of the scan a unit's k samples start from, most activating first: of the ``top`` most
    activating rows, :func:`select_pool` with ``keep`` (those at ``keep`` x the best or more)."""
    order = torch.argsort(act, descending=True, stable=True)[:top]
    picked = select_pool(act[order], feat[order].float(), k, keep)  # sorted: most activating first
    return [int(order[j]) for j in picked]


def facet_starts(target: Any, units: Sequence[Unit], k: int, size: int, fc: Mapping[str, Any],
                 device: torch.device, resize: Any = None, progress: bool = True) -> list[list[dict]]:
    """For each unit, its k samples' starts, most activating first: ``{"facet_photo": index in the
    source, "facet_activation": the photo's activation}`` (the images: :func:`load_starts`)."""
    sc = scan(target, units, size, fc, device, resize, progress)
    info = []
    for col in sc["columns"]:
        act = sc["act"][:, col].float()
        rows = choose(act, sc["feat"], k, min(fc["top"], len(sc["index"])), fc["keep"])
        if len(rows) < k:
            raise DgnamValueError(f"init.kind=facets: only {len(rows)} readable photos for samples={k}")
        info.append([{"facet_photo": int(sc["index"][r]), "facet_activation": float(act[r])} for r in rows])
    return info


def load_starts(fc: Mapping[str, Any], info: Sequence[Sequence[Mapping[str, Any]]], size: int) -> Tensor:
    """(U, k, 3, size, size) start images of :func:`facet_starts`' picks (loaded a batch of units at a
    time, so that a run over many units never holds all their photos)."""
    from dgnam.config import photo_source

    ds = photo_source(fc["path"])
    return torch.stack([torch.stack([_photo(ds, s["facet_photo"], size) for s in unit]) for unit in info])
