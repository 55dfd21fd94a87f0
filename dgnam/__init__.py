"""dgnam: what do neurons in image networks respond to?

Pixel-space activation maximization (with the usual image priors), activation maps, receptive
fields, feature inversion, and DGN-AM (activation maximization through a deep generator network
prior), all on one optimization loop: :func:`dgnam.core.loop.optimize`.
"""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"
PRIORS_DIR = Path(__file__).resolve().parent / "priors"

# ${dgnam_priors:} in configs: the folder of the generator priors that ship with the package.
OmegaConf.register_new_resolver("dgnam_priors", lambda: str(PRIORS_DIR), replace=True)
# ${dgnam_sub:a,b} = a - b (e.g. a schedule that reaches its end value on the last of `steps` steps).
OmegaConf.register_new_resolver("dgnam_sub", lambda a, b: a - b, replace=True)


def _shared_dir() -> str:
    """$DGNAM_SHARED, else the ``shared`` folder beside the checkout (whatever the working directory)."""
    import os

    return os.environ.get("DGNAM_SHARED") or str(Path(__file__).resolve().parents[2] / "shared")


# ${dgnam_shared:} in configs: where the shared assets (trained models, photos) are.
OmegaConf.register_new_resolver("dgnam_shared", _shared_dir, replace=True)
