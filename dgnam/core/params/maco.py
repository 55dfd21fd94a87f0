"""MACO (Fel et al. 2023, "Unlocking feature visualization for deeper networks with magnitude-constrained
optimization"): a Fourier parameterization whose phase alone is optimized, the magnitude fixed to the
average amplitude spectrum of natural images.

    image = sigmoid(recorrelate(standardize(irfft2(magnitude * exp(i * phase)))))

The magnitude is a file (``dgnam/priors/maco_spectrum.pt``, rebuilt by ``python -m dgnam.spectrum``
from photos): the mean of ``|rfft2|`` of colour-decorrelated photos, per decorrelated channel, at one
square size, resized here to the image's spectrum grid.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgnam.core.params.base import ImageParam
from dgnam.core.params.fft import COLOR_CORRELATION
from dgnam.errors import DgnamValueError

SPECTRUM_KEY = "magnitude"  # (3, S, S // 2 + 1) float: the mean amplitude spectrum, rfft2 layout


def decorrelate(images: Tensor) -> Tensor:
    """RGB images (B, 3, H, W) -> the decorrelated colour space of :data:`COLOR_CORRELATION`
    (the inverse of the recorrelation that :class:`MacoParam` and :class:`FFTParam` apply)."""
    flat = images.permute(0, 2, 3, 1) @ torch.linalg.inv(COLOR_CORRELATION.T.to(images))
    return flat.permute(0, 3, 1, 2)


def check_spectrum(magnitude: object, what: str) -> Tensor:
    """A spectrum tensor (3, S, S // 2 + 1), finite and >= 0, or a one-line :class:`DgnamError`."""
    if not isinstance(magnitude, Tensor):
        raise DgnamValueError(f"{what}: {SPECTRUM_KEY!r} must be a tensor, not {type(magnitude).__name__}")
    shape = tuple(magnitude.shape)
    if len(shape) != 3 or shape[0] != 3 or shape[1] < 2 or shape[2] != shape[1] // 2 + 1:
        raise DgnamValueError(f"{what}: the spectrum has shape {shape}; it must be (3, S, S // 2 + 1), "
                         f"e.g. (3, 128, 65) (rebuild it with python -m dgnam.spectrum)")
    mag = magnitude.float()
    if not torch.isfinite(mag).all() or (mag < 0).any():
        raise DgnamValueError(f"{what}: the spectrum holds negative or non-finite values (rebuild it with "
                         f"python -m dgnam.spectrum)")
    return mag


@functools.lru_cache(maxsize=4)
def load_spectrum(path: str) -> Tensor:
    """The magnitude of a spectrum file written by ``python -m dgnam.spectrum``, checked."""
    from dgnam.safeload import load_file

    what = f"MACO spectrum file {path}"
    data = load_file(path, "MACO spectrum file", " (build one with python -m dgnam.spectrum)")
    if not isinstance(data, dict) or SPECTRUM_KEY not in data:
        raise DgnamValueError(f"{what} has no {SPECTRUM_KEY!r} entry (write it with python -m dgnam.spectrum)")
    return check_spectrum(data[SPECTRUM_KEY], what)


def resize_spectrum(magnitude: Tensor, size: tuple[int, int]) -> Tensor:
    """(3, S, S // 2 + 1) -> (3, H, W // 2 + 1) for an image of ``size`` (H, W), by frequency: the rows
    are shifted so that frequency 0 is in the middle, resized bilinearly, and shifted back."""
    h, w = size
    rows = torch.fft.fftshift(magnitude, dim=1)[None]
    out = F.interpolate(rows, size=(h, w // 2 + 1), mode="bilinear", align_corners=True)[0]
    return torch.fft.ifftshift(out, dim=1).contiguous()


def _standardize(x: Tensor, eps: float = 1e-4) -> Tensor:
    """Zero mean and unit standard deviation per item (B, ...)."""
    dims = tuple(range(1, x.dim()))
    x = x - x.mean(dims, keepdim=True)
    return x / (x.std(dims, keepdim=True) + eps)


class MacoParam(ImageParam):
    """Images with a fixed natural-image amplitude spectrum and a trainable Fourier phase (MACO).

    Args:
        init: (B, 3, H, W) start images; with ``noise`` only the batch and image sizes count and the
            start is the phase of white noise (one draw from ``generator``, shared by every item);
            otherwise the phase of the (decorrelated, logit) start image.
        spectrum: the spectrum file (``python -m dgnam.spectrum``).
        magnitude: the spectrum itself (3, S, S // 2 + 1), instead of a file.
    """

    def __init__(self, init: Tensor, noise: bool = False, generator: torch.Generator | None = None,
                 spectrum: str | None = None, magnitude: Tensor | None = None) -> None:
        super().__init__()
        if magnitude is None:
            if spectrum is None:
                raise DgnamValueError("MACO needs the natural-image spectrum: param.spectrum=<file> "
                                 "(build one with python -m dgnam.spectrum)")
            magnitude = load_spectrum(str(Path(spectrum).expanduser()))
        else:
            magnitude = check_spectrum(magnitude, "MACO magnitude")
        batch, (h, w) = init.shape[0], tuple(init.shape[-2:])
        self._size = (h, w)
        self.register_buffer("magnitude", resize_spectrum(magnitude, (h, w)), persistent=False)
        self.register_buffer("color", COLOR_CORRELATION.clone(), persistent=False)
        if noise:
            white = torch.randn(1, 3, h, w, generator=generator)
            phase = torch.fft.rfft2(white).angle().expand(batch, -1, -1, -1)
        else:
            start = decorrelate(torch.logit(init.detach().float().cpu().clamp(0.01, 0.99)))
            phase = torch.fft.rfft2(start).angle()
        self.phase = nn.Parameter(phase.contiguous())

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def forward(self) -> Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        img = _standardize(torch.fft.irfft2(spec, s=self._size))  # (B, 3, H, W), decorrelated
        img = (img.permute(0, 2, 3, 1) @ self.color.T).permute(0, 3, 1, 2)  # -> RGB
        return torch.sigmoid(img)
