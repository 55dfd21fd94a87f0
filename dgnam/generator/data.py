"""Image data for training generator priors: decoding, the raw sources (Parquet image datasets in
the Hugging Face encoding, image folders in the ImageNet layout), the datasets of image tensors
(:class:`ImageDataset`, :class:`SyntheticImages`) and :func:`collate`.

Every source yields RGB images as float tensors (3, S, S) in [0, 1]. Grayscale, palette, CMYK and
RGBA files are converted to RGB; files that cannot be decoded are skipped and counted, never fatal.
The DataModule is in :mod:`dgnam.generator.datamodule`; cached codes in :mod:`dgnam.generator.cache`.
"""

from __future__ import annotations

import glob as _glob
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line
from dgnam.io import to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


# --------------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------------
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


def square_photo(data: bytes | str | os.PathLike, size: int) -> Tensor | None:
    """A raw photo (bytes or a file) -> its centre square at ``size`` px, (3, size, size) in [0, 1];
    None when it cannot be decoded."""
    img = decode_image(data)
    return None if img is None else pil_to_tensor(center_square(img, size))


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
def expand_files(files: str | Sequence[str], what: str = "data files") -> list[str]:
    """A glob, a file, a directory of ``*.parquet`` files, or a list of those -> sorted file list.

    Raises :class:`DgnamError` naming the pattern when nothing matches."""
    patterns = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not patterns:
        raise DgnamValueError(f"no {what} given")
    out: list[str] = []
    for pat in patterns:
        pat = os.path.expanduser(str(pat))
        if os.path.isdir(pat):
            found = sorted(_glob.glob(os.path.join(pat, "*.parquet")))
            if not found:
                raise DgnamValueError(f"{what}: directory {pat} holds no *.parquet files")
        else:
            found = sorted(_glob.glob(pat))
            if not found:
                parent = Path(pat).parent
                hint = "" if parent.is_dir() else f" (directory {parent} does not exist)"
                raise DgnamValueError(f"{what}: nothing matches {pat}{hint}")
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
                raise DgnamValueError(f"cannot read parquet file {f}: {first_line(e)}") from None
            names = meta.schema_arrow.names
            if image_column not in names:
                raise DgnamValueError(f"parquet file {f} has no column {image_column!r}; columns: {', '.join(names)}")
            for g in range(meta.num_row_groups):
                n = meta.metadata.row_group(g).num_rows
                index.extend((fi, g, r) for r in range(n))
        if not index:
            raise DgnamValueError(f"parquet files {self.files[0]} ... hold no rows")
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
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = None  # a string or number where the image bytes belong: skipped and counted, never opened as a path
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
            raise DgnamFileNotFoundError(f"image folder not found: {root}")
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
            raise DgnamValueError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
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
        raise DgnamFileNotFoundError(f"data path not found: {p}")
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
        if not -self.n <= i < self.n:  # the end of iteration (list(ds), for ... in ds)
            raise IndexError(f"item {i} of {self.n} synthetic images")
        i %= self.n
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

