"""Parameterizations: ``nn.Module``s whose ``forward()`` returns images (B, 3, H, W) in [0, 1].

One contract (:class:`ImageParam`), five kinds: plain pixels, Lucid's FFT with decorrelated colour,
MACO's phase-only Fourier image, a generator's code (DGN-AM) and the latent of a pretrained decoder
(latent AM). A new parameterization subclasses :class:`ImageParam` in a module of its own here.
"""

from dgnam.core.params.base import ImageParam
from dgnam.core.params.fft import COLOR_CORRELATION, FFTParam
from dgnam.core.params.generator import CODE, GeneratorParam
from dgnam.core.params.latent import LATENT, LatentParam
from dgnam.core.params.maco import MacoParam
from dgnam.core.params.pixel import PixelParam, noise_init

__all__ = ["CODE", "COLOR_CORRELATION", "FFTParam", "GeneratorParam", "ImageParam", "LATENT", "LatentParam",
           "MacoParam", "PixelParam", "noise_init"]
