"""The learning-rate schedule of generator training (``conf/train_generator.yaml``: ``scheduler``)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_multistep(optimizer: Optimizer, milestones: list[int] = (), gamma: float = 0.5,
                     warmup_steps: int = 0) -> LambdaLR:
    """Per-iteration LR factor: linear warm-up from 1/warmup_steps to 1, then times ``gamma`` at each
    milestone (iterations), like ``MultiStepLR``."""
    ms = sorted(int(m) for m in milestones)

    def factor(it: int) -> float:
        f = min(1.0, (it + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return f * gamma ** sum(it >= m for m in ms)

    return LambdaLR(optimizer, factor)
