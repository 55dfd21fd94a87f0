"""Speed of the activation-maximization loop against a bare forward + backward pass.

    python benchmarks/bench_am.py                       # VGG16 and AlexNet, 224 px, batch 1 and 8
    python benchmarks/bench_am.py --models alexnet --batches 1 8 32 --device cuda
    python benchmarks/bench_am.py --compile              # the loop with model.compile=true against eager

For each model and batch size it prints unit-steps per second of ``dgnam.core.loop.optimize`` (class
logits, pixel parameterization, Adam, no priors) and of the bare pass it is made of
(``model(normalize(x))[:, units].sum().backward()`` on the input only, weights frozen), the loop's
overhead over the bare pass, and the batching gain over batch 1. Timings interleave the two and take
the median of repeated rounds, so a noisy machine affects both alike.

With ``--compile`` it compares the loop on the same model eager and through ``torch.compile``
(``model.compile=true``), interleaved the same way, with the seconds the first compiled call took.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import torch
import torchvision

from dgnam.core import objectives as O
from dgnam.core.loop import optimize
from dgnam.core.models import Target, pick_device
from dgnam.core.params import PixelParam, noise_init


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_steps(model: torch.nn.Module, target: Target, batch: int, size: int, steps: int,
               device: torch.device) -> float:
    """Seconds for ``steps`` bare forward+backward passes (input gradient only)."""
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    fmt = torch.channels_last if target.channels_last else torch.contiguous_format
    idx = torch.arange(batch, device=device)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        x.grad = None
        out = model(target.normalize(x).contiguous(memory_format=fmt))
        out[idx, idx].sum().backward()
    _sync(device)
    return time.perf_counter() - t


def loop_steps(target: Target, batch: int, size: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps of the dgnam loop on ``batch`` class units."""
    param = PixelParam(noise_init(batch, (size, size))).to(device)
    obj = O.class_logit("logits", list(range(batch)))
    _sync(device)
    t = time.perf_counter()
    optimize(param, target, obj, steps=steps, optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    _sync(device)
    return time.perf_counter() - t


def compare_compile(args: argparse.Namespace, device: torch.device) -> None:
    print("| model | batch | eager unit-steps/s | compiled unit-steps/s | compiled / eager | first compiled call (s) |")
    print("|---|---|---|---|---|---|")
    for arch in args.models:
        model = torchvision.models.get_model(arch, weights=None)
        kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name=arch, channels_last=not args.contiguous)
        eager, compiled = Target(model, **kw).to(device), Target(model, compile=True, **kw).to(device)
        loop_steps(eager, 1, args.size, 1, device)
        for b in args.batches:
            first = loop_steps(compiled, b, args.size, 1, device)  # compiles for this batch size
            loop_steps(compiled, b, args.size, 1, device)
            e, c = [], []
            for _ in range(args.rounds):
                e.append(loop_steps(eager, b, args.size, args.steps, device))
                c.append(loop_steps(compiled, b, args.size, args.steps, device))
            er, cr = b * args.steps / statistics.median(e), b * args.steps / statistics.median(c)
            print(f"| {arch} | {b} | {er:.2f} | {cr:.2f} | {cr / er:.2f}x | {first:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vgg16", "alexnet"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last")
    ap.add_argument("--compile", action="store_true", help="eager against torch.compile (model.compile=true)")
    args = ap.parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"size {args.size}, {'NCHW' if args.contiguous else 'channels_last'}, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    if args.compile:
        return compare_compile(args, device)
    print("| model | batch | loop unit-steps/s | bare unit-steps/s | loop overhead | batch gain (loop) |")
    print("|---|---|---|---|---|---|")
    for arch in args.models:
        model = torchvision.models.get_model(arch, weights=None)
        target = Target(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), name=arch,
                        channels_last=not args.contiguous).to(device)
        loop_steps(target, 1, args.size, 1, device)  # warm-up (graph tracing, allocator)
        bare_steps(target.model, target, 1, args.size, 1, device)
        base = None
        for b in args.batches:
            loops, bares = [], []
            for _ in range(args.rounds):
                loops.append(loop_steps(target, b, args.size, args.steps, device))
                bares.append(bare_steps(target.model, target, b, args.size, args.steps, device))
            loop_rate = b * args.steps / statistics.median(loops)
            bare_rate = b * args.steps / statistics.median(bares)
            base = base or loop_rate
            overhead = bare_rate / loop_rate - 1
            print(f"| {arch} | {b} | {loop_rate:.2f} | {bare_rate:.2f} | {overhead * 100:+.1f}% | "
                  f"{loop_rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
