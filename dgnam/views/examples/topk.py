"""The running state of a dataset-examples pass, per layer: each unit's top k images so far and a
histogram of its values; both are updated one batch at a time and saved in checkpoints as tensors.

A conv unit's value for an image is the maximum of its map over positions (the first position in
row-major order where it peaks, as ``argmax`` gives it); a linear unit's value is the unit itself.

Order: higher value first, and among equal values the lower dataset index first, so the top k of a
stream is one set whatever the batches (the top k of the union is the top k of the running top k and
the next batch). NaN values count as -inf.

Histogram: ``bins`` equal bins between edges fixed from the first ``warmup`` images (from the
smallest value seen among them to the largest plus half their spread; a unit that was constant
there gets a spread of max(|value|, 1)), plus an under- and an overflow bin whose outer edges are the
smallest and largest values of the whole pass. Every image is counted once, so the counts add up to
the images seen; the edges depend only on which images came first, not on the batch size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

EMPTY = torch.iinfo(torch.int64).max  # the index of a top-k slot not filled yet (fewer images than k)


def unit_values(act: Tensor, units: Tensor) -> tuple[Tensor, Tensor | None]:
    """Activations (B, C, H, W) or (B, C) -> the chosen units' values (B, U) as float32 and, for a
    conv layer, the (y, x) of each maximum (B, U, 2)."""
    a = torch.nan_to_num(act[:, units.to(act.device)].float(), nan=float("-inf")).cpu()
    if a.dim() == 2:
        return a, None
    b, u, _, w = a.shape
    values, arg = a.reshape(b, u, -1).max(-1)
    return values, torch.stack([arg // w, arg % w], -1)


class TopK:
    """Each of U units' k best (value, dataset index, position) so far."""

    def __init__(self, units: int, k: int, spatial: bool) -> None:
        self.k = int(k)
        self.values = torch.full((units, k), float("-inf"))
        self.indices = torch.full((units, k), EMPTY, dtype=torch.long)
        self.positions = torch.zeros(units, k, 2, dtype=torch.long) if spatial else None

    def update(self, values: Tensor, indices: Tensor, positions: Tensor | None) -> None:
        """Merge a batch: ``values`` (B, U), ``indices`` (B,) dataset indices, ``positions`` (B, U, 2)."""
        u, b = self.values.shape[0], values.shape[0]
        cand_v = torch.cat([self.values, values.T], 1)
        cand_i = torch.cat([self.indices, indices[None].expand(u, b)], 1)
        by_index = cand_i.argsort(dim=1, stable=True)  # lower index first ...
        _, by_value = cand_v.gather(1, by_index).sort(dim=1, descending=True, stable=True)  # ... within a value
        order = by_index.gather(1, by_value[:, : self.k])
        new_v, new_i = cand_v.gather(1, order), cand_i.gather(1, order)
        if self.positions is not None:
            cand_p = torch.cat([self.positions, positions.transpose(0, 1)], 1)
            self.positions = cand_p.gather(1, order[..., None].expand(-1, -1, 2))
        self.values, self.indices = new_v, new_i

    def state(self) -> dict[str, Any]:
        return {"values": self.values, "indices": self.indices, "positions": self.positions}

    def load(self, state: dict[str, Any]) -> None:
        self.values, self.indices, self.positions = state["values"], state["indices"], state["positions"]


class Histogram:
    """Counts of each of U units' values in ``bins`` bins fixed after ``warmup`` images (see above)."""

    def __init__(self, units: int, bins: int, warmup: int) -> None:
        self.bins, self.warmup = int(bins), int(warmup)
        self.buffer = torch.zeros(0, units)
        self.edges: Tensor | None = None  # (U, bins + 1): lo ... hi
        self.counts = torch.zeros(units, self.bins + 2, dtype=torch.long)
        self.vmin = torch.full((units,), float("inf"))
        self.vmax = torch.full((units,), float("-inf"))

    def update(self, values: Tensor) -> None:
        self.vmin = torch.minimum(self.vmin, values.min(0).values)
        self.vmax = torch.maximum(self.vmax, values.max(0).values)
        if self.edges is not None:
            self._count(values)
            return
        self.buffer = torch.cat([self.buffer, values])
        if len(self.buffer) >= self.warmup:
            self.finish()

    def finish(self) -> None:
        """Fix the edges from the buffered images (at the end of a pass shorter than ``warmup``)."""
        if self.edges is not None or not len(self.buffer):
            return
        first = self.buffer[: self.warmup]
        lo, top = first.min(0).values, first.max(0).values
        lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
        top = torch.where(torch.isfinite(top), top, lo)
        spread = top - lo
        spread = torch.where(spread > 0, spread, lo.abs().clamp_min(1.0))
        hi = top + 0.5 * spread
        self.edges = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, self.bins + 1)[None]
        buffered, self.buffer = self.buffer, torch.zeros(0, self.buffer.shape[1])
        self._count(buffered)

    def _count(self, values: Tensor) -> None:
        lo, hi = self.edges[:, 0], self.edges[:, -1]
        t = ((values.clamp(lo, hi) - lo) / (hi - lo) * self.bins).floor().long() + 1
        idx = torch.where(values < lo, 0, torch.where(values >= hi, self.bins + 1, t.clamp(1, self.bins)))
        self.counts.scatter_add_(1, idx.T.contiguous(), torch.ones_like(idx.T))

    def export(self) -> tuple[Tensor, Tensor]:
        """(edges (U, bins + 3), counts (U, bins + 2)): the underflow bin, the bins, the overflow bin."""
        self.finish()
        if self.edges is None:  # nothing seen
            return torch.zeros(self.counts.shape[0], self.bins + 3), self.counts
        lo = torch.minimum(self.vmin, self.edges[:, 0])
        hi = torch.maximum(self.vmax, self.edges[:, -1])
        return torch.cat([lo[:, None], self.edges, hi[:, None]], 1), self.counts

    def state(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "edges": self.edges, "counts": self.counts, "vmin": self.vmin,
                "vmax": self.vmax}

    def load(self, state: dict[str, Any]) -> None:
        self.buffer, self.edges, self.counts = state["buffer"], state["edges"], state["counts"]
        self.vmin, self.vmax = state["vmin"], state["vmax"]
