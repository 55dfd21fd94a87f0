"""Where dgnam's files are: the priors that ship with the package, and the shared assets."""

from __future__ import annotations

import os
from pathlib import Path

PRIORS_DIR = Path(__file__).resolve().parent / "priors"  # generator priors and statistics shipped with dgnam


def shared_dir() -> str:
    """$DGNAM_SHARED, else the ``shared`` folder beside the checkout (whatever the working directory):
    trained models and photos that do not ship with the package."""
    return os.environ.get("DGNAM_SHARED") or str(Path(__file__).resolve().parents[2] / "shared")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra configs of visualize.py (an editable install)
