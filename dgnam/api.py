"""One call from Python: :func:`visualize` any ``nn.Module`` with a named method of the CLI, and
the views of a photo (:func:`activation_maps`, :func:`invert`).

    import dgnam, torchvision
    vis = dgnam.visualize(torchvision.models.resnet18(), "logits", [1, "goldfish"], method="lucid", steps=64)
    vis                      # a labelled grid in a Jupyter cell
    vis.images, vis.pil, vis.results
    vis.save("out/")         # the files visualize.py writes
    dgnam.activation_maps(net, "photo.jpg", ["layer1", "layer3"])   # the maps of mode=activation_maps
    dgnam.invert(net, "photo.jpg", ["layer2", "layer4"], steps=200)  # the reconstructions of mode=inversion

The method is composed from the same Hydra configs as ``visualize.py`` (``conf/visualize.yaml`` with
``method=<name>``, plus any ``overrides``), so a recipe has one source of truth; the module is
wrapped in a :class:`~dgnam.core.models.Target` instead of ``cfg.model``. With the same config and
seed, the images are the CLI's.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from torch import Tensor

from dgnam.api_views import View, activation_maps, check_precisions, compose_config, finish_config, invert, overridden
from dgnam.core.images import to_uint8
from dgnam.core.models import Target
from dgnam.core.units import Unit
from dgnam.core.wrap import wrap_model
from dgnam.io import labelled_grid
from dgnam.paths import CONF_DIR


def methods() -> list[str]:
    """The named recipes: the configs of ``conf/method/``."""
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


@dataclass
class Visualization:
    """What :func:`visualize` returns.

    images: (N, 3, H, W) in [0, 1], one per unit (layers in the order given).
    units: the :class:`~dgnam.core.units.Unit` of each image.
    results: a row of numbers per unit (activation, class probability and top-1, start activation,
        steps, seconds): the rows of ``results.json``.
    cfg: the full config that produced it.
    """

    images: Tensor
    units: list[Unit]
    results: list[dict]
    cfg: DictConfig
    _run: Any = None

    @property
    def pil(self) -> list[Image.Image]:
        """The images as PIL images (8-bit RGB)."""
        return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in to_uint8(self.images)]

    def grid(self, cols: int | None = None) -> Image.Image:
        """A labelled grid of all images (the CLI's ``grid_<layer>.png`` style)."""
        cols = cols or int(OmegaConf.select(self.cfg, "output.grid_cols", default=8) or 8)
        grid = labelled_grid(self.images, [f"{u.layer} {u.label}" if len(self._layers) > 1 else u.label
                                           for u in self.units], cols=cols)
        return Image.fromarray(grid.permute(1, 2, 0).numpy())

    @property
    def _layers(self) -> list[str]:
        return list(dict.fromkeys(u.layer for u in self.units))

    def save(self, out_dir: str | Path) -> Path:
        """Write the files ``visualize.py`` writes for this config (``<layer>/<unit>.png``,
        ``grid_<layer>.png``, ``results.json``/``.csv``, GIF/MP4 if ``output.gif``/``mp4``) and the config
        as ``.hydra/config.yaml``; returns the folder."""
        from dgnam.views.am import write_am

        out = Path(out_dir)
        write_am(self._run, out, self.cfg.get("output", {}))
        (out / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, out / ".hydra" / "config.yaml")
        return out

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.grid().save(buf, format="PNG")
        return buf.getvalue()

    def _repr_html_(self) -> str:
        png = base64.b64encode(self._repr_png_()).decode("ascii")
        keys = [k for k in ("layer", "label", "activation", "probability", "top1") if self.results and k in self.results[0]]
        head = "".join(f"<th>{k}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[k]))}</td>" for k in keys) + "</tr>"
                       for r in self.results)
        return (f'<div><img src="data:image/png;base64,{png}"/>'
                f"<table><tr>{head}</tr>{body}</table></div>")

    def __repr__(self) -> str:
        return (f"Visualization({len(self.units)} units of {', '.join(self._layers)}, "
                f"method={self.cfg.get('method_name')}, images {tuple(self.images.shape)})")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def visualize(
    model: Any,
    layer: str | Sequence[str] = "logits",
    units: Any = (0,),
    method: str | None = "lucid",
    steps: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    unit: str = "auto",
    position: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    class_names: str | Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> Visualization:
    """Maximize ``units`` of ``layer`` of any ``nn.Module`` with a named method of the CLI.

    Args:
        model: an ``nn.Module`` taking (B, C, H, W) images (or a :class:`Target`).
        layer: a layer name (a ``torch.fx`` node name such as ``layer3.1.relu``; ``logits``; module
            names when fx cannot trace the model), or a list of them. An unknown name lists the valid ones.
        units: as ``units=`` of the CLI: an index, a list of indices or class names, ``"0-9"``,
            ``"first:8"``, ``"all"``.
        method: a config of ``conf/method/`` (``pixel``, ``yosinski``, ``lucid``, ``maco``, ``dgnam``,
            ...), or None for ``visualize.yaml``'s own defaults.
        steps, batch_size, seed, unit, position: as the CLI's keys (None: the config's value).
        image_size: the side of the optimized image (None: the model's input size).
        overrides: more Hydra overrides, as on the command line (``["priors.jitter=4"]``).
        mean, std, input_size, class_names: the model's input normalization, input side and
            class names (a list or a text file), when its metadata does not give them
            (:func:`~dgnam.core.models.wrap_model`).
        device: ``cpu``, ``cuda``, ``auto``.
        progress: show a progress bar.
    """
    from dgnam.views.am import compute_am

    cfg = compose_config(([f"method={method}"] if method else []) + list(overrides))  # an unknown method: one line
    check_precisions(cfg)
    target = wrap_model(model, mean=mean, std=std, input_size=input_size, categories=class_names,
                        precision=cfg.precision)
    with open_dict(cfg):
        cfg.layers = [layer] if isinstance(layer, str) else list(layer)
        cfg.units = units if isinstance(units, (str, int)) else list(units)
        cfg.unit = unit
        cfg.position = list(position) if position is not None else cfg.get("position")
        cfg.seed = seed
        cfg.device = device
        given = "image_size" in overridden(overrides)
        cfg.image_size = image_size if image_size is not None else (cfg.image_size if given else target.input_size)
        if steps is not None:
            cfg.steps = steps
        if batch_size is not None:
            cfg.batch_size = batch_size
        cfg.output.progress = progress
    finish_config(cfg, target)
    run = compute_am(cfg, target=target)
    units_all = [u for us in run.plan.values() for u in us]
    return Visualization(images=torch.cat(list(run.images.values())), units=units_all, results=run.rows,
                         cfg=cfg, _run=run)



__all__ = ["Target", "View", "Visualization", "activation_maps", "compose_config", "invert", "methods", "visualize"]
