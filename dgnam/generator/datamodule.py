"""The LightningDataModule of generator training: :class:`ImageDataModule` serves training and
validation batches from Parquet files, image folders or synthetic images (datasets in
:mod:`dgnam.generator.data`), either decoded on the fly or, with ``cache``, as stored codes
(:func:`dgnam.generator.cache.load_or_encode`; synthetic images are encoded in memory). Also what
training asks of the training set before it starts and at export: :func:`check_decodable` and
:func:`compute_code_stats`.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dgnam.core.images import resize
from dgnam.errors import DgnamError, DgnamFileNotFoundError, DgnamValueError
from dgnam.generator.cache import CachedCodes, load_or_encode
from dgnam.generator.data import (
    ImageDataset,
    SyntheticImages,
    collate,
    expand_files,
    open_source,
)
from dgnam.generator.stats import CodeStats

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# LightningDataModules
# --------------------------------------------------------------------------------------------------
class ImageDataModule(L.LightningDataModule):
    """Training and validation images from Parquet files (HF encoding), image folders or synthetic data.

    Args:
        train, val: a Parquet glob/file/directory/list, an image folder (ImageNet layout), or
            ``"synthetic"``. ``val`` may be ``None`` (no validation).
        resolution: side of the images (the generator's output resolution).
        batch_size, num_workers: loader settings (``num_workers`` for decoding; 0 = in process).
        limit_train, limit_val: use at most this many images of each split (evenly spread).
        crop_scale, flip: training augmentation (ignored with ``cache``).
        cache: encode the images once with the encoder and comparator given to :meth:`attach`
            and train from the stored codes (mirrored copies too when ``flip``); training steps
            then never run E.
        cache_dir: where the encoded caches are kept (reused across runs).
        load_size: side at which E sees the images when caching (before E's own resize).
        synthetic_size: number of synthetic images per split.
        encode_batch_size: batch size of the one-time encoding.
    """

    def __init__(self, train: Any, val: Any = None, resolution: int = 64, batch_size: int = 64,
                 num_workers: int = 0, limit_train: int | None = None, limit_val: int | None = None,
                 crop_scale: tuple[float, float] = (0.8, 1.0), flip: bool = True, cache: bool = False,
                 cache_dir: str = "outputs/code_cache", load_size: int = 128, synthetic_size: int = 64,
                 encode_batch_size: int = 64) -> None:
        super().__init__()
        self.train_src, self.val_src = train, val
        self.resolution, self.batch_size, self.num_workers = int(resolution), int(batch_size), int(num_workers)
        self.limit_train, self.limit_val = limit_train, limit_val
        self.crop_scale, self.flip = tuple(crop_scale), flip
        self.cache, self.cache_dir, self.load_size = cache, cache_dir, int(load_size)
        self.synthetic_size, self.encode_batch_size = int(synthetic_size), int(encode_batch_size)
        self.encoder = self.comparator = self.latent_encoder = None
        self.device: Any = "cpu"
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._check(train, "data.train")
        if val is not None:
            self._check(val, "data.val")

    @staticmethod
    def _check(src: Any, name: str) -> None:
        """Fail early, with the path, when a data path is missing or empty."""
        if src == "synthetic":
            return
        if isinstance(src, (list, tuple)) or str(src).endswith(".parquet") or any(c in str(src) for c in "*?["):
            expand_files(src, name)
            return
        p = Path(os.path.expanduser(str(src)))
        if not p.exists():
            raise DgnamFileNotFoundError(f"{name}: data path not found: {p}")
        if p.is_dir() and not any(p.iterdir()):
            raise DgnamValueError(f"{name}: data folder {p} is empty")

    def attach(self, encoder: Any = None, comparator: Any = None, device: Any = "cpu",
               latent_encoder: Any = None) -> ImageDataModule:
        """Give the (frozen) encoder and comparator used to build the code cache (and the latent
        encoder whose latents a latent prior regresses)."""
        self.encoder, self.comparator, self.device = encoder, comparator, device
        self.latent_encoder = latent_encoder
        return self

    def _dataset(self, src: Any, limit: int | None, train: bool) -> Dataset:
        if src == "synthetic":
            ds: Dataset = SyntheticImages(limit or self.synthetic_size, self.resolution, seed=0 if train else 1)
            if self.cache:
                return CachedCodes(self._encode_synthetic(ds, train), train=train)
            return ds
        if self.cache:
            if self.encoder is None:
                raise DgnamValueError("data.cache=true needs the encoder; call attach(encoder, comparator) first")
            cache = load_or_encode(self.cache_dir, src, self.encoder, self.comparator, self.resolution,
                                   self.load_size, self.flip and train, limit, self.encode_batch_size, self.device,
                                   latent_encoder=self.latent_encoder)
            if cache["skipped"]:
                log.warning("%s: %d undecodable image files skipped", src, cache["skipped"])
            return CachedCodes(cache, train=train)
        return ImageDataset(open_source(src, limit), self.resolution, train, self.crop_scale, self.flip)

    @torch.inference_mode()
    def _encode_synthetic(self, ds: SyntheticImages, train: bool) -> dict[str, Any]:
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        views = [x, x.flip(-1)] if (self.flip and train) else [x]
        big = [resize(v, self.load_size) for v in views]
        codes = torch.stack([self.encoder(b) for b in big], 1)
        feats = torch.stack([self.comparator(v) for v in views], 1) if self.comparator is not None else None
        out = {"images": (x * 255).round().to(torch.uint8), "codes": codes, "feats": feats,
               "labels": torch.tensor([ds[i]["label"] for i in range(len(ds))]), "skipped": 0}
        if self.latent_encoder is not None:
            out["latents"] = torch.stack([self.latent_encoder(v) for v in views], 1)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.train_src, self.limit_train, True)
        if self.val_set is None and self.val_src is not None:
            self.val_set = self._dataset(self.val_src, self.limit_val, False)

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        workers = 0 if isinstance(ds, CachedCodes) else self.num_workers
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate, drop_last=shuffle and len(ds) > self.batch_size,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("fit")
        return self._loader(self.val_set, False) if self.val_set is not None else []


# --------------------------------------------------------------------------------------------------
# Before training and at export: what the training set yields
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def compute_code_stats(dm: Any, encoder: Any, k: float, max_images: int | None,
                       device: torch.device) -> dict[str, torch.Tensor]:
    """Per-unit code statistics over the training images (every cached view, or E on real images)."""
    st = CodeStats()
    ds = dm.train_set
    if isinstance(ds, CachedCodes):
        codes = ds.codes[: max_images or None]
        for i in range(0, codes.shape[0], 1024):  # in chunks: float64 sums of a large spatial code need ~8x its fp16 size
            st.update(codes[i : i + 1024].float())
    else:
        loader = torch.utils.data.DataLoader(ds, batch_size=dm.batch_size, shuffle=False,
                                             num_workers=dm.num_workers, collate_fn=collate)
        seen = skipped = 0
        for b in loader:
            skipped += int(b["skipped"])
            if b["image"].shape[0] == 0:
                continue
            st.update(encoder(b["image"].to(device)))
            seen += b["image"].shape[0]
            if max_images and seen >= max_images:
                break
        if not seen:
            raise _no_images(dm, skipped)
    return st.result(k)


def check_decodable(dm: Any) -> None:
    """Before training: the training set yields at least one image (a folder or Parquet of files
    that do not decode would train on empty batches). Reads batches until the first good one."""
    ds = dm.train_set
    if isinstance(ds, CachedCodes):
        return  # the cache refuses a source without a decodable image when it is written
    loader = torch.utils.data.DataLoader(ds, batch_size=dm.batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate)
    skipped = 0
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # the random crops and flips of this look must not change what the run draws after it
        with torch.random.fork_rng(devices=[]):
            for b in loader:
                if b["image"].shape[0]:
                    return
                skipped += int(b["skipped"])
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    raise _no_images(dm, skipped)


def _no_images(dm: Any, skipped: int) -> DgnamError:
    return DgnamValueError(f"no decodable training images in {dm.train_src}: all {skipped} items were skipped "
                      f"(files or Parquet cells that do not decode as images)")
