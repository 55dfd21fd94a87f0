"""Reading images and writing results: PNGs, labelled grids, GIF/MP4, results.json/.csv.

Everything here is at the edge: the loop never calls it. Every file is written atomically (to a
temporary name first), so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torch import Tensor
from torchvision.utils import make_grid

from dgnam.core.images import resize_crop, to_uint8
from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line

log = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only when it succeeded.

    The temporary file keeps the target's suffix, so writers that go by the extension work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`. torch's zip writer reports a
    failed write (a full disk) as a ``RuntimeError``; it is raised as the ``OSError`` it is
    (``ENOSPC`` when the disk is full), with the file's name, so every caller handles one kind."""
    def write(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            full = shutil.disk_usage(Path(tmp).parent).free < 1 << 20
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, f"{os.strerror(code)} ({first_line(e)})", str(path)) from None

    return atomic_write(path, write)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB. Transparent pixels (RGBA, LA, PA, palette with transparency) go on
    white; 16-bit and 32-bit grayscale (``I;16``, ``I``) is scaled from its full range to 0-255
    rather than clipped at 255, and float images (``F``) are taken as [0, 1]."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" else 65535.0 if (img.mode.startswith("I;16") or arr.max() > 255) else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr ...


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` once per process (a photo read again for each batch says it once)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def load_image(path: str | os.PathLike, size: int | None = None) -> Tensor:
    """Read an image file as RGB (see :func:`to_rgb`: grayscale of any depth, CMYK, palette and RGBA
    are converted; alpha is composited on white) -> (3, H, W) in [0, 1]. With ``size``: shorter side
    resized to it, then centre-cropped."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DgnamFileNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            frames = int(getattr(im, "n_frames", 1) or 1)
            im.load()
            im = to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DgnamValueError(f"cannot read image {p}: {first_line(e)}") from None
    if frames > 1:
        _warn_once(f"{p} has {frames} frames (an animation); its first frame is used")
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    if size is not None:
        x = resize_crop(x, size)
    return x


ASTRONAUT = "astronaut"  # scikit-image's sample photo (Eileen Collins), the articles' example
SKIMAGE = "skimage:"  # prefix of scikit-image's sample images that ship with it: skimage:coffee
SKIMAGE_SAMPLES = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "grass", "gravel",
                   "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


def skimage_sample(name: str) -> Tensor:
    """One of scikit-image's sample images that ship with it (:data:`SKIMAGE_SAMPLES`) -> (3, H, W)
    in [0, 1]; grayscale ones repeated over the three channels."""
    if name not in SKIMAGE_SAMPLES:
        raise DgnamValueError(f"unknown scikit-image sample {name!r}; valid: {', '.join(SKIMAGE_SAMPLES)}")
    from skimage import data

    arr = np.asarray(getattr(data, name)())
    arr = np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr[..., :3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def source_image(path: str | None, size: int) -> Tensor:
    """The photo a view is computed for -> (3, size, size) in [0, 1].

    ``path``: an image file (grayscale and RGBA are converted to RGB; alpha on white), ``None`` /
    ``"astronaut"`` for scikit-image's ``data.astronaut()``, or ``skimage:<name>`` for another of its
    sample images (:data:`SKIMAGE_SAMPLES`). Shorter side resized to ``size``, then centre-cropped.
    """
    if path is None or str(path) in ("", ASTRONAUT):
        path = SKIMAGE + ASTRONAUT
    if str(path).startswith(SKIMAGE):
        return resize_crop(skimage_sample(str(path)[len(SKIMAGE):]), size)
    return load_image(str(path), size)


def to_pil(image: Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] or uint8 -> PIL image."""
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def safe_name(label: object) -> str:
    """A label as a file-name fragment: letters, digits and ``-_.`` kept, the rest ``_``, 60 at most."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(label)).strip("_")[:60]


def save_png(image: Tensor, path: str | os.PathLike) -> Path:
    """Save (3, H, W) in [0, 1] as a PNG."""
    pil = to_pil(image)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def _caption(tile: Tensor, text: str, height: int) -> Tensor:
    """Append a caption strip with ``text`` under a uint8 tile (3, H, W)."""
    w = tile.shape[-1]
    strip = Image.new("RGB", (w, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    text = text if draw.textlength(text, font=font) <= w - 4 else text[: max(1, (w - 4) // 6 - 1)] + "…"
    draw.text((2, max(0, (height - 11) // 2)), text, fill=(0, 0, 0), font=font)
    strip_t = torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1)
    return torch.cat([tile, strip_t], dim=1)


def labelled_grid(images: Tensor | Sequence[Tensor], labels: Sequence[str] | None = None,
                  cols: int = 8, tile: int | None = None, pad: int = 2) -> Tensor:
    """Images (N, 3, H, W) in [0, 1] or uint8 -> one uint8 grid (3, H', W') with a caption per tile
    (``torchvision.utils.make_grid`` lays them out, ``cols`` per row)."""
    imgs = [im if im.dtype == torch.uint8 else (im.clamp(0, 1) * 255).round().to(torch.uint8)
            for im in images]
    side = tile or max(im.shape[-1] for im in imgs)
    imgs = [im if im.shape[-1] == side and im.shape[-2] == side else
            F.interpolate(im[None].float(), size=(side, side), mode="nearest")[0].to(torch.uint8)
            for im in imgs]
    if labels is not None:
        cap = 14
        imgs = [_caption(im, str(lb), cap) for im, lb in zip(imgs, labels)]
    return make_grid(torch.stack(imgs), nrow=min(cols, len(imgs)), padding=pad, pad_value=255)


def save_animation(frames: Sequence[Tensor], path: str | os.PathLike, fps: int = 10) -> Path:
    """Save uint8 frames (3, H, W) as a GIF or MP4 (by the suffix) with imageio."""
    import imageio.v3 as iio

    arr = np.stack([f.permute(1, 2, 0).cpu().numpy() for f in frames])
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return atomic_write(path, lambda tmp: iio.imwrite(tmp, arr, extension=".gif",
                                                          duration=1000 / fps, loop=0))
    if suffix == ".mp4":
        import imageio.v2 as iio2

        h, w = arr.shape[1:3]
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # codec needs even sizes
        return atomic_write(path, lambda tmp: iio2.mimwrite(tmp, list(arr), format="FFMPEG", fps=fps,
                                                            macro_block_size=1))
    raise DgnamValueError(f"unknown animation format {suffix!r}; valid: .gif, .mp4")


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON (RFC 8259) has no
    NaN, and a bare ``NaN`` makes strict parsers (``jq``, browsers, ``json.loads(..., parse_constant=...)``)
    refuse the whole file. A missing number reads as ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as strict JSON (:func:`json_safe`), written atomically."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, name: str = "results") -> None:
    """Write ``rows`` as ``<name>.json`` (a list of objects; NaN as ``null``) and ``<name>.csv``."""
    out = Path(out_dir)
    write_json(out / f"{name}.json", list(rows))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / f"{name}.csv", write_csv)
