"""Lightning callbacks of generator training (``conf/callbacks/``): the wall-clock ``last.ckpt`` and
the validation sample grids."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from dgnam.errors import DgnamValueError


class PeriodicCheckpoint(Callback):
    """Write ``path`` (the full training state, atomically) every ``minutes`` of training, so that a
    killed run resumes from at most that far back (``ckpt_path=.../last.ckpt``).

    (Lightning's ``ModelCheckpoint(train_time_interval=...)`` never fires under manual optimization.)"""

    def __init__(self, path: str | os.PathLike, minutes: float, clock: Any = time.monotonic) -> None:
        if minutes <= 0:
            raise DgnamValueError(f"trainer.checkpoint_every_minutes={minutes} must be positive (or null)")
        self.path, self.seconds, self.clock = Path(path), 60.0 * float(minutes), clock
        self.started: float | None = None
        self.saves = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        # rank 0's clock decides for every rank: saving is collective under DDP
        elif trainer.strategy.broadcast(now - self.started >= self.seconds, src=0):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp, weights_only=False)  # written by rank 0
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
            self.started, self.saves = now, self.saves + 1


class InterruptCheckpoint(Callback):
    """On Ctrl-C (SIGINT) write ``path`` (the full training state, atomically) before Lightning
    shuts down, and say how to resume: an interrupted run loses nothing."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.sanity_checking or trainer.world_size > 1:
            return  # under DDP a lone rank cannot write (saving is collective): the periodic last.ckpt stands
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path, weights_only=False)
        print(f"interrupted: the training state is in {self.path}; resume with ckpt_path={self.path} and the "
              f"same hydra.run.dir", file=sys.stderr)


def periodic_checkpoint(path: str | os.PathLike, minutes: float | None) -> PeriodicCheckpoint | None:
    """A :class:`PeriodicCheckpoint`, or none at all when ``minutes`` is null or 0 (``run()`` skips it)."""
    return PeriodicCheckpoint(path, float(minutes)) if minutes else None


class SampleGrids(Callback):
    """After each validation (not the sanity check), the module's fixed validation images beside their
    reconstructions (``pl_module.fixed_grid()``, one grid image) as
    ``<dirpath>/epoch{epoch:03d}-it{iteration:07d}.png`` and as the image
    ``val/originals_and_reconstructions`` of every logger that takes images (TensorBoard).

    Args:
        dirpath: the folder of the PNG files (``None``: ``<trainer.default_root_dir>/grids``).
    """

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:  # one grid per validation, from rank 0
            return
        grid = pl_module.fixed_grid()
        if grid is None:
            return
        step = int(pl_module.iteration)
        for lg in trainer.loggers:
            exp = getattr(lg, "experiment", None)
            if hasattr(exp, "add_image"):
                exp.add_image("val/originals_and_reconstructions", grid, step)
        root = self.dirpath if self.dirpath is not None else Path(trainer.default_root_dir) / "grids"
        root.mkdir(parents=True, exist_ok=True)
        from torchvision.utils import save_image

        save_image(grid, root / f"epoch{trainer.current_epoch:03d}-it{step:07d}.png")


class WeightDigests(Callback):
    """A check of distributed training: after every ``every``-th training batch (and at the start),
    append the step and a SHA-256 digest of G's and D's parameters and buffers to
    ``<dirpath>/rank<R>.jsonl``, one file per rank. Under DDP every rank must write the same lines
    (``trainer=ddp +callbacks.weight_digests._target_=dgnam.generator.callbacks.WeightDigests
    +callbacks.weight_digests.dirpath=<dir>``, then compare the files)."""

    def __init__(self, dirpath: str | os.PathLike, every: int = 1) -> None:
        self.dirpath, self.every = Path(dirpath), int(every)

    @staticmethod
    def digest(pl_module: Any) -> dict[str, str]:
        import hashlib

        out = {}
        for name in ("generator", "discriminator"):
            m = getattr(pl_module, name, None)
            if m is None:
                continue
            h = hashlib.sha256()
            for k, v in sorted(m.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
            out[name] = h.hexdigest()
        return out

    def _write(self, trainer: Any, pl_module: Any) -> None:
        import json

        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": int(pl_module.iteration), **self.digest(pl_module)}) + "\n")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if int(pl_module.iteration) % self.every == 0:
            self._write(trainer, pl_module)
