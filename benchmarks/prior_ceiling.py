"""What a generator prior can draw of real photos: the judge's top-1 and the diversity measure of a
class's validation photos, and of the same photos after a round trip through the prior, G(E(x)).

    python benchmarks/prior_ceiling.py                                  # the default prior, the 20 classes
    python benchmarks/prior_ceiling.py --prior mobilenet_v2_latent_spatial_deep_g128 --classes 9 76 99

A sampler through the prior draws its images from G's range; G(E(x)) is the prior's own rendering of
a real photo, so its numbers are what "as recognizable and as diverse as photos" can mean through
that prior. Beside the photos' diversity it gives the diversity of the photos the judge names (a
class with at least 2 of them): what "as diverse as photos" means among recognizable photos. The photos are the shared validation split's (5 per class, 128 px), judged as they
are and given to E resized to ``--size`` px, as ``init.kind=photos`` gives photos to E; the judge and the diversity measure
(the judge's penultimate features, mean over every pair of a class's images) are the comparison
report's (``conf/experiment/compare.yaml``). Prints one row per class and the means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dgnam.api_views import compose_config  # noqa: E402
from dgnam.core.params.generator import GeneratorParam  # noqa: E402
from dgnam.eval.diversity import class_photos, feature_space, pairwise_cosine_distance  # noqa: E402
from dgnam.eval.judges import Judge, load_judge  # noqa: E402


def compare_setup() -> tuple[list[int], Judge, str]:
    """The comparison report's classes, first judge and validation photos (conf/experiment/compare.yaml)."""
    cfg = compose_config(["experiment=compare"])
    return [int(u) for u in cfg.units], load_judge(cfg.report.judges[0]), str(cfg.report.photos)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default="mobilenet_v2_latent_spatial_gridfree_g128",
                    help="a shipped prior's name or a prior file (default: method=ppgn's)")
    ap.add_argument("--classes", type=int, nargs="+", help="ImageNet classes (default: the comparison's 20)")
    ap.add_argument("--size", type=int, default=224, help="side of the photos given to E (the comparison's image_size)")
    ap.add_argument("--autoencoder", action="store_true",
                    help="the round trip through the TAEF2 autoencoder alone (its encoder, not the target's code, "
                         "and no head): what the decoder keeps of a photo")
    ap.add_argument("--save", type=Path, help="also write a PNG: each class's photos over their round trips")
    args = ap.parse_args(argv)
    compare, judge, photo_files = compare_setup()
    args.classes = args.classes or compare
    photos = class_photos(photo_files, args.classes, 2)
    space = feature_space(judge)
    prior = args.prior  # a file or a shipped prior's name: GeneratorParam.from_prior resolves it
    if args.autoencoder:
        from dgnam.generator.taef2 import TAEF2Decoder, TAEF2Encoder, shared_file

        enc = TAEF2Encoder(shared_file("taef2_encoder.pth")).eval()
        dec = TAEF2Decoder(shared_file("taef2_decoder.pth")).eval()
        prior = "the TAEF2 autoencoder alone"
    side = 128 if args.autoencoder else args.size
    print(f"prior {Path(prior).stem if not args.autoencoder else prior}; judge {judge.name}; photos at {side} px\n")
    print("| class | photos | named | diversity | named ones' diversity | G(E(x)) named | G(E(x)) diversity |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tot: dict = {"n": 0, "named": 0, "rnamed": 0, "div": [], "rdiv": [], "paired": []}
    tiles: list[torch.Tensor] = []
    width = max(len(v) for v in photos.values())
    for c in args.classes:
        x = torch.nn.functional.interpolate(photos[c], size=args.size, mode="bilinear", antialias=True).clamp(0, 1)
        with torch.no_grad():
            recon = (dec(enc(photos[c])).float() if args.autoencoder
                     else GeneratorParam.from_prior(x, noise=False, prior=str(prior), precision="auto")())
        hit = judge(photos[c]).argmax(-1) == c  # the photos as the report judges them (128 px)
        named, rnamed = int(hit.sum()), int((judge(recon).argmax(-1) == c).sum())
        feats = space(photos[c])
        div, rdiv = pairwise_cosine_distance(feats), pairwise_cosine_distance(space(recon))
        ndiv = pairwise_cosine_distance(feats[hit]) if named >= 2 else None
        if ndiv is not None:
            tot["paired"].append((c, div, ndiv))
        print(f"| {c} | {len(x)} | {named} | {div:.3f} | {'-' if ndiv is None else f'{ndiv:.3f}'} | {rnamed} | {rdiv:.3f} |")
        if args.save:  # rows as wide as the class with most photos (the validation split: 5 each)
            pad = torch.zeros(width - len(x), 3, 128, 128)
            tiles += [photos[c], pad, torch.nn.functional.interpolate(recon.float().clamp(0, 1), size=128,
                                                                      mode="bilinear", antialias=True), pad]
        tot["n"] += len(x)
        tot["named"] += named
        tot["rnamed"] += rnamed
        tot["div"].append(div)
        tot["rdiv"].append(rdiv)
    n, k = tot["n"], len(args.classes)
    print(f"| all {k} | {n} | {100 * tot['named'] / n:.1f} % | {sum(tot['div']) / k:.3f} | | "
          f"{100 * tot['rnamed'] / n:.1f} % | {sum(tot['rdiv']) / k:.3f} |")
    if tot["paired"]:  # the same classes for both means: those with at least 2 photos the judge names
        m = len(tot["paired"])
        print(f"\nthe {m} classes with 2 or more photos the judge names: all their photos' diversity "
              f"{sum(p[1] for p in tot['paired']) / m:.3f}, the named ones' {sum(p[2] for p in tot['paired']) / m:.3f} "
              f"(classes {' '.join(str(p[0]) for p in tot['paired'])})")
    if args.save:
        from torchvision.utils import save_image

        args.save.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat(tiles), args.save, nrow=width, padding=2)
        print(f"wrote {args.save}: per class, a row of photos over a row of their round trips")


if __name__ == "__main__":
    main()
