"""dgnam: what do neurons in image networks respond to?

Pixel-space activation maximization (with the usual image priors), activation maps, receptive
fields, feature inversion, and DGN-AM (activation maximization through a deep generator network
prior), all on one optimization loop, :func:`dgnam.optimize`.

The package, by layer (each imports only from the layers above it):

- ``dgnam.core``: the loop, objectives, transforms, post-steps, targets, units and the
  parameterizations (``dgnam.core.params``); no Hydra, no files written.
- ``dgnam.generator``: generator priors: architectures, the DeePSiM training module, data, caches,
  the prior file format.
- ``dgnam.views``: the modes of ``visualize.py`` (activation maximization, activation maps, feature
  inversion, receptive fields, dataset examples), from a config to files.
- ``dgnam.eval``: judges, image statistics and the comparison report.
- ``dgnam.config`` (checks and builders every mode shares), ``dgnam.io`` (images in, files out),
  ``dgnam.cli`` (Hydra entry glue), ``dgnam.errors``, ``dgnam.safeload``, ``dgnam.paths``.

``dgnam.visualize(model, layer, units, method="lucid")`` is the one call on any ``nn.Module``
(:mod:`dgnam.api`). The names below are the Python API; the CLI is ``visualize.py`` and ``train_generator.py``
(installed: ``dgnam-visualize`` and ``dgnam-train``); :mod:`dgnam.priors` names the shipped priors.
"""

from dgnam import priors
from dgnam.core import objectives, poststeps, transforms
from dgnam.core.loop import Result, optimize
from dgnam.core.models import INPUT, Target, build_target, pick_device
from dgnam.core.params import FFTParam, GeneratorParam, ImageParam, LatentParam, MacoParam, PixelParam
from dgnam.core.units import Unit, objective_for, select_units
from dgnam.core.wrap import wrap_model
from dgnam.errors import DgnamError
from dgnam.paths import PRIORS_DIR, shared_dir

__version__ = "0.1.0"

__all__ = [
    "INPUT", "PRIORS_DIR", "DgnamError", "Examples", "FFTParam", "GeneratorParam", "ImageParam", "LatentParam", "MacoParam",
    "PixelParam", "Result", "Target", "Unit", "build_target", "objective_for", "objectives", "optimize", "pick_device",
    "View", "Visualization", "activation_maps", "dataset_examples", "invert", "poststeps", "priors", "select_units", "shared_dir", "transforms",
    "visualize", "wrap_model",
]


def __getattr__(name: str):
    """``dgnam.visualize``, ``activation_maps``, ``invert``, ``dataset_examples`` and their result classes load
    :mod:`dgnam.api` or :mod:`dgnam.api_examples` (and Hydra) on first use,
    so that importing the core stays free of Hydra."""
    if name in ("visualize", "Visualization", "activation_maps", "invert", "View"):
        from dgnam import api

        return getattr(api, name)
    if name in ("dataset_examples", "Examples"):
        from dgnam import api_examples

        return getattr(api_examples, name)
    raise AttributeError(f"module 'dgnam' has no attribute {name!r}")
