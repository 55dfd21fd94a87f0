"""A latent generator prior: G(h) = Dec(H(h)), a small trained head H into the latent space of a
frozen pretrained decoder (TAEF2, :mod:`dgnam.generator.taef2`).

The head's architecture is data (:data:`LATENT_HEAD`, cut to a resolution by :func:`head_spec`):
fully connected widths, the channels and side of the map the last fc layer is reshaped to, and a
``stack`` of ``[kind, channels]`` with ``up`` (nearest x2 then a 3 x 3 convolution: a
resize-convolution, which draws no checkerboard) or ``conv`` (3 x 3). A final 3 x 3 convolution
gives the decoder's 32 latent channels. Every layer but that last one is followed by LeakyReLU.

The image side is 8 times the latent side: 64, 128 or 256 px for latents of 8, 16 or 32.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from dgnam.errors import DgnamValueError
from dgnam.generator.arch import StandardizedInput, fc_stack
from dgnam.generator.taef2 import LATENT_CHANNELS, TAEF2Decoder, latent_side

KIND = "latent"

#: The head H: code (B, D) -> latent (B, 32, R/8, R/8). The one copy: ``conf/generator/latent.yaml``
#: composes it as ``generator.spec`` (see :mod:`dgnam.config`).
LATENT_HEAD: dict[str, Any] = {
    "fc": [2048],              # hidden fc widths (each LeakyReLU); then fc -> start_channels x 4 x 4
    "start_channels": 256,
    "start_size": 4,
    "stack": [                 # [kind, out channels]; latent side after each layer in comments
        ["up", 256],           #  8   (64 px)
        ["conv", 256],         #  8
        ["up", 128],           # 16  (128 px)
        ["conv", 128],         # 16
        ["up", 64],            # 32  (256 px)
        ["conv", 64],          # 32
    ],
    "out_channels": LATENT_CHANNELS,
    "slope": 0.2,
}

RESOLUTIONS = (64, 128, 256)
#: ``generator.code``: a flat code vector (fc layers first) or a spatial map (an unpooled conv layer).
CODE_KINDS = ("flat", "spatial")


def head_spec(base: dict[str, Any] | None = None, resolution: int = 128, fc: list[int] | None = None,
              width: float = 1.0, code_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The head spec for ``resolution``: the stack up to (and with the ``conv`` layers right after)
    the ``up`` that reaches the latent side ``resolution / 8``; ``width`` scales every channel count.

    ``code_shape`` ``(C, s, s)``: the code is a spatial map (an unpooled conv layer, flattened): the
    head starts with a 1 x 1 convolution to ``start_channels`` at side ``s``, without fc layers."""
    spec = copy.deepcopy(base or LATENT_HEAD)
    if code_shape is not None:
        c, h, w = (int(v) for v in code_shape)
        if h != w or h & (h - 1):
            raise DgnamValueError(f"a spatial code must be square with a power-of-two side, got {c} x {h} x {w}")
        spec["code_shape"], spec["start_size"], spec["fc"] = [c, h, w], h, []
    side = latent_side(resolution)
    if spec.get("start_size", 4) > side:
        raise DgnamValueError(f"the code's side {spec['start_size']} is larger than the latent side {side} at "
                         f"resolution {resolution}; valid: a resolution of at least {8 * spec['start_size']}")
    s, reachable, stack = spec.get("start_size", 4), [spec.get("start_size", 4)], []
    for kind, ch in spec["stack"]:
        if kind not in ("up", "conv"):
            raise DgnamValueError(f"unknown layer kind {kind!r} in the latent head's stack; valid: up, conv")
        if kind == "up":
            if s == side:
                break
            s *= 2
            reachable.append(s)
        stack.append([kind, max(1, int(round(ch * width)))])
    if s != side:
        valid = ", ".join(str(8 * r) for r in reachable if r >= 8)
        raise DgnamValueError(f"unsupported resolution {resolution} for this latent head; valid: {valid}")
    spec["stack"] = stack
    spec["resolution"] = int(resolution)
    spec["start_channels"] = max(1, int(round(spec["start_channels"] * width)))
    if fc is not None and code_shape is None:
        spec["fc"] = [int(w) for w in fc]
    return spec


class LatentHead(StandardizedInput):
    """H: codes (B, D) -> latents (B, C, r, r), from a :func:`head_spec` (inputs standardized as in
    :class:`dgnam.generator.arch.Generator`). A flat code goes through the fc layers and is reshaped
    to ``start_channels x start_size x start_size``; a spatial one (``spec["code_shape"]``) is
    reshaped to its map and mapped to ``start_channels`` by a 1 x 1 convolution."""

    def __init__(self, code_dim: int, spec: dict[str, Any]) -> None:
        super().__init__()
        self.code_dim, self.spec = int(code_dim), copy.deepcopy(spec)
        self._init_input(self.code_dim)
        slope = spec.get("slope", 0.2)
        s0, c0 = spec.get("start_size", 4), spec["start_channels"]
        self.code_shape = tuple(int(v) for v in spec["code_shape"]) if spec.get("code_shape") else None
        if self.code_shape is not None:
            if self.code_shape[0] * self.code_shape[1] * self.code_shape[2] != self.code_dim:
                raise DgnamValueError(f"the head's code shape {list(self.code_shape)} does not hold the code's "
                                 f"{self.code_dim} units")
            self.fc = nn.Sequential(nn.Conv2d(self.code_shape[0], c0, 1), nn.LeakyReLU(slope))
        else:
            self.fc = fc_stack(self.code_dim, list(spec["fc"]) + [c0 * s0 * s0], slope)
        convs: list[nn.Module] = []
        c = c0
        for kind, ch in spec["stack"]:
            if kind == "up":
                convs.append(nn.Upsample(scale_factor=2, mode="nearest"))
            convs += [nn.Conv2d(c, ch, 3, padding=1), nn.LeakyReLU(slope)]
            c = ch
        convs.append(nn.Conv2d(c, int(spec.get("out_channels", LATENT_CHANNELS)), 3, padding=1))
        self.convs = nn.Sequential(*convs)
        self.start = (c0, s0)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.convs[-1].weight, std=1e-3)  # start near the zero latent

    def forward(self, code: Tensor) -> Tensor:
        c0, s0 = self.start
        h = self.standardize(code)  # (B, D)
        if self.code_shape is not None:
            return self.convs(self.fc(h.view(code.shape[0], *self.code_shape)))  # (B, C, s, s) -> latents
        x = self.fc(h).view(code.shape[0], c0, s0, s0)  # (B, C0, 4, 4)
        return self.convs(x)  # (B, 32, r, r)


class LatentGenerator(nn.Module):
    """G(h) = Dec(H(h)): codes (B, D) -> images (B, 3, R, R) in [0, 1].

    ``decoder`` is frozen (eval mode, no gradients for its weights; gradients flow through it to
    the head and to the code). Its weights are part of this module's ``state_dict``, so a prior
    file carries everything DGN-AM needs.

    Args:
        code_dim: D, the encoder's code size.
        spec: from :func:`head_spec`.
        decoder: the frozen TAEF2 decoder (``None``: a randomly initialized one, for loading).
        clamp: clamp the output to [0, 1] (the decoder's output is only approximately in range).
    """

    kind = KIND

    def __init__(self, code_dim: int, spec: dict[str, Any], decoder: TAEF2Decoder | None = None,
                 clamp: bool = True) -> None:
        super().__init__()
        self.head = LatentHead(code_dim, spec)
        self.decoder = (decoder or TAEF2Decoder(None)).eval().requires_grad_(False)
        self.decoder.clamp = False
        self.code_dim, self.spec, self.clamp = int(code_dim), self.head.spec, clamp
        self.resolution = int(spec["resolution"])

    def train(self, mode: bool = True) -> LatentGenerator:
        super().train(mode)
        self.decoder.eval()
        return self

    def set_input_stats(self, mean: Tensor, std: Tensor, eps: float = 1e-2) -> None:
        """Standardize the head's inputs with per-unit ``mean`` and ``std`` (D,)."""
        self.head.set_input_stats(mean, std, eps)

    def latent(self, code: Tensor) -> Tensor:
        """H(h): (B, D) -> (B, 32, R/8, R/8)."""
        return self.head(code)

    def decode(self, z: Tensor) -> Tensor:
        """Dec(z): (B, 32, r, r) -> (B, 3, 8r, 8r), clamped to [0, 1] when ``clamp``."""
        x = self.decoder(z)
        return x.clamp(0, 1) if self.clamp else x

    def forward(self, code: Tensor) -> Tensor:
        return self.decode(self.head(code))

