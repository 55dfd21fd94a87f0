"""Run the demo and every preset shrunk, with a fixed seed, and print the SHA-256 of every PNG.

    python benchmarks/png_digests.py OUT_DIR [CHECKOUT] [RUN,RUN...] > digests.json

Each run is the CLI (``visualize.py``, ``train_generator.py``) of CHECKOUT (default: this one) with a
few steps, units and pixels; VGG16 and AlexNet get seeded random weights written as local files, so
that no download is needed and the runs are reproducible. For the two tiny generator trainings the
SHA-256 of every tensor of the written prior is listed too. Run it on two trees and diff the JSON:
a refactor that changes no behaviour gives identical digests (docs/layout.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

TINY_TRAIN = [
    "encoder=mobilenet_v2_random", "data=synthetic", "trainer=smoke", "resolution=64", "threads=1",
    "generator.fc=[16]", "generator.width=0.0625", "discriminator.spec.code_fc=[16]",
    "discriminator.spec.joint_fc=[16]", "discriminator.spec.image_fc=[16]",
    "discriminator.spec.convs=[[4,7,4],[8,3,2]]", "code_stats.max_images=16", "grid_images=4",
]
RANDOM = ["model.weights=null", "model.weights_file={out}/vgg16_seeded.pth"]
RANDOM_ALEX = ["model.weights=null", "model.weights_file={out}/alexnet_seeded.pth"]
RUNS: dict[str, list[str]] = {
    "demo_classes": ["experiment=classes", "model=mobilenet_v2_shared", "steps=6", "image_size=112"],
    "classes_yosinski": ["experiment=classes", "model=mobilenet_v2_shared", "method=yosinski", "steps=6",
                         "image_size=112", "units=[goldfish,flamingo,pizza]"],
    "keras_filters": ["experiment=keras_filters", *RANDOM, "units=first:3", "steps=2", "image_size=96",
                      "layers=[conv1_1,conv3_1]"],
    "stat436_filters": ["experiment=stat436_filters", *RANDOM, "units=first:4", "steps=3", "image_size=64"],
    "lucid": ["experiment=lucid", *RANDOM, "units=first:3", "steps=4", "image_size=96"],
    "activation_maps": ["experiment=activation_maps"],
    "activation_maps_vgg16": ["experiment=activation_maps_vgg16", *RANDOM, "units=first:8", "image_size=96"],
    "receptive_field": ["experiment=receptive_field", "units=first:1", "steps=4", "image_size=112"],
    "receptive_field_vgg16": ["experiment=receptive_field_vgg16", *RANDOM, "units=first:1", "steps=3",
                              "image_size=96", "layers=[conv1_2,conv3_3]"],
    "inversion": ["experiment=inversion", "layers=[features.3.add,features.6.add]", "steps=4", "image_size=96"],
    "deepdream": ["experiment=deepdream", "steps=3", "image_size=96"],
    "style": ["experiment=style", "steps=4", "image_size=96"],
    "alexnet_neurons": ["model=alexnet", *RANDOM_ALEX, "layers=conv5", "units=first:3", "unit=neuron",
                        "position=[1,2]", "steps=3", "image_size=96"],
}
MULTIRUN = {
    "compare": ["experiment=compare", "units=[1,107,963]", "steps=4", "batch_size=3"],
}
TRAIN = {
    "train_fc6": [*TINY_TRAIN, "trainer.max_steps=16"],
    "train_latent": ["experiment_train=mobilenet_v2_latent_cpu", *TINY_TRAIN[:5], "code_stats.max_images=16",
                     "grid_images=4", "trainer.max_steps=16", "data.batch_size=8", "trainer.val_check_interval=null"],
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def tensor_digests(path: Path) -> dict[str, str]:
    """SHA-256 of every tensor in a prior file (the pickle's own bytes may differ between writes)."""
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, str] = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, torch.Tensor):
            out[prefix] = hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16]
        elif isinstance(v, dict):
            for k in sorted(v):
                walk(f"{prefix}.{k}" if prefix else str(k), v[k])

    walk("", blob)
    return out


def seeded_weights(out: Path) -> None:
    """Random VGG16 / AlexNet weights from a fixed seed, as local files (no ImageNet weights needed)."""
    import torch
    import torchvision

    for arch in ("vgg16", "alexnet"):
        path = out / f"{arch}_seeded.pth"
        if not path.exists():
            torch.manual_seed(0)
            torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    repo = Path(__file__).resolve().parents[1] if len(sys.argv) < 3 else Path(sys.argv[2]).resolve()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(repo))
    out.mkdir(parents=True, exist_ok=True)
    seeded_weights(out)
    digests: dict[str, dict[str, str]] = {}
    jobs = [(n, ["visualize.py", *[x.format(out=out) for x in a], f"hydra.run.dir={out / n}"]) for n, a in RUNS.items()]
    jobs += [(n, ["visualize.py", "-m", *a, f"hydra.sweep.dir={out / n}"]) for n, a in MULTIRUN.items()]
    jobs += [(n, ["train_generator.py", *a, f"hydra.run.dir={out / n}"]) for n, a in TRAIN.items()]
    if len(sys.argv) > 3:
        jobs = [j for j in jobs if j[0] in sys.argv[3].split(",")]
    for name, args in jobs:
        p = subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True)
        if p.returncode:
            print(f"{name}: exit {p.returncode}\n{p.stderr[-2000:]}", file=sys.stderr)
            digests[name] = {"exit": str(p.returncode)}
            continue
        digests[name] = {str(f.relative_to(out / name)): sha(f) for f in sorted((out / name).rglob("*.png"))}
        for prior in sorted((out / name).rglob("prior.pt")):
            digests[name].update({f"prior:{k}": v for k, v in tensor_digests(prior).items()})
        print(f"{name}: {len(digests[name])} digests", file=sys.stderr)
    print(json.dumps(digests, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
