"""Any ``nn.Module`` as a :class:`~dgnam.core.models.Target`: :func:`wrap_model` reads its input
normalization, channels and size from what is given, its metadata (timm's pretrained config,
torchvision's vision transformer) or by trying it, and puts it in eval mode with a notice."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from dgnam.core.devices import pick_device
from dgnam.core.models import IMAGENET_MEAN, IMAGENET_STD, Target, imagenet_categories
from dgnam.core.weights import load_weights_file
from dgnam.errors import DgnamError, DgnamFileNotFoundError, DgnamValueError

log = logging.getLogger(__name__)


def class_names(spec: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    """Class names from a list, or from a text file with one name per line (blank lines skipped)."""
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(spec)))
        if not path.is_file():
            raise DgnamFileNotFoundError(f"class names file not found: {path} (give a text file, one name per line, or a list)")
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [str(c) for c in spec]


def _in_channels(model: nn.Module) -> int:
    """The input channels of the first convolution (3 when there is none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def _metadata(model: nn.Module) -> dict:
    """Normalization and input size a model carries: timm's ``pretrained_cfg`` (mean, std,
    input_size) or torchvision's vision transformer (``image_size``, a fixed size)."""
    meta: dict = {}
    pcfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(pcfg, dict):
        if pcfg.get("mean") and pcfg.get("std"):
            meta.update(mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]))
        if pcfg.get("input_size"):
            meta["input_size"] = int(pcfg["input_size"][-1])
    patch = getattr(model, "patch_embed", None)
    if patch is not None and getattr(patch, "strict_img_size", False) and not getattr(patch, "dynamic_img_size", False):
        meta["fixed_size"] = True  # a timm transformer with a fixed position embedding
        side = getattr(patch, "img_size", None)  # the side it was built for (img_size=...), not the pretrained one
        if isinstance(side, (tuple, list)) and side:
            meta["input_size"] = int(side[0])
    elif patch is not None and not getattr(patch, "dynamic_img_pad", False):
        size = getattr(patch, "patch_size", None)  # timm: any side that is a multiple of the patch
        meta["size_multiple"] = int(size[0] if isinstance(size, (tuple, list)) else size or 1)
    if isinstance(model, torchvision.models.VisionTransformer):
        meta.update(input_size=int(model.image_size), fixed_size=True)
    return meta


def library_tracer(model: nn.Module) -> dict | None:
    """timm's own fx settings for a timm model (its modules and functions that fx must not enter),
    as ``timm.models.create_feature_extractor`` uses them; None for any other model."""
    if not type(model).__module__.startswith("timm."):
        return None
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:  # another timm layout: torchvision's tracer as for any model
        return None
    return {"leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())}


BLOCK_PREFIXES = ("encoder.layers.encoder_layer_", "blocks.")  # torchvision's and timm's transformer blocks


def block_aliases(target: Target) -> dict[str, str]:
    """``block0``, ``block1`` ... -> the output node of each block of a vision transformer (the last
    graph node under ``encoder.layers.encoder_layer_<i>.``, torchvision, or ``blocks.<i>.``, timm;
    the block's module itself when the model is read with hooks)."""
    out: dict[str, str] = {}
    for prefix in BLOCK_PREFIXES:
        for node in target.nodes:  # topological order: the last node of a block is its output
            head, _, rest = node[len(prefix):].partition(".") if node.startswith(prefix) else ("", "", "")
            # a traced block's output is its last graph node; with hooks, the block's own module
            if head.isdigit() and bool(rest) == target.traced:
                out[f"block{head}"] = node
    return out


PROBE_SIZES = (224, 32, 28, 64, 96, 128, 160, 192, 256, 299, 384)  # common input sides, tried in turn


def _runs_at(target: Target, size: int) -> bool:
    try:
        target.layer_shape("logits", size)
    except DgnamError:
        return False
    return True


def _check_input_size(target: Target, given: int | None, preferred: int | None = None) -> None:
    """Set the target's input side (the given one, checked, or the first of the model's own side
    (``preferred``, from its metadata) and :data:`PROBE_SIZES` at which it runs) and whether it
    takes only that side (a linear layer after a flatten: a 32-px CIFAR net; a transformer's
    position embedding); a fixed side makes the target resize every image to it."""
    tries = ([preferred] if preferred else []) + [s for s in PROBE_SIZES if s != preferred]
    size = given if given and _runs_at(target, given) else next((s for s in tries if _runs_at(target, s)), None)
    if size is None:
        raise DgnamValueError(f"{target.name} runs at none of the sides {', '.join(map(str, PROBE_SIZES))}; give the side "
                         f"it takes (model.input_size=..., or input_size= in Python)")
    if given and size != given:
        raise DgnamValueError(f"{target.name} cannot run on {given} x {given} images; it takes {target.in_channels} x "
                         f"{size} x {size}: give input_size={size}")
    target.input_size = size
    if not _runs_at(target, size + 16):
        target.fixed_size = True
        log.info("%s takes only %d x %d images: every image is resized to that first", target.name, size, size)


def wrap_model(
    model: object,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    categories: str | os.PathLike | Sequence[str] | None = None,
    name: str | None = None,
    weights_file: str | os.PathLike | None = None,
    channels_last: bool = True,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> Target:
    """A :class:`Target` around any ``nn.Module`` (a :class:`Target` is returned as it is).

    Normalization and input size: as given, else from the model's metadata (timm's pretrained
    config, torchvision's vision transformer), else ImageNet statistics (0.5 / 0.5 for a grey-input
    model) at 224 px. A model in train mode is put in eval mode, with a notice. ``categories``: class
    names (a list or a text file, one per line); ImageNet's when the last linear layer has 1000
    outputs. ``weights_file``: a local ``state_dict`` loaded into it first (checked key by key).
    ``precision``: ``fp32``, ``bf16`` or ``auto`` (:class:`Target`).
    """
    if isinstance(model, Target):
        return model.to(pick_device(device))
    if not isinstance(model, nn.Module):
        raise DgnamValueError(f"model must be a torch.nn.Module (e.g. torchvision.models.resnet18()), not "
                         f"{type(model).__name__}")
    name = name or type(model).__name__
    if weights_file:
        load_weights_file(model, weights_file, name)
    if model.training:
        log.warning("%s is in train mode; it is put in eval mode for visualization (dropout off, BatchNorm with "
                    "its running statistics)", name)
    meta = _metadata(model)
    grey = _in_channels(model) == 1
    default_mean, default_std = ((0.5,), (0.5,)) if grey else (IMAGENET_MEAN, IMAGENET_STD)
    mean = tuple(mean) if mean is not None else meta.get("mean", default_mean)
    std = tuple(std) if std is not None else meta.get("std", default_std)
    names = class_names(categories)
    if names is None:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        names = imagenet_categories() if last and last[-1].out_features == 1000 else None
    target = Target(model, mean, std, name=name, input_size=int(input_size or meta.get("input_size", 224)),
                    categories=names, channels_last=channels_last, fixed_size=meta.get("fixed_size", False),
                    size_multiple=meta.get("size_multiple", 1), tracer_kwargs=library_tracer(model),
                    precision=precision).to(pick_device(device))
    target.aliases.update(block_aliases(target))
    if "fixed_size" not in meta:
        _check_input_size(target, input_size, meta.get("input_size"))
    if categories is not None:
        n = target.layer_shape("logits")[0]
        if len(names) != n:
            raise DgnamValueError(f"{len(names)} class names given, but {name}'s output ({target.aliases['logits']}) has "
                             f"{n} units")
    return target
