"""``mode=dataset_examples``: the real photos that excite each unit most, from one pass of a dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgnam.checks import positive_int
from dgnam.config import build_target_from_cfg
from dgnam.core.models import Target, pick_device
from dgnam.errors import DgnamValueError
from dgnam.views.common import layer_list
from dgnam.views.examples.engine import CHECKPOINT_NAME, model_fingerprint, one_thread, plan_units, run_pass
from dgnam.views.examples.output import write_outputs
from dgnam.views.examples.source import open_examples_source

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def run_dataset_examples(cfg: DictConfig, out_dir: str | Path, target: Target | None = None,
                         data: Any = None) -> dict[str, Any]:
    """Stream ``examples.data`` (or ``data``: any source :func:`open_examples_source` takes) once through
    the target and write, for every unit of ``units`` (``examples.classes`` on the logits layer) of each
    of ``layers``, its top ``examples.k`` photos: ``<layer>/<unit>.png`` strips, ``<layer>/<unit>_<rank>.jpg``
    crops, ``examples.parquet`` and ``examples.json``; the pass checkpoints to ``examples_checkpoint.pt``
    and resumes from it. Returns the JSON's contents (``examples``) and per-unit ``results`` rows, or
    ``finished: False`` when ``examples.max_batches`` stopped the pass early."""
    out = Path(out_dir)
    opt = lambda key, default=None: OmegaConf.select(cfg, f"examples.{key}", default=default)  # noqa: E731
    k = positive_int(cfg, "examples.k", default=9)
    batch_size = positive_int(cfg, "batch_size", default=64)
    bins, warmup = positive_int(cfg, "examples.bins", default=40), positive_int(cfg, "examples.warmup", default=512)
    target = target.to(pick_device(cfg.get("device", "auto"))) if target is not None else \
        build_target_from_cfg(cfg, pick_device(cfg.get("device", "auto")))
    size = positive_int(cfg, "image_size") if cfg.get("image_size") is not None else target.input_size
    layers = layer_list(target, cfg.get("layers"))
    plans = plan_units(target, layers, _plain(cfg.get("units", "all")), _plain(opt("classes")), size)
    limit = opt("limit")
    source = open_examples_source(data if data is not None else _plain(opt("data")), size,
                                  None if limit is None else int(limit))
    fingerprint = {"model": model_fingerprint(target), "data": source.fingerprint(),
                   "layers": [target.resolve(p.layer) for p in plans], "units": [p.units for p in plans],
                   "k": k, "image_size": size, "bins": bins, "warmup": warmup}
    max_batches = opt("max_batches")

    def stale() -> None:  # an earlier result goes before a new pass or any of its files change
        for name in ("examples.json", "examples.parquet"):
            (out / name).unlink(missing_ok=True)

    state = run_pass(target, source, plans, k, batch_size=batch_size, bins=bins, warmup=warmup,
                     workers=int(opt("workers", 0) or 0), checkpoint=out / CHECKPOINT_NAME,
                     checkpoint_every=positive_int(cfg, "examples.checkpoint_every", default=50),
                     resume=bool(opt("resume", True)), max_batches=None if max_batches is None else int(max_batches),
                     fingerprint=fingerprint, progress=bool(OmegaConf.select(cfg, "output.progress", default=True)),
                     on_start=stale)
    if state.skipped:
        log.warning("skipped %d unreadable images of %d (first indices: %s)", state.skipped, len(source),
                    ", ".join(map(str, state.skipped_first)))
    if state.seen == 0 and state.done:
        raise DgnamValueError(f"no readable image in {source.description}: all {len(source)} could not be decoded")
    if not state.done:
        log.warning("stopped at image %d of %d (examples.max_batches=%s); run again with the same settings and "
                    "folder to go on", state.next, len(source), max_batches)
        return {"out_dir": str(out), "finished": False, "results": [], "state": state, "source": source, "plans": plans}
    if state.seconds > 0 and state.streamed:
        log.info("%d images in %.1f s: %.1f images/s", state.streamed, state.seconds, state.streamed / state.seconds)
    stale()
    with one_thread():
        doc = write_outputs(out, target, source, plans, state, k=k, size=size,
                            tile=positive_int(cfg, "examples.tile", default=112),
                            crop_size=positive_int(cfg, "examples.crop_size", default=128),
                            strips=bool(opt("strips", True)))
    rows = [{"layer": la, "unit": int(u), "name": r["name"], "top_value": r["values"][0] if r["values"] else None,
             "top_index": r["indices"][0] if r["indices"] else None,
             "top_label": r["labels"][0] if r["labels"] else None}
            for la, node in doc["layers"].items() for u, r in node["units"].items()]
    return {"out_dir": str(out), "finished": True, "results": rows, "examples": doc, "state": state, "source": source,
            "plans": plans}
