"""Image data for training generator priors: Parquet image datasets (Hugging Face encoding), image
folders (ImageNet layout), synthetic images, and caches of encoder codes.

Every source yields RGB images as float tensors (3, S, S) in [0, 1]. Grayscale, palette, CMYK and
RGBA files are converted to RGB; files that cannot be decoded are skipped and counted, never fatal.
"""

from __future__ import annotations

import glob as _glob
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dgnam.core.images import resize
from dgnam.errors import DgnamError, first_line

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


# --------------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------------
def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB. Transparent pixels (RGBA, LA, palette with transparency) go on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, I;16 ...


def decode_image(data: bytes | str | os.PathLike) -> Image.Image | None:
    """Decode image bytes or a file into an RGB PIL image; ``None`` if it cannot be decoded."""
    try:
        src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        with Image.open(src) as img:
            img.load()
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def pil_to_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop the largest square and resize it to ``size`` x ``size`` (bicubic, antialiased)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=None)
    return img


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
def expand_files(files: str | Sequence[str], what: str = "data files") -> list[str]:
    """A glob, a file, a directory of ``*.parquet`` files, or a list of those -> sorted file list.

    Raises :class:`DgnamError` naming the pattern when nothing matches."""
    patterns = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not patterns:
        raise DgnamError(f"no {what} given")
    out: list[str] = []
    for pat in patterns:
        pat = os.path.expanduser(str(pat))
        if os.path.isdir(pat):
            found = sorted(_glob.glob(os.path.join(pat, "*.parquet")))
            if not found:
                raise DgnamError(f"{what}: directory {pat} holds no *.parquet files")
        else:
            found = sorted(_glob.glob(pat))
            if not found:
                parent = Path(pat).parent
                hint = "" if parent.is_dir() else f" (directory {parent} does not exist)"
                raise DgnamError(f"{what}: nothing matches {pat}{hint}")
        out.extend(found)
    return list(dict.fromkeys(out))


class ParquetImages(Dataset):
    """Images stored in Parquet files in the Hugging Face ``datasets`` encoding.

    Columns: ``image`` (struct with ``bytes`` and ``path``) and optionally ``label`` (int). Only the
    file offsets are read at construction; the image bytes are read lazily, one row group at a time,
    and cached per worker.

    Args:
        files: a glob (``.../train-*.parquet``), a directory, a file or a list of them.
        limit: keep at most this many rows (spread evenly over all rows), ``None`` for all.
        image_column, label_column: column names.

    Items: ``(image bytes, label)``; use :class:`ImageDataset` to decode and transform them.
    """

    def __init__(self, files: str | Sequence[str], limit: int | None = None, image_column: str = "image",
                 label_column: str = "label") -> None:
        import pyarrow.parquet as pq

        self.files = expand_files(files, "parquet files")
        self.image_column, self.label_column = image_column, label_column
        index: list[tuple[int, int, int]] = []  # (file, row group, row in group)
        for fi, f in enumerate(self.files):
            try:
                meta = pq.ParquetFile(f)
            except Exception as e:
                raise DgnamError(f"cannot read parquet file {f}: {first_line(e, 120)}") from None
            names = meta.schema_arrow.names
            if image_column not in names:
                raise DgnamError(f"parquet file {f} has no column {image_column!r}; columns: {', '.join(names)}")
            for g in range(meta.num_row_groups):
                n = meta.metadata.row_group(g).num_rows
                index.extend((fi, g, r) for r in range(n))
        if not index:
            raise DgnamError(f"parquet files {self.files[0]} ... hold no rows")
        if limit is not None and limit < len(index):
            pick = np.linspace(0, len(index) - 1, int(limit)).round().astype(int)
            index = [index[i] for i in pick]
        self.index = index
        self._group: tuple[int, int] | None = None
        self._rows: tuple[list[Any], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _load_group(self, fi: int, g: int) -> tuple[list[Any], list[int]]:
        import pyarrow.parquet as pq

        if self._group != (fi, g):
            pf = pq.ParquetFile(self.files[fi])
            cols = [self.image_column] + ([self.label_column] if self.label_column in pf.schema_arrow.names else [])
            tab = pf.read_row_group(g, columns=cols)
            images = tab.column(self.image_column).to_pylist()
            labels = tab.column(self.label_column).to_pylist() if len(cols) > 1 else [-1] * tab.num_rows
            self._group, self._rows = (fi, g), (images, labels)
        assert self._rows is not None
        return self._rows

    def raw(self, i: int) -> tuple[bytes | None, int]:
        fi, g, r = self.index[i]
        images, labels = self._load_group(fi, g)
        cell = images[r]
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None and isinstance(cell, dict) and cell.get("path") and os.path.isfile(cell["path"]):
            data = Path(cell["path"]).read_bytes()
        label = labels[r]
        return data, int(label) if label is not None else -1

    def __getitem__(self, i: int) -> tuple[bytes | None, int]:
        return self.raw(i)


class FolderImages(Dataset):
    """Image files under a directory: ImageNet layout (``root/<class>/<file>``) or flat.

    Items: ``(path, label)``; labels index the sorted class sub-directories (-1 for a flat folder)."""

    def __init__(self, root: str | os.PathLike, limit: int | None = None) -> None:
        root = Path(os.path.expanduser(str(root)))
        if not root.is_dir():
            raise DgnamError(f"image folder not found: {root}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        items: list[tuple[str, int]] = []
        for f in sorted(root.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((str(f), -1))
        for ci, c in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(root / c)):
                items.extend((os.path.join(dirpath, n), ci) for n in sorted(names)
                             if n.lower().endswith(IMAGE_EXTENSIONS))
        if not items:
            raise DgnamError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        if limit is not None and limit < len(items):
            pick = np.linspace(0, len(items) - 1, int(limit)).round().astype(int)
            items = [items[i] for i in pick]
        self.root, self.classes, self.items = root, classes, items

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, i: int) -> tuple[str, int]:
        return self.items[i]

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.items[i]


def open_source(path: str | Sequence[str], limit: int | None = None) -> ParquetImages | FolderImages:
    """A Parquet glob/file/list (``*.parquet``) or an image folder -> a raw image source."""
    if isinstance(path, (list, tuple)) or str(path).endswith(".parquet") or any(c in str(path) for c in "*?["):
        return ParquetImages(path, limit=limit)
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir() and any(p.glob("*.parquet")):
        return ParquetImages(str(p), limit=limit)
    if not p.exists():
        raise DgnamError(f"data path not found: {p}")
    return FolderImages(p, limit=limit)


# --------------------------------------------------------------------------------------------------
# datasets of tensors
# --------------------------------------------------------------------------------------------------
class ImageDataset(Dataset):
    """Decoded, transformed images from a raw source (:class:`ParquetImages` or :class:`FolderImages`).

    Training items get a random square crop covering ``crop_scale`` of the shorter side (at a random
    position), a random horizontal flip and a resize to ``resolution``; evaluation items the central
    square resized to ``resolution``. Undecodable files give ``None`` (dropped by :func:`collate`,
    which counts them in ``batch["skipped"]``).

    Items: ``{"image": (3, R, R) float in [0, 1], "label": int}`` or ``None``.
    """

    def __init__(self, source: ParquetImages | FolderImages, resolution: int, train: bool = False,
                 crop_scale: tuple[float, float] = (0.8, 1.0), flip: bool = True) -> None:
        self.source, self.resolution, self.train = source, int(resolution), train
        self.crop_scale, self.flip = tuple(crop_scale), flip

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        data, label = self.source.raw(i)
        img = decode_image(data) if data is not None else None
        if img is None:
            return None
        if self.train:
            w, h = img.size
            s = min(w, h)
            lo, hi = self.crop_scale
            c = max(1, int(round(s * float(np.random.uniform(lo, hi)))))
            left = int(np.random.randint(0, w - c + 1))
            top = int(np.random.randint(0, h - c + 1))
            img = img.crop((left, top, left + c, top + c)).resize((self.resolution,) * 2, Image.BICUBIC)
            if self.flip and np.random.rand() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = center_square(img, self.resolution)
        return {"image": pil_to_tensor(img), "label": label}


class SyntheticImages(Dataset):
    """Deterministic random images for tests: smooth colour blobs on a gradient background.

    Items: ``{"image": (3, R, R) float in [0, 1], "label": int}``."""

    def __init__(self, n: int = 64, resolution: int = 64, classes: int = 10, seed: int = 0) -> None:
        self.n, self.resolution, self.classes, self.seed = int(n), int(resolution), int(classes), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        r = self.resolution
        yy, xx = torch.meshgrid(torch.linspace(0, 1, r), torch.linspace(0, 1, r), indexing="ij")
        c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        img = c0 * (1 - yy) + c1 * yy  # (3, R, R) vertical gradient
        for _ in range(3):
            cy, cx, rad = torch.rand(3, generator=g)
            col = torch.rand(3, 1, 1, generator=g)
            mask = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.08 * rad))
            img = img * (1 - mask) + col * mask
        return {"image": img.clamp(0, 1), "label": i % self.classes}


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


def collate(items: list[dict[str, Any] | None]) -> dict[str, Tensor]:
    """Stack dict items, dropping ``None`` (undecodable files); ``skipped`` counts the dropped ones."""
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return {"image": torch.zeros(0, 3, 1, 1), "label": torch.zeros(0, dtype=torch.long),
                "skipped": torch.tensor(skipped)}
    out: dict[str, Tensor] = {}
    for k in good[0]:
        vals = [it[k] for it in good]
        out[k] = torch.stack(vals) if isinstance(vals[0], Tensor) else torch.tensor(vals)
    out["skipped"] = torch.tensor(skipped)
    return out


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
            raise DgnamError(f"{name}: data path not found: {p}")
        if p.is_dir() and not any(p.iterdir()):
            raise DgnamError(f"{name}: data folder {p} is empty")

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
                raise DgnamError("data.cache=true needs the encoder; call attach(encoder, comparator) first")
            from dgnam.generator.cache import load_or_encode

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
