"""TAEF2, a pretrained tiny autoencoder for natural images, as a module of dgnam.

TAEF2 (github.com/madebyollin/taesd, MIT licence) maps RGB images in [0, 1] with sides that are
multiples of 8 to latents (B, 32, H/8, W/8) and back. Its decoder is a ready-made natural-image
generator: the latent prior (:class:`dgnam.generator.latent.LatentGenerator`) trains only a small
head in front of it, and latent AM (:class:`dgnam.core.params.LatentParam`) optimizes its input directly.

The architectures are data (:data:`TAEF2_ENCODER`, :data:`TAEF2_DECODER`): a list of layers whose
index in the list is the key prefix of the original ``nn.Sequential`` state dict, so the shared
files load with ``strict=True``:

- ``["conv", c_in, c_out, stride, bias]``: 3 x 3 convolution, padding 1;
- ``["relu"]``, ``["up"]`` (nearest x2), ``["clamp"]`` (``tanh(z / 3) * 3``, the decoder's input);
- ``["block", pool]``: a residual block of 64 channels; ``conv`` = conv, ReLU, conv, ReLU, conv,
  ``fuse`` = ReLU of conv + input; with ``pool`` a branch 1 x 1 conv 64 -> 256, GroupNorm(4, 256),
  ReLU, 1 x 1 conv 256 -> 64 is first added to the block's input.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dgnam.errors import DgnamValueError
from dgnam.safeload import check_state_dict, load_file

LATENT_CHANNELS = 32
SCALE = 8  # image side / latent side
WHERE = ("TAEF2 from github.com/madebyollin/taesd (MIT); dgnam expects taef2_encoder.pth and "
         "taef2_decoder.pth in <shared>/models (../shared beside the checkout, or $DGNAM_SHARED)")


def _blocks(n: int, pool: bool) -> list[list[Any]]:
    return [["block", pool] for _ in range(n)]


#: image (B, 3, H, W) in [0, 1] -> latent (B, 32, H/8, W/8)
TAEF2_ENCODER: list[list[Any]] = [
    ["conv", 3, 64, 1, True], *_blocks(1, False),
    ["conv", 64, 64, 2, False], *_blocks(3, False),
    ["conv", 64, 64, 2, False], *_blocks(3, False),
    ["conv", 64, 64, 2, False], *_blocks(3, True),
    ["conv", 64, LATENT_CHANNELS, 1, True],
]

#: latent (B, 32, h, w) -> image (B, 3, 8h, 8w), approximately in [0, 1]
TAEF2_DECODER: list[list[Any]] = [
    ["clamp"], ["conv", LATENT_CHANNELS, 64, 1, True], ["relu"], *_blocks(3, True),
    ["up"], ["conv", 64, 64, 1, False], *_blocks(3, False),
    ["up"], ["conv", 64, 64, 1, False], *_blocks(3, False),
    ["up"], ["conv", 64, 64, 1, False], *_blocks(1, False),
    ["conv", 64, 3, 1, True],
]


class Clamp(nn.Module):
    """Soft clamp of a latent to (-3, 3): ``tanh(z / 3) * 3``."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z / 3) * 3


class Block(nn.Module):
    """TAEF2's residual block (64 channels), with the optional ``pool`` branch."""

    def __init__(self, n: int = 64, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.ReLU(), nn.Conv2d(n, n, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(n, n, 3, padding=1))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = nn.Sequential(nn.Conv2d(n, 4 * n, 1, bias=False), nn.GroupNorm(4, 4 * n), nn.ReLU(),
                                  nn.Conv2d(4 * n, n, 1, bias=False)) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build(spec: list[list[Any]]) -> nn.Sequential:
    """The ``nn.Sequential`` described by ``spec`` (see the module docstring)."""
    layers: list[nn.Module] = []
    for entry in spec:
        kind = entry[0]
        if kind == "conv":
            _, cin, cout, stride, bias = entry
            layers.append(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias))
        elif kind == "block":
            layers.append(Block(64, bool(entry[1])))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "up":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        elif kind == "clamp":
            layers.append(Clamp())
        else:
            raise DgnamValueError(f"unknown TAEF2 layer kind {kind!r}; valid: conv, block, relu, up, clamp")
    return nn.Sequential(*layers)


def load_state(module: nn.Module, path: str | os.PathLike, what: str) -> nn.Module:
    """Load ``path`` into ``module`` with ``weights_only=True`` and a strict key/shape check."""
    sd = load_file(path, f"{what} weights", f" ({WHERE})")
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise DgnamValueError(f"{path} is not a state_dict of tensors (expected the {what} weights)")
    check_state_dict(module.state_dict(), sd, f"{path} does not fit the {what} architecture")
    module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return module


class _TAEF2(nn.Module):
    """Base: the layers of ``spec``, weights from ``weights_file`` (None: random, for tests), NHWC
    memory layout when ``channels_last`` (about twice as fast for these convolutions on a CPU)."""

    what = "TAEF2"

    def __init__(self, spec: list[list[Any]], weights_file: str | os.PathLike | None,
                 channels_last: bool) -> None:
        super().__init__()
        self.layers = build(spec)
        self.weights_file = str(weights_file) if weights_file else None
        if weights_file is not None:
            load_state(self.layers, weights_file, self.what)
        self.channels_last = channels_last
        if channels_last:
            self.layers.to(memory_format=torch.channels_last)

    def _run(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x).contiguous()


class TAEF2Encoder(_TAEF2):
    """E_lat: images (B, 3, H, W) in [0, 1], H and W multiples of 8 -> latents (B, 32, H/8, W/8)."""

    what = "TAEF2 encoder"

    def __init__(self, weights_file: str | os.PathLike | None = None, channels_last: bool = True) -> None:
        super().__init__(TAEF2_ENCODER, weights_file, channels_last)

    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        if h % SCALE or w % SCALE:
            raise DgnamValueError(f"the TAEF2 encoder needs image sides that are multiples of {SCALE}, got {h} x {w}")
        return self._run(images)


class TAEF2Decoder(_TAEF2):
    """Dec: latents (B, 32, h, w) -> images (B, 3, 8h, 8w), clamped to [0, 1] when ``clamp``."""

    what = "TAEF2 decoder"

    def __init__(self, weights_file: str | os.PathLike | None = None, clamp: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__(TAEF2_DECODER, weights_file, channels_last)
        self.clamp = clamp

    def forward(self, z: Tensor) -> Tensor:
        x = self._run(z)
        return x.clamp(0, 1) if self.clamp else x


def shared_file(name: str) -> str:
    """``<shared>/models/<name>``."""
    from dgnam.paths import shared_dir

    return str(Path(shared_dir()) / "models" / name)


@functools.lru_cache(maxsize=4)
def frozen_decoder(path: str) -> TAEF2Decoder:
    """A frozen (eval, no grad) decoder loaded from ``path``, shared by every caller in the process."""
    return TAEF2Decoder(path).eval().requires_grad_(False)


def latent_side(resolution: int) -> int:
    """The latent side for an image side (a multiple of 8)."""
    if resolution % SCALE:
        raise DgnamValueError(f"resolution {resolution} is not a multiple of {SCALE} (the TAEF2 latent is 1/{SCALE})")
    return resolution // SCALE

