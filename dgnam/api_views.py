"""The config of a call from Python (:func:`compose_config`) and the views of a photo: :func:`activation_maps` and :func:`invert` on any ``nn.Module``,
as ``visualize.py experiment=activation_maps`` and ``experiment=inversion`` compute them (the same
configs, the same numbers); re-exported by :mod:`dgnam.api` and ``dgnam``."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict
from PIL import Image
from torch import Tensor

from dgnam.checks import check_finite
from dgnam.core.images import to_uint8
from dgnam.core.precision import check_config as check_precisions
from dgnam.core.wrap import wrap_model
from dgnam.errors import DgnamValueError
from dgnam.paths import CONF_DIR
from dgnam.ranges import VISUALIZE, check_ranges


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/visualize.yaml`` with Hydra overrides, as ``visualize.py`` composes it (without Hydra's
    own node); a bad override is one line (:class:`DgnamError`)."""
    import dgnam.config  # noqa: F401  (the structured configs and resolvers conf/ refers to)
    from dgnam.cli import _compose

    cfg = _compose(CONF_DIR, "visualize", list(overrides))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@dataclass
class View:
    """What :func:`activation_maps` and :func:`invert` return.

    mode: ``activation_maps`` or ``inversion``.
    results: the rows of ``results.json`` (per filter; per layer and variant).
    data: the tensors: the (C, h, w) maps per layer, or the reconstructions per ``<layer>/<variant>``.
    folder: where the run wrote its files (``out_dir``, or a temporary folder).
    cfg: the full config that produced it.
    """

    mode: str
    results: list[dict]
    data: dict[str, Tensor]
    folder: Path
    cfg: DictConfig

    @property
    def figures(self) -> list[Path]:
        """The run's main pictures: ``actmaps_<layer>.png`` per layer, or ``inversion_grid.png``."""
        if self.mode != "activation_maps":
            return [self.folder / "inversion_grid.png"]
        from dgnam.io import safe_name

        layers = dict.fromkeys(r["layer"] for r in self.results)  # in the order asked for
        return [self.folder / f"actmaps_{safe_name(layer)}.png" for layer in layers]

    def save(self, out_dir: str | Path) -> Path:
        """Copy the files the run wrote (what ``visualize.py mode=...`` writes) to ``out_dir``."""
        out = Path(out_dir)
        if out.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, out, dirs_exist_ok=True)
        return out

    def _repr_png_(self) -> bytes:
        return self.figures[0].read_bytes()

    def _repr_html_(self) -> str:
        imgs = "".join(f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}"/>'
                       for p in self.figures)
        return f"<div>{imgs}</div>"

    def __repr__(self) -> str:
        return f"View({self.mode}, {len(self.results)} rows, files in {self.folder})"


def _image_source(image: Any) -> str | None:
    """A photo for a view: a file path or ``skimage:<name>`` / ``astronaut`` / None as they are; a PIL
    image, an (H, W, 3) uint8 array or a (3, H, W) tensor in [0, 1] is written to a temporary folder
    as an 8-bit PNG first (what the CLI would read)."""
    if image is None or isinstance(image, (str, Path)):
        return None if image is None else str(image)
    import numpy as np

    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise DgnamValueError(f"image tensor must be (3, H, W) in [0, 1], not of shape {tuple(image.shape)}")
        pil = Image.fromarray(to_uint8(image.detach().cpu().float().expand(3, -1, -1)).permute(1, 2, 0).numpy())
    elif isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        pil = image
    else:
        raise DgnamValueError(f"image must be a file path, a PIL image, an array or a (3, H, W) tensor, not "
                         f"{type(image).__name__}")
    path = Path(tempfile.mkdtemp(prefix="dgnam_image_")) / "source.png"
    pil.convert("RGB").save(path)
    return str(path)


def overridden(overrides: Sequence[str]) -> set[str]:
    """The keys that Hydra overrides set (``a.b=1``, ``+a=1``, ``~a`` -> ``a.b``, ``a``)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def finish_config(cfg: DictConfig, target: Any) -> None:
    """Record the given module in ``cfg.model`` (the module itself replaces the CLI's model node) and
    check every number of the config, as ``visualize.py`` does before any work."""
    with open_dict(cfg):
        cfg.model = {"name": target.name, "mean": target.mean.flatten().tolist(), "std": target.std.flatten().tolist(),
                     "input_size": target.input_size}
    check_finite(cfg)
    check_ranges(cfg, VISUALIZE)


def _view(mode: str, model: Any, image: Any, layers: Any, overrides: Sequence[str], out_dir: str | Path | None,
          wrap: dict[str, Any], keys: dict[str, Any], progress: bool = False) -> View:
    """``visualize.py experiment=<mode>`` (``activation_maps`` or ``inversion``) on ``model``."""
    from dgnam.views.actmaps import run_activation_maps
    from dgnam.views.inversion import run_inversion

    out = Path(out_dir) if out_dir is not None else None
    fresh = out is None or not out.exists()  # a folder this call makes is removed again if it fails
    source = None
    try:
        cfg = compose_config([f"experiment={mode}", *overrides])
        check_precisions(cfg)
        target = wrap_model(model, **wrap, precision=cfg.precision)
        source = _image_source(image)
        with open_dict(cfg):
            cfg.image = source
            cfg.layers = [layers] if isinstance(layers, str) and layers != "all" else (
                layers if isinstance(layers, str) else list(layers))
            for k, v in keys.items():
                if v is not None:
                    cfg[k] = v
            if keys.get("image_size") is None and "image_size" not in overridden(overrides):
                cfg.image_size = target.input_size
            cfg.output.progress = progress
        finish_config(cfg, target)
        out = out if out is not None else Path(tempfile.mkdtemp(prefix=f"dgnam_{mode}_"))
        run = run_activation_maps if mode == "activation_maps" else run_inversion
        res = run(cfg, out, target=target)
    except BaseException:
        if fresh and out is not None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if source is not None and image is not None and not isinstance(image, (str, Path)):
            shutil.rmtree(Path(source).parent, ignore_errors=True)  # the photo written for the run
    data = res.get("maps") if mode == "activation_maps" else res.get("images")
    return View(mode=mode, results=list(res["results"]), data=dict(data or {}), folder=out, cfg=cfg)


def activation_maps(
    model: Any,
    image: Any = None,
    layers: str | Sequence[str] = "all",
    units: Any = "all",
    image_size: int | None = None,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    device: str = "cpu",
) -> View:
    """The activation maps of ``units`` (filters; default all) of each of ``layers`` for a photo,
    as ``visualize.py experiment=activation_maps`` computes them.

    image: a file, ``skimage:<name>``, None (scikit-image's astronaut), a PIL image, an (H, W, 3)
    uint8 array or a (3, H, W) tensor in [0, 1]. layers: names, or ``all`` (every conv layer).
    The files (``actmaps_<layer>.png``, ``maps_<layer>.pt``, ``results.json/.csv``) go to
    ``out_dir`` (None: a temporary folder, :attr:`View.folder`)."""
    return _view("activation_maps", model, image, layers, overrides, out_dir,
                 dict(mean=mean, std=std, input_size=input_size),
                 dict(units=units if isinstance(units, (str, int)) else list(units), image_size=image_size,
                      device=device))


def invert(
    model: Any,
    image: Any = None,
    layers: str | Sequence[str] = "all",
    steps: int | None = None,
    variants: Sequence[str] | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> View:
    """Reconstruct a photo from each of ``layers``' activations (feature inversion), plain and with
    priors, as ``visualize.py experiment=inversion`` does (its recipe: ``conf/experiment/inversion.yaml``).

    image: as for :func:`activation_maps`. variants: ``plain`` and/or ``priors`` (None: both).
    The reconstructions are :attr:`View.data` (``"<layer>/<variant>"``), the numbers (feature
    error, PSNR, SSIM) :attr:`View.results`; the files go to ``out_dir`` (None: a temporary folder)."""
    keys = dict(steps=steps, image_size=image_size, batch_size=batch_size, seed=seed, device=device)
    if variants is not None:
        overrides = [*overrides, f"inversion.variants=[{','.join(variants)}]"]
    return _view("inversion", model, image, layers, overrides, out_dir, dict(mean=mean, std=std, input_size=input_size),
                 keys, progress)
