"""A prior's recipe in stages within one run (``stages:`` of ``conf/train_generator.yaml``).

The spatial latent prior that works was made in three runs, each starting from the last one's
prior: the latent regression with the latent D, then the perceptual term up to the code, then that
term past the code. ``stages`` runs such a chain as one training run: an ordered mapping of stage
name to what changes in it, each stage lasting ``steps`` G iterations (null on the last: until
``trainer.max_steps`` or ``trainer.max_time``; a number on the last ends the run after it)::

    stages:
      latent:     {steps: 3000, weights: {adversarial: 50.0, perceptual: 0.0}}
      perceptual: {steps: 1500, weights: {adversarial: 0.0, perceptual: 1000.0}, lr_scale: 0.1,
                   perceptual_layers: [[features.3.add, 1.0], [features.14.conv.0, 1.0]]}
      deep:       {steps: 2800, perceptual_layers: [...], lr_scale: 0.1}
      grid:       {steps: 300, weights: {grid: 1000.0}, perceptual_layers: [...], lr_scale: 0.1}

Keys of a stage (all optional but ``steps``): ``weights`` (merged over ``loss.weights``),
``perceptual_layers`` (``[[layer, weight], ...]``, or ``auto`` / ``auto_past``: picked by depth, see
:func:`dgnam.generator.encoder.auto_perceptual_layers`), ``feature_every``, ``feature_items`` and
``lr_scale`` (G's learning rate from the scheduler, times this). Which stage runs follows from the
iteration count alone, so a resumed run goes on in the stage it was in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dgnam.errors import DgnamValueError

log = logging.getLogger(__name__)

STAGE_KEYS = ("steps", "weights", "perceptual_layers", "feature_every", "feature_items", "lr_scale")
AUTO_LAYERS = ("auto", "auto_past")
_UNSET = object()


@dataclass
class Stage:
    name: str
    start: int                        # the first G iteration of the stage
    end: int | None                   # the first iteration after it (None: the run's end)
    weights: dict[str, float]
    perceptual_layers: Any = None     # [[layer, weight], ...], "auto", "auto_past", or None (loss.perceptual_layers)
    feature_every: int | None = None
    feature_items: Any = field(default=_UNSET)
    lr_scale: float = 1.0


def parse_stages(node: Any, base_weights: dict[str, float], loss_names: tuple[str, ...]) -> list[Stage]:
    """The stages of ``node`` (a mapping name -> stage, or None: no stages), each failure one line."""
    if not node:
        return []
    if not isinstance(node, dict):
        raise DgnamValueError(f"stages must be a mapping of stage name to its settings, e.g. "
                              f"stages.latent.steps=3000; got {node!r}")
    stages, start = [], 0
    items = list(node.items())
    for i, (name, s) in enumerate(items):
        s = dict(s or {})
        unknown = set(s) - set(STAGE_KEYS)
        if unknown:
            raise DgnamValueError(f"stages.{name}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(STAGE_KEYS)}")
        steps = s.get("steps")
        last = i == len(items) - 1
        if steps is None and not last:
            raise DgnamValueError(f"stages.{name}.steps is null, which only the last stage may be (it runs to the end); "
                                  f"give a number of G iterations")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise DgnamValueError(f"stages.{name}.steps={steps!r} must be a positive number of G iterations (or null on the last stage)")
        w = {**base_weights, **{k: float(v) for k, v in (s.get("weights") or {}).items()}}
        bad = set(w) - set(loss_names)
        if bad:
            raise DgnamValueError(f"stages.{name}.weights: unknown loss term(s) {', '.join(sorted(bad))}; "
                                  f"valid: {', '.join(loss_names)}")
        if any(v < 0 for v in w.values()):
            raise DgnamValueError(f"stages.{name}.weights={w} must all be >= 0")
        layers = s.get("perceptual_layers")
        if isinstance(layers, str) and layers not in AUTO_LAYERS:
            raise DgnamValueError(f"stages.{name}.perceptual_layers={layers!r}; valid: [[layer, weight], ...], "
                                  f"{', '.join(AUTO_LAYERS)}")
        every = s.get("feature_every")
        if every is not None and int(every) < 1:
            raise DgnamValueError(f"stages.{name}.feature_every={every} must be a positive number of steps")
        items_ = s.get("feature_items", _UNSET)
        if items_ is not _UNSET and items_ is not None and int(items_) < 1:
            raise DgnamValueError(f"stages.{name}.feature_items={items_} must be positive (or null: every item)")
        scale = float(s.get("lr_scale", 1.0))
        if not scale > 0:
            raise DgnamValueError(f"stages.{name}.lr_scale={scale} must be positive")
        end = start + steps if steps is not None else None
        stages.append(Stage(str(name), start, end, w, layers, int(every) if every is not None else None,
                            items_ if items_ is _UNSET or items_ is None else int(items_), scale))
        start = end if end is not None else start
    return stages


def union_weights(stages: list[Stage], base: dict[str, float]) -> dict[str, float]:
    """Each term's largest weight over the stages (which parts the run must build), or ``base``."""
    if not stages:
        return dict(base)
    return {k: max(s.weights.get(k, 0.0) for s in stages) for k in {k for s in stages for k in s.weights}}


class StageSchedule:
    """Applies the stage of the current G iteration to a :class:`~dgnam.generator.module.GeneratorModule`
    before each training step: its loss weights, decode cadence, perceptual layers and G's learning rate.

    ``layers``: the resolved ``[(layer, weight), ...]`` of each stage (None: the module's own)."""

    def __init__(self, stages: list[Stage], layers: list[list[tuple[str, float]] | None]) -> None:
        if not stages:
            raise DgnamValueError("a stage schedule needs at least one stage")
        self.stages, self.layers = stages, layers
        self.current: int | None = None
        self._defaults: dict[str, Any] | None = None

    def index_at(self, iteration: int) -> int:
        for i, s in enumerate(self.stages):
            if s.end is None or iteration < s.end:
                return i
        return len(self.stages) - 1

    def finished(self, iteration: int) -> bool:
        """Whether a last stage of a fixed length is over at ``iteration``: the run ends there."""
        end = self.stages[-1].end
        return end is not None and iteration >= end

    def apply(self, module: Any) -> int | None:
        """Set the module up for its next iteration; -1 (Lightning's "skip the rest of the epoch"), with
        the trainer told to stop, when a last stage of fixed length is over."""
        it = int(module.iteration)
        if self.finished(it):
            log.info("stage %r ended at G iteration %d: the run ends", self.stages[-1].name, it)
            module.trainer.should_stop = True
            return -1
        i = self.index_at(it)
        if self._defaults is None:
            self._defaults = {"feature_every": getattr(module, "feature_every", 1),
                              "feature_items": getattr(module, "feature_items", None),
                              "layers": list(module.perceptual.layers) if getattr(module, "perceptual", None) else None}
        s = self.stages[i]
        if i != self.current:
            log.info("stage %d/%d %r from G iteration %d%s: weights %s", i + 1, len(self.stages), s.name, it,
                     f" to {s.end}" if s.end is not None else "", {k: v for k, v in s.weights.items() if v})
            self.current = i
            module.weights = dict(s.weights)
            if hasattr(module, "feature_every"):
                module.feature_every = s.feature_every or self._defaults["feature_every"]
                module.feature_items = (self._defaults["feature_items"] if s.feature_items is _UNSET
                                        else s.feature_items)
            if getattr(module, "perceptual", None) is not None:
                module.perceptual.layers = list(self.layers[i] or self._defaults["layers"] or [])
        self.scale_lr(module, s.lr_scale)
        module.log("train/stage", float(i + 1), on_step=True, on_epoch=False, batch_size=1)
        return None

    @staticmethod
    def scale_lr(module: Any, scale: float) -> None:
        """G's learning rate: its initial one times ``scale``, under the scheduler's factor (the
        scheduler's base rate is set, so the rate it computes, logs and checkpoints is the scaled one)."""
        opts = module.optimizers()
        opt_g = opts[0] if isinstance(opts, list) else opts
        groups = opt_g.param_groups
        for g in groups:
            g.setdefault("initial_lr", g["lr"])
        sch = module._schedulers()
        old = list(sch[0].base_lrs) if sch else [g.setdefault("dgnam_base_lr", g["lr"]) for g in groups]
        new = [g["initial_lr"] * scale for g in groups]
        for g, a, b in zip(groups, old, new):
            if a != b:
                g["lr"] *= b / a
        if sch:
            sch[0].base_lrs = new
        else:
            for g, b in zip(groups, new):
                g["dgnam_base_lr"] = b
