"""Generator priors (DeePSiM): architectures, losses, training module, code statistics, artifacts."""

from dgnam.generator.arch import DEEPSIM_DISCRIMINATOR, FC6_GENERATOR, Discriminator, Generator, generator_spec
from dgnam.generator.encoder import Comparator, Encoder
from dgnam.generator.losses import Balancer
from dgnam.generator.prior import load_prior, prior_encoder, save_prior
from dgnam.generator.stats import CodeStats, code_statistics

__all__ = [
    "DEEPSIM_DISCRIMINATOR", "FC6_GENERATOR", "Balancer", "CodeStats", "Comparator", "Discriminator",
    "Encoder", "Generator", "code_statistics", "generator_spec", "load_prior", "prior_encoder", "save_prior",
]
