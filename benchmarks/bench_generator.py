"""Training throughput of the generator prior (images per second), for the presets' configurations.

    python benchmarks/bench_generator.py                 # CPU, 2 threads
    python benchmarks/bench_generator.py --device cuda   # bf16 autocast and channels_last, as in training

Cases (batch ``--batch``, the shared MobileNetV2 if found, else the same network with random
weights, which costs the same):

- ``cpu-preset cached``: the CPU preset's step: G (64 px, fc 1024, channels x 0.375) forward and
  backward, the comparator (features.13.add) on G's output, Adam; codes and C(x) come from the cache.
- ``cpu-preset online``: the same with E and C run on the real images in every step (no cache).
- ``recipe 128 px``: the GPU preset's step: G (fc 2048, recipe widths, 128 px) and the discriminator,
  one D step and one G step with image, feature and adversarial terms, E run on every batch.

Each case runs ``--warmup`` steps, then the median of ``--rounds`` timings of ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dgnam.generator import Comparator, Discriminator, Encoder, Generator, generator_spec
from dgnam.generator.losses import discriminator_losses, feature_loss, generator_adversarial_loss, image_loss
from dgnam.models import build_target, pick_device

SHARED = Path(os.environ.get("DGNAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "models" / "mobilenet_v2_imagenet.pth"


def make_step(case: str, target, batch: int, device: torch.device):
    res = 64 if case.startswith("cpu") else 128
    spec = generator_spec(resolution=res, fc=[1024, 1024] if res == 64 else [2048, 2048],
                          width=0.375 if res == 64 else 1.0)
    enc = Encoder(target, "flatten", input_size=128)
    comp = Comparator(target, "features.13.add", input_size=res)
    g = Generator(1280, spec).to(device)
    d = Discriminator(1280).to(device) if case.startswith("recipe") else None
    cl = device.type == "cuda"
    if cl:
        g = g.to(memory_format=torch.channels_last)
        d = d.to(memory_format=torch.channels_last) if d is not None else None
    opt_g = torch.optim.Adam(g.parameters(), 2e-4)
    opt_d = torch.optim.Adam(d.parameters(), 2e-4) if d is not None else None
    photos = torch.rand(batch, 3, 128, 128, device=device)
    x = torch.nn.functional.interpolate(photos, size=res, mode="bilinear", antialias=True)
    with torch.no_grad():
        h_cached, f_cached = enc(photos), comp(x)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        with amp:
            if case == "cpu-preset cached":
                h, f = h_cached, f_cached
            else:
                with torch.no_grad():
                    h, f = enc(photos), comp(x)
            r = g(h)
            if d is not None:
                d.requires_grad_(True)
                lr_, lf_ = discriminator_losses(d(x, h), d(r.detach(), h))
                opt_d.zero_grad(set_to_none=True)
                (lr_ + lf_).backward()
                opt_d.step()
                d.requires_grad_(False)
            loss = 0.13 * image_loss(r, x) + 0.005 * feature_loss(comp(r), f)
            if d is not None:
                loss = loss + 100 * generator_adversarial_loss(d(r, h))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["cpu-preset cached", "cpu-preset online", "recipe 128 px"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    wf = str(WEIGHTS) if WEIGHTS.is_file() else None
    target = build_target("mobilenet_v2", weights_file=wf, mean=(0.5,) * 3, std=(0.5,) * 3, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch}")
    for case in a.cases:
        step = make_step(case, target, a.batch, device)
        for _ in range(a.warmup):
            step()
        times = []
        for _ in range(a.rounds):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        ips = a.batch * a.steps / statistics.median(times)
        print(f"{case:20s} {ips:8.1f} images/s (median of {a.rounds} x {a.steps} steps)")


if __name__ == "__main__":
    main()
