"""Where dgnam's files are: the configs, the priors that ship with the package, and the shared assets."""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
PRIORS_DIR = _HERE / "priors"  # generator priors and statistics shipped with dgnam


def shared_dir() -> str:
    """$DGNAM_SHARED, else the ``shared`` folder beside the checkout (whatever the working directory):
    trained models and photos that do not ship with the package."""
    return os.environ.get("DGNAM_SHARED") or str(_HERE.parents[1] / "shared")


def _conf_dir() -> Path:
    """The Hydra configs: ``dgnam/conf`` in an installed wheel (the build copies the checkout's
    ``conf/`` there, see pyproject.toml), else ``conf/`` of the checkout (a clone, an editable install)."""
    packaged = _HERE / "conf"
    return packaged if (packaged / "visualize.yaml").is_file() else _HERE.parent / "conf"


CONF_DIR = _conf_dir()
