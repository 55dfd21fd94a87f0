"""Reading the files a user passes so that they cannot run code: ``torch.load(weights_only=True)``
and explicit key/shape checks, each failure one line that names the file.

Libraries that unpickle inside (``torch.export.load`` falls back to ``weights_only=False`` for a
program's sample inputs and pickled constants) run under :func:`weights_only_everywhere`, which
makes every ``torch.load`` in the process refuse code for as long as it lasts.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line


def load_file(path: str | os.PathLike, what: str, hint: str = "", finite: bool = True) -> Any:
    """``torch.load`` of ``path`` with ``weights_only=True`` (tensors and plain containers only);
    with ``finite`` (default) every floating tensor in it must be finite (:func:`check_finite_tensors`).

    Raises :class:`DgnamError` ``"<what> not found: <path><hint>"`` or ``"cannot read <what>
    <path>: <reason>"``."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DgnamFileNotFoundError(f"{what} not found: {p}{hint}")
    try:
        with warnings.catch_warnings():  # torch warns about some pickles before refusing them
            warnings.simplefilter("ignore")
            blob = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DgnamValueError(f"cannot read {what} {p}: it holds objects other than tensors and plain containers "
                         f"(a pickle that could run code), refused") from None
    except Exception as e:
        raise DgnamValueError(f"cannot read {what} {p}: {first_line(e)}") from None
    if finite:
        check_finite_tensors(blob, f"{what} {p}")
    return blob


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) for every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def check_finite_tensors(obj: Any, what: str) -> None:
    """Every floating tensor in ``obj`` (a tensor, a state_dict, nested containers) holds only finite
    values, else a one-line :class:`DgnamValueError` that names the first bad tensor and counts its
    NaN and infinite values: NaN weights would otherwise run to the end and write black images."""
    for key, t in _tensors(obj):
        if not (t.is_floating_point() or t.is_complex()) or t.device.type == "meta":
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            nan = int(torch.isnan(t).sum())
            raise DgnamValueError(f"{what}: tensor {key!r} holds {nan} NaN and {int(bad.sum()) - nan} infinite "
                                  f"values (of {t.numel()}); the weights are damaged (a diverged training run?), "
                                  f"nothing was run with them")


@contextlib.contextmanager
def weights_only_everywhere() -> Iterator[None]:
    """Inside, every ``torch.load`` is ``weights_only=True``, also where a library asks for
    ``weights_only=False`` (torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, read at each call)."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def check_state_dict(own: Mapping[str, torch.Tensor], state: Mapping[str, Any], what: str) -> None:
    """Every key of ``own`` in ``state`` with the same shape and no other key; else a
    :class:`DgnamError` ``"<what>: N missing, N unexpected and N mis-shaped keys (first: ...)"``."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if missing or unexpected or shaped:
        first = (missing + unexpected + shaped)[0]
        raise DgnamValueError(f"{what}: {len(missing)} missing, {len(unexpected)} unexpected and {len(shaped)} "
                         f"mis-shaped keys (first: {first!r})")
