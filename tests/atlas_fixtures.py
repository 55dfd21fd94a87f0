"""A small examples.json of the dataset-examples schema (version 1) with its crops and photos, for
the atlas tests: what ``experiment=dataset_examples`` writes, made up from known numbers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32  # the photos' side as the network saw them


def photos(folder: Path, n: int = 12) -> Path:
    """``n`` synthetic photos (flat image folder, sorted names = dataset indices)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
        arr[:, :, i % 3] = 40 + 15 * i  # each photo its own tint
        Image.fromarray(arr).save(folder / f"{i:04d}.png")
    return folder


def examples_run(folder: Path, source: Path, layers: Mapping[str, tuple[int, bool]], k: int = 3,
                 n: int = 12) -> Path:
    """``folder/examples.json`` for ``layers`` ({name: (units, spatial)}): unit u's examples are the
    photos (u + j) % n with values 10 - j + u / 10, labels (u + j) % 10; spatial layers have
    positions and boxes (rows 2-18, columns 4-12), every unit a histogram."""
    out: dict = {"version": 1, "model": {"name": "cifar_net"},
                 "dataset": {"source": str(source), "count": n, "seen": n, "skipped": 0},
                 "k": k, "image_size": SIZE, "layers": {}}
    for layer, (count, spatial) in layers.items():
        units = {}
        for u in range(count):
            idx = [(u + j) % n for j in range(k)]
            crops = []
            for j, i in enumerate(idx):
                rel = f"crops/{layer}/{u}_{j}.jpg"
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.open(source / f"{i:04d}.png").crop((0, 0, 16, 16)).save(folder / rel, quality=85)
                crops.append(rel)
            units[str(u)] = {"values": [10.0 - j + u / 10 for j in range(k)], "indices": idx,
                             "labels": [(u + j) % 10 for j in range(k)],
                             "positions": [[2, 3]] * k if spatial else None,
                             "boxes": [[2, 4, 18, 12]] * k if spatial else None,
                             "strip": f"strips/{layer}/{u}.png", "crops": crops,
                             "hist": {"edges": [-2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], "counts": [3, 40, 22, 9, 4, 2, 1]}}
        out["layers"][layer] = {"shape": [count, 16, 16] if spatial else [count], "kind": "conv" if spatial else "linear",
                                "field": {"size": [6, 6], "stride": [2, 2]} if spatial else None, "units": units}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.json").write_text(json.dumps(out))
    return folder
