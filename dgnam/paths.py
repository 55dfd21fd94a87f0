"""Where dgnam's files are: the configs, the priors that ship with the package, and the shared assets."""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
PRIORS_DIR = _HERE / "priors"  # generator priors and statistics shipped with dgnam


def shared_dir() -> str:
    """Trained models and photos that do not ship with the package: $DGNAM_SHARED, else the
    ``shared`` folder beside the checkout (whatever the working directory); for an installed package
    (no checkout around it), ``shared`` in or beside the working directory when there is one."""
    if os.environ.get("DGNAM_SHARED"):
        return os.environ["DGNAM_SHARED"]
    beside = _HERE.parents[1] / "shared"
    if beside.is_dir() or (_HERE.parent / "conf").is_dir():  # a checkout: its neighbour, found or not
        return str(beside)
    here = next((d for d in (Path.cwd() / "shared", Path.cwd().parent / "shared") if d.is_dir()), None)
    return str(here or beside)


def _conf_dir() -> Path:
    """The Hydra configs: ``dgnam/conf`` in an installed wheel (the build copies the checkout's
    ``conf/`` there, see pyproject.toml), else ``conf/`` of the checkout (a clone, an editable install)."""
    packaged = _HERE / "conf"
    return packaged if (packaged / "visualize.yaml").is_file() else _HERE.parent / "conf"


CONF_DIR = _conf_dir()
