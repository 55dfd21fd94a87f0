"""The files of an atlas folder and its per-unit records.

An atlas folder holds, for every unit computed so far::

    records/<layer>/<unit>.json          what was computed, with which settings (the record)
    img/<layer>/<unit>_<method>.jpg      each method's image (its optimized size) ...
    img/<layer>/<unit>_<method>_card.jpg ... and the card's thumbnail
    ex/<layer>/<unit>/<i>.jpg            the unit's dataset examples (crops), <i>_full.jpg the photos

and the site built from all records found: ``index.html``, ``style.css``, ``layers/<layer>.html``,
``units/<layer>/<unit>.html``. Every path inside a record is relative to the atlas folder, so folders
can be moved and gathered (:func:`gather`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dgnam.errors import DgnamFileNotFoundError, DgnamValueError
from dgnam.io import safe_name, write_json

log = logging.getLogger(__name__)
VERSION = 1


def layer_dir(layer: str) -> str:
    return safe_name(layer) or "layer"


def record_path(root: Path, layer: str, index: int) -> Path:
    return root / "records" / layer_dir(layer) / f"{int(index)}.json"


def load(root: Path, layer: str, index: int) -> dict[str, Any] | None:
    """The record of a unit, or None when there is none (or it cannot be read: it is then redone)."""
    return _read(record_path(root, layer, index))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == VERSION else None


def save(root: Path, rec: Mapping[str, Any]) -> None:
    write_json(record_path(root, rec["layer"], rec["unit"]), dict(rec))


def files_of(rec: Mapping[str, Any]) -> list[str]:
    """Every file a record names (relative to its atlas folder)."""
    out = [p for m in rec.get("methods", {}).values() for p in (m.get("image"), m.get("card")) if p]
    ex = rec.get("examples") or {}
    out += [p for p in (ex.get("crops") or []) + (ex.get("full") or []) if p]
    return out


def complete(root: Path, entry: Mapping[str, Any] | None, key: str, files: Iterable[str]) -> bool:
    """Whether a record's entry has ``key`` and every one of its files is there."""
    return bool(entry) and entry.get("key") == key and all((root / f).is_file() for f in files)


def find(root: Path) -> list[dict[str, Any]]:
    """Every readable record of an atlas folder."""
    recs = [_read(p) for p in sorted((root / "records").glob("*/*.json"))]
    return [r for r in recs if r is not None]


def atlas_roots(folder: Path) -> list[Path]:
    """The atlas folders in or under ``folder`` (each a folder holding ``records/``): an atlas, a
    shard's job folder, or a sweep of them."""
    if not folder.is_dir():
        raise DgnamFileNotFoundError(f"atlas folder not found: {folder}")
    if (folder / "records").is_dir():
        return [folder]
    return sorted(p.parent for p in folder.rglob("records") if p.is_dir() and "records" not in p.parent.parts)


def merge(old: Mapping[str, Any] | None, new: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A unit's record from two folders: the methods of both; where both computed one method (or the
    examples) with other settings, ``new`` wins and the log says so."""
    if old is None:
        return dict(new)
    if old["model"]["fingerprint"] != new["model"]["fingerprint"]:
        raise DgnamValueError(f"{where} holds {new['layer']} unit {new['unit']} of another model "
                              f"({new['model']['name']} {new['model']['fingerprint']}, not {old['model']['fingerprint']}); "
                              f"gather the atlases of one model only")
    out = dict(old)
    methods = dict(old.get("methods", {}))
    for name, entry in new.get("methods", {}).items():
        if name in methods and methods[name].get("key") != entry.get("key"):
            log.warning("%s %s %s: settings differ between folders; %s's is kept", new["layer"], new["unit"], name, where)
        methods[name] = entry
    out["methods"] = methods
    if new.get("examples"):
        out["examples"] = new["examples"]
    return out


def gather(sources: Iterable[str | Path], dest: Path) -> int:
    """Copy the records (and the files they name) of every atlas folder in or under ``sources`` into
    ``dest``, merged unit by unit (:func:`merge`); returns how many records were read. A source with
    no record is one line."""
    dest = Path(dest)
    found: list[tuple[Path, dict[str, Any]]] = []
    for src in sources:  # every source checked before anything is copied
        roots = [r for r in atlas_roots(Path(src)) if r.resolve() != dest.resolve()]
        recs = [(r, rec) for r in roots for rec in find(r)]
        if not recs and Path(src).resolve() != dest.resolve():
            raise DgnamValueError(f"atlas.sources: {src} holds no atlas records (records/<layer>/<unit>.json); give "
                                  f"folders written by experiment=atlas (a run folder, a shard's job folder or a sweep)")
        found += recs
    models = {(r["model"]["name"], r["model"]["fingerprint"]) for r in [rec for _, rec in found] + find(dest)}
    if len(models) > 1:
        raise DgnamValueError(f"atlas.sources hold the records of {len(models)} models "
                              f"({', '.join(f'{n} {f}' for n, f in sorted(models))}); an atlas shows one model")
    for root, rec in found:
        for rel in files_of(rec):
            if (root / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, dest / rel)
        save(dest, merge(load(dest, rec["layer"], rec["unit"]), rec, str(root)))
    return len(found)
