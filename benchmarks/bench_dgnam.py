"""Seconds per image of DGN-AM against Lucid, fp32 and bf16, batch 1 and 20, with the judge's verdict.

    python benchmarks/bench_dgnam.py                         # timing: lucid and dgnam_deep, fp32 and bf16, batch 1 and 20
    python benchmarks/bench_dgnam.py --judge                 # + one full run per method and precision, judged
    python benchmarks/bench_dgnam.py --judge --precisions fp32 --units 1 130 323 417   # a subset, said so
    python benchmarks/bench_dgnam.py --methods lucid dgnam_deep --device cuda --batches 1 20 256

Every setting is composed as ``python visualize.py experiment=compare method=<m> precision=<p>`` composes
it (the shared MobileNetV2, 224 px, the comparison's 20 classes), so each method runs with its own
default step count, schedule and early stop. Timing: ``--steps`` steps after one warm-up step, per
method, precision and batch; seconds per image = seconds per step x the method's steps / batch (the
steps an early stop actually ran, when ``--judge`` measured them). ``--judge``: one full run of the
units per method and precision at the largest batch; its images (quantized to 8 bits, as the PNGs)
go to the independent judge of the comparison (MobileNetV1 0.5/160, never part of an objective),
and the table gives its top-1 and mean probability of the intended class, with the run's own seconds
per image.
"""

from __future__ import annotations

import argparse
import logging
import platform

import torch

from dgnam.api_views import compose_config
from dgnam.core.images import to_uint8
from dgnam.core.models import pick_device
from dgnam.core.precision import native_bf16
from dgnam.views.am import compute_am

COMPARE = [1, 22, 107, 130, 145, 207, 291, 323, 340, 388, 417, 483, 574, 609, 779, 850, 920, 950, 963, 980]


def config(method: str, precision: str, units: list[int], batch: int, device: str, extra: list[str]):
    return compose_config(["experiment=compare", f"method={method}", f"precision={precision}",
                           f"units=[{','.join(map(str, units))}]", f"batch_size={batch}", f"device={device}",
                           "output.progress=false", *extra])


def step_seconds(method: str, precision: str, batch: int, steps: int, device: str, extra: list[str]) -> float:
    units = (COMPARE * (batch // len(COMPARE) + 1))[:batch]
    over = [*extra, f"steps={steps}", "early_stop.patience=0"]
    run = compute_am(config(method, precision, units, batch, device, over))
    return run.rows[0]["batch_seconds"] / run.rows[0]["steps"]


def judged(method: str, precision: str, units: list[int], batch: int, device: str, extra: list[str]) -> dict:
    from dgnam.eval.judges import load_judge

    cfg = config(method, precision, units, batch, device, extra)
    run = compute_am(cfg)
    judge = load_judge(dict(cfg.report.judges[0]))
    images = torch.cat(list(run.images.values()))
    probs = judge(to_uint8(images).float() / 255).softmax(-1)
    idx = torch.tensor(units)
    top1 = (probs.argmax(-1) == idx).float()
    secs = sum(r["seconds"] for r in run.rows) / len(run.rows)
    return {"top1": float(top1.mean()), "hits": int(top1.sum()), "p": float(probs[torch.arange(len(units)), idx].mean()),
            "steps": sum(r["steps"] for r in run.rows) / len(run.rows), "seconds": secs, "judge": judge.name,
            "config_steps": int(cfg.steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["lucid", "dgnam_deep"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["auto", "fp32", "bf16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 20])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--judge", action="store_true", help="also a full judged run per method and precision")
    ap.add_argument("--judge-precisions", nargs="+", default=None, help="judge only these precisions (default: all)")
    ap.add_argument("--units", nargs="+", type=int, default=COMPARE, help="classes of the judged runs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = ap.parse_args()
    logging.getLogger("dgnam").setLevel(logging.ERROR)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    subset = "the comparison's 20 classes" if sorted(args.units) == sorted(COMPARE) else f"classes {args.units}"
    print(f"# DGN-AM against Lucid on the shared MobileNetV2: {device} ({name}), native bf16: {native_bf16(device)}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; timing {args.steps} steps after a warm-up; "
          f"judge on {subset}")
    print("| method | precision | batch | s per step | steps per image | s per image | judge top-1 | judge p |")
    print("|---|---|---|---|---|---|---|---|")
    dev = str(device)
    for method in args.methods:
        for precision in args.precisions:
            j = judged(method, precision, args.units, min(max(args.batches), len(args.units)), dev,
                       args.overrides) if args.judge and precision in (args.judge_precisions or [precision]) else None
            steps = j["steps"] if j else int(config(method, precision, [1], 1, dev, args.overrides).steps)
            for batch in args.batches:
                step_seconds(method, precision, batch, 1, dev, args.overrides)  # warm-up
                s = step_seconds(method, precision, batch, args.steps, dev, args.overrides)
                verdict = (f"{j['hits']}/{len(args.units)} ({100 * j['top1']:.0f} %) | {j['p']:.3f}" if j else "- | -")
                print(f"| {method} | {precision} | {batch} | {s:.3f} | {steps:.0f} | {s * steps / batch:.2f} | {verdict} |",
                      flush=True)
            if j:
                print(f"| {method} | {precision} | judged run, batch {min(max(args.batches), len(args.units))} | | "
                      f"{j['steps']:.0f} | {j['seconds']:.2f} (measured) | | |", flush=True)


if __name__ == "__main__":
    main()
