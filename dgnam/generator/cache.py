"""Encode a dataset once: images at the generator's resolution, their codes E(x) and comparator
features C(x), for the original and (optionally) the mirrored image.

On a CPU, E and C on real images cost more than the generator itself; with a cache a training step
runs only G (and C on G's output). The cache is one ``torch.save`` file of plain tensors.

Holds the cache's key (:func:`cache_key`), its writer (:func:`encode_dataset`, :func:`load_or_encode`)
and its reader, the dataset :class:`CachedCodes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dgnam.core.images import resize
from dgnam.errors import DgnamError, DgnamValueError
from dgnam.generator.data import (
    center_square,
    decode_image,
    expand_files,
    open_source,
    pil_to_tensor,
)
from dgnam.generator.encoder import Comparator, Encoder
from dgnam.io import save_torch

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def latent_describe(latent_encoder: Any) -> dict[str, Any]:
    """What determines a latent encoder's output: its kind and the name of its weights file."""
    wf = getattr(latent_encoder, "weights_file", None)
    return {"kind": type(latent_encoder).__name__, "weights_file": Path(wf).name if wf else None}


def _source_files(source: Any) -> list[str]:
    """The files themselves, so that equivalent globs and relative paths share one cache."""
    try:
        return [str(Path(f).resolve()) for f in expand_files(source)]
    except DgnamError:
        return [str(Path(str(source)).expanduser().resolve())]


def _meta(encoder: Encoder, comparator: Comparator | None, latent_encoder: Any, resolution: int, load_size: int,
          flips: bool) -> dict[str, Any]:
    """What a cache was made with, stored in it."""
    return {"encoder": encoder.describe(), "comparator": comparator.describe() if comparator else None,
            "latent": latent_describe(latent_encoder) if latent_encoder is not None else None,
            "resolution": resolution, "load_size": load_size, "flips": flips, "version": CACHE_VERSION}


def cache_key(source: Any, limit: int | None, encoder: Encoder, comparator: Comparator | None,
              resolution: int, flips: bool, load_size: int, latent_encoder: Any = None) -> str:
    """A short hash of everything that determines the cache's content."""
    files = _source_files(source)
    desc = {"v": CACHE_VERSION, "source": files,
            "limit": limit, "encoder": encoder.describe(),
            "comparator": comparator.describe() if comparator is not None else None,
            "resolution": resolution, "flips": flips, "load_size": load_size}
    if latent_encoder is not None:  # (absent from older keys, so their caches stay valid)
        desc["latent"] = latent_describe(latent_encoder)
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def photos_key(source: Any, limit: int | None, resolution: int, flips: bool, load_size: int,
               latent_encoder: Any) -> str:
    """A short hash of what determines a dataset's photos and their latents, not its codes: a latent
    prior trained on another encoder layer reuses them (:func:`load_or_encode`)."""
    files = _source_files(source)
    desc = {"v": CACHE_VERSION, "source": files, "limit": limit, "resolution": resolution, "flips": flips,
            "load_size": load_size, "latent": latent_describe(latent_encoder)}
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def _encode_views(encoder: Encoder, comparator: Comparator | None, x_e: Tensor, x_c: Tensor,
                  flips: bool) -> tuple[Tensor, Tensor | None]:
    """Codes E(x_e) (b, V, D) and comparator features C(x_c) (b, V, ...) or None, fp16 on the CPU,
    for V = 2 views (original, mirrored) or 1."""
    xe = [x_e, x_e.flip(-1)] if flips else [x_e]
    codes = torch.stack([encoder(v).half().cpu() for v in xe], 1)
    if comparator is None:
        return codes, None
    xc = [x_c, x_c.flip(-1)] if flips else [x_c]
    return codes, torch.stack([comparator(v).half().cpu() for v in xc], 1)


@torch.inference_mode()
def encode_photos(photos: dict[str, Any], encoder: Encoder, comparator: Comparator | None, flips: bool,
                  batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, Tensor | None]:
    """Codes and comparator features of already decoded photos (``photos["images"]``, uint8, the
    size E sees): the part of :func:`encode_dataset` that depends on E and C."""
    codes, feats = [], []
    imgs = photos["images"]
    t0 = time.time()
    for i in range(0, imgs.shape[0], batch_size):
        x = imgs[i : i + batch_size].to(device).float().div(255.0)
        c, f = _encode_views(encoder, comparator, x, x, flips)
        codes.append(c)
        if f is not None:
            feats.append(f)
        if (i // batch_size) % 50 == 0:
            log.info("encoded %d/%d photos (%.1f img/s)", i, imgs.shape[0], i / max(time.time() - t0, 1e-6))
    return {"codes": torch.cat(codes), "feats": torch.cat(feats) if feats else None}


_FIELDS = ("images", "codes", "feats", "latents")


def _load_parts(parts_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The chunks an interrupted :func:`encode_dataset` saved, in order, and the source index after
    the last one. A chunk that does not follow the one before (a folder from another run) is an error."""
    chunks, pos = [], 0
    for part in sorted(parts_dir.glob("part-*.pt")):
        chunk = torch.load(part, map_location="cpu", weights_only=True)
        if not isinstance(chunk, dict) or chunk.get("start") != pos or not isinstance(chunk.get("end"), int):
            raise DgnamValueError(f"{part} does not continue the chunks before it (start {pos}): "
                                  f"delete {parts_dir} to encode from the first image")
        chunks.append(chunk)
        pos = chunk["end"]
    return chunks, pos


@torch.inference_mode()
def encode_dataset(source: Any, encoder: Encoder, comparator: Comparator | None, resolution: int,
                   load_size: int = 128, flips: bool = True, limit: int | None = None, batch_size: int = 64,
                   device: str | torch.device = "cpu", progress: bool = True,
                   latent_encoder: Any = None, parts_dir: str | Path | None = None,
                   part_batches: int = 20) -> dict[str, Any]:
    """Decode, centre-crop and encode every image of ``source`` (a Parquet glob/list or a folder).

    Each image is cropped to its central square and resized to ``load_size`` (what E sees, after
    E's own ``input_size``) and to ``resolution`` (what G must reproduce and C compares).

    Returns a dict: ``images`` uint8 (N, 3, R, R); ``codes`` fp16 (N, V, D) with V = 2 views
    (original, mirrored) or 1; ``feats`` fp16 (N, V, ...) or None; ``labels`` int64 (N,);
    ``skipped`` (undecodable files, counted, not fatal); ``meta``; with ``latent_encoder`` (e.g.
    :class:`dgnam.generator.taef2.TAEF2Encoder`) also ``latents`` fp16 (N, V, C, r, r) of the
    ``resolution`` images (the regression targets of a latent prior).

    With ``parts_dir`` every ``part_batches`` batches are saved there as one chunk
    (``part-<start>.pt``), and a call that finds chunks goes on after the last one: an interrupted
    encode loses at most one chunk. The caller deletes the folder once the whole result is saved.
    """
    src = open_source(source, limit=limit)
    n = len(src)
    views = 2 if flips else 1
    parts = Path(parts_dir) if parts_dir is not None else None
    chunks, start = _load_parts(parts) if parts is not None and parts.is_dir() else ([], 0)
    if start:
        log.info("going on from image %d/%d: %d chunks already encoded in %s", start, n, len(chunks), parts)
    cur: dict[str, list[Any]] = {k: [] for k in (*_FIELDS, "labels")}
    done0 = sum(len(c["labels"]) for c in chunks)
    # skipped / batches: the open chunk's; done / skipped_all: the whole encode's, for the progress log
    state = {"skipped": 0, "start": start, "batches": 0, "done": done0,
             "skipped_all": sum(int(c["skipped"]) for c in chunks)}
    t0 = time.time()

    def flush(batch: list[Tensor]) -> None:
        big = torch.stack(batch).to(device)  # (b, 3, load, load)
        small = resize(big, resolution)  # (b, 3, R, R)
        c, f = _encode_views(encoder, comparator, big, small, flips)
        cur["codes"].append(c)  # (b, V, D)
        if f is not None:
            cur["feats"].append(f)
        if latent_encoder is not None:
            ss = [small, small.flip(-1)] if flips else [small]
            cur["latents"].append(torch.stack([latent_encoder(s).half().cpu() for s in ss], 1))
        cur["images"].append((small * 255).round().clamp(0, 255).to(torch.uint8).cpu())
        state["batches"] += 1
        state["done"] += len(batch)

    def close_chunk(end: int) -> None:
        chunk = {k: torch.cat(cur[k]) if cur[k] else None for k in _FIELDS}
        chunk.update(labels=torch.tensor(cur["labels"], dtype=torch.int64), skipped=state["skipped"],
                     start=state["start"], end=end)
        if parts is not None:
            save_torch(chunk, parts / f"part-{state['start']:09d}.pt")
        chunks.append(chunk)
        for v in cur.values():
            v.clear()
        state.update(skipped=0, start=end, batches=0)

    batch: list[Tensor] = []
    for i in range(start, n):
        data, label = src.raw(i)
        img = decode_image(data) if data is not None else None
        if img is None:
            state["skipped"] += 1
            state["skipped_all"] += 1
        else:
            batch.append(pil_to_tensor(center_square(img, load_size)))
            cur["labels"].append(label)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
            if state["batches"] == part_batches:
                close_chunk(i + 1)
            done = state["done"]
            if progress and (done // batch_size) % 10 == 0:
                rate = (done - done0) / max(time.time() - t0, 1e-6)
                log.info("encoded %d/%d images (%.1f img/s, %d skipped)", done, n, rate, state["skipped_all"])
    if batch:
        flush(batch)
    if cur["labels"] or state["skipped"] or not chunks:
        close_chunk(n)
    skipped = sum(int(c["skipped"]) for c in chunks)
    if not any(len(c["labels"]) for c in chunks):
        raise DgnamValueError(f"no decodable images in {source} ({skipped} files could not be read)")
    if skipped:
        log.warning("%d of %d image files could not be decoded and were skipped", skipped, n)
    out = {k: torch.cat([c[k] for c in chunks if c[k] is not None]) if any(c[k] is not None for c in chunks)
           else None for k in _FIELDS}
    latents = out.pop("latents")
    return {
        **out, "labels": torch.cat([c["labels"] for c in chunks]),
        "skipped": skipped, "views": views,
        **({"latents": latents} if latents is not None else {}),
        "meta": _meta(encoder, comparator, latent_encoder, resolution, load_size, flips),
    }


def load_or_encode(cache_dir: str | Path, source: Any, encoder: Encoder, comparator: Comparator | None,
                   resolution: int, load_size: int = 128, flips: bool = True, limit: int | None = None,
                   batch_size: int = 64, device: str | torch.device = "cpu",
                   latent_encoder: Any = None) -> dict[str, Any]:
    """:func:`encode_dataset`, stored under ``cache_dir`` by a hash of its inputs and reused.

    With a latent encoder the photos, labels and latents are also stored on their own
    (``photos-<key>.pt``, keyed by :func:`photos_key`): a later run on the same photos with another
    encoder or comparator reads them and runs only E and C (when ``load_size == resolution``, so the
    stored photos are what E sees), instead of decoding and encoding every photo again.

    An encode that is interrupted (Ctrl-C, a killed job) goes on where it stopped the next time: its
    chunks wait in ``codes-<key>.parts/`` beside the cache file until the whole file is written."""
    key = cache_key(source, limit, encoder, comparator, resolution, flips, load_size, latent_encoder)
    path = Path(cache_dir) / f"codes-{key}.pt"
    parts = Path(cache_dir) / f"codes-{key}.parts"  # the chunks of an encode not yet finished
    if path.is_file():
        log.info("reading cached codes %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    ppath = None
    if latent_encoder is not None:
        ppath = Path(cache_dir) / f"photos-{photos_key(source, limit, resolution, flips, load_size, latent_encoder)}.pt"
    if ppath is not None and ppath.is_file() and load_size == resolution:
        log.info("reading cached photos and latents %s; encoding their codes once into %s", ppath, path)
        photos = torch.load(ppath, map_location="cpu", weights_only=True)
        out = {**photos, **encode_photos(photos, encoder, comparator, flips, batch_size, device), "views": 2 if flips else 1,
               "meta": _meta(encoder, comparator, latent_encoder, resolution, load_size, flips)}
    else:
        log.info("encoding %s once into %s", source, path)
        out = encode_dataset(source, encoder, comparator, resolution, load_size, flips, limit, batch_size, device,
                             latent_encoder=latent_encoder, parts_dir=parts)
        if ppath is not None:
            photos = {k: out[k] for k in ("images", "labels", "skipped", "latents")}
            save_torch(photos, ppath)
    save_torch(out, path)
    shutil.rmtree(parts, ignore_errors=True)
    return out


class CachedCodes(Dataset):
    """Items from :func:`dgnam.generator.cache.encode_dataset`: image, code and comparator features.

    With ``train`` a random view (original or mirrored) is drawn for each item; otherwise view 0.
    Items: ``{"image": (3, R, R) float, "code": (D,), "feat": (...) (if cached), "latent": (C, r, r)
    (if cached), "label": int}``.
    """

    def __init__(self, cache: dict[str, Any], train: bool = False) -> None:
        self.images, self.codes, self.feats = cache["images"], cache["codes"], cache.get("feats")
        self.labels, self.train = cache["labels"], train
        self.latents = cache.get("latents")
        self.views = int(self.codes.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        v = int(torch.randint(self.views, ())) if self.train and self.views > 1 else 0
        img = self.images[i].float().div(255.0)
        if v == 1:
            img = img.flip(-1)
        item = {"image": img, "code": self.codes[i, v].float(), "label": int(self.labels[i])}
        if self.feats is not None:
            item["feat"] = self.feats[i, v].float()
        if self.latents is not None:
            item["latent"] = self.latents[i, v].float()
        return item
