"""Hydra-facing entry points of the comparison report: ``visualize.py mode=report``
(:func:`run_report`) and the multirun callback (:class:`ReportCallback`). Both are re-exported by
:mod:`dgnam.eval.report`, the name that configs use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dgnam.errors import DgnamError, DgnamValueError
from dgnam.eval.report import build_report, log
from dgnam.eval.stats import HF_RADIUS, STATS_SIZE

# ----------------------------------------------------------------------------------------------
# Entry points: visualize.py mode=report and the multirun callback


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def _report_args(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    rc = cfg.get("report") or {}
    judges = _plain(rc.get("judges")) if "judges" in rc else None
    order = _plain(rc.get("methods_order")) if rc.get("methods_order") is not None else None
    size = rc.get("stats_size", STATS_SIZE)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise DgnamValueError(f"report.stats_size={size!r} must be a positive integer (pixels) or null")
    photos = rc.get("photos")
    return {"judges": judges, "methods_order": order, "hf_radius": float(rc.get("hf_radius") or HF_RADIUS),
            "stats_size": size, "photos": str(photos) if photos else None,
            "duplicates": str(rc.get("duplicates") or "error")}


def run_report(cfg: DictConfig, out_dir: str | Path) -> dict:
    """``visualize.py mode=report``: the report over ``cfg.report.runs`` into ``out_dir``."""
    runs = _plain(OmegaConf.select(cfg, "report.runs", default=None))
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise DgnamValueError("report.runs is empty; give run or sweep directories, e.g. "
                         "report.runs=[multirun/compare/2026-01-01_12-00-00]")
    res = build_report(runs, out_dir, **_report_args(cfg))
    log.info("report: %s", res["files"]["html"])
    return res


class ReportCallback(Callback):
    """Build the report over the sweep directory when a Hydra multirun ends.

    Reads ``report.judges``, ``report.methods_order``, ``report.hf_radius`` and ``report.stats_size`` from the job config
    (defaults when absent) and writes into ``<hydra.sweep.dir>/<subdir>``. Enable it with::

        hydra:
          callbacks:
            report:
              _target_: dgnam.eval.report.ReportCallback
    """

    def __init__(self, subdir: str = "report") -> None:
        self.subdir = subdir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            res = build_report([sweep], sweep / self.subdir, **_report_args(config))
        except DgnamError as e:
            print(f"error: report: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"report over {len(res['results'])} images: {res['files']['md']} and {res['files']['html']}")
