"""timm models as targets (``model=timm model.arch=<name>``; the optional extra ``pip install -e .[timm]``).

timm's ``pretrained_cfg`` gives the input normalization and size; the weights come from a local file
(``model.weights_file``: a ``state_dict`` in ``.pth``/``.bin`` read without running code, or
``.safetensors``), or from the Hugging Face hub (``model.pretrained=true``, which needs a network),
or are random (with a warning)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dgnam.core.models import Target
from dgnam.errors import DgnamValueError, first_line

log = logging.getLogger(__name__)

INSTALL = "pip install -e .[timm]  (or: pip install timm)"


def import_timm():
    """``timm``, or one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise DgnamValueError(f"model=timm needs the timm package, which is not installed: {INSTALL}") from None
    return timm


def check_arch(timm: Any, arch: str) -> None:
    """An unknown timm name is one line with the closest names."""
    if timm.is_model(arch):  # also "vit_small_patch16_224.augreg_in21k": a tag of a known model
        return
    names = timm.list_models()
    family = arch.split(".", 1)[0].split("_", 1)[0]  # "vit" of vit_smal_patch16_224
    close = difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
    if not close:  # the family's first names: "vit_small" -> vit_small_patch16_224, ...
        close = [n for n in names if n.startswith(family + "_")][:5]
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise DgnamValueError(f"unknown timm model {arch!r}{hint} (the {len(names)} names: python -c "
                     f"\"import timm; print(timm.list_models('{family}*'))\")")


def build_timm_target(
    arch: str = "vit_small_patch16_224",
    weights_file: str | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    class_names: str | Sequence[str] | None = None,
    channels_last: bool = True,
    kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> Target:
    """A :class:`Target` around ``timm.create_model(arch, **kwargs)``.

    ``weights_file``: a local ``state_dict`` loaded into the model (checked key by key);
    ``pretrained``: timm's own download (the Hugging Face hub; needs a network). Neither: random
    weights, with a warning. ``num_classes``: the classifier's size (None: the model's default).
    ``mean``/``std``/``input_size``: None reads them from the model's ``pretrained_cfg``.
    ``kwargs``: more arguments of ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...).
    """
    from dgnam.core.wrap import wrap_model

    timm = import_timm()
    check_arch(timm, str(arch))
    extra = dict(kwargs or {})
    if num_classes is not None:
        extra["num_classes"] = int(num_classes)
    try:
        model = timm.create_model(str(arch), pretrained=bool(pretrained) and not weights_file, **extra)
    except Exception as e:
        why = first_line(e)
        if pretrained and not weights_file:
            raise DgnamValueError(f"timm could not fetch the pretrained weights of {arch} ({why}); offline, download "
                             f"them elsewhere and give model.weights_file=<file> with model.pretrained=false") from None
        raise DgnamValueError(f"timm.create_model({arch!r}, {extra}) failed ({why})") from None
    if not weights_file and not pretrained:
        log.warning("\n%s\n  timm %s has RANDOM WEIGHTS: its images show nothing learned. Give\n"
                    "  model.weights_file=<state_dict .pth/.safetensors> for a trained network.\n%s",
                    "!" * 78, arch, "!" * 78)
    return wrap_model(model, mean=mean, std=std, input_size=input_size, categories=class_names, name=str(arch),
                      weights_file=weights_file, channels_last=channels_last, device=device,
                      precision=precision)
