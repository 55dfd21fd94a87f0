"""Small networks of users' own (not torchvision's), for the tests of dgnam.visualize and model=custom."""

from __future__ import annotations

import torch
from torch import nn


class CifarNet(nn.Module):
    """A 32-px CIFAR-style classifier: its linear layer fixes the input size."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def cifar_net(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """What a user's ``model._target_`` points at: a function returning the module."""
    return CifarNet(num_classes, in_channels)


class Untraceable(nn.Module):
    """A branch on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 5)
        self.hooks_seen: list[dict[str, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hooks_seen.append({n: len(m._forward_hooks) for n, m in self.named_modules()})
        h = self.act(self.conv(x))
        if h.mean() > 1e6:  # data-dependent control flow
            h = h * 0
        return self.fc(h.mean((2, 3)))
