"""dgnam against a peer, Lucent 0.1.8, on the same recipe (Lucid's: FFT image with decorrelated
colour, pad 12 / jitter 8 / scale / rotate / jitter 4, Adam 0.05), the same frozen network and the
same class logits, 224 px.

    bash benchmarks/lucent_env.sh                                   # once: Lucent in its own venv
    work_cache/lucent-venv/bin/python benchmarks/bench_lucent.py    # alexnet, vgg16, mobilenet_v2; batch 1 and 8

Lucent runs in its own virtual environment (it pins kornia<=0.4.1); that environment reuses .venv's
torch and torchvision, so both libraries run the same torch build, in one process, on the same model
object. Each round times ``--steps`` steps of each library, interleaved, and the table gives the
median seconds per step and the ratio (Lucent / dgnam: above 1, dgnam is faster). Random weights:
the speed does not depend on them. dgnam runs at ``precision`` (``auto``: bf16 where the hardware
computes it natively, else fp32; Lucent has no precision setting and runs fp32).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchvision


def lucent_seconds(model: torch.nn.Module, layer: str, units: list[int], steps: int) -> float:
    from lucent.optvis import objectives, param, render

    obj = sum((objectives.channel(layer, u, batch=i) for i, u in enumerate(units[1:], 1)),
              objectives.channel(layer, units[0], batch=0))
    t = time.perf_counter()
    render.render_vis(model, obj, lambda: param.image(224, batch=len(units)), thresholds=(steps,),
                      show_image=False, progress=False, preprocess=True)
    return (time.perf_counter() - t) / steps


def dgnam_seconds(arch: str, units: list[int], steps: int, precision: str) -> float:
    from dgnam.api_views import compose_config
    from dgnam.views.am import compute_am

    cfg = compose_config(["model=torchvision", f"model.arch={arch}", "model.weights=null", "method=lucid",
                          "layers=logits", "unit=class", f"units=[{','.join(map(str, units))}]",
                          f"batch_size={len(units)}", f"steps={steps}", "image_size=224", f"precision={precision}",
                          "output.progress=false", "device=cpu"])
    run = compute_am(cfg)
    return run.rows[0]["batch_seconds"] / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["alexnet", "vgg16", "mobilenet_v2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = ap.parse_args()
    import logging

    logging.getLogger("dgnam").setLevel(logging.ERROR)  # the random-weights banner, once per build
    from dgnam.core.precision import resolve

    print(f"# dgnam (precision {args.precision} -> {resolve(args.precision, 'cpu')}) against Lucent 0.1.8 (fp32): "
          f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.steps} steps x {args.rounds} rounds, interleaved, medians")
    print("| model | batch | Lucent s/step | dgnam s/step | Lucent / dgnam |")
    print("|---|---|---|---|---|")
    for arch in args.models:
        model = torchvision.models.get_model(arch, weights=None).eval().requires_grad_(False)
        layer = "classifier_1" if arch == "mobilenet_v2" else "classifier_6"  # Lucent's name of the logits
        for b in args.batches:
            units = [1, 130, 323, 417, 950, 963, 980, 22][:b] if b <= 8 else list(range(b))
            lucent_seconds(model, layer, units, 1)  # warm-up of both
            dgnam_seconds(arch, units, 1, args.precision)
            lu, dg = [], []
            for _ in range(args.rounds):
                lu.append(lucent_seconds(model, layer, units, args.steps))
                dg.append(dgnam_seconds(arch, units, args.steps, args.precision))
            lm, dm = statistics.median(lu), statistics.median(dg)
            print(f"| {arch} | {b} | {lm:.3f} | {dm:.3f} | {lm / dm:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
