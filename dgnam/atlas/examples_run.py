"""Which units of an atlas lack their dataset examples, and getting them: from an existing
``experiment=dataset_examples`` run (``atlas.examples.run``), and for the rest by streaming
``atlas.examples.data`` once through the network for just those units (:func:`dgnam.dataset_examples`)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgnam.atlas import records as R
from dgnam.atlas.compute import record_for
from dgnam.atlas.examples import class_names, import_units, photo_reader, read_examples
from dgnam.atlas.plan import Plan, key_of
from dgnam.errors import DgnamError, DgnamValueError
from dgnam.io import to_pil

log = logging.getLogger(__name__)


@dataclass
class ExampleSettings:
    """``atlas.examples``: the photos to stream (``data``, a Parquet glob or an image folder; null:
    none), an earlier run to take examples from (``run``), the top ``k`` kept per unit, at most
    ``limit`` photos, ``batch_size`` photos a pass, each ``image_size`` px square (null: the model's
    input size), and the names of the photos' labels (``class_names``; null: the data's
    ``classes.json``)."""

    data: str | None = None
    run: str | None = None
    k: int = 8
    limit: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    class_names: Any = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ExampleSettings:
        node = OmegaConf.select(cfg, "atlas.examples")
        e = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        unknown = [k for k in e if k not in cls.__dataclass_fields__]
        if unknown:
            raise DgnamValueError(f"unknown key atlas.examples.{unknown[0]}; valid: {', '.join(cls.__dataclass_fields__)}")
        out = cls(**e)
        if out.run:
            try:
                read_examples(Path(out.run))  # there, readable, of version 1
            except DgnamError as err:
                raise type(err)(f"atlas.examples.run={out.run}: {err}") from None
        return out

    def key(self, plan: Plan, ex: dict[str, Any] | None = None) -> str:
        if ex is not None:
            return key_of({"run": ex.get("dataset"), "k": ex.get("k"), "image_size": ex.get("image_size"),
                           "model": plan.fingerprint})
        return key_of({"data": self.data, "limit": self.limit, "k": self.k, "image_size": self.image_size,
                       "model": plan.fingerprint})


def _lacking(root: Path, plan: Plan, keys: set[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for u in plan.units:
        ex = (R.load(root, u.layer, u.index) or {}).get("examples")
        if not (ex and ex.get("key") in keys and R.complete(root, ex, ex["key"], (ex.get("crops") or []) + (ex.get("full") or []))):
            out.setdefault(u.layer, []).append(u.index)
    return out


def _store(root: Path, plan: Plan, got: dict[tuple[str, int], dict]) -> int:
    by = {(u.layer, u.index): u for u in plan.units}
    for (layer, index), entry in got.items():
        rec = record_for(root, plan, by[(layer, index)])
        rec["examples"] = entry
        R.save(root, rec)
    return len(got)


def add_examples(root: Path, plan: Plan, ex: ExampleSettings, quality: int = 85) -> int:
    """Examples for every unit of the plan that lacks them; returns how many units got theirs."""
    if not ex.data and not ex.run:
        return 0
    run_ex = read_examples(Path(ex.run)) if ex.run else None
    keys = {ex.key(plan, run_ex)} if run_ex else set()
    if ex.data:
        keys.add(ex.key(plan))
    todo = _lacking(root, plan, keys)
    if not todo:
        log.info("dataset examples: every unit has them already")
        return 0
    done = 0
    if run_ex is not None:
        data = run_ex.get("dataset", {})
        names = class_names(data, ex.class_names)
        read = photo_reader(data.get("source"), data.get("count"), int(run_ex.get("image_size") or 0))
        got = import_units(Path(ex.run), run_ex, todo, root, ex.key(plan, run_ex), names, read, quality)
        done += _store(root, plan, got)
        todo = {layer: [u for u in units if (layer, u) not in got] for layer, units in todo.items()}
        todo = {layer: units for layer, units in todo.items() if units}
    if ex.data and todo:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".examples-", dir=root))
        try:
            for folder, reader in compute_examples(plan, ex, todo, work):
                fresh = read_examples(folder)
                names = class_names(fresh.get("dataset", {}), ex.class_names) or class_names(ex.data)
                done += _store(root, plan, import_units(folder, fresh, todo, root, ex.key(plan), names, reader, quality))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return done


def _groups(plan: Plan, todo: dict[str, list[int]]) -> list[tuple[list[str], list[int], list[int] | None]]:
    """Passes over the data, as few as the engine allows: (layers, units of the non-logit layers,
    classes of the logits layer). One pass follows the union of the units lacking examples in every
    layer, when every layer has all of them; else a pass per layer."""
    others = [name for name in todo if not plan.layers[name].logits]
    classes = next((todo[name] for name in todo if plan.layers[name].logits), None)
    logits = [name for name in todo if plan.layers[name].logits]
    union = sorted({u for name in others for u in todo[name]})
    if not others:
        return [(logits, [], classes)]
    if all(union[-1] < plan.layers[name].as_dict()["units"] for name in others):
        return [(others + logits, union, classes)]
    return [([name], todo[name], None) for name in others] + ([(logits, [], classes)] if logits else [])


def _pil(image: Any) -> Any:
    return to_pil(image) if image is not None else None


def compute_examples(plan: Plan, ex: ExampleSettings, todo: dict[str, list[int]], work: Path) -> list[tuple[Path, Any]]:
    """Stream ``ex.data`` through the network for the units ``todo`` (per layer), once for them all
    where the engine allows (:func:`_groups`); per pass, its folder and a reader of its photos."""
    from dgnam.api_examples import dataset_examples

    out = []
    for i, (layers, units, classes) in enumerate(_groups(plan, todo)):
        folder = work / str(i)
        res = dataset_examples(plan.target, ex.data, layers, units or "all", k=ex.k, classes=classes, out_dir=folder,
                               batch_size=ex.batch_size or 64, image_size=ex.image_size, device=plan.device,
                               limit=ex.limit, resume=False, progress=False)
        out.append((folder, lambda j, src=res.source: _pil(src.item(j)[0])))
    return out
