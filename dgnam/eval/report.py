"""The comparison report: the same units through several methods, judged by networks that did not
make the images.

Input: run directories of ``visualize.py`` (mode ``am``: a ``results.json`` and a PNG per unit), or
Hydra multirun sweep directories holding numbered job directories. Output, in one directory:

- ``report.md`` (tables, the grid, links to the PNGs copied under ``images/``) and ``report.html``
  (the same, self-contained: every image inline as a base64 data URI);
- ``grid.png``: rows = units, columns = methods (the lowest seed of each);
- ``report.json`` / ``report.csv``: one row per image; ``summary.json`` / ``summary.csv``: one row
  per method.

Per image: the target's activation and probability (from the run), each judge's top-1 and top-5 hit
and its probability for the intended class (class units only), and two image statistics,
:func:`total_variation` and :func:`high_frequency_energy`. Judges score finished images only: they
never enter an objective.

Build one from Python with :func:`build_report`, from the command line with
``python visualize.py experiment=report report.runs=[DIR,...]``, or at the end of a multirun with
:class:`ReportCallback` (``conf/experiment/compare.yaml``).

The image statistics are in :mod:`dgnam.eval.stats`, the writing of the files in
:mod:`dgnam.eval.render`, the judges in :mod:`dgnam.eval.judges`, and the Hydra-facing entry points
(:func:`run_report`, :class:`ReportCallback`) in :mod:`dgnam.eval.run`.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dgnam.core.images import resize_crop
from dgnam.errors import DgnamValueError
from dgnam.eval.judges import Judge, load_judge
from dgnam.eval.render import _mean, _pct, _scale, _unit_key, write_report
from dgnam.eval.runs import REQUIRED_KEYS, check_shards, find_run_dirs, gather_rows  # noqa: F401 (the report's API)
from dgnam.eval.stats import (
    FINE_GRID_PERIOD,
    HF_RADIUS,
    STATS_SIZE,
    grid_ratio,
    high_frequency_energy,
    total_variation,
)
from dgnam.io import load_image

log = logging.getLogger(__name__)

DEFAULT_METHODS_ORDER = ("pixel", "yosinski", "lucid", "dgnam")


def default_judges() -> list[dict[str, Any]]:
    """The shared independent judge (MobileNetV1 0.5/160) beside the checkout."""
    shared = os.environ.get("DGNAM_SHARED", "../shared")
    return [{"kind": "pt2", "name": "mobilenet_v1_160",
             "path": f"{shared}/models/judge_mobilenet_v1_0.5_160.pt2", "input_size": 160}]


# ----------------------------------------------------------------------------------------------
# Gathering runs


def order_methods(methods: Iterable[str], order: Sequence[str] | None = None) -> list[str]:
    """Methods named in ``order`` first, in that order; the others after, alphabetically."""
    order = list(order) if order is not None else list(DEFAULT_METHODS_ORDER)
    present = set(methods)
    return [m for m in order if m in present] + sorted(present - set(order))


# ----------------------------------------------------------------------------------------------
# Scoring


def _check_independent(specs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> None:
    """A judge must not be the target: refuse a judge spec naming the target's weights file."""
    target_files = set()
    for r in rows:
        if r.get("_weights_file"):
            try:
                target_files.add(Path(str(r["_weights_file"])).resolve())
            except (OSError, RuntimeError):
                pass
    for spec in specs:
        f = spec.get("weights_file") or spec.get("path")
        if f and Path(os.path.expanduser(str(f))).resolve() in target_files:
            raise DgnamValueError(f"judge {spec.get('name') or f} uses the target's weights file {f}; a judge must be "
                             "a network trained apart from the target")


@torch.no_grad()
def score_rows(rows: Sequence[dict[str, Any]], judges: Sequence[Judge], hf_radius: float = HF_RADIUS,
               stats_size: int | None = STATS_SIZE) -> list[dict[str, Any]]:
    """Per-image rows: the run's numbers plus ``tv``, ``hf_energy`` and, per judge ``J``,
    ``J_top1``/``J_top5`` (1 if the intended class is among its first 1 / 5, class units only),
    ``J_prob`` (its softmax probability of the intended class) and ``J_pred`` (its top-1 class).
    TV and HF energy are measured on the image resized (antialiased) to ``stats_size`` (None: as is),
    so that a 64-px generator output and a 224-px pixel-space image are measured alike."""
    from dgnam.core.models import imagenet_categories

    cats = imagenet_categories()
    images = [load_image(r["source"]) for r in rows]
    out: list[dict[str, Any]] = []
    for r, img in zip(rows, images):
        o = {k: v for k, v in r.items() if not k.startswith("_")}
        if o["kind"] == "class" and "top1" in o:
            o["target_top1"] = int(int(o["top1"]) == int(o["unit"]))
        simg = resize_crop(img, int(stats_size)) if stats_size and img.shape[-1] != stats_size else img
        o["tv"] = float(total_variation(simg[None])[0])
        o["hf_energy"] = float(high_frequency_energy(simg[None], hf_radius)[0])
        o["grid"] = float(grid_ratio(img[None])[0])  # at the size it was made: resizing moves the grid's lines
        o["grid4"] = float(grid_ratio(img[None], FINE_GRID_PERIOD)[0])  # the finer 4-px cross-hatch
        o["size"] = int(img.shape[-1])
        out.append(o)
    for judge in judges:
        # group by image size so each group is one batch through the judge
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(tuple(img.shape[-2:]), []).append(i)
        for idx in by_size.values():
            logits = judge(torch.stack([images[i] for i in idx]))  # (n, 1000)
            probs = logits.softmax(-1)
            top5 = probs.topk(5, dim=-1).indices
            for j, i in enumerate(idx):
                o = out[i]
                pred = int(top5[j, 0])
                o[f"{judge.name}_pred"] = f"{pred} {cats[pred]}" if pred < len(cats) else str(pred)
                if o["kind"] == "class":
                    u = int(o["unit"])
                    o[f"{judge.name}_top1"] = int(pred == u)
                    o[f"{judge.name}_top5"] = int(u in top5[j].tolist())
                    o[f"{judge.name}_prob"] = float(probs[j, u])
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation


def _seed_sd(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Standard deviation over seeds of the per-seed mean of ``key`` (None with one seed)."""
    per_seed: dict[int, list[float]] = {}
    for r in rows:
        if r.get(key) is not None:
            per_seed.setdefault(int(r["seed"]), []).append(float(r[key]))
    means = [sum(v) / len(v) for v in per_seed.values()]
    return statistics.stdev(means) if len(means) > 1 else None


def summarize(rows: Sequence[Mapping[str, Any]], judge_names: Sequence[str],
              methods_order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per method (in ``methods_order``): counts and means over all its images (units x
    seeds). Percentages are in [0, 100]; ``*_sd`` is the spread over seeds of the per-seed mean."""
    out = []
    for m in order_methods({r["method"] for r in rows}, methods_order):
        rs = [r for r in rows if r["method"] == m]
        cls = [r for r in rs if r["kind"] == "class"]
        s: dict[str, Any] = {
            "method": m, "images": len(rs), "units": len({_unit_key(r) for r in rs}),
            "seeds": len({int(r["seed"]) for r in rs}), "class_images": len(cls),
            "activation": _mean([r["activation"] for r in rs]),
            "probability": _mean([r.get("probability") for r in cls]),
            "target_top1_pct": _pct([r.get("target_top1") for r in cls]),
        }
        for j in judge_names:
            s[f"{j}_top1_pct"] = _pct([r.get(f"{j}_top1") for r in cls])
            s[f"{j}_top1_pct_sd"] = _scale(_seed_sd(cls, f"{j}_top1"), 100)
            s[f"{j}_top5_pct"] = _pct([r.get(f"{j}_top5") for r in cls])
            s[f"{j}_prob"] = _mean([r.get(f"{j}_prob") for r in cls])
        s["tv"] = _mean([r["tv"] for r in rs])
        s["hf_energy"] = _mean([r["hf_energy"] for r in rs])
        for key in ("grid", "grid4"):
            grids = [r[key] for r in rs if r.get(key) is not None and math.isfinite(r[key])]
            s[key] = statistics.median(grids) if grids else None
        s["seconds"] = _mean([r.get("seconds") for r in rs])
        per_unit = {(r["seed"], _unit_key(r)): r for r in rs if r.get("diversity") is not None}
        s["diversity"] = _mean([r["diversity"] for r in per_unit.values()])
        s["photo_diversity"] = _mean([r.get("photo_diversity") for r in per_unit.values()])
        out.append(s)
    return out


def build_report(runs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 judges: Sequence[Mapping[str, Any] | Judge] | None = None,
                 methods_order: Sequence[str] | None = None, hf_radius: float = HF_RADIUS,
                 stats_size: int | None = STATS_SIZE, photos: str | None = None,
                 duplicates: str = "error") -> dict[str, Any]:
    """Gather the runs, score every image, and write the report into ``out_dir``.

    ``photos``: a labelled Parquet dataset; for units with several samples (``samples=K``) the
    report gives their diversity beside that of K photos of the class there
    (:mod:`dgnam.eval.diversity`, measured in the first exported judge's features).

    ``judges``: judge specs (see :func:`dgnam.eval.judges.load_judge`) or loaded :class:`Judge` objects;
    ``None`` means the shared judge (:func:`default_judges`), ``[]`` no judge. ``duplicates``: what to
    do with images of the same experiment in two runs (:func:`dgnam.eval.runs.gather_rows`).
    Returns ``{"out_dir", "results": per-image rows, "summary": per-method rows, "files"}``.
    """
    out = Path(out_dir)
    rows = gather_rows(runs, duplicates)
    if not rows:
        raise DgnamValueError(f"the runs {', '.join(map(str, runs))} hold no images to report on")
    wanted = default_judges() if judges is None else list(judges)
    _check_independent([j for j in wanted if not isinstance(j, Judge)], rows)
    loaded = [j if isinstance(j, Judge) else load_judge(j) for j in wanted]
    names = [j.name for j in loaded]
    if len(set(names)) != len(names):
        raise DgnamValueError(f"two judges share a name ({', '.join(names)}); give each a distinct name")
    scored = score_rows(rows, loaded, hf_radius, stats_size)
    pt2 = [j for j in loaded if hasattr(j.model, "graph")]  # an exported judge: its penultimate features
    if pt2:
        from dgnam.eval.diversity import add_diversity

        add_diversity(scored, pt2[0], photos)
    methods = order_methods({r["method"] for r in scored}, methods_order)
    summary = summarize(scored, names, methods)
    dirs = list(dict.fromkeys(Path(r["run"]) for r in scored))
    files = write_report(out, scored, summary, loaded, methods, dirs, hf_radius, stats_size)
    return {"out_dir": str(out), "results": scored, "summary": summary, "files": files}
