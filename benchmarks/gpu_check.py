"""Everything GPU-specific in one command: the device tests, the AM benchmark, DGN-AM of all 1000
classes, generator training throughput, and a timed run of the GPU prior preset, judged.

    bash benchmarks/gpu_check.sh OUT_DIR                 # on a GPU machine: ~8 minutes
    python benchmarks/gpu_check.py --out OUT_DIR --dry-run   # on the CPU, tiny sizes, seconds (the tests run it)

Sections, in order (each within its share of ``--minutes``; a section that fails is recorded and the
next one runs):

1. ``tests``: ``pytest tests/test_cuda.py`` (CPU against CUDA on tiny nets, bf16 autocast against
   fp32, channels_last, torch.compile, generator training on CUDA); JUnit XML beside the results.
2. ``am``: unit-steps/s of the AM loop for VGG16, AlexNet and MobileNetV2 at 224 px, batch 1/32/256,
   fp32 eager, bf16 autocast, and torch.compile (benchmarks/bench_am.py's loop).
3. ``dgnam``: the default DGN-AM method on the comparison's 20 classes in fp32 and in bf16, with the
   judge's top-1 of each (benchmarks/bench_dgnam.py), then the MobileNetV2 classes (up to all 1000)
   that fit the time left at ``precision=auto``, timed, with the fraction the target ranks top-1.
4. ``train``: generator training images/s at 128 px (benchmarks/bench_generator.py's steps: the recipe's
   pixel G with D, and the latent head).
5. ``prior``: ``experiment_train=mobilenet_v2_prior_gpu`` (``--preset``) for the time left, on one
   Parquet shard of the shared ImageNet-50 (5,000 photos, 26.8 MiB; no validation shard: beside it
   only the shared MobileNetV2, TAEF2 and judge travel, 24.6 MiB), every 10th photo held out; its
   four stages (latent, perceptual, deep, grid) sized from a timed warm-up so that all are reached, each
   one's iterations and images/s; the judge's top-1 of the held-out reconstructions, and DGN-AM
   through the new prior on the comparison's 20 classes, judged (benchmarks/gpu_prior.py says how);
   its prior copied back.

Writes ``results.json`` and ``RESULTS-gpu.md`` (rewritten after every section, so a run cut short
keeps what it measured), ``cuda-tests.xml``, ``train-metrics.csv`` and the prior (in parts of at most
15 MiB when larger: ``cat prior.pt.part* > prior.pt``): at most 8 files. The Markdown is ready to be
committed as ``benchmarks/RESULTS-gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_am import loop_steps  # noqa: E402
from bench_generator import DECODER, WEIGHTS, make_latent_step, make_step  # noqa: E402

from dgnam.core.models import Target, build_target, pick_device  # noqa: E402
from dgnam.io import json_safe  # noqa: E402  (strict JSON: NaN as null)

PART = 15 * 2**20  # result files stay under 16 MiB

# full sizes, and the dry run's (CPU, seconds)
FULL = dict(models=["vgg16", "alexnet", "mobilenet_v2"], batches=[1, 32, 256], size=224, steps=3, rounds=3,
            classes=20, classes_all=1000, dgnam_steps=None, dgnam_batch=250, train_batch=64, train_steps=5)
DRY = dict(models=["alexnet", "mobilenet_v2"], batches=[1, 2], size=64, steps=1, rounds=1,
           classes=1, classes_all=2, dgnam_steps=1, dgnam_batch=2, train_batch=2, train_steps=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device: torch.device) -> str:
    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else "no GPU, "
    return (f"{gpu}{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, threads {torch.get_num_threads()}")


def tests(a: argparse.Namespace, out: Path, seconds: float, device: torch.device) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
           f"--junitxml={out / 'cuda-tests.xml'}"] + (["-k", "not compile"] if a.dry_run else [])
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(seconds, 30))
    summary = (p.stdout.strip().splitlines() or [""])[-1]
    if p.returncode:
        raise RuntimeError(f"tests failed: {summary}\n{p.stdout[-4000:]}")
    return {"rows": [{"command": " ".join(["pytest"] + cmd[3:6] + cmd[7:]), "result": summary}]}


def am(a: argparse.Namespace, out: Path, seconds: float, device: torch.device) -> dict[str, Any]:
    import torchvision

    s, rows, end = a.sizes, [], time.monotonic() + seconds
    variants = {"fp32": {}, "bf16": {"precision": "bf16"}, "compile": {"compile": True}}
    if a.dry_run:  # compiling takes minutes on a CPU; tests/test_cuda.py checks that path
        del variants["compile"]
    for name, kw in variants.items():  # every model eager first: compile, the slowest to start, comes last
        for arch in s["models"]:
            if time.monotonic() > end:
                rows += [{"model": arch, "variant": name, "batch": b, "unit_steps_s": None, "note": "out of time"}
                         for b in s["batches"]]
                continue
            torch.manual_seed(0)
            target = Target(torchvision.models.get_model(arch, weights=None), (0.485, 0.456, 0.406),
                            (0.229, 0.224, 0.225), name=arch, **kw).to(device)
            t0 = time.perf_counter()
            loop_steps(target, s["batches"][0], s["size"], 1, device)  # warm-up (compiles for "compile")
            warm = time.perf_counter() - t0
            for b in s["batches"]:
                if time.monotonic() > end:
                    rows.append({"model": arch, "variant": name, "batch": b, "unit_steps_s": None,
                                 "note": "out of time"})
                    continue
                loop_steps(target, b, s["size"], 1, device)  # a new batch size: compile again / autotune
                secs = statistics.median(loop_steps(target, b, s["size"], s["steps"], device)
                                         for _ in range(s["rounds"]))
                rows.append({"model": arch, "variant": name, "batch": b,
                             "unit_steps_s": round(b * s["steps"] / secs, 2), "first_call_s": round(warm, 2)})
            del target
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for r in rows:  # the ratio to fp32 eager at the same model and batch
        base = next((q["unit_steps_s"] for q in rows if q["model"] == r["model"] and q["batch"] == r["batch"]
                     and q["variant"] == "fp32"), None)
        r["vs_fp32"] = round(r["unit_steps_s"] / base, 2) if base and r["unit_steps_s"] else None
    return {"size": s["size"], "steps": s["steps"], "rounds": s["rounds"], "rows": rows}


def dgnam(a: argparse.Namespace, out: Path, seconds: float, device: torch.device) -> dict[str, Any]:
    """The default DGN-AM method (``method=dgnam_deep``, its own steps and early stop) on the
    comparison's 20 classes in fp32 and in bf16, judged (benchmarks/bench_dgnam.py), then as many
    of the 1000 MobileNetV2 classes as the time left allows at ``precision=auto``, timed, with the
    fraction the target ranks top-1."""
    from bench_dgnam import COMPARE, config, judged

    from dgnam.views.am import compute_am

    s, dev = a.sizes, str(device)
    extra = [f"steps={s['dgnam_steps']}"] if a.dry_run else []
    rows = []
    end = time.monotonic() + seconds
    for precision in ("fp32", "bf16"):
        j = judged("dgnam_deep", precision, COMPARE[: s["classes"]], min(20, s["classes"]), dev, extra)
        rows.append({"classes": s["classes"], "precision": precision, "steps": round(j["steps"], 1),
                     "s_per_image": round(j["seconds"], 3), f"{j['judge']}_top1": round(j["top1"], 3),
                     "judge_p": round(j["p"], 3)})
    hits, done, t0 = 0, 0, time.perf_counter()
    for start in range(0, s["classes_all"], s["dgnam_batch"]):
        if done and time.monotonic() > end:  # out of time: the classes done so far are the result
            break
        units = list(range(start, min(start + s["dgnam_batch"], s["classes_all"])))
        run = compute_am(config("dgnam_deep", "auto", units, len(units), dev, extra))
        hits += sum(int(r["top1"] == r["unit"]) for r in run.rows)
        done += len(units)
    sync(device)
    secs = time.perf_counter() - t0
    rows.append({"classes": done, "precision": "auto", "s_per_image": round(secs / done, 3),
                 "target_top1": round(hits / done, 3)})
    return {"method": "dgnam_deep", "rows": rows}


def train(a: argparse.Namespace, out: Path, seconds: float, device: torch.device) -> dict[str, Any]:
    s = a.sizes
    wf = str(WEIGHTS) if WEIGHTS.is_file() else None
    target = build_target("mobilenet_v2", weights_file=wf, mean=(0.5,) * 3, std=(0.5,) * 3, device=device)
    cases: dict[str, Callable[[], Any]] = {
        "recipe 128 px (pixel G + D, E online)": lambda: make_step("recipe 128 px", target, s["train_batch"], device),
        "latent head (fc 1024, x0.5)": lambda: make_latent_step("latent", target, s["train_batch"], device, 1024, 0.5),
    }
    rows = []
    for name, make in cases.items():
        step = make()
        step()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(s["train_steps"]):
            step()
        sync(device)
        rows.append({"case": name, "batch": s["train_batch"],
                     "images_s": round(s["train_batch"] * s["train_steps"] / (time.perf_counter() - t0), 1)})
    return {"decoder": str(DECODER) if DECODER.is_file() else "random", "rows": rows}


def prior(a: argparse.Namespace, out: Path, seconds: float, device: torch.device) -> dict[str, Any]:
    """The GPU prior preset in its four stages, timed, its held-out reconstructions and DGN-AM
    through it judged (benchmarks/gpu_prior.py)."""
    from gpu_prior import train_and_judge

    return train_and_judge(a, out, seconds, device, copy_in_parts)


def copy_in_parts(src: Path, out: Path) -> list[str]:
    """``src`` into ``out`` whole, or as ``name.part0``, ``name.part1`` ... of at most :data:`PART` bytes."""
    data = src.read_bytes()
    if len(data) <= PART:
        (out / src.name).write_bytes(data)
        return [src.name]
    names = []
    for i in range(0, len(data), PART):
        names.append(f"{src.name}.part{i // PART}")
        (out / names[-1]).write_bytes(data[i : i + PART])
    return names


SECTIONS = {"tests": (tests, 0.12), "am": (am, 0.33), "dgnam": (dgnam, 0.15), "train": (train, 0.08),
            "prior": (prior, 0.32)}  # name: (function, share of the minutes); the last takes what is left


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU check ({results['mode']})", "", f"Machine: {results['machine']}.", "",
             f"```text\n{results['command']}\n```", ""]
    for name, sec in results["sections"].items():
        lines += [f"## {name} ({sec['status']}, {sec.get('seconds', 0):.0f} s)", ""]
        if sec["status"] != "ok":
            lines += [f"```text\n{sec.get('error', '')[:2000]}\n```", ""]
            continue
        rows = sec.get("rows") or []
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |" for r in rows]
        extra = {k: v for k, v in sec.items() if k not in ("rows", "status", "seconds")}
        lines += ["", ", ".join(f"{k}: {v}" for k, v in extra.items()), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the result folder (created)")
    ap.add_argument("--minutes", type=float, default=8.0, help="the whole check's time budget")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that every section runs")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--preset", default="mobilenet_v2_prior_gpu", help="experiment_train preset of the prior section")
    a = ap.parse_args(argv)
    a.sizes = DRY if a.dry_run else FULL
    device = torch.device("cpu") if a.dry_run else pick_device("cuda")
    if a.dry_run:
        torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"mode": "dry run, CPU, tiny sizes" if a.dry_run else "full",
                               "machine": machine(device), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]),
                               "sections": {}}
    end = time.monotonic() + a.minutes * 60
    failed = 0
    for i, name in enumerate(a.only):
        fn, share = SECTIONS[name]
        left = end - time.monotonic()
        later = sum(SECTIONS[n][1] for n in a.only[i:])
        seconds = left if name == a.only[-1] else max(left * share / later, 1.0)
        t0 = time.perf_counter()
        try:
            sec = {"status": "ok", **fn(a, out, seconds, device)}
        except Exception as e:  # recorded; the next section runs
            failed += 1
            sec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        results["sections"][name] = sec
        (out / "results.json").write_text(json.dumps(json_safe(results), indent=1, default=str, allow_nan=False) + "\n")
        (out / "RESULTS-gpu.md").write_text(markdown(results))
        print(f"{name}: {sec['status']} in {sec['seconds']} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
