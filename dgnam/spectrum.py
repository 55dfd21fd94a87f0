"""Build the natural-image amplitude spectrum that MACO (``param=maco``) fixes: the mean of ``|rfft2|``
of colour-decorrelated photos, per channel, at one square size.

    python -m dgnam.spectrum                                   # the shared ImageNet photos -> dgnam/priors/maco_spectrum.pt
    python -m dgnam.spectrum --data ~/photos --out my_spectrum.pt     # your own folder (or Parquet files)

then ``python visualize.py method=maco param.spectrum=my_spectrum.pt ...``. The file that ships,
``dgnam/priors/maco_spectrum.pt``, was written by the first command (its defaults: 3,000 photos of
``imagenet50-128``'s training shards spread over all 1,000 classes, 128 px).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import Tensor

from dgnam.cli import one_line_errors
from dgnam.core.params.maco import SPECTRUM_KEY, decorrelate
from dgnam.errors import DgnamValueError
from dgnam.io import save_torch
from dgnam.paths import PRIORS_DIR, shared_dir

DEFAULT_OUT = PRIORS_DIR / "maco_spectrum.pt"


def default_data() -> str:
    """The shared photos' training shards."""
    return str(Path(shared_dir()) / "data" / "imagenet50-128" / "train-*.parquet")


def mean_spectrum(images: Tensor | list[Tensor]) -> Tensor:
    """Images (N, 3, S, S) in [0, 1] -> the mean amplitude spectrum (3, S, S // 2 + 1) of their
    decorrelated colours (each image's mean removed first, so the constant term measures nothing)."""
    total: Tensor | None = None
    n = 0
    for batch in ([images] if isinstance(images, Tensor) else images):
        x = decorrelate(batch.float())
        x = x - x.mean((-2, -1), keepdim=True)
        mag = torch.fft.rfft2(x).abs().sum(0)
        total = mag if total is None else total + mag
        n += batch.shape[0]
    if total is None or n == 0:
        raise DgnamValueError("no images to build a spectrum from")
    return total / n


def build_spectrum(data: str, size: int = 128, limit: int | None = 3000, batch: int = 250) -> dict:
    """The spectrum of the photos under ``data`` (a folder of images, or Parquet files), centre squares
    resized to ``size``: ``{"magnitude": (3, size, size // 2 + 1), "size", "images", "source"}``."""
    from torch.utils.data import DataLoader

    from dgnam.generator.data import ImageDataset, collate, open_source

    if size < 8:
        raise DgnamValueError(f"--size={size} must be an integer >= 8")
    if limit is not None and limit < 1:
        raise DgnamValueError(f"--limit={limit} must be an integer >= 1")
    dataset = ImageDataset(open_source(data, limit=limit), resolution=size, train=False)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collate)
    count = [0]

    def images():
        for b in loader:
            if len(b["image"]):
                count[0] += len(b["image"])
                yield b["image"]

    magnitude = mean_spectrum(images()) if len(dataset) else None
    if magnitude is None or not count[0]:
        raise DgnamValueError(f"no readable images under {data}")
    shared = str(Path(shared_dir())) + os.sep
    source = "${shared}/" + str(data)[len(shared):] if str(data).startswith(shared) else str(data)
    return {SPECTRUM_KEY: magnitude.to(torch.float32), "size": size, "images": count[0], "source": source}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dgnam.spectrum", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="a folder of images or Parquet files (default: the shared "
                    "imagenet50-128 training shards)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"output file (default: {DEFAULT_OUT})")
    ap.add_argument("--size", type=int, default=128, help="square side the photos are resized to")
    ap.add_argument("--limit", type=int, default=3000, help="at most this many photos, spread over all")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    one_line_errors(_run)(a.data or default_data(), a.out, a.size, a.limit)


def _run(data: str, out: str, size: int, limit: int) -> None:
    res = build_spectrum(data, size, limit)
    save_torch(res, os.path.expanduser(out))
    print(f"wrote {out}: the mean spectrum of {res['images']} photos at {size} px")


if __name__ == "__main__":
    main()
