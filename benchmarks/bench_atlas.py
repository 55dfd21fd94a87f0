"""Units per minute of the atlas (experiment=atlas) on this machine, on a small config.

    python benchmarks/bench_atlas.py                          # shared MobileNetV2: 2 layers x 4 units, lucid
    python benchmarks/bench_atlas.py --units 8 --steps 48 --methods lucid dgnam_deep
    python benchmarks/bench_atlas.py --device cuda --units 32 --steps 256 --size 224

It builds an atlas into a temporary folder (the same code path as ``visualize.py experiment=atlas``:
dataset examples over ``--photos`` photos, each method on every unit, the site) and prints the
seconds of each part from the log, units per minute of the whole build, and the seconds of a second
build into the same folder (which computes nothing and rebuilds the site). On a busy machine the
numbers are pessimistic: say how busy it was (the load average is printed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", nargs="+", default=["features.6.add", "logits"])
    ap.add_argument("--units", type=int, default=4, help="units per layer (the logits: the first classes of experiment=compare)")
    ap.add_argument("--methods", nargs="+", default=["lucid"])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--size", type=int, default=128, help="side of the optimized images")
    ap.add_argument("--photos", type=int, default=200, help="photos streamed for the dataset examples (0: none)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import visualize
    from dgnam.api_views import compose_config

    classes = [1, 22, 107, 130, 145, 207, 291, 323, 340, 388, 417, 483, 574, 609, 779, 850, 920, 950, 963, 980]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    out = Path(tempfile.mkdtemp(prefix="bench_atlas_"))
    ov = ["experiment=atlas", f"layers=[{','.join(args.layers)}]", f"units=first:{args.units}",
          f"atlas.units={{logits: [{','.join(map(str, classes[: args.units]))}]}}",
          f"atlas.methods=[{','.join(args.methods)}]", f"steps={args.steps}", f"image_size={args.size}",
          f"batch_size={args.units}", f"device={args.device}",
          f"atlas.examples.limit={args.photos}" if args.photos else "atlas.examples.data=null"]
    cfg = compose_config(ov)
    n = sum(args.units for _ in args.layers)
    t0 = time.perf_counter()
    visualize.run(cfg, str(out))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    visualize.run(cfg, str(out))
    again = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{n} units ({len(args.layers)} layers x {args.units}), methods {' '.join(args.methods)}, {args.steps} steps "
          f"at {args.size} px, examples over {args.photos} photos, device {args.device}, load average {load:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"first build: {first:.0f} s = {n / first * 60:.2f} units/minute")
    print(f"second build (nothing to compute, site rebuilt): {again:.1f} s")
    print(f"site: {out / 'index.html'}")


if __name__ == "__main__":
    main()
