"""The photos a dataset-examples pass reads: an image folder, Parquet file(s) or a glob, a list of
image files, a tensor of images or any torch ``Dataset``, each as an :class:`ExampleSource` that gives
image ``i`` at side S (the central square, resized) with its label, or ``None`` for an image that
cannot be decoded (skipped and counted by the pass, never fatal).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from dgnam.core.images import resize_crop
from dgnam.errors import DgnamFileNotFoundError, DgnamValueError
from dgnam.generator.data import (
    FolderImages,
    ParquetImages,
    center_square,
    decode_image,
    open_source,
    pil_to_tensor,
)


def spread(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them without a limit), as the raw
    sources of :mod:`dgnam.generator.data` pick them."""
    if limit is None or limit >= n:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, int(limit)).round().astype(int)]


def _as_image(item: Any, size: int) -> Tensor | None:
    """A dataset item's image (a PIL image, a (3, H, W) / (1, H, W) tensor in [0, 1] or uint8, or an
    array (H, W, 3)) -> (3, size, size) float in [0, 1] (central square); ``None`` stays ``None``."""
    if item is None:
        return None
    if isinstance(item, Image.Image):
        return pil_to_tensor(center_square(item.convert("RGB"), size))
    x = torch.as_tensor(np.asarray(item)) if not isinstance(item, Tensor) else item
    if x.dim() == 3 and x.shape[-1] in (1, 3) and x.shape[0] not in (1, 3):
        x = x.permute(2, 0, 1)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise DgnamValueError(f"a dataset image must be (3, H, W) or (1, H, W), not of shape {tuple(x.shape)}")
    x = x.float() / 255.0 if not x.is_floating_point() else x.float()
    return resize_crop(x.expand(3, -1, -1), size)


class ExampleSource:
    """Images for a pass: ``len(source)`` images, :meth:`item` gives image ``i`` at side ``size``.

    ``description`` names the data (for ``examples.json``), ``label_names`` are the class names its
    labels index (or None), :meth:`fingerprint` changes when the data does (a checkpoint of other data
    is refused)."""

    description = ""
    label_names: list[str] | None = None

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __len__(self) -> int:
        raise NotImplementedError

    def item(self, i: int) -> tuple[Tensor | None, int]:
        """(image (3, size, size) in [0, 1] or None when it cannot be read, label or -1)."""
        raise NotImplementedError

    def signature(self) -> Any:
        """What identifies the data, hashed by :meth:`fingerprint`."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        blob = json.dumps([type(self).__name__, len(self), self.signature()], default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class RawImages(ExampleSource):
    """A Parquet dataset (:class:`ParquetImages`), an image folder (:class:`FolderImages`) or a list of
    files (:class:`FileImages`): bytes or a path per item, decoded here."""

    def __init__(self, raw: ParquetImages | FolderImages | FileImages, size: int, description: str) -> None:
        super().__init__(size)
        self.raw, self.description = raw, description
        self.label_names = _label_names(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def item(self, i: int) -> tuple[Tensor | None, int]:
        data, label = self.raw.raw(i)
        img = decode_image(data) if data is not None else None
        return (None if img is None else pil_to_tensor(center_square(img, self.size))), int(label)

    def signature(self) -> Any:
        if isinstance(self.raw, ParquetImages):
            files = [(os.path.abspath(f), os.path.getsize(f)) for f in self.raw.files]
            return [files, [list(t) for t in self.raw.index[:: max(1, len(self.raw) // 1000)]]]
        items = self.raw.items
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()


class FileImages:
    """Image files given one by one: items ``(path, -1)`` (no labels)."""

    def __init__(self, files: Sequence[str | os.PathLike], limit: int | None = None) -> None:
        paths = [os.path.abspath(os.path.expanduser(str(f))) for f in files]
        missing = next((p for p in paths if not os.path.isfile(p)), None)
        if missing is not None:
            raise DgnamFileNotFoundError(f"image file not found: {missing} (one of the {len(paths)} files given)")
        self.items = [(paths[i], -1) for i in spread(len(paths), limit)]

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, i: int) -> tuple[str, int]:
        return self.items[i]


def _label_names(raw: Any) -> list[str] | None:
    """Class names: an image folder's class folders, or the ``classes.json`` beside Parquet shards
    (a list of ``{"label": i, "name": ...}``, as the shared ImageNet-50 has)."""
    if isinstance(raw, FolderImages):
        return list(raw.classes) or None
    if isinstance(raw, ParquetImages):
        path = Path(raw.files[0]).parent / "classes.json"
        try:
            rows = json.loads(path.read_text())
            names = {int(r["label"]): str(r["name"]) for r in rows}
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return [names.get(i, str(i)) for i in range(max(names) + 1)] if names else None
    return None


class TensorImages(ExampleSource):
    """A tensor of images (N, 3, H, W) (or (N, 1, H, W)) in [0, 1], or uint8; no labels."""

    description = "tensor"

    def __init__(self, images: Tensor, size: int, limit: int | None = None) -> None:
        super().__init__(size)
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise DgnamValueError(f"a tensor of images must be (N, 3, H, W) or (N, 1, H, W), not of shape "
                                  f"{tuple(images.shape)}")
        self.images = images.detach().cpu()
        self.pick = spread(len(images), limit)
        self.description = f"tensor {tuple(images.shape)}"

    def __len__(self) -> int:
        return len(self.pick)

    def item(self, i: int) -> tuple[Tensor | None, int]:
        return _as_image(self.images[self.pick[i]], self.size), -1

    def signature(self) -> Any:
        data = self.images.contiguous()
        return [hashlib.sha256(data.numpy().tobytes()).hexdigest(), str(data.dtype), self.pick[:1000]]


class DatasetImages(ExampleSource):
    """Any ``torch.utils.data.Dataset`` whose items are an image (a PIL image or a tensor / array,
    see :func:`_as_image`), an ``(image, label)`` pair or a ``{"image": ..., "label": ...}`` dict;
    an item ``None`` (or with image ``None``) is unreadable."""

    def __init__(self, dataset: Any, size: int, limit: int | None = None) -> None:
        super().__init__(size)
        self.dataset = dataset
        self.pick = spread(len(dataset), limit)
        self.description = f"{type(dataset).__name__} ({len(dataset)} items)"
        names = getattr(dataset, "classes", None)
        self.label_names = [str(c) for c in names] if isinstance(names, (list, tuple)) and names else None

    def __len__(self) -> int:
        return len(self.pick)

    def item(self, i: int) -> tuple[Tensor | None, int]:
        it = self.dataset[self.pick[i]]
        label: Any = -1
        if isinstance(it, dict):
            it, label = it.get("image"), it.get("label", -1)
        elif isinstance(it, (tuple, list)):
            it, label = it[0], (it[1] if len(it) > 1 else -1)
        return _as_image(it, self.size), int(label) if label is not None else -1

    def signature(self) -> Any:
        return [type(self.dataset).__module__, type(self.dataset).__qualname__, self.pick[:1000]]


def open_examples_source(data: Any, size: int, limit: int | None = None) -> ExampleSource:
    """``data`` -> an :class:`ExampleSource`: a folder (class sub-folders give labels), a Parquet file,
    glob or folder of shards (Hugging Face image encoding, labels from its ``label`` column), a list of
    image files or of Parquet files, a tensor of images, or a torch ``Dataset``. ``limit`` keeps that
    many images, spread evenly. Empty data is a one-line :class:`DgnamError`."""
    if data is None:
        raise DgnamValueError("no data given; e.g. data=path/to/images/, data='shards/train-*.parquet' or a list of files")
    if isinstance(data, Tensor):
        src: ExampleSource = TensorImages(data, size, limit)
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                                       and not isinstance(data, (str, bytes, list, tuple, os.PathLike))):
        src = DatasetImages(data, size, limit)
    elif isinstance(data, (list, tuple)):
        files = [str(f) for f in data]
        if not files:
            raise DgnamValueError("data=[] is empty; give an image folder, Parquet files or image files")
        if all(f.endswith(".parquet") for f in files):
            src = RawImages(ParquetImages(files, limit=limit), size, ", ".join(files))
        else:
            src = RawImages(FileImages(files, limit), size, f"{len(files)} image files")
    else:
        raw = open_source(str(data), limit=limit)
        src = RawImages(raw, size, str(data))
    if len(src) == 0:
        raise DgnamValueError(f"the data {src.description} holds no images")
    return src
