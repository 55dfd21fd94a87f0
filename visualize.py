"""Show what units of an image network respond to.

    python visualize.py model=mobilenet_v2_shared layers=logits units=[goldfish,1]
    python visualize.py experiment=lucid model=alexnet model.weights=null
    python visualize.py -m experiment=classes seed=0,1,2        # a Hydra sweep

Thin entry point: Hydra composes ``conf/visualize.yaml``; :func:`run` does the work and is what
tests call.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dgnam.checks import check_finite
from dgnam.cli import guarded, launch, run_dir
from dgnam.config import PRIOR_NAMES, unknown_prior
from dgnam.core.precision import check_config as check_precisions
from dgnam.errors import DgnamValueError
from dgnam.eval.run import run_report
from dgnam.ranges import VISUALIZE, check_ranges
from dgnam.views.actmaps import run_activation_maps
from dgnam.views.am import run_am
from dgnam.views.dream import run_deepdream
from dgnam.views.inversion import run_inversion
from dgnam.views.receptive import run_receptive_field
from dgnam.views.style import run_style

MODES = {"am": run_am, "activation_maps": run_activation_maps, "receptive_field": run_receptive_field,
         "inversion": run_inversion, "deepdream": run_deepdream, "style": run_style, "report": run_report}


def run(cfg: DictConfig, out_dir: str | None = None) -> dict:
    """Run the mode ``cfg.mode`` and write its outputs to ``out_dir`` (default: Hydra's run dir)."""
    mode = cfg.get("mode", "am")
    if mode not in MODES:
        raise DgnamValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    check_finite(cfg)
    check_ranges(cfg, VISUALIZE)  # every number in range before any work (docs/errors.md)
    check_precisions(cfg)
    return MODES[mode](cfg, out_dir or run_dir())


@hydra.main(version_base="1.3", config_path="conf", config_name="visualize")
@guarded
def main(cfg: DictConfig) -> None:
    res = run(cfg)
    print(f"wrote {len(res.get('results', []))} results to {res['out_dir']}")


def check_prior_overrides(argv: list[str]) -> None:
    """Name an unknown prior in one line before Hydra composes (its own message spans lines)."""
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key.startswith("priors.") and key.split(".")[1] not in PRIOR_NAMES:
            print(f"error: {unknown_prior(key.split('.')[1])}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    check_prior_overrides(sys.argv[1:])
    launch(main, Path(__file__).resolve().parent / "conf", "visualize")
