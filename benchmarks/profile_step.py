"""Where the time of one optimization step goes: DGN-AM against Lucid, part by part.

    python benchmarks/profile_step.py                                  # dgnam_deep and lucid, batch 1 and 20, fp32
    python benchmarks/profile_step.py --precisions fp32 bf16 --batches 1 20
    python benchmarks/profile_step.py --device cuda --batches 1 20 256

Each method is built from its Hydra config (``conf/method/<name>.yaml`` on ``model=mobilenet_v2_shared``),
as ``visualize.py`` builds it. For every part of the step (DGN-AM: the head H, the TAEF2 decoder, the
transforms with the resize to 224, the target; Lucid: the FFT parameterization, the transforms, the
target) it times the forward pass and the backward pass to that part's input, in isolation (best of
``--rounds``), then one whole step of the loop (``dgnam.core.loop.optimize``), and lists the operators
that took the most time in two whole steps under ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
from bench_am import _sync
from torch import Tensor

from dgnam.api_views import compose_config
from dgnam.config import build, build_priors, build_target_from_cfg, make_init
from dgnam.core import objectives as O
from dgnam.core import precision as PR
from dgnam.core import transforms as T
from dgnam.core.loop import optimize
from dgnam.core.models import pick_device

UNITS = [1, 22, 107, 130, 145, 207, 291, 323, 340, 388, 417, 483, 574, 609, 779, 850, 920, 950, 963, 980]


def timed(fn: Callable[[Tensor], Tensor], x: Tensor, rounds: int, device: torch.device) -> tuple[float, float, Tensor]:
    """Best forward and backward seconds of ``fn`` at ``x`` (backward of ``sum(fn(x))`` to ``x``)."""
    fwd, bwd, out = [], [], None
    for _ in range(rounds):
        xi = x.detach().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        out = fn(xi)
        _sync(device)
        t1 = time.perf_counter()
        out.float().sum().backward()
        _sync(device)
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
    return min(fwd), min(bwd), out.detach().float()


def build_method(method: str, precision: str, batch: int, device: torch.device, extra: list[str]):
    cfg = compose_config(["model=mobilenet_v2_shared", f"method={method}", f"precision={precision}",
                          "layers=logits", "unit=class", *extra])
    target = build_target_from_cfg(cfg, device)
    g = torch.Generator().manual_seed(0)
    size = int(cfg.image_size)
    init = make_init(cfg.init, batch, size, 0).to(device)
    param = build(cfg.param)(init=init, noise=True, generator=g).to(device)
    tfs, posts, _ = build_priors(cfg.priors, g, pixel=getattr(param, "pixel_space", False))
    if cfg.get("input_resize"):
        tfs.append(T.Resize(int(cfg.input_resize)))
    return cfg, target, param, tfs, posts + param.post_steps()


def parts(method: str, param, tfs, target, units: list[int], device: torch.device, precision: str):
    """[(name, fn, input)] for the parts of one step, each input computed by the part before."""
    logits = lambda x: target(x, ["logits"])["logits"][torch.arange(len(units)), units]  # noqa: E731
    out = []
    with torch.no_grad():
        if hasattr(param, "gen") and hasattr(param.gen, "head"):  # a latent prior: G = Dec(H(h))
            gen = param.gen
            ac = lambda f: (lambda x: _autocast(f, x, precision, device))  # noqa: E731
            z = ac(gen.latent)(param.code)
            image = ac(gen.decode)(z)
            out += [("head H (code -> latent)", ac(gen.latent), param.code.detach()),
                    ("TAEF2 decoder (latent -> 128 px)", ac(gen.decode), z)]
        else:
            image = param()
            out.append((f"parameterization ({type(param).__name__})", lambda _x: param(), param.code
                        if hasattr(param, "code") else next(param.parameters())))
        seen = tfs(image)
    out += [(f"transforms ({', '.join(type(t).__name__ for t in tfs) or 'none'})", tfs, image),
            (f"target (MobileNetV2 at {seen.shape[-1]} px)", logits, seen)]
    return out


def _autocast(fn, x, precision, device):
    with PR.autocast(precision, device):
        return fn(x).float()


def whole_step(param, target, tfs, posts, units, steps: int, device: torch.device) -> float:
    obj = O.class_logit("logits", units)
    opt = lambda ps: torch.optim.SGD(ps, lr=0.01)  # noqa: E731
    _sync(device)
    t = time.perf_counter()
    optimize(param, target, obj, steps=steps, optimizer=opt, transforms=tfs, post_steps=posts, grad_norm="l1")
    _sync(device)
    return (time.perf_counter() - t) / steps


def top_ops(param, target, tfs, posts, units, device: torch.device, n: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        whole_step(param, target, tfs, posts, units, 2, device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:n]
    return [(e.key, 100.0 * getattr(e, attr) / total) for e in ranked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["dgnam_deep", "lucid"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 20])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="whole steps timed (after one warm-up step)")
    ap.add_argument("--top", type=int, default=8, help="operators listed per profile (0: none)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-fold", action="store_true", help="keep the target's BatchNorms (no folding), to compare")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. input_resize=null")
    args = ap.parse_args()
    if args.no_fold:
        import dgnam.core.models

        dgnam.core.models.fold_batchnorm = lambda ex, channels_last=True: ex
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# one step, part by part: device {device} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, native bf16: {PR.native_bf16(device)}; best of {args.rounds}"
          f"{'; BatchNorm NOT folded' if args.no_fold else ''}")
    for method in args.methods:
        for precision in args.precisions:
            for batch in args.batches:
                units = (UNITS * (batch // len(UNITS) + 1))[:batch]
                _, target, param, tfs, posts = build_method(method, precision, batch, device,
                                                            [f"units=[{','.join(map(str, units))}]", *args.overrides])
                print(f"\n## {method}, {precision}, batch {batch}\n")
                print("| part | forward s | backward s | fwd+bwd s | share of the sum |")
                print("|---|---|---|---|---|")
                rows = [(label, *timed(fn, x, args.rounds, device)[:2]) for label, fn, x in
                        parts(method, param, tfs, target, units, device, precision)]
                total = sum(f + b for _, f, b in rows)
                for label, f, b in rows:
                    print(f"| {label} | {f:.4f} | {b:.4f} | {f + b:.4f} | {100 * (f + b) / total:.0f} % |")
                whole_step(param, target, tfs, posts, units, 1, device)  # warm-up
                step = whole_step(param, target, tfs, posts, units, args.steps, device)
                print(f"| **whole step of the loop** | | | **{step:.4f}** | {100 * step / total:.0f} % |")
                print(f"\nper unit-step: {step / batch:.4f} s ({batch / step:.1f} unit-steps/s)")
                if args.top:
                    print("\ntop operators in two whole steps (self time): " + ", ".join(
                        f"{k} {p:.0f} %" for k, p in top_ops(param, target, tfs, posts, units, device, args.top)))


if __name__ == "__main__":
    main()
