"""Dataset examples from Python: :func:`dataset_examples` on any ``nn.Module``, as
``visualize.py experiment=dataset_examples`` computes them (the same config, the same pass, the same
files); re-exported by ``dgnam``.

    ex = dgnam.dataset_examples(net, "photos/", ["layer2", "layer4"], units="first:8", k=9, out_dir="ex/")
    ex["layer4"].values          # (units, k), highest first
    ex.images("layer4", 3)       # unit 3's k photos, (k, 3, S, S) in [0, 1]
    ex.crops("layer4", 3)        # ... and the receptive field of each peak
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor

from dgnam.api_views import check_precisions, compose_config, finish_config, overridden
from dgnam.core.wrap import wrap_model
from dgnam.errors import DgnamValueError


@dataclass
class LayerExamples:
    """One layer's examples: ``values`` (U, k) float32, highest first; ``indices`` (U, k) dataset
    indices and ``labels`` (U, k) (-1 where unknown, or where fewer than k images were seen);
    ``positions`` (U, k, 2) the (y, x) of each conv unit's peak and ``boxes`` (U, k, 4) its receptive
    field [top, left, bottom, right) in image pixels (None for a flat layer); ``hist_edges`` (U, bins + 3)
    and ``hist_counts`` (U, bins + 2) (the first and last bins are the under- and overflow)."""

    layer: str
    kind: str
    shape: tuple[int, ...]
    units: list[int]
    values: Tensor
    indices: Tensor
    labels: Tensor
    positions: Tensor | None
    boxes: Tensor | None
    hist_edges: Tensor
    hist_counts: Tensor

    def row(self, unit: int) -> int:
        if unit not in self.units:
            raise DgnamValueError(f"unit {unit} of {self.layer} was not followed; followed: {self.units[:20]}")
        return self.units.index(unit)


@dataclass
class Examples:
    """What :func:`dataset_examples` returns: ``layers`` by name (also ``ex[layer]``), the JSON's contents
    (``doc``, None when ``max_batches`` stopped the pass), the run folder and the data it read."""

    layers: dict[str, LayerExamples]
    doc: dict[str, Any] | None
    folder: Path
    source: Any
    cfg: DictConfig

    @property
    def finished(self) -> bool:
        return self.doc is not None

    def __getitem__(self, layer: str) -> LayerExamples:
        return self.layers[layer]

    def images(self, layer: str, unit: int) -> Tensor:
        """Unit ``unit``'s example photos as the model saw them: (n, 3, S, S) in [0, 1], highest first."""
        lay = self.layers[layer]
        idx = [i for i in lay.indices[lay.row(unit)].tolist() if i >= 0]
        imgs = [self.source.item(i)[0] for i in idx]
        return torch.stack(imgs) if imgs else torch.zeros(0, 3, self.source.size, self.source.size)

    def crops(self, layer: str, unit: int) -> list[Tensor]:
        """The receptive field of each example's peak (the whole photo for a flat layer): (3, h, w) each."""
        lay, imgs = self.layers[layer], self.images(layer, unit)
        if lay.boxes is None:
            return list(imgs)
        return [im[:, t:b, left:r] for im, (t, left, b, r) in zip(imgs, lay.boxes[lay.row(unit)].tolist())]

    def strip(self, layer: str, unit: int) -> Path | None:
        """The unit's PNG strip (None without ``strips``, or before the pass finished)."""
        rel = (self.doc or {}).get("layers", {}).get(layer, {}).get("units", {}).get(str(unit), {}).get("strip")
        return self.folder / rel if rel else None

    def _repr_png_(self) -> bytes | None:
        first = next(((la, u) for la, lay in self.layers.items() for u in lay.units[:1]), None)
        path = self.strip(*first) if first else None
        return path.read_bytes() if path is not None else None

    def __repr__(self) -> str:
        units = sum(len(lay.units) for lay in self.layers.values())
        state = "finished" if self.finished else "stopped early"
        return f"Examples({len(self.layers)} layers, {units} units, {state}, files in {self.folder})"


def _layer(res: dict[str, Any], plan: Any) -> LayerExamples:
    topk, hist = res["state"].layers[plan.layer]
    empty = topk.indices == torch.iinfo(torch.long).max
    indices = topk.indices.masked_fill(empty, -1)
    values = topk.values.masked_fill(empty, float("nan"))
    units = (res.get("examples") or {}).get("layers", {}).get(plan.layer, {}).get("units")
    labels = torch.full_like(indices, -1)
    boxes = None
    if units is not None:
        for r, u in enumerate(plan.units):
            row = units[str(u)]
            n = len(row["labels"])
            labels[r, :n] = torch.tensor([-1 if lb is None else lb for lb in row["labels"]], dtype=torch.long)
            if row["boxes"] is not None:
                boxes = torch.zeros(*indices.shape, 4, dtype=torch.long) if boxes is None else boxes
                boxes[r, :n] = torch.tensor(row["boxes"], dtype=torch.long).reshape(n, 4)
    edges, counts = hist.export()
    return LayerExamples(plan.layer, plan.kind, plan.shape, list(plan.units), values, indices, labels,
                         topk.positions, boxes, edges, counts)


def dataset_examples(
    model: Any,
    data: Any = None,
    layers: str | Sequence[str] = "all",
    units: Any = "all",
    k: int = 9,
    *,
    classes: Any = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    image_size: int | None = None,
    device: str = "auto",
    resume: bool = True,
    limit: int | None = None,
    workers: int = 0,
    checkpoint_every: int = 50,
    max_batches: int | None = None,
    strips: bool = True,
    progress: bool = False,
    overrides: Sequence[str] = (),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
) -> Examples:
    """The ``k`` dataset photos that excite each unit most, from one pass of ``data`` through ``model``.

    model: any ``nn.Module`` (or a :class:`~dgnam.core.models.Target`). data: an image folder, a Parquet
    file, glob or folder of shards, a list of image files, a tensor (N, 3, H, W) in [0, 1] or a torch
    ``Dataset`` (items an image, ``(image, label)`` or ``{"image", "label"}``); None: the shared ImageNet-50.
    layers: names or ``all``; units: ``all``, ``first:N``, ``a-b`` or indices, for every layer (``classes``,
    when given, for the logits layer). Files go to ``out_dir`` (None: a temporary folder); with
    ``resume``, a checkpoint there (of the same settings) is continued. ``max_batches`` stops the pass
    early (the result then holds the top k so far, ``finished`` false)."""
    from dgnam.views.examples.run import run_dataset_examples

    out = Path(out_dir) if out_dir is not None else None
    fresh = out is None or not out.exists()
    try:
        cfg = compose_config(["experiment=dataset_examples", *overrides])
        check_precisions(cfg)
        target = wrap_model(model, mean=mean, std=std, input_size=input_size, precision=cfg.precision)
        with open_dict(cfg):
            cfg.layers = [layers] if isinstance(layers, str) and layers != "all" else (
                layers if isinstance(layers, str) else list(layers))
            cfg.units = units if isinstance(units, (str, int)) else list(units)
            cfg.batch_size, cfg.device = batch_size, device
            cfg.image_size = image_size or (cfg.image_size if "image_size" in overridden(overrides) else target.input_size)
            cfg.examples.classes = classes if classes is None or isinstance(classes, (str, int)) else list(classes)
            cfg.examples.update(k=k, resume=resume, limit=limit, workers=workers, checkpoint_every=checkpoint_every,
                                max_batches=max_batches, strips=strips)
            cfg.output.progress = progress
        finish_config(cfg, target)
        out = out if out is not None else Path(tempfile.mkdtemp(prefix="dgnam_examples_"))
        res = run_dataset_examples(cfg, out, target=target, data=data)
    except KeyboardInterrupt:
        if fresh and out is not None and out_dir is None:
            shutil.rmtree(out, ignore_errors=True)  # a temporary folder: nothing to resume from
        raise
    except BaseException:
        if fresh and out is not None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    layers_out = {p.layer: _layer(res, p) for p in res["plans"]}
    return Examples(layers_out, res.get("examples"), out, res["source"], cfg)
