"""Numeric precision of the forward passes: ``fp32``, ``bf16`` (bfloat16 autocast), or ``auto``.

``auto`` picks bf16 where the hardware computes it natively and fp32 elsewhere:

- CUDA: a GPU with bf16 support (``torch.cuda.is_bf16_supported()``: Ampere and later);
- CPU: AMX or AVX-512 BF16 (oneDNN then runs bf16 convolutions and matrix products in hardware;
  about 3x faster than fp32 for the TAEF2 decoder on an AMX CPU). On a CPU without them bf16 is
  emulated and much *slower* than fp32 (11-17x for a DGN-AM step on a 2-core AMD EPYC with AVX2
  only, benchmarks/RESULTS.md), so ``auto`` stays in fp32 there.

What bf16 changes is measured in benchmarks/RESULTS.md ("bf16 against fp32"): images and logits
stay close, one step's gradient direction moves (cosine 0.5-0.9 with fp32's), and DGN-AM ends at
other pictures that excite the target as much; the judged 20-class comparison of both precisions
is part of ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from dgnam.errors import DgnamValueError

PRECISIONS = ("auto", "fp32", "bf16")


def _cpu_bf16() -> bool:
    """The CPU's bf16 hardware, unless ``DGNAM_CPU_BF16=0`` (treat it as fp32-only: the same numbers
    as on any other CPU; the test suite sets it) or ``=1`` (treat it as bf16-capable)."""
    env = os.environ.get("DGNAM_CPU_BF16", "").strip()
    if env in ("0", "1"):
        return env == "1"
    if env:
        raise DgnamValueError(f"DGNAM_CPU_BF16={env!r}; valid: 0 (fp32 only), 1 (bf16 hardware), "
                              "or unset (what the CPU reports)")
    return _cpu_bf16_detected()


@functools.lru_cache(maxsize=None)
def _cpu_bf16_detected() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions and matrix products in hardware."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_bf16()
    return False


def check_precision(precision: str, key: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line error naming ``key``."""
    if precision not in PRECISIONS:
        raise DgnamValueError(f"unknown {key} {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def check_config(cfg, keys: tuple[str, ...] = ("precision", "model.precision", "param.precision")) -> None:
    """Check every precision key of a composed config that is present (one line for a bad one)."""
    from omegaconf import OmegaConf

    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            check_precision(str(value), key)


def resolve(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; other values as they are."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``precision`` resolves to bf16, else nothing."""
    dev = torch.device(device)
    if resolve(precision, dev) == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
