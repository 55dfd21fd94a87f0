"""Judges: ImageNet classifiers that did NOT produce the images, used to score them afterwards.

A judge answers "does this picture show class k to a network that never saw it being made?". It is
used by the report only: never put a judge into an objective, a loss or a selection rule, or its
verdicts stop meaning anything.

Two kinds of judge file:

- ``pt2``: a ``torch.export`` program (``torch.export.load(path).module()``) that takes RGB in
  [0, 1] at its own ``input_size`` (default 160) with the normalization inside, and returns 1000
  ImageNet logits in torchvision's order;
- ``torchvision``: an architecture name (``arch``) and a local ``state_dict`` (``weights_file``),
  or a torchvision weights enum name (``weights``), built with :func:`dgnam.core.models.build_target`;
  ``mean``/``std`` give its input normalization (ImageNet statistics by default), ``input_size``
  its side (default 224).

Every judge is checked when it is loaded with a forward pass on a blank image, so a corrupt file or
a network with the wrong number of outputs is reported in one line before any work is done.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgnam.core.images import resize_crop
from dgnam.errors import DgnamError, DgnamFileNotFoundError, DgnamValueError, first_line
from dgnam.safeload import check_finite_tensors, weights_only_everywhere

KINDS = ("pt2", "torchvision")
SPEC_KEYS = ("kind", "path", "name", "input_size", "arch", "weights_file", "weights", "mean", "std",
             "batch_size")
NUM_CLASSES = 1000


class Judge:
    """A frozen classifier: images (B, 3, H, W) in [0, 1] -> logits (B, 1000).

    Images are resized (shorter side, antialiased bilinear) and centre-cropped to the judge's
    ``input_size`` first, so images of any size can be judged. Batches larger than ``batch_size``
    are split (a program exported with a fixed batch of 1 gets ``batch_size=1``).

    Args:
        model: ``(B, 3, S, S)`` in [0, 1] -> ``(B, 1000)`` logits (normalization inside).
        name: a short name for tables.
        input_size: the side ``S`` the model expects.
        source: the file it came from, for messages.
        batch_size: the largest batch passed to ``model`` at once.
    """

    def __init__(self, model: Callable[[Tensor], Tensor], name: str, input_size: int,
                 source: str = "", batch_size: int = 32) -> None:
        self.model = model
        self.name = name
        self.input_size = int(input_size)
        self.source = source
        self.batch_size = max(1, int(batch_size))

    def __repr__(self) -> str:
        return f"Judge({self.name!r}, input_size={self.input_size}, source={self.source!r})"

    def resize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 3, S, S): shorter side to S (antialiased), then centre crop."""
        s = self.input_size
        if tuple(images.shape[-2:]) == (s, s):
            return images
        return resize_crop(images, s)

    @torch.no_grad()
    def __call__(self, images01: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] -> logits (B, 1000), float32 on the CPU."""
        if images01.dim() != 4 or images01.shape[1] != 3:
            raise ValueError(f"a judge takes (B, 3, H, W) images, got {tuple(images01.shape)}")
        x = self.resize(images01.float())
        outs = [self.model(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat([o.float().cpu() for o in outs])


def _check_output(judge: Judge, batch: int) -> None:
    """A forward pass on blank images; the output must be (batch, 1000)."""
    x = torch.full((batch, 3, judge.input_size, judge.input_size), 0.5)
    out = judge.model(x)
    if not isinstance(out, Tensor):
        raise DgnamValueError(f"judge {judge.name} ({judge.source}) returns a {type(out).__name__}, "
                         f"not a tensor of (B, {NUM_CLASSES}) logits")
    if tuple(out.shape) != (batch, NUM_CLASSES):
        raise DgnamValueError(f"judge {judge.name} ({judge.source}) returns outputs of size {tuple(out.shape)} "
                         f"for a batch of {batch}; a judge must return (B, {NUM_CLASSES}) ImageNet logits")


def _load_pt2(path: Path, name: str, input_size: int, batch_size: int) -> Judge:
    quiet = logging.getLogger("torch.export")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # torch logs a traceback for an unreadable file before raising
    try:
        with weights_only_everywhere():  # a crafted archive cannot run code through torch's fallback
            model = torch.export.load(str(path)).module()
    except pickle.UnpicklingError:
        raise DgnamValueError(f"cannot read judge file {path}: it holds objects other than tensors (a pickle that "
                         f"could run code), refused") from None
    except Exception as e:  # not a zip, truncated, another format ...
        raise DgnamValueError(f"cannot read judge file {path} as a torch.export program: {first_line(e)}") from None
    finally:
        quiet.setLevel(level)
    check_finite_tensors(model.state_dict(), f"judge file {path}")
    judge = Judge(model, name, input_size, source=str(path), batch_size=batch_size)
    with torch.no_grad():
        try:
            _check_output(judge, 2)
        except DgnamError:
            raise
        except Exception as e2:  # exported with a fixed batch of 1, or for another input size
            try:
                _check_output(judge, 1)
            except DgnamError:
                raise
            except Exception:
                raise DgnamValueError(f"judge file {path} does not run on a (B, 3, {input_size}, {input_size}) "
                                 f"image in [0, 1]: {first_line(e2)}; set its input_size") from None
            judge.batch_size = 1
    return judge


def _load_torchvision(spec: Mapping[str, Any], name: str, input_size: int, batch_size: int) -> Judge:
    from dgnam.core.models import build_target

    arch = spec.get("arch")
    if not arch:
        raise DgnamValueError(f"judge {name}: kind=torchvision needs arch (e.g. resnet50) and weights_file")
    wfile, weights = spec.get("weights_file") or spec.get("path"), spec.get("weights")
    if not wfile and not weights:
        raise DgnamValueError(f"judge {name} ({arch}) has no weights: give weights_file=<state_dict.pth> "
                         "(a judge with random weights judges nothing)")
    try:
        target = build_target(arch=str(arch), weights=weights, weights_file=wfile,
                              mean=list(spec["mean"]) if spec.get("mean") else None,
                              std=list(spec["std"]) if spec.get("std") else None,
                              input_size=input_size, channels_last=False)
    except DgnamError as e:
        raise DgnamValueError(f"judge {name}: {e}") from None

    def model(x: Tensor) -> Tensor:
        return target(x, ["logits"])["logits"]

    judge = Judge(model, name, input_size, source=str(wfile or f"{arch}:{weights}"), batch_size=batch_size)
    with torch.no_grad():
        try:
            _check_output(judge, 2)
        except DgnamError:
            raise
        except Exception as e:
            raise DgnamValueError(f"judge {name} ({arch}) does not run on a {input_size} x {input_size} image: "
                             f"{first_line(e)}") from None
    return judge


def load_judge(spec: Mapping[str, Any]) -> Judge:
    """Load and check a judge from its spec.

    Keys: ``kind`` (``pt2`` | ``torchvision``; default ``pt2``), ``path`` (the ``.pt2`` file, or for
    ``torchvision`` the state_dict, same as ``weights_file``), ``name`` (default: the file's stem),
    ``input_size`` (default 160 for ``pt2``, 224 for ``torchvision``), ``arch``, ``weights_file``,
    ``weights``, ``mean``, ``std`` (``torchvision`` only), ``batch_size`` (default 32).

    Raises :class:`DgnamError` (one line) for an unknown key or kind, a missing, unreadable or corrupt
    file, or a network whose output is not ``(B, 1000)``.
    """
    spec = dict(spec)
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise DgnamValueError(f"unknown judge key {unknown[0]!r}; valid keys: {', '.join(SPEC_KEYS)}")
    kind = str(spec.get("kind") or "pt2")
    if kind not in KINDS:
        raise DgnamValueError(f"unknown judge kind {kind!r}; valid: {', '.join(KINDS)}")
    file = spec.get("path") if kind == "pt2" else (spec.get("weights_file") or spec.get("path"))
    path = Path(os.path.expanduser(str(file))) if file else None
    if kind == "pt2" and path is None:
        raise DgnamValueError("judge of kind pt2 needs path=<file.pt2>")
    if path is not None and not path.is_file():
        raise DgnamFileNotFoundError(f"judge file not found: {path}")
    name = str(spec.get("name") or (path.stem if path else spec.get("arch")))
    try:
        input_size = int(spec.get("input_size") or (160 if kind == "pt2" else 224))
        batch_size = int(spec.get("batch_size") or 32)
    except (TypeError, ValueError):
        raise DgnamValueError(f"judge {name}: input_size={spec.get('input_size')!r} and batch_size="
                         f"{spec.get('batch_size')!r} must be positive integers") from None
    if input_size <= 0 or batch_size <= 0:
        raise DgnamValueError(f"judge {name}: input_size={input_size} and batch_size={batch_size} must be positive")
    if kind == "pt2":
        return _load_pt2(path, name, input_size, batch_size)  # type: ignore[arg-type]
    return _load_torchvision(spec, name, input_size, batch_size)
