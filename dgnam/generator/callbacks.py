"""Lightning callbacks of generator training (``conf/callbacks/``): the wall-clock ``last.ckpt`` and
the validation sample grids."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from dgnam.errors import DgnamError


class PeriodicCheckpoint(Callback):
    """Write ``path`` (the full training state, atomically) every ``minutes`` of training, so that a
    killed run resumes from at most that far back (``ckpt_path=.../last.ckpt``).

    (Lightning's ``ModelCheckpoint(train_time_interval=...)`` never fires under manual optimization.)"""

    def __init__(self, path: str | os.PathLike, minutes: float, clock: Any = time.monotonic) -> None:
        if minutes <= 0:
            raise DgnamError(f"trainer.checkpoint_every_minutes={minutes} must be positive (or null)")
        self.path, self.seconds, self.clock = Path(path), 60.0 * float(minutes), clock
        self.started: float | None = None
        self.saves = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        elif now - self.started >= self.seconds:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, self.path)
            self.started, self.saves = now, self.saves + 1


class InterruptCheckpoint(Callback):
    """On Ctrl-C (SIGINT) write ``path`` (the full training state, atomically) before Lightning
    shuts down, and say how to resume: an interrupted run loses nothing."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.sanity_checking:
            return
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
        if trainer.sanity_checking:
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
