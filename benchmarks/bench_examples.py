"""Speed of the dataset-examples pass against its parts: decoding alone and the bare forward pass.

    python benchmarks/bench_examples.py                              # shared MobileNetV2, 640 shared photos
    python benchmarks/bench_examples.py --limit 2000 --workers 0 1 2 --image-size 224 128
    python benchmarks/bench_examples.py --units all                  # every unit of every layer

For each image side and worker count it prints images per second of ``run_pass`` (decoding, forward
pass of all layers at once, running top k and histograms of every chosen unit; no checkpoints, no
files) and, on the same photos, of decoding alone and of the bare forward pass of the same layers on
decoded photos, with the number of layers and units followed. Each figure is the median of
``--rounds`` rounds, interleaved, so a busy machine slows all alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from dgnam.core.models import build_target
from dgnam.paths import shared_dir
from dgnam.views.examples.engine import plan_units, run_pass
from dgnam.views.examples.source import open_examples_source

LAYERS = ["features.3.add", "features.6.add", "features.10.add", "features.13.add", "features.16.add",
          "features.17.conv.3", "logits"]
CLASSES = [1, 22, 107, 130, 145, 207, 291, 323, 340, 388, 417, 483, 574, 609, 779, 850, 920, 950, 963, 980]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=f"{shared_dir()}/data/imagenet50-128")
    ap.add_argument("--limit", type=int, default=640, help="photos, spread over the data")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, nargs="+", default=[224])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--units", default="first:24", help="units of every layer but the logits (20 classes)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    target = build_target("mobilenet_v2", weights_file=f"{shared_dir()}/models/mobilenet_v2_imagenet.pth",
                          mean=[0.5] * 3, std=[0.5] * 3, device=args.device)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {args.device}, batch {args.batch}, {args.limit} photos")
    for size in args.image_size:
        source = open_examples_source(args.data, size, args.limit)
        plans = plan_units(target, LAYERS, args.units, CLASSES, size)
        units = sum(len(p.units) for p in plans)
        images = torch.stack([source.item(i)[0] for i in range(len(source))])
        times: dict[str, list[float]] = {}

        def clock(name: str, fn) -> None:
            t = time.perf_counter()
            fn()
            times.setdefault(name, []).append(len(source) / (time.perf_counter() - t))

        def forward() -> None:
            with torch.no_grad():
                for a in range(0, len(images), args.batch):
                    target(images[a : a + args.batch].to(target.mean.device), LAYERS)

        for _ in range(args.rounds):
            clock("decode only", lambda: [source.item(i) for i in range(len(source))])
            clock("forward only", forward)
            for w in args.workers:
                clock(f"pass, {w} workers", lambda w=w: run_pass(target, source, plans, 9, batch_size=args.batch,
                                                                 workers=w, progress=False))
        print(f"\n{size} px: {len(plans)} layers, {units} units")
        for name, rates in times.items():
            print(f"  {name:<20} {statistics.median(rates):8.1f} images/s")


if __name__ == "__main__":
    main()
