"""Diversity of a unit's samples: the mean pairwise cosine distance of a fixed feature space.

For K images of one unit (``samples=K``), every pair's cosine distance ``1 - cos(f(a), f(b))`` of a
judge's penultimate features (its pooled features, the input of its last layer), averaged over the
K (K - 1) / 2 pairs. Beside it, the same number for K real photos of the class from the shared
validation split, so that "as diverse as photos" is a comparison, not an impression: the mean over
every pair of the class's photos there (5 per class), which is the expected diversity of K of them
drawn at random, whatever K, without depending on which K are taken.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dgnam.errors import DgnamValueError

#: the last layers of a classifier, whose input is its penultimate feature
_LAST = {"aten.conv2d.default", "aten.linear.default", "aten.addmm.default"}


def penultimate(module: nn.Module) -> nn.Module:
    """From an exported classifier's module (``torch.export.load(f).module()``), one that returns
    the input of its last convolution or linear layer (the pooled features), flattened per image."""
    import copy

    gm = copy.deepcopy(module)
    nodes = list(gm.graph.nodes)
    last = [n for n in nodes if n.op == "call_function" and str(n.target) in _LAST]
    if not last:
        raise DgnamValueError("the judge has no convolution or linear layer to take its penultimate features from")
    feat = last[-1].args[0]
    out = next(n for n in nodes if n.op == "output")
    with gm.graph.inserting_before(out):
        flat = gm.graph.call_function(torch.flatten, (feat, 1))
    out.args = ((flat,),)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def pairwise_cosine_distance(features: Tensor) -> float:
    """Mean of ``1 - cos`` over the K (K - 1) / 2 pairs of rows of ``features`` (K, F); K >= 2."""
    k = features.shape[0]
    if k < 2:
        raise DgnamValueError(f"diversity needs at least 2 images, got {k}")
    f = nn.functional.normalize(features.double().flatten(1), dim=1)
    cos = f @ f.T
    iu = torch.triu_indices(k, k, 1)
    return float((1 - cos[iu[0], iu[1]]).mean())


def feature_space(judge):
    """A :class:`dgnam.eval.judges.Judge` of the same exported classifier that returns its penultimate
    features instead of its logits (resized and batched as the judge does)."""
    from dgnam.eval.judges import Judge

    return Judge(penultimate(judge.model), f"{judge.name} features", judge.input_size, judge.source,
                 judge.batch_size)


def class_photos(files: str | os.PathLike, classes: Sequence[int], k: int,
                 most: int = 50) -> dict[int, Tensor]:
    """The photos (n, 3, 128, 128) of each class in ``classes`` from a labelled dataset (Parquet, or an
    ImageNet-style folder; the shared validation split has 5 photos per class): all of them, at most
    ``most`` (the first), and at least ``k`` or an error."""
    from dgnam.generator.data import ImageDataset, open_source

    source = open_source(str(files))
    decoded = ImageDataset(source, resolution=128)
    want: dict[int, list[Tensor]] = {int(c): [] for c in classes}
    for i in range(len(source)):
        _, label = source.raw(i)
        if label in want and len(want[label]) < max(k, most) and (item := decoded[i]) is not None:
            want[label].append(item["image"])
    short = [c for c, v in want.items() if len(v) < k]
    if short:
        raise DgnamValueError(f"{files} holds fewer than {k} photos of classes {short[:5]}")
    return {c: torch.stack(v) for c, v in want.items()}


def add_diversity(rows: list[dict], judge, photos: str | os.PathLike | None) -> None:
    """For every unit with K >= 2 samples (rows of one method, seed, layer and unit that differ in
    ``sample``): ``diversity``, the mean pairwise cosine distance of the judge's penultimate features
    of its K images, written into each of its rows; for a class unit with ``photos`` (a labelled
    Parquet dataset), ``photo_diversity``: the expected diversity of K photos of the class there, the
    mean over all pairs of its photos (:func:`class_photos`)."""
    from dgnam.io import load_image

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("sample") is not None:
            groups.setdefault((r["method"], int(r["seed"]), str(r["layer"]), int(r["unit"])), []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return
    space = feature_space(judge)
    for rs in groups.values():
        d = pairwise_cosine_distance(space(torch.stack([load_image(r["source"]) for r in rs])))
        for r in rs:
            r["diversity"] = d
    if photos is None:
        return
    want = sorted({int(rs[0]["unit"]) for rs in groups.values() if rs[0]["kind"] == "class"})
    if not want:
        return
    photos_by_class = class_photos(photos, want, 2)  # a mean over pairs: the same for any K
    for rs in groups.values():
        if rs[0]["kind"] == "class":
            d = pairwise_cosine_distance(space(photos_by_class[int(rs[0]["unit"])]))
            for r in rs:
                r["photo_diversity"] = d
