"""Friendly layer names of torchvision classifiers: Caffe-style aliases (conv5_3, pool5, fc6) from the
module order, and ImageNet's class names."""

from __future__ import annotations

import torchvision
from torch import nn

# Caffe-style aliases (conv5_3, pool5, fc6 ...) are derived from the module order; the style says
# how convolutions are numbered: per block between poolings (VGG) or straight through (AlexNet).
ALIAS_STYLE = {
    **{f"vgg{n}{bn}": "block" for n in (11, 13, 16, 19) for bn in ("", "_bn")},
    "alexnet": "flat",
}


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (no download needed)."""
    return list(torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def sequential_aliases(model: nn.Module, style: str, conv_relu: bool, fc_relu: bool) -> dict[str, str]:
    """Map conv1_1/conv1/pool5/fc6... to module paths, following the order of the modules."""
    aliases: dict[str, str] = {}
    features = model.features
    block, conv_in_block, conv_total = 1, 0, 0
    mods = list(features.named_children())
    for i, (name, mod) in enumerate(mods):
        if isinstance(mod, nn.Conv2d):
            conv_in_block += 1
            conv_total += 1
            alias = f"conv{block}_{conv_in_block}" if style == "block" else f"conv{conv_total}"
            node = f"features.{name}"
            # VGG-BN puts a BatchNorm between conv and ReLU: the "pre-ReLU" value is after the BN.
            j = i + 1
            while j < len(mods) and isinstance(mods[j][1], nn.BatchNorm2d):
                node = f"features.{mods[j][0]}"
                j += 1
            if conv_relu and j < len(mods) and isinstance(mods[j][1], nn.ReLU):
                node = f"features.{mods[j][0]}"
            aliases[alias] = node
        elif isinstance(mod, nn.MaxPool2d):
            idx = block if style == "block" else conv_total
            aliases[f"pool{idx}"] = f"features.{name}"
            block, conv_in_block = block + 1, 0
    cls = list(model.classifier.named_children())
    fc = 6
    for i, (name, mod) in enumerate(cls):
        if isinstance(mod, nn.Linear):
            node = f"classifier.{name}"
            if fc_relu and i + 1 < len(cls) and isinstance(cls[i + 1][1], nn.ReLU):
                node = f"classifier.{cls[i + 1][0]}"
            aliases[f"fc{fc}"] = node
            fc += 1
    return aliases
