"""The one optimization loop behind every method (pixel AM, FFT AM, feature inversion, DGN-AM).

    image = param()                         # pixels, FFT + colour, or G(code)
    acts  = target(transforms(image), objective.layers)
    score = objective(acts)                 # (B,), maximized
    (-score).sum().backward(); normalize grads; optimizer.step(); post_steps(param)

It returns tensors and a history; it never saves, shows or prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dgnam.core.images import to_uint8
from dgnam.core.objectives import Objective
from dgnam.core.params.base import ImageParam
from dgnam.errors import NonFiniteError, first_line

PostStep = Callable[[nn.Module, int], None]


@dataclass
class Result:
    """What :func:`optimize` returns (all on the CPU).

    images: (B, 3, H, W) the last iterate in [0, 1].
    history: (steps, B) the tracked objective at every step (under the transforms).
    frames: uint8 snapshots (B, 3, H, W) every ``frame_every`` steps (sizes change with octaves).
    best_images, best_scores: the best-tracked iterate per item, when ``keep_best``.
    terms: (steps, B) per named term of the objective (``optimize(terms=...)``), at every step.
    """

    images: Tensor
    history: Tensor
    frames: list[Tensor] = field(default_factory=list)
    best_images: Tensor | None = None
    best_scores: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)


class EarlyStop:
    """Stop when no item's tracked objective has risen for ``patience`` steps.

    An item has risen at a step when its objective exceeds its best so far by more than
    ``min_delta * max(|best|, 1)``; the run stops once every item has gone ``patience`` steps without
    rising (never before ``patience`` steps). Call :meth:`reset` to start over (a new octave).
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if int(patience) < 1 or float(min_delta) < 0:
            raise ValueError(f"early stop needs patience >= 1 and min_delta >= 0, got {patience}, {min_delta}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.reset()

    def reset(self) -> None:
        self.best: Tensor | None = None
        self.stale: Tensor | None = None

    def __call__(self, tracked: Tensor) -> bool:
        """Record one step's objective (B,); True when the run should stop."""
        tracked = tracked.detach().float().cpu()
        if self.best is None:
            self.best, self.stale = tracked.clone(), torch.zeros_like(tracked, dtype=torch.long)
            return False
        rose = tracked > self.best + self.min_delta * self.best.abs().clamp_min(1.0)
        self.best = torch.maximum(self.best, tracked)
        self.stale = torch.where(rose, torch.zeros_like(self.stale), self.stale + 1)
        return bool((self.stale >= self.patience).all())


def normalize_grad(grad: Tensor, kind: str | None, eps: float = 1e-8) -> Tensor:
    """Per-item gradient normalization: ``l1`` divides by mean(|g|) (DGN-AM), ``l2`` by the RMS
    (the Keras filter visualization); ``None`` leaves it as is."""
    if kind is None or kind == "none":
        return grad
    dims = tuple(range(1, grad.dim()))
    if kind == "l1":
        return grad / (grad.abs().mean(dims, keepdim=True) + eps)
    if kind == "l2":
        return grad / (grad.pow(2).mean(dims, keepdim=True).sqrt() + eps)
    raise ValueError(f"unknown gradient normalization {kind!r}; valid: none, l1, l2")


def check_finite(step: int, score: Tensor | None, image: Tensor, names: Sequence[str] | None = None) -> None:
    """Stop at the step where an item's image or objective (its activation, its loss; None: the image
    alone) stops being finite, with a :class:`~dgnam.errors.NonFiniteError` naming the step, the items
    and which one."""
    ok_image = torch.isfinite(image.detach().flatten(1)).all(1)
    ok = ok_image if score is None else ok_image & torch.isfinite(score.detach())
    if bool(ok.all()):  # one host synchronization per step
        return
    items = (~ok).nonzero().flatten().tolist()
    what = "image" if not bool(ok_image.all()) else "objective (the activation or a penalty)"
    who = ", ".join(names[i] if names is not None else f"item {i}" for i in items[:8])
    more = f" and {len(items) - 8} more" if len(items) > 8 else ""
    raise NonFiniteError(f"the {what} became NaN or infinite at step {step} for {who}{more}: the optimization "
                         f"diverged (lower optimizer.lr, or check the model and its weights); nothing was written "
                         f"for these units", step, items, what)


def optimize(
    param: ImageParam,
    target: Callable[[Tensor, frozenset[str]], dict[str, Tensor]],
    objective: Objective,
    steps: int,
    optimizer: Callable[..., torch.optim.Optimizer],
    transforms: nn.Module | None = None,
    post_steps: Sequence[PostStep] = (),
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    grad_norm: str | None = None,
    octave_sizes: Sequence[tuple[int, int]] | None = None,
    track: Objective | None = None,
    keep_best: bool = False,
    frame_every: int = 0,
    callback: Callable[[int], None] | None = None,
    terms: Mapping[str, Objective] | None = None,
    early_stop: EarlyStop | None = None,
    names: Sequence[str] | None = None,
) -> Result:
    """Maximize ``objective`` of ``target`` over ``param``; see the module docstring.

    Args:
        param: a parameterization (:class:`dgnam.core.params.ImageParam`, ``forward() -> (B, 3, H, W)``);
            its ``extra()`` pseudo-layers (e.g. a code) are given to the objective with the target's.
        target: maps (images, layer names) to activations (a :class:`dgnam.core.models.Target`).
        objective: score per item to maximize (its ``layers`` are all that is computed).
        steps: optimizer steps (per octave when ``octave_sizes`` is given).
        optimizer: ``params -> Optimizer`` (e.g. ``functools.partial(torch.optim.Adam, lr=0.05)``).
        transforms: applied to the image before the target (jitter, scale, ...).
        post_steps: projections run after each step under ``no_grad``.
        scheduler: ``optimizer -> LR scheduler``, stepped once per step (restarted each octave).
        grad_norm: per-item gradient normalization before the step (``l1``, ``l2`` or None).
        octave_sizes: image sizes to run in turn, resizing the parameterization between them.
        track: what to record in the history and rank ``keep_best`` by (default: ``objective``).
        keep_best: also return the best-tracked iterate of each item.
        frame_every: keep a snapshot every k steps (0: none).
        callback: called with the global step number after each step (progress bars).
        terms: named objectives recorded at every step besides ``track`` (e.g. the terms a sum is
            made of: a style and a content term), computed from the same activations.
        early_stop: end each octave early once no item's tracked objective rises any more
            (:class:`EarlyStop`); the history then has fewer rows than ``steps``.
        names: a name per item for the error raised when an item's image or objective stops being
            finite (:func:`check_finite`; every step, before the gradient is used).
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    track = track or objective
    param_layers = set(param.extra())  # pseudo-layers the parameterization provides (e.g. a code)
    terms = dict(terms or {})
    layers = frozenset().union(objective.layers, track.layers, *(t.layers for t in terms.values())) - param_layers
    transforms = transforms if transforms is not None else nn.Identity()
    octave_sizes = list(octave_sizes) if octave_sizes else [None]
    history: list[Tensor] = []
    term_history: dict[str, list[Tensor]] = {name: [] for name in terms}
    frames: list[Tensor] = []
    best_scores: Tensor | None = None
    best_images: Tensor | None = None
    step = 0
    for size in octave_sizes:
        if size is not None and tuple(size) != tuple(param.size):
            param.resize(tuple(size))
        trainable = [p for p in param.parameters() if p.requires_grad]
        opt = optimizer(trainable)
        sched = scheduler(opt) if scheduler is not None else None
        if early_stop is not None:
            early_stop.reset()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            image = param()
            acts = target(transforms(image), layers)
            if param_layers:
                acts = {**acts, **param.extra()}
            score = objective(acts)  # (B,)
            check_finite(step, score, image, names)
            (-score).sum().backward()  # the one place the sign flips: items do not interact
            if grad_norm:
                for p in trainable:
                    p.grad = normalize_grad(p.grad, grad_norm)
            try:
                opt.step()
            except RuntimeError as e:  # torch's optimizers: "value cannot be converted ... without overflow"
                if "overflow" not in str(e):
                    raise
                raise NonFiniteError(f"the optimizer's step overflowed at step {step} ({first_line(e)}): the learning "
                                     f"rate is too large for float32 (lower optimizer.lr)", step, [], "step") from None
            if sched is not None:
                sched.step()
            for post in post_steps:
                post(param, step)
            tracked = (score if track is objective else track(acts)).detach()
            history.append(tracked)
            with torch.no_grad():
                for name, term in terms.items():
                    term_history[name].append(term(acts).detach().float().cpu())
            if keep_best:
                img = image.detach()
                if best_scores is None:
                    best_scores, best_images = tracked.clone(), img.clone()
                elif img.shape == best_images.shape:
                    better = tracked > best_scores
                    best_scores = torch.where(better, tracked, best_scores)
                    best_images = torch.where(better.view(-1, 1, 1, 1), img, best_images)
                else:  # a new octave: sizes changed, restart the record
                    best_scores, best_images = tracked.clone(), img.clone()
            if frame_every and step % frame_every == 0:
                frames.append(to_uint8(image.detach()))
            if callback is not None:
                callback(step)
            step += 1
            if early_stop is not None and early_stop(tracked):
                break
    with torch.no_grad():
        final = param().detach()
    check_finite(step, None, final, names)  # the image the last step made
    if frame_every:
        frames.append(to_uint8(final))
    return Result(
        images=final.float().cpu(),
        history=torch.stack(history).float().cpu(),
        frames=frames,
        best_images=best_images.float().cpu() if best_images is not None else None,
        best_scores=best_scores.float().cpu() if best_scores is not None else None,
        terms={name: torch.stack(h) for name, h in term_history.items()},
    )

