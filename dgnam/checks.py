"""Checks of single config values, each a one-line :class:`~dgnam.errors.DgnamError` that names the
key: positive integers, options, NaN and infinity anywhere, optimizer ranges."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgnam.errors import DgnamValueError
from dgnam.ranges import check_ranges, optimizer_ranges

GRAD_NORMS = ("none", "l1", "l2")


def check_finite(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> None:
    """No number anywhere in the config is NaN or infinite (``optimizer.lr=nan``); Hydra's own
    ``hydra`` node, when present, is not checked."""
    if not prefix and OmegaConf.is_dict(cfg):
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else (f"{prefix}[{k}]" if prefix else str(k))
        if isinstance(v, float) and not math.isfinite(v):
            raise DgnamValueError(f"{key}={v} must be a finite number")
        if isinstance(v, (Mapping, list, tuple)):
            check_finite(v, key)


def check_optimizer(node: DictConfig | Mapping[str, Any] | None, key: str = "optimizer") -> None:
    """The optimizer's numbers in range (the rows of :func:`dgnam.ranges.optimizer_ranges`: ``lr`` > 0,
    ``momentum`` and each of ``betas`` in [0, 1), ``weight_decay`` >= 0, ``eps`` > 0, all finite) and
    ``betas`` a pair, which the table cannot say."""
    if not node:
        return
    opt = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    check_finite(opt, key)
    check_ranges({key: opt}, optimizer_ranges(key))
    betas = opt.get("betas")
    if betas is not None and len(betas) != 2:
        raise DgnamValueError(f"{key}.betas={list(betas)} must be two numbers in [0, 1)")


def positive_int(cfg: DictConfig, key: str, default: int | None = None) -> int:
    """``cfg.<key>`` as a positive integer, or a one-line error naming the key."""
    val = OmegaConf.select(cfg, key, default=default)
    try:
        ival = int(val)
    except (TypeError, ValueError):
        raise DgnamValueError(f"{key}={val!r} must be a positive integer") from None
    if ival <= 0 or ival != float(val):
        raise DgnamValueError(f"{key}={val!r} must be a positive integer")
    return ival


def one_of(value: Any, key: str, valid: Sequence[str]) -> str:
    """Check a string option against its valid values."""
    if value not in valid:
        raise DgnamValueError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    return str(value)


def grad_norm_of(cfg: DictConfig) -> str | None:
    """``cfg.grad_norm`` checked: None (off), ``l1`` or ``l2``."""
    value = cfg.get("grad_norm") or None
    if value is not None:
        one_of(value, "grad_norm", GRAD_NORMS)
    return None if value == "none" else value
