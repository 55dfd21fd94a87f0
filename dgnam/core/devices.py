"""The devices a run can use here, and the one a config names, checked before any work."""

from __future__ import annotations

import torch

from dgnam.errors import DgnamValueError


def available_devices() -> list[str]:
    """The device names that work on this machine: ``auto``, ``cpu``, then ``cuda`` and ``cuda:N``,
    ``mps`` (Apple GPUs) and ``xpu`` (Intel GPUs) where torch has them."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        out += ["xpu", *(f"xpu:{i}" for i in range(xpu.device_count()))]
    return out


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; any other name must be a device that computes here
    (not ``meta``, which holds shapes without values), else one line naming it and the available ones."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DgnamValueError(f"unknown device {device!r}; available here: {', '.join(here)}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise DgnamValueError(f"device {device!r} holds shapes without values and cannot run anything; available "
                              f"here: {', '.join(here)}")
    if dev.type not in here or (dev.index is not None and f"{dev.type}:{dev.index}" not in here):
        raise DgnamValueError(f"device {device!r} is not available here (this torch or machine has no {dev.type}"
                              f"{'' if dev.index is None else f' device {dev.index}'}); available here: {', '.join(here)}")
    return dev
