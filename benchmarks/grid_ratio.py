"""The spectral grid ratio (dgnam.eval.stats.grid_ratio) of run directories and of real photos.

    python benchmarks/grid_ratio.py outputs/2026-12-05/run1 outputs/...   # every PNG under each folder
    python benchmarks/grid_ratio.py --photos 1000                        # shared validation photos, 128 px

Prints, per source, the number of images and the median, 10th and 90th percentiles of the ratio
(photos score about 1; an 8-px grid raises it). Images are measured at the size they were made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dgnam.eval.stats import grid_ratio  # noqa: E402
from dgnam.io import load_image  # noqa: E402


def summary(name: str, r: torch.Tensor) -> str:
    r = r[r.isfinite()]
    return (f"| {name} | {r.numel()} | {r.median():.3f} | {r.quantile(0.1):.3f} | {r.quantile(0.9):.3f} "
            f"| {r.max():.3f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", help="run directories (every PNG below, grids and sheets left out)")
    ap.add_argument("--photos", type=int, default=0, help="also this many shared validation photos (128 px)")
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--period", type=int, default=8)
    a = ap.parse_args(argv)
    print("| source | images | median | p10 | p90 | max |\n|---|---|---|---|---|---|")
    if a.photos:
        from dgnam.generator.data import ImageDataset, ParquetImages

        ds = ImageDataset(ParquetImages(str(Path(a.shared) / "data/imagenet50-128/valid-*.parquet"), limit=a.photos),
                          resolution=128)
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        print(summary(f"photos (shared validation, 128 px, {a.photos})", grid_ratio(x, a.period)))
    for d in a.dirs:
        files = [p for p in sorted(Path(d).rglob("*.png")) if not p.name.startswith(("grid", "sheet", "original"))]
        if not files:
            sys.exit(f"error: no PNG under {d}")
        r = torch.cat([grid_ratio(load_image(str(p))[None], a.period) for p in files])
        print(summary(d, r))


if __name__ == "__main__":
    main()
