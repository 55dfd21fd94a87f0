"""The entry points: ``visualize.py experiment=atlas`` (:func:`run_atlas`: compute what the atlas folder
lacks, then rebuild its site), ``experiment=atlas_gather`` (:func:`run_gather`: gather the records of
shards or of other atlases into one folder and build its site) and :class:`GatherCallback` (the same
at the end of a multirun)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dgnam.api import methods as known_methods
from dgnam.atlas import records as R
from dgnam.atlas.compute import run_methods
from dgnam.atlas.examples_run import ExampleSettings, add_examples
from dgnam.atlas.plan import MethodSpec, Plan, fingerprint, layer_infos, method_specs, plan_units
from dgnam.atlas.site import build_site
from dgnam.checks import positive_int
from dgnam.config import build_target_from_cfg
from dgnam.core.models import Target, pick_device
from dgnam.errors import DgnamError, DgnamValueError

log = logging.getLogger(__name__)


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def methods_of(cfg: DictConfig) -> list[MethodSpec]:
    """``atlas.methods`` checked (names, keys, numbers): nothing of the model is needed for it."""
    return method_specs(OmegaConf.select(cfg, "atlas.methods"), positive_int(cfg, "steps"),
                        positive_int(cfg, "image_size"), known_methods())


def make_plan(cfg: DictConfig, target: Target) -> Plan:
    """Every name, number and unit of ``cfg`` checked against ``target``; this shard's units."""
    specs = methods_of(cfg)
    infos = layer_infos(target, cfg.get("layers"), target.input_size)
    for spec in specs:
        for name in spec.layers or ():
            target.resolve(name)  # an unknown layer lists the valid ones
    units = plan_units(target, infos, _plain(cfg.get("units")), OmegaConf.select(cfg, "atlas.units"),
                       str(cfg.get("unit", "auto")), target.input_size,
                       int(OmegaConf.select(cfg, "shard.index", default=0)),
                       int(OmegaConf.select(cfg, "shard.count", default=1)))
    fp = fingerprint(target)
    return Plan(target, fp, infos, units, specs, int(cfg.get("seed", 0)), positive_int(cfg, "batch_size"),
                {"name": str(OmegaConf.select(cfg, "atlas.model_name") or target.name), "fingerprint": fp},
                str(target.mean.device))


def run_atlas(cfg: DictConfig, out_dir: str | Path, target: Target | None = None) -> dict:
    """``mode=atlas``: check everything, compute the dataset examples and the images the atlas folder
    lacks for this shard's units, then rebuild the site from every record in the folder."""
    root = Path(OmegaConf.select(cfg, "atlas.dir") or out_dir)
    device = pick_device(cfg.get("device", "auto"))
    methods_of(cfg)  # the methods and the examples' settings are checked before the model is built
    ex = ExampleSettings.from_cfg(cfg)
    target = target.to(device) if target is not None else build_target_from_cfg(cfg, device)
    plan = make_plan(cfg, target)
    card = int(OmegaConf.select(cfg, "atlas.card_size", default=128))
    quality = int(OmegaConf.select(cfg, "atlas.quality", default=85))
    log.info("atlas %s: %d units of %d layers, methods %s", root, len(plan.units), len(plan.layers),
             ", ".join(s.name for s in plan.methods))
    n_ex = add_examples(root, plan, ex, quality)
    n_img = run_methods(root, plan, card, quality, str(cfg.get("precision", "auto")))
    summary = build_site(root, [s.name for s in plan.methods])
    log.info("atlas: %d images and %d units' examples computed; site %s", n_img, n_ex, root / "index.html")
    rows = [{"layer": u.layer, "unit": u.index, "label": u.label} for u in plan.units]
    return {"out_dir": str(root), "results": rows, "computed": {"images": n_img, "examples": n_ex}, "site": summary}


def run_gather(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``mode=atlas_gather``: the records of ``atlas.sources`` (atlas folders, shards' job folders or
    whole sweeps) merged into one folder, and its site."""
    sources = _plain(OmegaConf.select(cfg, "atlas.sources"))
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise DgnamValueError("atlas.sources is empty; give atlas folders or sweeps of atlas jobs, e.g. "
                              "atlas.sources=[multirun/atlas/2026-01-01_12-00-00]")
    root = Path(OmegaConf.select(cfg, "atlas.dir") or out_dir)
    n = R.gather([str(s) for s in sources], root)
    summary = build_site(root)
    log.info("atlas: %d records gathered; site %s", n, root / "index.html")
    return {"out_dir": str(root), "results": [{"layer": i["name"], "units": i["in_atlas"]} for i in summary["layers"]],
            "site": summary}


class GatherCallback(Callback):
    """At the end of a multirun of ``experiment=atlas`` (shards, or methods), gather every job's records
    into ``<sweep dir>/<subdir>`` and build one site there::

        hydra:
          callbacks:
            atlas:
              _target_: dgnam.atlas.GatherCallback
    """

    def __init__(self, subdir: str = "atlas") -> None:
        self.subdir = subdir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            n = R.gather([sweep], sweep / self.subdir)
            build_site(sweep / self.subdir)
        except DgnamError as e:
            print(f"error: atlas: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"atlas of {n} units: {sweep / self.subdir / 'index.html'}")
