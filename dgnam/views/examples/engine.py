"""One pass of a dataset through a target, batched, keeping every chosen unit's top k images and a
histogram of its values (:mod:`~dgnam.views.examples.topk`) for all layers at once; checkpointed
(atomically, every few batches, on Ctrl-C and at the end) and resumed from the checkpoint.

A checkpoint records a fingerprint of what decides the result (the model's weights, the data, the
layers and units, k, the image side and the histogram's settings); one made for other settings is
refused in one line. A resumed pass gives the top k and histograms of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dgnam.core.models import Target
from dgnam.core.units import select_units
from dgnam.errors import DgnamValueError
from dgnam.io import save_torch
from dgnam.safeload import load_file
from dgnam.views.examples.source import ExampleSource
from dgnam.views.examples.topk import Histogram, TopK, unit_values

log = logging.getLogger(__name__)

VERSION = 1
CHECKPOINT_NAME = "examples_checkpoint.pt"  # in the run folder


@dataclass
class LayerPlan:
    """The units of one layer a pass follows: ``kind`` ``conv`` (C, H, W) or ``linear`` (C)."""

    layer: str
    units: list[int]
    labels: list[str]
    shape: tuple[int, ...]
    kind: str


def plan_units(target: Target, layers: Sequence[str], units: Any, classes: Any, size: int) -> list[LayerPlan]:
    """Check each layer and its units: ``units`` for every layer, ``classes`` (when not None) for the
    logits layer (indices or class names); a unit out of range names the layer and its unit count."""
    plans = []
    logits = target.aliases["logits"]
    for layer in layers:
        shape = tuple(target.layer_shape(layer, size))
        if len(shape) not in (1, 3):
            raise DgnamValueError(f"dataset examples need a conv layer (C, H, W) or a flat one (C), but {layer} has "
                                  f"shape {shape}; choose another layer")
        is_logits = target.resolve(layer) == logits
        spec = classes if is_logits and classes is not None else units
        kind = "channel" if len(shape) == 3 else ("class" if is_logits else "unit")
        try:
            chosen = select_units(target, layer, spec, kind, None, size)
        except DgnamValueError as e:
            raise DgnamValueError(f"{layer}: {e}") from None
        plans.append(LayerPlan(layer, [u.index for u in chosen], [u.label for u in chosen], shape,
                               "conv" if len(shape) == 3 else "linear"))
    return plans


def model_fingerprint(target: Target) -> str:
    """A hash of the target's name, normalization and every tensor of its state."""
    h = hashlib.sha256(json.dumps([target.name, target.mean.flatten().tolist(), target.std.flatten().tolist()]).encode())
    for key, v in target.model.state_dict().items():
        h.update(f"{key}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class PassState:
    """Where a pass stands: per layer its :class:`TopK` and :class:`Histogram`, the next dataset index,
    images seen and skipped (unreadable; the first few indices kept), and whether it is done."""

    layers: dict[str, tuple[TopK, Histogram]]
    next: int = 0
    seen: int = 0
    skipped: int = 0
    skipped_first: list[int] = field(default_factory=list)
    done: bool = False
    seconds: float = 0.0  # this call's time in the pass ...
    streamed: int = 0  # ... and the images it read (an earlier, interrupted call's are not counted)

    def save(self, path: Path, fingerprint: dict[str, Any]) -> None:
        layers = {la: {"topk": t.state(), "hist": h.state()} for la, (t, h) in self.layers.items()}
        save_torch({"version": VERSION, "fingerprint": fingerprint, "next": self.next, "seen": self.seen,
                    "skipped": self.skipped, "skipped_first": list(self.skipped_first), "done": self.done,
                    "layers": layers}, path)

    def load(self, blob: dict[str, Any]) -> None:
        for la, (t, h) in self.layers.items():
            t.load(blob["layers"][la]["topk"])
            h.load(blob["layers"][la]["hist"])
        self.next, self.seen, self.skipped = int(blob["next"]), int(blob["seen"]), int(blob["skipped"])
        self.skipped_first, self.done = list(blob["skipped_first"]), bool(blob["done"])


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's contents (weights-only), refused in one line when it was made for other settings."""
    blob = load_file(path, "dataset-examples checkpoint", finite=False)
    if not isinstance(blob, dict) or blob.get("version") != VERSION or "fingerprint" not in blob:
        raise DgnamValueError(f"{path} is not a dataset-examples checkpoint of this version; remove it or write to "
                              f"another folder")
    have = blob["fingerprint"]
    differ = [k for k in fingerprint if have.get(k) != fingerprint[k]]
    if differ:
        raise DgnamValueError(f"the checkpoint {path} was made for other settings ({', '.join(differ)} differ); "
                              f"write to another folder, or start over with examples.resume=false")
    return blob


class _Items(Dataset):
    """(index, image or None, label) of a source, for the DataLoader."""

    def __init__(self, source: ExampleSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, int]:
        image, label = self.source.item(i)
        return i, image, label


def _collate(items: list[tuple[int, Tensor | None, int]]) -> tuple[Tensor, Tensor | None, list[int]]:
    """-> (indices of the readable images, their images stacked (or None), indices of the unreadable)."""
    good = [(i, im) for i, im, _ in items if im is not None]
    bad = [i for i, im, _ in items if im is None]
    idx = torch.tensor([i for i, _ in good], dtype=torch.long)
    return idx, (torch.stack([im for _, im in good]) if good else None), bad


def _batches(start: int, n: int, size: int) -> Iterator[list[int]]:
    for a in range(start, n, size):
        yield list(range(a, min(n, a + size)))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside: the bookkeeping on small tensors (top k, histograms, drawing) pays
    more for waking a second thread than it gains, up to 100 times more on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C waits until the block is done (the state is updated as a whole or not at all); a process
    that handles or ignores SIGINT its own way is left as it is."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    hit: list[int] = []
    old = signal.signal(signal.SIGINT, lambda s, _f: hit.append(s))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hit:
        raise KeyboardInterrupt


def run_pass(target: Target, source: ExampleSource, plans: Sequence[LayerPlan], k: int, *, batch_size: int = 64,
             bins: int = 40, warmup: int = 512, workers: int = 0, checkpoint: Path | None = None,
             checkpoint_every: int = 50, resume: bool = True, max_batches: int | None = None,
             fingerprint: dict[str, Any] | None = None, progress: bool = True,
             on_start: Callable[[], None] | None = None) -> PassState:
    """Stream ``source`` once through ``target`` (or what a checkpoint left of it) and return the state.

    ``max_batches``: stop after that many batches of this call (the state is saved; run again to go on).
    Unreadable images are skipped and counted; the checkpoint is written only once an image was seen.
    ``on_start`` is called once the checkpoint (if any) was accepted, before any image is read."""
    state = PassState({p.layer: (TopK(len(p.units), k, p.kind == "conv"), Histogram(len(p.units), bins, warmup))
                       for p in plans})
    fingerprint = dict(fingerprint or {})
    if checkpoint is not None and resume and checkpoint.is_file():
        state.load(load_checkpoint(checkpoint, fingerprint))
        if state.next:
            log.info("resuming from %s: %d of %d images done", checkpoint, state.next, len(source))
    if state.done:
        return state
    if on_start is not None:
        on_start()
    device = target.mean.device
    layers = [p.layer for p in plans]
    chosen = {p.layer: torch.tensor(p.units, dtype=torch.long) for p in plans}
    loader = DataLoader(_Items(source), batch_sampler=list(_batches(state.next, len(source), batch_size)),
                        collate_fn=_collate, num_workers=workers)
    bar = tqdm(total=len(source), initial=state.next, unit="img", desc="dataset examples", disable=not progress,
               dynamic_ncols=True)
    consistent, batches, t0 = True, 0, time.perf_counter()
    try:
        for idx, images, bad in loader:
            out = {}
            if images is not None:
                with torch.no_grad():
                    acts = target(images.to(device), layers)
                with one_thread():
                    out = {la: unit_values(acts[la], chosen[la]) for la in layers}
            with _uninterrupted(), one_thread():
                consistent = False
                for la, (values, positions) in out.items():
                    topk, hist = state.layers[la]
                    topk.update(values, idx, positions)
                    hist.update(values)
                state.seen += len(idx)
                state.skipped += len(bad)
                state.skipped_first = (state.skipped_first + bad)[:20]
                state.next = max([*idx.tolist(), *bad]) + 1
                consistent = True
            state.streamed += len(idx) + len(bad)
            bar.update(len(idx) + len(bad))
            if bad:
                bar.set_postfix(skipped=state.skipped)
            batches += 1
            if checkpoint is not None and state.seen and batches % checkpoint_every == 0:
                state.save(checkpoint, fingerprint)
            if max_batches is not None and batches >= max_batches and state.next < len(source):
                break
        else:
            state.done = True
    except BaseException:
        if checkpoint is not None and consistent and state.seen:
            state.save(checkpoint, fingerprint)
            log.warning("pass stopped at image %d of %d; the checkpoint %s resumes it", state.next, len(source),
                        checkpoint)
        raise
    finally:
        bar.close()
        state.seconds = time.perf_counter() - t0
    if state.done:
        for _, hist in state.layers.values():
            hist.finish()
    if checkpoint is not None and state.seen:
        state.save(checkpoint, fingerprint)
    return state
