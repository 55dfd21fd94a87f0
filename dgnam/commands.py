"""The command-line programs ``dgnam-visualize`` and ``dgnam-train`` (``[project.scripts]``).

``visualize.py`` and ``train_generator.py`` in the checkout call these same Hydra apps, so both ways
share the configs (:data:`dgnam.paths.CONF_DIR`: ``conf/`` of the checkout, or the copy a wheel
carries in ``dgnam/conf``), the run directories (``outputs/<name>/<time>``, ``multirun/...`` with
``-m``), the overrides and the one-line errors (checked before Hydra composes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from dgnam.atlas import run_atlas, run_gather
from dgnam.checks import check_finite
from dgnam.cli import guarded, launch, run_dir
from dgnam.config import PRIOR_NAMES, unknown_prior
from dgnam.core.precision import check_config as check_precisions
from dgnam.errors import DgnamValueError
from dgnam.eval.run import run_report
from dgnam.paths import CONF_DIR
from dgnam.ranges import VISUALIZE, check_ranges
from dgnam.views.actmaps import run_activation_maps
from dgnam.views.am import run_am
from dgnam.views.dream import run_deepdream
from dgnam.views.examples import run_dataset_examples
from dgnam.views.inversion import run_inversion
from dgnam.views.receptive import run_receptive_field
from dgnam.views.style import run_style

MODES = {"am": run_am, "activation_maps": run_activation_maps, "receptive_field": run_receptive_field,
         "inversion": run_inversion, "deepdream": run_deepdream, "style": run_style, "report": run_report,
         "dataset_examples": run_dataset_examples, "atlas": run_atlas, "atlas_gather": run_gather}


def run(cfg: DictConfig, out_dir: str | None = None) -> dict:
    """Run the mode ``cfg.mode`` and write its outputs to ``out_dir`` (default: Hydra's run dir)."""
    mode = cfg.get("mode", "am")
    if mode not in MODES:
        raise DgnamValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    check_finite(cfg)
    check_ranges(cfg, VISUALIZE)  # every number in range before any work (docs/errors.md)
    check_precisions(cfg)
    return MODES[mode](cfg, out_dir or run_dir())


def check_prior_overrides(argv: list[str]) -> None:
    """Name an unknown prior in one line before Hydra composes (its own message spans lines)."""
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key.startswith("priors.") and key.split(".")[1] not in PRIOR_NAMES:
            print(f"error: {unknown_prior(key.split('.')[1])}", file=sys.stderr)
            sys.exit(2)


def _app(task: Callable[[DictConfig], None], config_name: str) -> Callable[[], None]:
    """``task`` as a Hydra app over ``CONF_DIR/<config_name>.yaml`` (an absolute path, so the app is
    the same whichever file calls it), with one-line errors."""
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(guarded(task))


def _visualize(cfg: DictConfig) -> None:
    res = run(cfg)
    print(f"wrote {len(res.get('results', []))} results to {res['out_dir']}")


def _train(cfg: DictConfig) -> None:
    from dgnam.generator.train import run as train_run

    out = train_run(cfg)
    if out["prior"] is None:  # a rank other than 0 of trainer=ddp: rank 0 says where the prior is
        return
    print(f"prior: {out['prior']}  val_mse: {out['val_mse']}  steps: {out['iterations']}")


visualize_app = _app(_visualize, "visualize")
train_app = _app(_train, "train_generator")


def visualize() -> None:
    """``dgnam-visualize [overrides]``: what ``python visualize.py [overrides]`` does (the checks
    before Hydra composes, the run folder claimed, a sweep's jobs each a command: :func:`dgnam.cli.launch`)."""
    check_prior_overrides(sys.argv[1:])
    launch(visualize_app, CONF_DIR, "visualize")


def train() -> None:
    """``dgnam-train [overrides]``: what ``python train_generator.py [overrides]`` does."""
    launch(train_app, CONF_DIR, "train_generator")
