"""Dataset examples in the atlas: the top-k crops, values, labels and activation histogram of each
unit, read from an ``examples.json`` (``experiment=dataset_examples``) and copied into the unit's
record; the photos they come from are kept once each under ``ex/photos/`` (as the network saw them,
``image_size`` px square) so that a unit page can draw the receptive field's box on them."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from dgnam.atlas import records as R
from dgnam.errors import DgnamFileNotFoundError, DgnamValueError
from dgnam.io import to_pil

log = logging.getLogger(__name__)
PhotoReader = Callable[[int], "Image.Image | None"]


def read_examples(folder: Path) -> dict[str, Any]:
    """``<folder>/examples.json`` (or the file itself), checked for its version and layers."""
    path = folder if folder.suffix == ".json" else folder / "examples.json"
    if not path.is_file():
        raise DgnamFileNotFoundError(f"dataset examples not found: {path} (give the folder of an "
                                     f"experiment=dataset_examples run, which holds examples.json)")
    try:
        ex = json.loads(path.read_text())
    except ValueError as e:
        raise DgnamValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(ex, dict) or ex.get("version") != 1 or not isinstance(ex.get("layers"), dict):
        raise DgnamValueError(f"{path} is not an examples.json of version 1 (with 'version': 1 and 'layers')")
    return ex


def class_names(source: str | Mapping[str, Any] | None, given: Any = None) -> list[str] | None:
    """The names of the dataset's labels: ``given`` (a list or a text file, one per line), else the
    ``label_names`` of an examples.json's ``dataset`` node, else a ``classes.json`` (``[{"label", "name"}]``, as the shared ImageNet photos have) beside the data."""
    if given:
        if isinstance(given, (list, tuple)):
            return [str(g) for g in given]
        path = Path(str(given))
        if not path.is_file():
            raise DgnamFileNotFoundError(f"class names file not found: {path} (give a text file, one name per line)")
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not source:
        return None
    if isinstance(source, Mapping):  # an examples.json's dataset node: its label names, else its source
        if source.get("label_names"):
            return [str(n) for n in source["label_names"]]
        source = source.get("source")
    if not source:
        return None
    base = Path(str(source).split("*")[0])
    for folder in (base, base.parent):
        f = folder / "classes.json"
        if f.is_file():
            try:
                rows = json.loads(f.read_text())
                names = {int(r["label"]): str(r["name"]) for r in rows}
                return [names.get(i, str(i)) for i in range(max(names) + 1)]
            except (ValueError, KeyError, TypeError):
                return None
    return None


def photo_reader(source: str | None, count: int | None, size: int) -> PhotoReader | None:
    """A function from a dataset index to its photo as the network saw it (the centre square at
    ``size`` px), over the source an examples run streamed (a Parquet file, glob or folder, or an
    image folder; ``count`` images spread over it, as the run picked them); None when the source
    cannot be opened here."""
    if not source or not size:
        return None
    try:
        from dgnam.views.examples.source import open_examples_source

        src = open_examples_source(source, size, limit=count)  # the same photos the run spread its count over
    except Exception as e:  # a run made elsewhere: its photos are not here
        log.info("the photos of %s cannot be read here (%s); unit pages show the crops only", source, e)
        return None

    def read(i: int) -> Image.Image | None:
        img = src.item(i)[0] if 0 <= i < len(src) else None
        return to_pil(img) if img is not None else None

    return read


def _photo(root: Path, index: int, read: PhotoReader | None, quality: int) -> str | None:
    """``ex/photos/<index>.jpg``: the photo as the network saw it, written once for all units."""
    rel = f"ex/photos/{int(index)}.jpg"
    if (root / rel).is_file():
        return rel
    img = read(int(index)) if read else None
    if img is None:
        return None
    from dgnam.atlas.compute import save_jpeg

    save_jpeg(img, root / rel, quality)
    return rel


def import_units(folder: Path, ex: Mapping[str, Any], wanted: Mapping[str, Sequence[int]], root: Path, key: str,
                 names: Sequence[str] | None, read: PhotoReader | None, quality: int = 85) -> dict[tuple[str, int], dict]:
    """The examples entry of every wanted (layer, unit) that ``ex`` holds, its crops copied under
    ``ex/<layer>/<unit>/`` of the atlas ``root``; units it lacks are left out."""
    base = folder.parent if folder.suffix == ".json" else folder
    size = int(ex.get("image_size") or 0)
    out: dict[tuple[str, int], dict] = {}
    for layer, units in wanted.items():
        lex = ex["layers"].get(layer)
        if not lex:
            continue
        for u in units:
            e = lex.get("units", {}).get(str(u))
            if not e:
                continue
            crops = []
            for i, rel in enumerate(e.get("crops") or []):
                dst = f"ex/{R.layer_dir(layer)}/{u}/{i}{Path(rel).suffix or '.jpg'}"
                if (base / rel).is_file():
                    (root / dst).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(base / rel, root / dst)
                    crops.append(dst)
            labels = e.get("labels")
            full = [_photo(root, i, read, quality) for i in e.get("indices") or []] if size else []
            out[(layer, int(u))] = {
                "key": key, "source": ex.get("dataset", {}).get("source"), "k": ex.get("k"), "image_size": size,
                "field": lex.get("field"), "values": e.get("values") or [], "indices": e.get("indices") or [],
                "labels": labels,
                "label_names": [names[i] if names and isinstance(i, int) and 0 <= i < len(names) else None
                                for i in labels] if labels else None,
                "positions": e.get("positions"), "boxes": e.get("boxes"), "crops": crops,
                "full": full if full and all(full) else None, "hist": e.get("hist")}
    return out
