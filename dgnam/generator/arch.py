"""Generator and discriminator architectures, described as data.

A generator spec is a dict (see :data:`FC6_GENERATOR`): fully connected widths, the channel count of
the 4 x 4 map the last fc layer is reshaped to, and the upsampling ``stack``: a list of
``[kind, channels]`` with ``kind`` ``up`` (transposed conv, kernel 4, stride 2: doubles the side) or
``conv`` (kernel 3, stride 1). Each ``up`` doubles the side starting from 4; a resolution of 64 or 128
keeps the stack up to the 4th or 5th ``up`` and makes that layer output 3 channels. Every layer but
the last is followed by LeakyReLU; there is no batch norm and no output nonlinearity.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dgnam.errors import DgnamValueError

#: The DeePSiM "fc6" generator of Dosovitskiy & Brox (2016) as used by DGN-AM (256 x 256 output).
#: The one copy: ``conf/generator/fc6.yaml`` composes it as ``generator.spec`` (see :mod:`dgnam.config`).
FC6_GENERATOR: dict[str, Any] = {
    "fc": [4096, 4096],          # hidden fc widths (each LeakyReLU); then fc -> start_channels x 4 x 4
    "start_channels": 256,
    "start_size": 4,
    "stack": [                   # [kind, out channels]; output side after each layer in comments
        ["up", 256],             # deconv5   8
        ["conv", 512],           # conv5_1   8
        ["up", 256],             # deconv4  16
        ["conv", 256],           # conv4_1  16
        ["up", 128],             # deconv3  32
        ["conv", 128],           # conv3_1  32
        ["up", 64],              # deconv2  64
        ["up", 32],              # deconv1 128
        ["up", 3],               # deconv0 256
    ],
    "up_kernel": 4,
    "conv_kernel": 3,
    "slope": 0.3,
}

#: The DeePSiM discriminator: image convs [channels, kernel, stride], average pool, dropout, fc;
#: the code enters through its own fc branch; both are joined by fc layers ending in 2 logits.
#: The one copy: ``conf/train_generator.yaml`` composes it as ``discriminator.spec``.
DEEPSIM_DISCRIMINATOR: dict[str, Any] = {
    "convs": [[32, 7, 4], [64, 5, 1], [128, 3, 2], [256, 3, 1], [256, 3, 2]],
    "image_fc": [256],
    "code_fc": [1024, 512],
    "joint_fc": [512],
    "dropout": 0.5,
    "slope": 0.3,
}

RESOLUTIONS = (64, 128, 256)


def generator_spec(base: dict[str, Any] | None = None, resolution: int = 256, fc: Sequence[int] | None = None,
                   width: float = 1.0, start_channels: int | None = None) -> dict[str, Any]:
    """A generator spec for ``resolution``: the stack cut after the ``up`` that reaches it.

    Args:
        base: the full spec (default :data:`FC6_GENERATOR`).
        resolution: 64, 128 or 256 for the standard stack (any power-of-two side the stack reaches).
        fc: hidden fc widths (``None``: the base's).
        width: multiplier for every conv channel count (not the 3 output channels).
        start_channels: channels of the 4 x 4 map (``None``: base's times ``width``).
    """
    spec = copy.deepcopy(base or FC6_GENERATOR)
    side, reachable = spec.get("start_size", 4), []
    for kind, _ in spec["stack"]:
        if kind == "up":
            side *= 2
            reachable.append(side)
    if resolution not in reachable:
        raise DgnamValueError(f"unsupported resolution {resolution}; valid: {', '.join(map(str, reachable))}")
    stack, side = [], spec.get("start_size", 4)
    for kind, ch in spec["stack"]:
        if kind not in ("up", "conv"):
            raise DgnamValueError(f"unknown layer kind {kind!r} in generator stack; valid: up, conv")
        stack.append([kind, max(1, int(round(ch * width)))])
        if kind == "up":
            side *= 2
            if side == resolution:
                break
    stack[-1][1] = 3
    spec["stack"] = stack
    spec["resolution"] = resolution
    if fc is not None:
        spec["fc"] = [int(w) for w in fc]
    spec["start_channels"] = int(start_channels) if start_channels else max(1, int(round(spec["start_channels"] * width)))
    return spec


def fc_stack(code_dim: int, widths: Sequence[int], slope: float) -> nn.Sequential:
    """Linear + LeakyReLU for each width in turn, from ``code_dim`` inputs."""
    layers: list[nn.Module] = []
    d = int(code_dim)
    for w in widths:
        layers += [nn.Linear(d, int(w)), nn.LeakyReLU(slope)]
        d = int(w)
    return nn.Sequential(*layers)


class StandardizedInput(nn.Module):
    """Base for networks whose first layer sees standardized codes ``(h - in_mean) * in_scale``
    (two buffers (D,), 0 and 1 until :meth:`set_input_stats`)."""

    def _init_input(self, code_dim: int) -> None:
        self.register_buffer("in_mean", torch.zeros(code_dim))
        self.register_buffer("in_scale", torch.ones(code_dim))

    @torch.no_grad()
    def set_input_stats(self, mean: Tensor, std: Tensor, eps: float = 1e-2) -> None:
        """Standardize inputs with per-unit ``mean`` and ``std`` (D,) (``eps`` guards dead units)."""
        self.in_mean.copy_(mean.reshape(-1).to(self.in_mean))
        self.in_scale.copy_(1.0 / (std.reshape(-1).to(self.in_scale) + eps))

    def standardize(self, code: Tensor) -> Tensor:
        return (code - self.in_mean) * self.in_scale


class Generator(StandardizedInput):
    """G: codes (B, D) -> images (B, 3, R, R), nominally in [0, 1] (no output nonlinearity).

    The first layer sees standardized codes ``(h - in_mean) * in_scale``: two fixed buffers (0 and 1
    unless :meth:`set_input_stats` is called with the codes' per-unit statistics before training).
    This only reparameterizes the first fc layer, but codes with a large common offset (post-ReLU
    units) otherwise drown their per-image variation and G learns one image for every code.

    Args:
        code_dim: D, the encoder's code size.
        spec: from :func:`generator_spec`.
        clamp: clamp the output to [0, 1] (for inference; training sees the raw output).
    """

    def __init__(self, code_dim: int, spec: dict[str, Any], clamp: bool = False) -> None:
        super().__init__()
        self.code_dim, self.spec, self.clamp = int(code_dim), copy.deepcopy(spec), clamp
        self._init_input(self.code_dim)
        slope = spec.get("slope", 0.3)
        s0, c0 = spec.get("start_size", 4), spec["start_channels"]
        self.fc = fc_stack(self.code_dim, list(spec["fc"]) + [c0 * s0 * s0], slope)
        convs: list[nn.Module] = []
        c, side = c0, s0
        ku, kc = spec.get("up_kernel", 4), spec.get("conv_kernel", 3)
        for i, (kind, ch) in enumerate(spec["stack"]):
            if kind == "up":
                convs.append(nn.ConvTranspose2d(c, ch, ku, stride=2, padding=(ku - 2) // 2))
                side *= 2
            else:
                convs.append(nn.Conv2d(c, ch, kc, stride=1, padding=kc // 2))
            if i < len(spec["stack"]) - 1:
                convs.append(nn.LeakyReLU(slope))
            c = ch
        self.deconv = nn.Sequential(*convs)
        self.resolution = side
        self.start = (c0, s0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (He) initialization for the LeakyReLU slope, zero biases."""
        slope = self.spec.get("slope", 0.3)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        last = [m for m in self.deconv if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
        nn.init.normal_(last.weight, std=1e-3)  # start near a flat grey image
        nn.init.constant_(last.bias, 0.5)

    def forward(self, code: Tensor) -> Tensor:
        c0, s0 = self.start
        code = self.standardize(code)  # (B, D)
        x = self.fc(code).view(code.shape[0], c0, s0, s0)  # (B, C0, 4, 4)
        x = self.deconv(x)  # (B, 3, R, R)
        return x.clamp(0, 1) if self.clamp else x


class Discriminator(nn.Module):
    """D: (images (B, 3, R, R), codes (B, D)) -> logits (B, 2) (index 1 = real).

    ``spec["in_channels"]`` (default 3) lets the same D judge other inputs, e.g. latents (B, 32, r, r).

    Convs from ``spec["convs"]`` (``[channels, kernel, stride]``, padding kernel // 2, LeakyReLU),
    global average pool, dropout, ``image_fc``; the code goes through ``code_fc`` (none if
    ``code_dim`` is 0 or ``code_fc`` is empty... then the code is ignored); both are concatenated and
    go through ``joint_fc`` and a final fc to 2 logits.
    """

    def __init__(self, code_dim: int, spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        spec = copy.deepcopy(spec or DEEPSIM_DISCRIMINATOR)
        self.spec = spec
        slope = spec.get("slope", 0.3)
        convs: list[nn.Module] = []
        c = int(spec.get("in_channels", 3))  # 3 for images, 32 for TAEF2 latents
        for ch, k, s in spec["convs"]:
            convs += [nn.Conv2d(c, ch, k, stride=s, padding=k // 2), nn.LeakyReLU(slope)]
            c = ch
        self.convs = nn.Sequential(*convs)
        img: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(spec.get("dropout", 0.5))]
        for w in spec["image_fc"]:
            img += [nn.Linear(c, w), nn.LeakyReLU(slope)]
            c = w
        self.image_fc = nn.Sequential(*img)
        self.use_code = bool(code_dim) and bool(spec.get("code_fc"))
        code: list[nn.Module] = []
        d = int(code_dim)
        if self.use_code:
            for w in spec["code_fc"]:
                code += [nn.Linear(d, w), nn.LeakyReLU(slope)]
                d = w
        self.code_fc = nn.Sequential(*code)
        j = c + (d if self.use_code else 0)
        joint: list[nn.Module] = [nn.Dropout(spec.get("dropout", 0.5))] if spec.get("joint_fc") else []
        for w in spec.get("joint_fc", []):
            joint += [nn.Linear(j, w), nn.LeakyReLU(slope)]
            j = w
        joint.append(nn.Linear(j, 2))
        self.joint_fc = nn.Sequential(*joint)

    def forward(self, images: Tensor, code: Tensor | None = None) -> Tensor:
        f = self.image_fc(self.convs(images))  # (B, image_fc[-1])
        if self.use_code:
            if code is None:
                raise ValueError("this discriminator needs the code as its second input")
            f = torch.cat([f, self.code_fc(code)], 1)
        return self.joint_fc(f)  # (B, 2)
