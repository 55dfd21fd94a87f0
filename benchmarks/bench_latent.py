"""Training throughput of the latent prior G(h) = Dec(H(h)), images per second for each loss term.

    python benchmarks/bench_latent.py                     # CPU, 2 threads, the CPU preset's head
    python benchmarks/bench_latent.py --device cuda --fc 2048 --width 1.0   # the GPU preset's head

Cases (a batch of ``--batch`` cached codes, latents and comparator features, 128 px):

- ``latent``: H forward and backward with the latent regression, Adam (what every item costs);
- ``adversarial``: one D step on latents (real and fake, D sees the code) and the G-side
  adversarial term through D, on top of ``latent``;
- ``feature``: the decode Dec(H(h)) and the comparator (features.13.add) on it, forward and
  backward, on every item: the term the CPU preset runs on only ``feature_items`` items per step.

The TAEF2 decoder has its shared weights when found (speed does not depend on them). Each case runs
``--warmup`` steps, then the median of ``--rounds`` timings of ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from dgnam.generator import Comparator, Discriminator
from dgnam.generator.latent import LatentGenerator, head_spec
from dgnam.generator.losses import discriminator_losses, euclidean, feature_loss, generator_adversarial_loss
from dgnam.generator.taef2 import TAEF2Decoder
from dgnam.models import build_target, pick_device

SHARED = Path(os.environ.get("DGNAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "models" / "mobilenet_v2_imagenet.pth"
DECODER = SHARED / "models" / "taef2_decoder.pth"
LATENT_D = {"convs": [[128, 3, 1], [256, 3, 2], [256, 3, 2]], "image_fc": [256], "code_fc": [1024, 512],
            "joint_fc": [512], "dropout": 0.5, "slope": 0.3, "in_channels": 32}


def make_step(case: str, target, args, device: torch.device):
    dec = TAEF2Decoder(str(DECODER) if DECODER.is_file() else None)
    g = LatentGenerator(1280, head_spec(resolution=128, fc=[args.fc], width=args.width), dec).to(device)
    comp = Comparator(target, "features.13.add", input_size=128)
    d = Discriminator(1280, LATENT_D).to(device) if case == "adversarial" else None
    opt_g = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], 2e-4)
    opt_d = torch.optim.Adam(d.parameters(), 2e-4) if d is not None else None
    b = args.batch
    h = torch.rand(b, 1280, device=device)
    z = torch.randn(b, 32, 16, 16, device=device)
    with torch.no_grad():
        f = comp(torch.rand(b, 3, 128, 128, device=device))

    def step() -> None:
        zf = g.latent(h)
        loss = euclidean(zf, z)
        if d is not None:
            d.requires_grad_(True)
            lr_, lf_ = discriminator_losses(d(z, h), d(zf.detach(), h))
            opt_d.zero_grad(set_to_none=True)
            (lr_ + lf_).backward()
            opt_d.step()
            d.requires_grad_(False)
            loss = loss + 100 * generator_adversarial_loss(d(zf, h))
        if case == "feature":
            loss = loss + 0.02 * feature_loss(comp(g.decoder(zf)), f)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fc", type=int, default=1024)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["latent", "adversarial", "feature"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    wf = str(WEIGHTS) if WEIGHTS.is_file() else None
    target = build_target("mobilenet_v2", weights_file=wf, mean=(0.5,) * 3, std=(0.5,) * 3, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch}, "
          f"head fc {a.fc} width {a.width}")
    print("| case | images/s | s per step |")
    print("|---|---|---|")
    for case in a.cases:
        step = make_step(case, target, a, device)
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
        secs = statistics.median(times) / a.steps
        print(f"| {case} | {a.batch / secs:.1f} | {secs:.3f} |", flush=True)


if __name__ == "__main__":
    main()
