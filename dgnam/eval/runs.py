"""Gathering the rows of finished runs for the report: which runs are the same experiment.

Two rows are the same image only when everything that makes an experiment is the same: the target
model (its architecture or builder, and its weights), the run's config (every key but those that
only say where and how fast: :data:`NOT_THE_EXPERIMENT`), the method, seed, layer, unit and sample.
Rows of one method from different models or configs are kept apart, as methods labelled
``<method>@<model>`` or ``<method> [<key>=<value>]``; rows that really are the same experiment in two
runs are an error unless ``report.duplicates`` says which to keep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError, first_line

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("method", "seed", "layer", "unit", "kind", "image")
#: Config keys that do not change what a run computes (where it writes, on which device, which
#: units and how many at once, its own report): left out of the experiment's fingerprint.
NOT_THE_EXPERIMENT = ("hydra", "output", "device", "shard", "units", "layers", "unit", "position", "batch_size",
                      "report", "seed", "samples")
DUPLICATES = ("error", "first", "last")


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """A run directory (it holds ``results.json``) -> ``[path]``; a sweep directory -> its job
    directories that hold one, in job order (numbered ones by number)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise DgnamFileNotFoundError(f"run directory not found: {p}")
    if (p / "results.json").is_file():
        return [p]
    jobs = [d for d in p.iterdir() if d.is_dir() and (d / "results.json").is_file()]
    if not jobs:
        raise DgnamValueError(f"no results.json in {p} nor in its job directories; give run directories of "
                              "visualize.py (mode am) or a multirun sweep directory")
    return sorted(jobs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def run_info(run: Path) -> dict[str, Any]:
    """What a run's ``.hydra/config.yaml`` says of its experiment: ``arch`` and ``weights_file`` of
    the target, ``model`` (a name for the target: arch or builder, with its weights), ``shard``,
    ``config`` (the flattened keys that make the experiment) and ``fingerprint`` (their hash).
    Empty for a run without one (saved from Python)."""
    cfg_file = run / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return {}
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
    except Exception:
        return {}
    model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    arch = model.get("arch") or model.get("name") or model.get("_target_")
    weights = model.get("weights_file") or model.get("weights")
    shard = cfg.get("shard") if isinstance(cfg.get("shard"), Mapping) else {}
    config = _flat({k: v for k, v in cfg.items() if k not in NOT_THE_EXPERIMENT})
    return {"arch": model.get("arch"), "weights_file": model.get("weights_file"),
            "model": f"{arch}" + (f":{Path(str(weights)).stem}" if weights else ""),
            "shard": (shard.get("index", 0), shard.get("count", 1)), "config": config,
            "fingerprint": hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]}


def check_shards(seen: Mapping[tuple[str, int], set[tuple[int, int]]]) -> list[str]:
    """``seen``: (method, seed) -> the (shard.index, shard.count) of the runs that gave its rows.
    Returns one line per (method, seed) whose shards are not all there (and logs it): a report over
    part of a sharded job says so."""
    lines = []
    for (method, seed), shards in sorted(seen.items()):
        for count in sorted({c for _, c in shards}):
            missing = sorted(set(range(count)) - {i for i, c in shards if c == count})
            if missing:
                lines.append(f"method {method} seed {seed}: shard(s) {', '.join(map(str, missing))} of {count} "
                             f"missing (give every shard's sweep directory in report.runs)")
                log.warning("%s", lines[-1])
    return lines


def _label_variants(rows: list[dict[str, Any]], configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Give each method's rows from different models or configs their own method label."""
    by_method: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add((r["_model"], r["_fingerprint"]))
    for method, variants in by_method.items():
        if len(variants) < 2:
            continue
        models = {m for m, _ in variants}
        labels = {}
        for m, fp in variants:
            same_model = sorted(f for mm, f in variants if mm == m)
            label = method + (f"@{m}" if len(models) > 1 else "")
            if len(same_model) > 1:  # the keys whose values set this config apart
                mine = configs.get(fp, {})
                differ = sorted(k for k in set().union(*(configs.get(f, {}) for f in same_model))
                                if len({json.dumps(configs.get(f, {}).get(k), default=str) for f in same_model}) > 1)
                label += " [" + ", ".join(f"{k}={mine.get(k)}" for k in differ[:2]) + "]" if differ else f" #{fp}"
            labels[(m, fp)] = label
        for r in rows:
            if r["method"] == method:
                r["method"] = labels[(r["_model"], r["_fingerprint"])]


def gather_rows(runs: Iterable[str | os.PathLike], duplicates: str = "error") -> list[dict[str, Any]]:
    """Rows of every ``results.json`` under ``runs`` (run or sweep directories), each with ``run``
    (its directory), ``source`` (the PNG's absolute path) and ``target`` (the arch, if recorded).
    Rows without a PNG are skipped. The shards of a sharded job join up into one set of rows;
    missing shards are logged (:func:`check_shards`). Rows of the same experiment (module docstring)
    in two runs: ``duplicates=error`` (default) refuses them in one line, ``first``/``last`` keeps
    the one from the first/last run given."""
    if duplicates not in DUPLICATES:
        raise DgnamValueError(f"report.duplicates={duplicates!r}; valid: {', '.join(DUPLICATES)}")
    rows: dict[tuple, dict[str, Any]] = {}
    dirs = [d for r in runs for d in find_run_dirs(r)]
    if not dirs:
        raise DgnamValueError("no runs given; e.g. report.runs=[outputs/am/2026-01-01_12-00-00]")
    skipped, dup = 0, []
    shards: dict[tuple[str, int], set[tuple[int, int]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for d in dirs:
        res_file = d / "results.json"
        try:
            data = json.loads(res_file.read_text())
        except (OSError, ValueError) as e:
            raise DgnamValueError(f"cannot read {res_file}: {first_line(e)}") from None
        if not isinstance(data, list):
            raise DgnamValueError(f"{res_file} holds a {type(data).__name__}, not a list of result rows")
        info = run_info(d)
        configs[info.get("fingerprint", "")] = info.get("config", {})
        for row in data:
            if "shard" in info and "method" in row and "seed" in row:
                shards.setdefault((row["method"], int(row["seed"])), set()).add(tuple(map(int, info["shard"])))
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise DgnamValueError(f"{res_file}: a row lacks the key {missing[0]!r} (is it from mode=am?)")
            if not row["image"]:
                skipped += 1
                continue
            src = (d / row["image"]).resolve()
            if not src.is_file():
                raise DgnamFileNotFoundError(f"image {src} named in {res_file} not found")
            key = (info.get("model", ""), info.get("fingerprint", ""), row["method"], int(row["seed"]),
                   str(row["layer"]), int(row["unit"]), row["kind"], int(row.get("sample", 0)))
            if key in rows:
                dup.append((row, rows[key]["run"], str(d)))
                if duplicates == "first":
                    continue
            rows[key] = {**row, "run": str(d), "source": str(src), "target": info.get("arch"),
                         "_weights_file": info.get("weights_file"), "_model": info.get("model", ""),
                         "_fingerprint": info.get("fingerprint", "")}
    if skipped:
        log.warning("%d rows without a PNG (output.png=false) skipped", skipped)
    if dup and duplicates == "error":
        row, a, b = dup[0]
        raise DgnamValueError(f"{len(dup)} images are the same experiment in two runs (same model, config, method, "
                              f"seed, layer, unit; first: {row['method']} seed {row['seed']} {row['layer']} "
                              f"{row.get('label', row['unit'])} in {a} and {b}): give each run once, or choose "
                              f"report.duplicates=first or last")
    if dup:
        log.warning("%d images of the same experiment in two runs: kept the %s run's", len(dup), duplicates)
    check_shards(shards)
    out = list(rows.values())
    _label_variants(out, configs)
    return out
