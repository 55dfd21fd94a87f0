"""Finished samples refined in the TAEF2 decoder's own latent: does more class detail cost diversity?

    python benchmarks/latent_refine.py runs/cmp_facets_w25/report [--lr 0.05] [--steps 20]

The prior's head draws the decoder's latent from the target's code and loses detail on the way (its round
trips of real photos are named far less often than the autoencoder's: benchmarks/prior_ceiling.py). This
takes a comparison report's class samples (``experiment=compare method=ppgn samples=K``), encodes each with
the TAEF2 encoder, and runs latent AM's step on them (``method=latent_am``: the class logit of the target,
the gradient divided by its mean absolute value per image, the latent clamped per channel to the range of
real latents) at a constant step size. At steps 0 (the re-encoded samples), 1, 3, 5, 10, 20, ... it prints
the judge's top-1 over every sample and the diversity measure (the judge's penultimate features, mean over
each unit's K samples), against the class's validation photos, as the report computes them. The judge
only scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prior_ceiling import compare_setup  # noqa: E402  (benchmarks/, beside this script)

from dgnam.api_views import compose_config  # noqa: E402
from dgnam.config import build_target_from_cfg  # noqa: E402
from dgnam.core import objectives as O  # noqa: E402
from dgnam.core.loop import optimize  # noqa: E402
from dgnam.core.params import LatentParam  # noqa: E402
from dgnam.eval.diversity import class_photos, feature_space, pairwise_cosine_distance  # noqa: E402
from dgnam.io import load_image  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report folder (report.json) of a run with samples=K")
    ap.add_argument("--lr", type=float, default=0.05, help="step size (method=latent_am starts at 0.25)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--save", type=Path, help="also write a PNG: each unit's samples over their refined versions")
    args = ap.parse_args(argv)
    rows = sorted((r for r in json.loads((args.report / "report.json").read_text()) if r.get("kind") == "class"),
                  key=lambda r: (int(r["unit"]), int(r["sample"])))
    units = sorted({int(r["unit"]) for r in rows})
    k = len(rows) // len(units)
    _, judge, photo_files = compare_setup()
    space = feature_space(judge)
    photos = class_photos(photo_files, units, 2)
    photo = sum(pairwise_cosine_distance(space(photos[u])) for u in units) / len(units)
    cfg = compose_config(["experiment=compare", "method=latent_am"])
    target = build_target_from_cfg(cfg, torch.device("cpu"))
    images = torch.stack([load_image(r["source"]) for r in rows])
    cls = torch.tensor([int(r["unit"]) for r in rows])
    pc = cfg.param
    param = LatentParam.from_files(images, noise=False, decoder_file=pc.decoder_file, encoder_file=pc.encoder_file,
                                   stats=pc.stats, resolution=int(pc.resolution), precision=str(cfg.precision))
    objective = O.class_logit("logits", [int(r["unit"]) for r in rows])  # item b: its own sample's class

    @torch.no_grad()
    def row(name: str, x: torch.Tensor) -> None:
        named = int((judge(x).argmax(-1) == cls).sum()) / len(rows)
        f = space(x)
        div = sum(pairwise_cosine_distance(f[i:i + k]) for i in range(0, len(rows), k)) / len(units)
        print(f"| {name} | {100 * named:.1f} % | {div:.3f} | {100 * div / photo:.0f} % |", flush=True)

    print(f"{len(units)} classes x {k} samples of {args.report}; step size {args.lr:g}; the photos' diversity {photo:.3f}\n")
    print("| | judge top-1 | diversity | share of the photos' |")
    print("| --- | ---: | ---: | ---: |")
    row("the samples", images)
    with torch.no_grad():
        x = param()
    row("re-encoded (TAEF2)", x)
    marks = sorted({m for m in (1, 3, 5, 10, 20, 40, 80, 160) if m < args.steps} | {args.steps})
    t0, done = time.time(), 0
    for mark in marks:  # the shared loop, run from one mark to the next (plain SGD keeps no state between runs)
        x = optimize(param, target, objective, mark - done, partial(torch.optim.SGD, lr=args.lr),
                     post_steps=param.post_steps(), grad_norm="l1").images
        done = mark
        row(f"{mark} latent steps", x)
    print(f"\n{time.time() - t0:.0f} s for {args.steps} steps of {len(rows)} images")
    if args.save:
        from torchvision.utils import save_image

        tiles = [t for i in range(0, len(rows), k) for t in (images[i:i + k], x[i:i + k].clamp(0, 1))]
        save_image(torch.cat(tiles), args.save, nrow=2 * k, padding=2)


if __name__ == "__main__":
    main()
