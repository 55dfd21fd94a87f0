"""From Python: one call on any nn.Module (the shared ImageNet MobileNetV2, a CIFAR-sized net, ViTs of
torchvision and timm). examples/from_python.ipynb is the notebook of the same calls on MobileNetV2.

    python examples/from_python.py                  # the pictures of README "From Python" -> docs/img/
    python examples/from_python.py --tiny OUT_DIR   # seconds, random weights (what the tests run)

Each block is what a notebook cell would hold; ``vis`` alone in a cell shows its grid.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torchvision

import dgnam

CLASSES = ["goldfish", "flamingo", "monarch", "lemon"]


def mobilenet(out: Path, steps: int, size: int) -> dgnam.Visualization:
    """The trained MobileNetV2 that ships beside the checkout; its inputs are normalized with 0.5 / 0.5."""
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(Path(dgnam.shared_dir()) / "models" / "mobilenet_v2_imagenet.pth", weights_only=True))
    vis = dgnam.visualize(net, "logits", CLASSES, method="lucid", steps=steps, image_size=size, batch_size=4,
                          mean=[0.5] * 3, std=[0.5] * 3)
    vis.save(out / "mobilenet_v2")  # the files visualize.py writes
    return vis


def cifar_net(out: Path, steps: int) -> dgnam.Visualization:
    """A 32-px CIFAR-style net of one's own with its own class names (random weights here)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 10))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    vis = dgnam.visualize(net, "logits", "all", method="lucid", steps=steps, class_names=names, batch_size=10)
    vis.save(out / "cifar")
    return vis


def vit(out: Path, steps: int, size: int) -> dgnam.Visualization:
    """torchvision's vit_b_16 (random weights here): class logits, and the tokens of a block.

    An untrained torchvision ViT has a zero head (its logits have no gradient), so the head is
    drawn at random first, as a trained one would not need."""
    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(image_size=size)
    torch.nn.init.normal_(net.heads.head.weight, std=0.02)
    vis = dgnam.visualize(net, "logits", CLASSES, method="lucid", steps=steps, batch_size=4)
    vis.save(out / "vit_b_16")
    tokens = [dgnam.visualize(net, "block6", [0, 1], unit=unit, method="lucid", steps=steps, batch_size=2,
                              **({"position": [1, 1]} if unit == "neuron" else {})) for unit in ("channel", "cls", "neuron")]
    for unit, t in zip(("channel", "cls", "neuron"), tokens):
        t.save(out / f"vit_b_16_block6_{unit}")
    return vis


def timm_vit(out: Path, steps: int, size: int) -> dgnam.Visualization | None:
    """A timm ViT by name (random weights here; pip install -e .[timm]): its pretrained_cfg gives the
    normalization, and its fixed position embedding makes every image be resized to its input side."""
    try:
        import timm
    except ImportError:
        return None
    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch16_224", img_size=size)
    vis = dgnam.visualize(net, "logits", CLASSES, method="lucid", steps=steps, batch_size=4)
    vis.save(out / "timm_vit_small")
    return vis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="outputs/from_python")
    ap.add_argument("--tiny", action="store_true", help="a few steps at small sizes")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(int(os.environ.get("DGNAM_THREADS", torch.get_num_threads())))
    if (Path(dgnam.shared_dir()) / "models" / "mobilenet_v2_imagenet.pth").is_file():
        vis = mobilenet(out, steps=2 if args.tiny else 128, size=64 if args.tiny else 224)
        print(vis, [round(r["probability"], 3) for r in vis.results])
    print(cifar_net(out, steps=2 if args.tiny else 128))
    print(vit(out, steps=2 if args.tiny else 64, size=32 if args.tiny else 128))
    print(timm_vit(out, steps=2 if args.tiny else 64, size=32 if args.tiny else 128))


if __name__ == "__main__":
    main()
