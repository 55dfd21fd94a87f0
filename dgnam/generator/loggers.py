"""Loggers for generator training: Lightning's CSV logger, keeping what a resumed run logged before."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from dgnam.errors import DgnamValueError
from dgnam.io import atomic_write


class _AppendingWriter(ExperimentWriter):
    """An experiment writer that appends to an existing ``metrics.csv`` (its header becomes the
    starting set of keys) where Lightning's deletes it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(k for k in header if k)


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger``, except that resuming into the same run directory (``ckpt_path``
    with the same ``hydra.run.dir``) keeps every row already in ``csv/metrics.csv`` and appends."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int) -> int:
        """Before a resumed run starts logging at ``step`` (from its checkpoint): move the rows of
        that step and later (logged by a run killed after its last checkpoint; the resumed run logs
        those steps again) from ``metrics.csv`` to ``metrics.replaced.csv``, so that nothing logged is lost
        and no step appears twice in ``metrics.csv``. Returns the number of rows moved."""
        return move_rows_from(Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE, step)

    def save(self) -> None:
        try:
            super().save()
        except OSError as e:
            raise DgnamValueError(f"cannot write the training log {self.log_dir}/metrics.csv: {e.strerror or e} "
                             f"(disk full?)") from None


def move_rows_from(path: Path, step: int) -> int:
    """Move the rows of the CSV ``path`` whose ``step`` is ``step`` or later to ``<stem>.replaced.csv``
    beside it (appended; both written atomically). Returns how many rows moved."""
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    if "step" not in header:
        return 0
    keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
    moved = [r for r in rows if r.get("step") and int(float(r["step"])) >= step]
    if not moved:
        return 0
    aside = path.with_name(f"{path.stem}.replaced.csv")
    old: list[dict[str, str]] = []
    aside_header = list(header)
    if aside.is_file():
        with open(aside, newline="") as f:
            r = csv.DictReader(f)
            aside_header += [k for k in (r.fieldnames or []) if k not in header]
            old = list(r)

    def write(rows_: list[dict[str, str]], keys: list[str]):
        def _w(p: str | os.PathLike) -> None:
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(rows_)
        return _w

    atomic_write(aside, write(old + moved, aside_header))
    atomic_write(path, write(keep, header))
    return len(moved)
