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

The latent prior G(h) = Dec(H(h)) at 128 px (head ``--latent-fc`` / ``--latent-width``: the CPU
preset's by default), one case per loss term, from cached codes, latents and features:

- ``latent``: H forward and backward with the latent regression, Adam (what every item costs);
- ``latent adversarial``: one D step on latents (D sees the code) and the adversarial term through
  D, on top of ``latent``;
- ``latent feature``: the decode Dec(H(h)) and the comparator (features.13.add) on it, forward and
  backward, on every item (the CPU preset runs it on ``loss.feature_items`` items per step).

The spatial latent prior (``experiment_train=mobilenet_v2_latent_spatial_cpu``: the 576 x 8 x 8 code of
``features.14.conv.0``, a 1 x 1 conv head), one case per loss term as above:

- ``spatial latent``: H with the latent regression;
- ``spatial adversarial``: plus a D step on latents (D sees the 36,864-d code through a 256-unit fc)
  and the adversarial term;
- ``spatial image``: plus the pixel term through the decoder on every item (the preset runs it on
  8 items every 2nd step).
- ``spatial perceptual``: the fine-tune of ``experiment_train=mobilenet_v2_latent_spatial_perceptual_cpu``:
  the latent regression, the pixel term and the perceptual term (four layers of MobileNetV2 on the
  decoded image, the photo's features computed in the step) on every item, no D.

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

from dgnam.core.models import build_target, pick_device
from dgnam.generator import Comparator, Discriminator, Encoder, Generator, generator_spec
from dgnam.generator.encoder import Perceptual
from dgnam.generator.latent import LATENT_HEAD, LatentGenerator, head_spec
from dgnam.generator.losses import (
    discriminator_losses,
    euclidean,
    feature_loss,
    generator_adversarial_loss,
    image_loss,
)
from dgnam.generator.taef2 import TAEF2Decoder

SHARED = Path(os.environ.get("DGNAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "models" / "mobilenet_v2_imagenet.pth"
DECODER = SHARED / "models" / "taef2_decoder.pth"
LATENT_D = {"convs": [[128, 3, 1], [256, 3, 2], [256, 3, 2]], "image_fc": [256], "code_fc": [1024, 512],
            "joint_fc": [512], "dropout": 0.5, "slope": 0.3, "in_channels": 32}


def d_step(d, opt_d, real, fake, h) -> None:
    """One D update on real and (detached) fake inputs; D's weights are frozen again after it."""
    d.requires_grad_(True)
    lr_, lf_ = discriminator_losses(d(real, h), d(fake.detach(), h))
    opt_d.zero_grad(set_to_none=True)
    (lr_ + lf_).backward()
    opt_d.step()
    d.requires_grad_(False)


def latent_step(g, d, opt_g, opt_d, h, z, adversarial: float, decoded=None):
    """One training step of a latent head: the latent regression, with ``d`` a D step and the
    adversarial term (weight ``adversarial``), with ``decoded`` a term on Dec(H(h))."""

    def step() -> None:
        zf = g.latent(h)
        loss = euclidean(zf, z)
        if d is not None:
            d_step(d, opt_d, z, zf, h)
            loss = loss + adversarial * generator_adversarial_loss(d(zf, h))
        if decoded is not None:
            loss = loss + decoded(g.decoder(zf))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return step


def make_latent_step(case: str, target, batch: int, device: torch.device, fc: int, width: float):
    dec = TAEF2Decoder(str(DECODER) if DECODER.is_file() else None)
    g = LatentGenerator(1280, head_spec(resolution=128, fc=[fc], width=width), dec).to(device)
    comp = Comparator(target, "features.13.add", input_size=128)
    d = Discriminator(1280, LATENT_D).to(device) if case == "latent adversarial" else None
    opt_g = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], 2e-4)
    opt_d = torch.optim.Adam(d.parameters(), 2e-4) if d is not None else None
    h = torch.rand(batch, 1280, device=device)
    z = torch.randn(batch, 32, 16, 16, device=device)
    with torch.no_grad():
        f = comp(torch.rand(batch, 3, 128, 128, device=device))

    decoded = (lambda img: 0.02 * feature_loss(comp(img), f)) if case == "latent feature" else None
    return latent_step(g, d, opt_g, opt_d, h, z, 100, decoded)


PERCEPTUAL_LAYERS = [["features.3.add", 1.0], ["features.6.add", 1.0], ["features.10.add", 1.0],
                     ["features.14.conv.0", 1.0]]  # the perceptual preset's


def make_spatial_step(case: str, target, batch: int, device: torch.device):
    shape = (576, 8, 8)
    d_code = shape[0] * shape[1] * shape[2]
    dec = TAEF2Decoder(str(DECODER) if DECODER.is_file() else None)
    spec = head_spec({**LATENT_HEAD, "start_channels": 256, "stack": [["conv", 256], ["up", 128], ["conv", 128]]},
                     resolution=128, code_shape=shape)
    g = LatentGenerator(d_code, spec, dec).to(device)
    with_d = case in ("spatial adversarial", "spatial image")
    d = Discriminator(d_code, {**LATENT_D, "code_fc": [256]}).to(device) if with_d else None
    opt_g = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], 1e-3)
    opt_d = torch.optim.Adam(d.parameters(), 2e-4) if d is not None else None
    h = torch.rand(batch, d_code, device=device)
    z = torch.randn(batch, 32, 16, 16, device=device)
    x = torch.rand(batch, 3, 128, 128, device=device)

    decoded = (lambda img: 2.0 * image_loss(img, x)) if case == "spatial image" else None
    if case == "spatial perceptual":
        perc = Perceptual(target, PERCEPTUAL_LAYERS, input_size=128)
        decoded = lambda img: image_loss(img, x) + 1000.0 * perc(img, x)  # noqa: E731
    return latent_step(g, d, opt_g, opt_d, h, z, 50, decoded)


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
                d_step(d, opt_d, x, r, h)
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
    ap.add_argument("--cases", nargs="+", default=["cpu-preset cached", "cpu-preset online", "recipe 128 px",
                                                   "latent", "latent adversarial", "latent feature",
                                                   "spatial latent", "spatial adversarial", "spatial image",
                                                   "spatial perceptual"])
    ap.add_argument("--latent-fc", type=int, default=1024, help="the latent head's fc width")
    ap.add_argument("--latent-width", type=float, default=0.5, help="the latent head's channel multiplier")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    wf = str(WEIGHTS) if WEIGHTS.is_file() else None
    target = build_target("mobilenet_v2", weights_file=wf, mean=(0.5,) * 3, std=(0.5,) * 3, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch}")
    for case in a.cases:
        step = (make_latent_step(case, target, a.batch, device, a.latent_fc, a.latent_width)
                if case.startswith("latent") else make_spatial_step(case, target, a.batch, device)
                if case.startswith("spatial") else make_step(case, target, a.batch, device))
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
        print(f"{case:20s} {ips:8.1f} images/s (median of {a.rounds} x {a.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
