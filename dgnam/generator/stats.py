"""Per-unit code statistics over real images: DGN-AM clamps codes to [0, upper]."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class CodeStats:
    """Running per-unit mean and standard deviation of codes (float64 sums, any number of batches)."""

    def __init__(self) -> None:
        self.n = 0
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, codes: Tensor) -> None:
        """Add codes (B, D) (or (B, V, D): every view counts as an item)."""
        c = codes.detach().reshape(-1, codes.shape[-1]).double().cpu()
        if self.s1 is None:
            self.s1, self.s2 = torch.zeros(c.shape[1], dtype=torch.float64), torch.zeros(c.shape[1], dtype=torch.float64)
        self.s1 += c.sum(0)
        self.s2 += c.pow(2).sum(0)
        self.n += c.shape[0]

    def result(self, k: float = 3.0) -> dict[str, Tensor]:
        """``{"code_mean", "code_std", "code_upper" = mean + k * std}``, each float32 (D,), and ``count``.

        The std is the population std (divide by N)."""
        if self.s1 is None or self.n == 0:
            raise ValueError("no codes were added")
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean.pow(2)).clamp_min(0)
        std = var.sqrt()
        return {"code_mean": mean.float(), "code_std": std.float(), "code_upper": (mean + k * std).float(),
                "code_count": torch.tensor(self.n), "code_k": torch.tensor(float(k))}


def code_statistics(batches: Iterable[Tensor], k: float = 3.0) -> dict[str, Tensor]:
    """Per-unit mean, std and upper bound mean + k * std over every code in ``batches`` ((B, D) each)."""
    st = CodeStats()
    for b in batches:
        st.update(b)
    return st.result(k)
