"""Speed of DGN-AM: unit-steps per second through a generator prior, at several batch sizes.

    python benchmarks/bench_dgnam.py --batches 1 20                   # the default (latent) prior
    python benchmarks/bench_dgnam.py --prior my_prior.pt --device cuda --batches 1 32 128

Each step is the recipe's: G(h) -> resize to the target's input -> class logit -> normalized
gradient step on h -> decay and clamp. The target is an ImageNet MobileNetV2 (random weights unless
--weights-file is given: speed does not depend on them). Timings are medians of repeated rounds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.models import build_target, pick_device
from dgnam.core.params import GeneratorParam
from dgnam.core.transforms import Resize
from dgnam.paths import PRIORS_DIR


def run(target, prior: str, batch: int, steps: int, device: torch.device) -> float:
    param = GeneratorParam.from_prior(torch.zeros(batch, 3, 8, 8), noise=True, prior=prior).to(device)
    obj = O.class_logit("logits", list(range(batch)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    optimize(param, target, obj, steps=steps, optimizer=functools.partial(torch.optim.SGD, lr=8.0),
             transforms=Resize(target.input_size), post_steps=param.post_steps(), grad_norm="l1")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default=str(PRIORS_DIR / "mobilenet_v2_latent_g128.pt"))
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--weights-file", default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    target = build_target(args.arch, weights_file=args.weights_file, input_size=224, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# DGN-AM, prior {args.prior}, target {args.arch} at 224 px, device {device} ({name}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} steps x {args.rounds} rounds")
    print("| batch | unit-steps/s | s per step | batch gain |")
    print("|---|---|---|---|")
    run(target, args.prior, 1, 1, device)  # warm-up
    base = None
    for b in args.batches:
        secs = statistics.median(run(target, args.prior, b, args.steps, device) for _ in range(args.rounds))
        rate = b * args.steps / secs
        base = base or rate
        print(f"| {b} | {rate:.2f} | {secs / args.steps:.3f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
