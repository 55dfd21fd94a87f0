"""The diversity measure of finished runs in a second feature space, beside the report's.

    python benchmarks/diversity_spaces.py runs/cmp_facets_w25/report [more report folders ...]

The report (``experiment=compare`` with ``samples=K``) measures how different a unit's K samples are
as the mean pairwise cosine distance of the shared judge's penultimate features, next to the same
number for the class's validation photos. One network's features could favour one kind of picture;
this script repeats both numbers in the pooled features (1,280-d, the input of the classifier) of
another trained network that had no part in making or choosing the images: the shared MobileNetV2
trained on iNaturalist birds (``mobilenet_v2_inat_birds.pth``, 224 px, mean = std = 0.5). Prints, per
report folder and method, the mean over units of the samples' and the photos' diversity in each
space, and the samples' share of the photos'.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prior_ceiling import compare_setup  # noqa: E402  (benchmarks/, beside this script)

from dgnam.eval.diversity import class_photos, feature_space, pairwise_cosine_distance  # noqa: E402
from dgnam.io import load_image  # noqa: E402
from dgnam.paths import shared_dir  # noqa: E402


def birds_space(path: Path):
    """Images (B, 3, H, W) in [0, 1] -> the birds network's pooled features (B, 1280)."""
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=965)
    net.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True, map_location="cpu").items()})
    net.eval()

    @torch.no_grad()
    def space(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float(), size=224, mode="bilinear", antialias=True)
        return torch.nn.functional.adaptive_avg_pool2d(net.features((x - 0.5) / 0.5), 1).flatten(1)

    return space


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report folders (with report.json) of runs with samples=K")
    args = ap.parse_args(argv)
    _, judge, photo_files = compare_setup()
    spaces = {"judge": feature_space(judge),
              "birds": birds_space(Path(shared_dir()) / "models" / "mobilenet_v2_inat_birds.pth")}
    print("| report | method | units | judge: samples | photos | share | birds: samples | photos | share |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    photo_cache: dict[int, torch.Tensor] = {}
    for rep in args.reports:
        rows = json.loads((rep / "report.json").read_text())
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            if r.get("sample") is not None and r.get("kind") == "class":
                groups.setdefault((r["method"], int(r["seed"]), int(r["unit"])), []).append(r)
        want = sorted({u for (_, _, u) in groups} - set(photo_cache))
        if want:
            photo_cache.update(class_photos(photo_files, want, 2))
        for method in sorted({m for (m, _, _) in groups}):
            keys = [k for k in groups if k[0] == method]
            images = {k: torch.stack([load_image(r["source"]) for r in groups[k]]) for k in keys}
            cells = []
            for space in spaces.values():
                s = [pairwise_cosine_distance(space(images[k])) for k in keys]
                p = [pairwise_cosine_distance(space(photo_cache[k[2]])) for k in keys]
                ms, mp = sum(s) / len(s), sum(p) / len(p)
                cells += [f"{ms:.3f}", f"{mp:.3f}", f"{100 * ms / mp:.0f} %"]
            print(f"| {rep} | {method} | {len(keys)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
