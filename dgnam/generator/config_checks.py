"""Checks of a training config before any work: every number in its range, each failure one line
naming the key (see docs/errors.md)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgnam.checks import check_finite, check_optimizer
from dgnam.errors import DgnamError


def _number(cfg: DictConfig, key: str, low: float, strict: bool = False, integer: bool = False,
            optional: bool = True, special: tuple[Any, ...] = ()) -> None:
    v = OmegaConf.select(cfg, key)
    if v is None and optional or v in special:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if strict else v >= low)
    if integer:
        ok = ok and float(v) == int(v)
    if not ok:
        kind = "an integer" if integer else "a number"
        rel = ">" if strict else ">="
        extra = f" (or {', '.join(map(str, special))})" if special else ""
        raise DgnamError(f"{key}={v!r} must be {kind} {rel} {low:g}{extra}{' or null' if optional else ''}")


def check_numbers(cfg: DictConfig) -> None:
    """Every number of a training config in its range: no NaN or infinity anywhere, the two
    optimizers (:func:`dgnam.checks.check_optimizer`), loss weights, code noise and statistics, the
    gradient clip, generator widths, the data loader's sizes and crop range, the trainer's counts."""
    check_finite(cfg)
    check_optimizer(cfg.get("optimizer_g"), "optimizer_g")
    check_optimizer(cfg.get("optimizer_d"), "optimizer_d")
    for name in (cfg.loss.get("weights") or {}):
        _number(cfg, f"loss.weights.{name}", 0, optional=False)
    _number(cfg, "code_noise", 0)
    _number(cfg, "code_stats.k", 0)
    _number(cfg, "code_stats.max_images", 0, strict=True, integer=True)
    _number(cfg, "grad_clip_g", 0, strict=True)
    _number(cfg, "generator.width", 0, strict=True)
    fc = OmegaConf.select(cfg, "generator.fc")
    if fc is not None and not all(isinstance(w, int) and w > 0 for w in fc):
        raise DgnamError(f"generator.fc={list(fc)} must be a list of positive integers (fc widths), or null")
    for key in ("data.batch_size", "data.encode_batch_size", "data.load_size", "data.limit_train",
                "data.limit_val", "grid_images"):
        _number(cfg, key, 0, strict=True, integer=True)
    _number(cfg, "data.num_workers", 0, integer=True)
    crop = OmegaConf.select(cfg, "data.crop_scale")
    if crop is not None and (len(crop) != 2 or not 0 < crop[0] <= crop[1] <= 1):
        raise DgnamError(f"data.crop_scale={list(crop)} must be [low, high] with 0 < low <= high <= 1")
    _number(cfg, "trainer.max_steps", 0, strict=True, integer=True, special=(-1,))
    _number(cfg, "trainer.max_epochs", 0, strict=True, integer=True, special=(-1,))
    _number(cfg, "trainer.log_every_n_steps", 0, strict=True, integer=True)
    _number(cfg, "trainer.val_check_interval", 0, strict=True)
    _number(cfg, "trainer.checkpoint_every_minutes", 0)
