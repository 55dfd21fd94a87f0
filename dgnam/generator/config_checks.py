"""Checks of a training config before any work: every number in its range (the table
:data:`dgnam.ranges.TRAIN`), each failure one line naming the key (see docs/errors.md)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from dgnam.checks import check_finite, check_optimizer
from dgnam.errors import DgnamValueError
from dgnam.ranges import TRAIN, check_ranges


def check_numbers(cfg: DictConfig) -> None:
    """Every number of a training config in its range: no NaN or infinity anywhere, every key of
    :data:`dgnam.ranges.TRAIN`, the two optimizers (:func:`dgnam.checks.check_optimizer`), and the
    pairs whose order matters (the crop range, the balancing thresholds)."""
    check_finite(cfg)
    check_ranges(cfg, TRAIN)
    check_optimizer(cfg.get("optimizer_g"), "optimizer_g")
    check_optimizer(cfg.get("optimizer_d"), "optimizer_d")
    crop = OmegaConf.select(cfg, "data.crop_scale")
    if crop is not None and (len(crop) != 2 or not crop[0] <= crop[1]):
        raise DgnamValueError(f"data.crop_scale={list(crop)} must be [low, high] with 0 < low <= high <= 1")
    stop, resume = OmegaConf.select(cfg, "loss.balance.d_stop"), OmegaConf.select(cfg, "loss.balance.d_resume")
    if stop is not None and resume is not None and stop > resume:
        raise DgnamValueError(f"loss.balance.d_stop={stop} must be <= loss.balance.d_resume={resume} "
                         "(D stops below d_stop and resumes above d_resume)")
